"""Continual learning (section 4 of the review): Algorithm 1 and the baselines it is judged against.

A benchmark is a sequence of tasks (`Task`: its classes, train and test arrays).
`ContinualTrainer(config, num_classes, image_shape).fit(tasks)` trains one method
on the tasks in order and returns the accuracy matrix `R[t, s]` (accuracy on the
test set of task s after training on task t), the average accuracy after the last
task, forgetting, and the bytes the method stores between tasks.

Methods (all on the same backbone, optimizer, batch and epochs per task):

- "nngk_add_drop": Algorithm 1. For each task D_e: train `epochs` epochs (the
  task's own samples act as refreshed, leave-one-out centers besides the stored
  set C, since a new task starts with no center of its classes); freeze; pick the
  `drop_per_task` best-predicted centers of C (leave-one-out) and drop them with
  the influence rule of eq. 13; add the worst-predicted samples of D_e (predicted
  by C, in `add_rounds` greedy rounds), optionally compensating by eq. 13; then
  fine-tune `finetune_epochs` epochs against C alone. C never exceeds `budget`;
  no raw image is kept after its task.
  Stored centers are embeddings of a network that keeps training, and a new task's
  loss pushes its samples away from them: without care the whole embedding moves
  and every old center goes stale (measured: old tasks fall to 0%). Three measures
  against it, on by default for the nearest-neighbour methods and switchable:
  feature distillation on the current task's images towards the network as it was
  before the task (`distill_weight`), BatchNorm statistics kept from the first task
  (`freeze_batchnorm`), and drift compensation of the old centers from the current
  task's embeddings before/after training (`drift_compensation`, SDC of Yu et al.
  2020). None of them stores an image.
- "nngk_add": the same with n_d = 0 (add only, until the budget is full).
- "nngk_random": the same budget, random adds and drops, no redistribution (ablation).
- "nngk" / "impostor": the head trained on each task in turn, centers = the current task only.
- "finetune": softmax head, plain sequential training.
- "ewc": elastic weight consolidation (Kirkpatrick et al. 2017), online, empirical Fisher.
- "si": synaptic intelligence (Zenke et al. 2017).
- "replay": softmax head with a class-balanced memory of raw images of the same byte
  size as the NNGK budget, replayed in every batch.
- "joint": trains on all tasks seen so far (upper bound).
"""

import dataclasses
import json
import math
import os
import time

import numpy as np
import tensorflow as tf
import tf_keras as keras
from absl import logging

from keras_nngk import backbones, layers, plots, surgery
from keras_nngk import data as data_lib
from keras_nngk import search as search_lib
from keras_nngk.training import center_sync
from keras_nngk.utils import files
from keras_nngk.utils.checks import check_positive_int
from keras_nngk.utils.files import write_json_atomically

METHODS = ("nngk_add_drop", "nngk_add", "nngk_random", "nngk", "impostor", "finetune", "ewc", "si", "replay",
           "joint")
CENTER_METHODS = ("nngk_add_drop", "nngk_add", "nngk_random")
SCENARIOS = ("class_incremental", "task_incremental")
# name -> (data set, classes per task). Split CIFAR-100 uses 10 tasks of 10 classes.
BENCHMARKS = {
    "split_mnist5k": ("mnist5k", 2),
    "split_fashion_mnist": ("fashion_mnist", 2),
    "split_digits": ("digits", 2),
    "split_mnist": ("mnist", 2),
    "split_cifar10": ("cifar10", 2),
    "split_cifar100": ("cifar100", 10),
}


@dataclasses.dataclass
class Task:
    """One task of a continual benchmark: its classes and its train and test examples (images in [0, 1])."""

    classes: np.ndarray
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclasses.dataclass
class Benchmark:
    name: str
    tasks: list
    num_classes: int
    image_shape: tuple
    class_names: tuple


def load_benchmark(name, data_dir=None, max_train_per_task=None, seed=0):
    """Builds a Split-X benchmark from a registered data set (see `BENCHMARKS`).

    Args:
        name: benchmark name.
        data_dir: tfds data dir (or the Fashion-MNIST idx folder).
        max_train_per_task: keep at most this many (seeded, stratified) training images per task, for quick runs.
    """
    if name not in BENCHMARKS:
        raise ValueError(f"Unknown benchmark {name!r}; valid: {', '.join(BENCHMARKS)}. Received: benchmark={name!r}")
    dataset, classes_per_task = BENCHMARKS[name]
    arrays = data_lib.load_arrays(dataset, data_dir=data_dir)
    train_tasks = data_lib.splits.split_tasks(arrays.y_train, classes_per_task)
    test_tasks = data_lib.splits.split_tasks(arrays.y_test, classes_per_task)
    tasks = []
    for (classes, train), (_, test) in zip(train_tasks, test_tasks):
        if max_train_per_task and len(train) > max_train_per_task:
            per_class = max(1, max_train_per_task // len(classes))
            train = train[data_lib.splits.few_shot_indices(arrays.y_train[train], per_class, seed)]
        tasks.append(Task(classes, arrays.x_train[train], arrays.y_train[train], arrays.x_test[test],
                          arrays.y_test[test]))
    num_classes = int(max(arrays.y_train.max(), arrays.y_test.max()) + 1)
    return Benchmark(name, tasks, num_classes, tuple(arrays.x_train.shape[1:]), tuple(arrays.class_names))


def check_tasks(tasks, scenario):
    """Raises a one-line ValueError for task lists a run cannot use."""
    if scenario not in SCENARIOS:
        raise ValueError(f"Unknown scenario {scenario!r}; valid: {', '.join(SCENARIOS)}. Received: scenario="
                         f"{scenario!r}")
    if not tasks:
        raise ValueError("A continual run needs at least one task. Received: 0 tasks")
    seen = {}
    for index, task in enumerate(tasks):
        if len(task.x_train) == 0 or len(task.x_train) != len(task.y_train):
            raise ValueError(f"Task {index} has {len(task.x_train)} training images and {len(task.y_train)} labels; "
                             "each task needs matching, non-empty training data.")
        if not np.all(np.isin(task.y_train, task.classes)) or not np.all(np.isin(task.y_test, task.classes)):
            raise ValueError(f"Task {index} has labels outside its classes {list(task.classes)}.")
        for label in task.classes:
            if scenario == "class_incremental" and int(label) in seen:
                raise ValueError(f"Tasks {seen[int(label)]} and {index} share class {int(label)}: a class-incremental "
                                 "run needs tasks with disjoint classes (or use --scenario=task_incremental).")
            seen.setdefault(int(label), index)


@dataclasses.dataclass
class ContinualConfig:
    """Settings of one continual run; every method reads the same fields (same budget for all)."""

    benchmark: str = "split_fashion_mnist"
    scenario: str = "class_incremental"
    method: str = "nngk_add_drop"
    backbone: str = "small_conv"
    embedding_dim: int = 64
    epochs: int = 1  # n_t: training epochs per task.
    finetune_epochs: int = 1  # n_f: Algorithm 1's fine-tuning epochs after the add/drop (center methods).
    batch_size: int = 128
    learning_rate: float = 1e-3
    num_neighbours: int = 32
    sigma: float = 0.5
    budget: int = 2000  # Maximum number of stored centers; replay stores the same number of bytes.
    drop_per_task: int = 100  # n_d (nngk_add_drop, nngk_random).
    add_per_task: int = 0  # n_a; 0: budget // number of tasks + n_d.
    add_rounds: int = 4  # Greedy rounds of "worst predicted" adds.
    redistribute: bool = True  # Eq. 13 on drops.
    compensate_adds: bool = False  # Eq. 13 with the opposite sign on adds.
    ewc_lambda: float = 100.0
    ewc_samples: int = 256
    si_c: float = 0.1
    si_xi: float = 1e-3
    distill_weight: float = 10.0  # Nearest-neighbour methods: feature distillation on the current task (0: off).
    drift_compensation: bool = True  # Move old centers with the drift of nearby current embeddings.
    freeze_batchnorm: bool = True  # Nearest-neighbour methods keep the first task's BatchNorm statistics.
    freeze_backbone_after: int = 0  # Stop training the backbone after this many tasks (0: never).
    embedding_normalized: bool = True  # L2-normalised embeddings (the backbone's default).
    max_train_per_task: int = 0  # 0: all.
    seed: int = 0
    data_dir: str = ""

    @classmethod
    def field_names(cls):
        return tuple(field.name for field in dataclasses.fields(cls))

    def validate(self):
        if self.method not in METHODS:
            raise ValueError(f"Unknown method {self.method!r}; valid: {', '.join(METHODS)}. "
                             f"Received: method={self.method!r}")
        if self.benchmark not in BENCHMARKS:
            raise ValueError(f"Unknown benchmark {self.benchmark!r}; valid: {', '.join(BENCHMARKS)}. "
                             f"Received: benchmark={self.benchmark!r}")
        if self.scenario not in SCENARIOS:
            raise ValueError(f"Unknown scenario {self.scenario!r}; valid: {', '.join(SCENARIOS)}. "
                             f"Received: scenario={self.scenario!r}")
        for name in ("embedding_dim", "epochs", "batch_size", "num_neighbours", "budget", "add_rounds",
                     "ewc_samples"):
            check_positive_int(name, getattr(self, name))
        for name in ("finetune_epochs", "drop_per_task", "freeze_backbone_after", "add_per_task", "max_train_per_task"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"`{name}` must be a non-negative integer. Received: {name}={value!r}")
        for name in ("learning_rate", "sigma"):
            if not getattr(self, name) > 0:
                raise ValueError(f"`{name}` must be positive. Received: {name}={getattr(self, name)!r}")
        if self.freeze_backbone_after and self.method not in CENTER_METHODS + ("nngk", "impostor"):
            raise ValueError("--freeze_backbone_after applies to the nearest-neighbour methods only. "
                             f"Received: method={self.method!r}")
        for name in ("ewc_lambda", "si_c", "si_xi", "distill_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"`{name}` must be non-negative. Received: {name}={getattr(self, name)!r}")
        return self

    def to_dict(self):
        return dataclasses.asdict(self)


def accuracy_matrix_summary(matrix):
    """`(average accuracy after the last task, forgetting)` of an accuracy matrix `R[t, s]`.

    Forgetting (Chaudhry et al. 2018): for each task but the last, the best accuracy
    it ever had minus its final accuracy, averaged.
    """
    matrix = np.asarray(matrix, np.float64)
    last = len(matrix) - 1
    average = float(np.mean(matrix[last, :last + 1]))
    if last == 0:
        return average, 0.0
    forgetting = float(np.mean([matrix[:last, s].max() - matrix[last, s] for s in range(last)]))
    return average, forgetting


class ContinualTrainer:
    """Trains one continual-learning method over a sequence of tasks and measures it.

    Args:
        config: a `ContinualConfig` (method, budget, epochs, ...).
        num_classes: total number of classes over all tasks (one output per class).
        image_shape: `(H, W, C)` of the images.
        verbose: 1 shows a progress bar per task and epoch, 0 is silent.

    Example:

    >>> benchmark = load_benchmark("split_mnist5k")
    >>> trainer = ContinualTrainer(ContinualConfig(method="nngk_add_drop"), benchmark.num_classes,
    ...                            benchmark.image_shape)
    >>> results = trainer.fit(benchmark.tasks)
    >>> results["average_accuracy"], results["forgetting"]
    """

    def __init__(self, config, num_classes, image_shape, verbose=1):
        self.config = config.validate()
        self.num_classes = int(num_classes)
        self.image_shape = tuple(image_shape)
        self.verbose = verbose
        self.rng = np.random.default_rng(config.seed)
        keras.utils.set_random_seed(config.seed)
        self.method = config.method
        self.backbone = backbones.get(config.backbone, input_shape=self.image_shape,
                                      embedding_dim=config.embedding_dim, l2_normalize=config.embedding_normalized)
        self.capacity = None
        self.head = self.train_model = self.inference_model = self.teacher = None
        self.frozen = self.bn_frozen = False
        self.optimizer = keras.optimizers.Adam(config.learning_rate)
        self.variables = None
        self.memory = None  # Replay: (images uint8, labels).
        self.anchors = None  # EWC / SI: parameters after the last task.
        self.importance = None
        self._train_step = None

    @property
    def uses_centers(self):
        return self.method in CENTER_METHODS + ("nngk", "impostor")

    # -- setup ----------------------------------------------------------------------------------
    def _prepare(self, tasks):
        sizes = [len(task.x_train) for task in tasks]
        self.task_offsets = np.concatenate([[0], np.cumsum(sizes)])
        if self.uses_centers:  # Room for the stored set C plus one whole task (its samples are centers in training).
            self.capacity = max(sizes) + (self.config.budget if self.method in CENTER_METHODS else 0)
        config = self.config
        if self.method == "impostor":
            self.head = layers.ImpostorClassifier(self.num_classes, num_neighbours=config.num_neighbours,
                                                  sigma=config.sigma, tie="tied", capacity=self.capacity,
                                                  name="impostor_head")
        elif self.uses_centers:
            self.head = layers.NNGKClassifier(self.num_classes, num_neighbours=config.num_neighbours,
                                              sigma=config.sigma, sample_weights=False, capacity=self.capacity,
                                              name="nngk_head")
        else:
            self.head = layers.DenseClassifier(self.num_classes, name="dense_head")
        image = keras.Input(self.image_shape, name="image")
        sample_id = keras.Input((), dtype="int32", name="sample_id")
        embedding = self.backbone(image)
        # Training outputs the embedding too, for the distillation term.
        self.train_model = keras.Model({"image": image, "sample_id": sample_id},
                                       [self.head([embedding, sample_id]), embedding], name="train_model")
        self.inference_model = keras.Model(image, self.head(embedding), name="classifier")
        self.sync = center_sync.CenterSync(self.head, self.backbone, batch_size=512)
        self.variables = self.train_model.trainable_variables
        if config.distill_weight and self.uses_centers:  # Softmax baselines stay as published.
            self.teacher = keras.models.clone_model(self.backbone)
        if self.method in ("ewc", "si"):
            self.anchors = [tf.Variable(v, trainable=False) for v in self.variables]
            self.importance = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables]
            self.penalty_weight = tf.Variable(0.0, trainable=False)
        if self.method == "si":
            self.path_integral = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables]
        self.distill_active = tf.Variable(0.0, trainable=False)
        self._train_step = self._make_train_step()

    def _penalty(self):
        scale = self.config.ewc_lambda / 2.0 if self.method == "ewc" else self.config.si_c
        total = tf.add_n([tf.reduce_sum(omega * tf.square(v - anchor))
                          for v, anchor, omega in zip(self.variables, self.anchors, self.importance)])
        return self.penalty_weight * scale * total

    def _make_train_step(self):
        model, variables, optimizer = self.train_model, self.variables, self.optimizer
        regularised = self.method in ("ewc", "si")
        distill = self.teacher is not None

        @tf.function
        def step(images, sample_ids, labels):
            with tf.GradientTape() as tape:
                probabilities, embeddings = model({"image": images, "sample_id": sample_ids}, training=True)
                loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, probabilities))
                total = loss + self._penalty() if regularised else loss
                if distill:
                    targets = self.teacher(images, training=False)
                    drift = tf.reduce_mean(tf.reduce_sum(tf.square(embeddings - targets), axis=-1))
                    total = total + self.distill_active * self.config.distill_weight * drift
            gradients = tape.gradient(total, variables)
            before = [tf.identity(v) for v in variables] if self.method == "si" else None
            optimizer.apply_gradients(zip(gradients, variables))
            if self.method == "si":
                for w, g, v, old in zip(self.path_integral, gradients, variables, before):
                    w.assign_add(-g * (v - old))
            return loss

        return step

    # -- pieces ---------------------------------------------------------------------------------
    def embed(self, images):
        return self.sync.embed(images)

    def predict(self, images, sample_ids=None):
        """Class probabilities; with sample ids, each stored center of the same sample is left out."""
        if sample_ids is None:
            return self.inference_model.predict(images, batch_size=512, verbose=0)
        return self.train_model.predict({"image": images, "sample_id": np.asarray(sample_ids, np.int32)},
                                        batch_size=512, verbose=0)[0]

    def _recalibrate(self, images):
        if self.frozen or self.bn_frozen:
            return
        batches = tf.data.Dataset.from_tensor_slices(images).shuffle(len(images), seed=self.config.seed).batch(
            self.config.batch_size)
        self.sync.recalibrate(batches)

    def _run_epochs(self, epochs, images, labels, sample_ids, description, refresh=None):
        """Trains `epochs` epochs; `refresh` re-embeds the current task's centers before every epoch after the first
        (they are current when training starts)."""
        config = self.config
        for epoch in range(epochs):
            if refresh is not None and epoch > 0:
                refresh()
            order = self.rng.permutation(len(images))
            steps = -(-len(order) // config.batch_size)
            progress = keras.utils.Progbar(steps, verbose=self.verbose, stateful_metrics=["loss"])
            if self.verbose:
                print(f"{description}, epoch {epoch + 1}/{epochs}")
            for step in range(steps):
                batch = order[step * config.batch_size:(step + 1) * config.batch_size]
                x, y, ids = images[batch], labels[batch], sample_ids[batch]
                if self.method == "replay" and self.memory is not None:
                    pick = self.rng.integers(0, len(self.memory[0]), size=len(batch))
                    x = np.concatenate([x, self.memory[0][pick].astype(np.float32) / 255.0])
                    y = np.concatenate([y, self.memory[1][pick]])
                    ids = np.concatenate([ids, np.full(len(pick), -1)])
                loss = self._train_step(tf.constant(x, tf.float32), tf.constant(ids, tf.int32),
                                        tf.constant(y, tf.int64))
                progress.update(step + 1, [("loss", float(loss))])

    # -- center methods (Algorithm 1) ---------------------------------------------------------------
    def _center_ids(self):
        mask = self.head.center_mask.numpy()
        return self.head.center_sample_ids.numpy()[mask]

    def _refresh_current(self, images, ids):
        """Re-embeds the current task's stored centers (their images are still available)."""
        present = np.isin(ids, self._center_ids())
        if present.any():
            self._recalibrate(images)
            self.sync.move(images[present], ids[present], recalibrate=False)

    def _head_predict(self, embeddings, sample_ids=None, batch_size=1024):
        """The head's probabilities for embeddings, in batches (with sample ids: leave-one-out)."""
        outputs = []
        for start in range(0, len(embeddings), batch_size):
            queries = tf.constant(embeddings[start:start + batch_size], tf.float32)
            if sample_ids is None:
                outputs.append(self.head(queries).numpy())
            else:
                ids = tf.constant(np.asarray(sample_ids[start:start + batch_size], np.int32))
                outputs.append(self.head([queries, ids]).numpy())
        return np.concatenate(outputs) if outputs else np.zeros((0, self.num_classes), np.float32)

    def _select_drops(self, count):
        """The `count` best-predicted centers of C (leave-one-out prediction of their own soft label)."""
        ids = self._center_ids()
        count = min(count, len(ids))
        if count == 0:
            return ids[:0]
        if self.method == "nngk_random":
            return self.rng.choice(ids, size=count, replace=False)
        slots = np.flatnonzero(self.head.center_mask.numpy())
        positions = self.head.centers.numpy()[slots]
        labels = self.head.center_labels.numpy()[slots]
        probabilities = self._head_predict(positions, ids)
        score = np.sum(labels * probabilities, axis=1)
        return ids[np.argsort(-score, kind="stable")[:count]]

    def _add_worst(self, embeddings, labels, ids, count):
        """Adds the `count` samples that C predicts worst, in greedy rounds (random picks while C is empty)."""
        remaining = np.arange(len(ids))
        per_round = max(1, math.ceil(count / self.config.add_rounds))
        added = 0
        while added < count and len(remaining):
            take = min(per_round, count - added, len(remaining))
            if self.method == "nngk_random" or self.head.num_centers == 0:
                chosen = self.rng.choice(len(remaining), size=take, replace=False)
            else:
                probabilities = self._head_predict(embeddings[remaining])
                loss = -np.log(probabilities[np.arange(len(remaining)), labels[remaining]] + 1e-12)
                tie_break = self.rng.permutation(len(remaining))
                order = np.lexsort((tie_break, -loss))  # Highest loss first, ties in random order.
                chosen = order[:take]
            picked = remaining[chosen]
            self.head.add_centers(embeddings[picked], labels[picked], ids[picked],
                                  compensate=self.config.compensate_adds and self.method != "nngk_random")
            remaining = np.delete(remaining, chosen)
            added += take

    def _fit_center_task(self, task, ids, description):
        config = self.config
        images, labels = task.x_train, task.y_train.astype(np.int64)
        if self.method in ("nngk", "impostor"):
            old = self._center_ids()
            if len(old):
                self.head.drop_centers(old, redistribute=False)
        # The task's own samples are centers while it trains (Algorithm 1 would start a new task without any).
        self._recalibrate(images)
        before = self.embed(images)
        self.head.add_centers(before, labels, ids)
        self._run_epochs(config.epochs, images, labels, ids, description,
                         refresh=lambda: self._refresh_current(images, ids))
        self._recalibrate(images)
        embeddings = self.embed(images)
        if config.drift_compensation:
            self._compensate_drift(before, embeddings, exclude=ids)
        if self.method in ("nngk", "impostor"):
            self.head.move_centers(ids, embeddings)
            return
        self.head.drop_centers(ids, redistribute=False)  # Back to the stored set C; the model is frozen here.
        stored = self.head.num_centers
        drops = 0 if self.method == "nngk_add" else config.drop_per_task
        adds = config.add_per_task or config.budget // self.num_tasks + drops
        if self.method == "nngk_add":
            adds = min(adds, config.budget - stored)
        drops = min(stored, max(drops, stored + adds - config.budget))
        dropped = self._select_drops(drops)
        if len(dropped):
            self.head.drop_centers(dropped, redistribute=config.redistribute and self.method != "nngk_random")
        self._add_worst(embeddings, labels, ids, min(adds, config.budget - self.head.num_centers))
        self.center_log.append({"dropped": int(len(dropped)), "added": int(self.head.num_centers - stored +
                                                                           len(dropped)),
                                "num_centers": self.head.num_centers})
        if config.finetune_epochs:
            self._run_epochs(config.finetune_epochs, images, labels, ids, description + " (fine-tune)",
                             refresh=lambda: self._refresh_current(images, ids))
            self._recalibrate(images)
            after = self.embed(images)
            if config.drift_compensation:
                self._compensate_drift(embeddings, after, exclude=ids)
            self._refresh_current(images, ids)

    def _compensate_drift(self, before, after, exclude):
        """Moves the stored centers of earlier tasks by the drift of the current task's embeddings around them.

        Semantic drift compensation (Yu et al., CVPR 2020) with the head's Gaussian
        kernel: each old center moves by the kernel-weighted mean of `after - before`
        over its k nearest current samples (by their `before` embeddings). Needs no
        stored image: only the current task's images, embedded before and after training.
        """
        ids = self._center_ids()
        old = ids[~np.isin(ids, exclude)]
        if len(old) == 0:
            return
        slots = self.head._slots_of(old)  # pylint: disable=protected-access
        centers = self.head.centers.numpy()[slots]
        index = search_lib.ExactSearch()
        index.add(before, np.arange(len(before)))
        k = min(self.config.num_neighbours, len(before))
        distances, neighbours = index.search(centers, k)
        weights = surgery.kernel_coefficients(distances, float(self.head.sigma.numpy()))
        moved = centers + np.einsum("nk,nkd->nd", weights, (after - before)[neighbours])
        if self.config.embedding_normalized:
            moved /= np.maximum(np.linalg.norm(moved, axis=1, keepdims=True), 1e-12)
        self.head.move_centers(old, moved)

    # -- regularisation methods -----------------------------------------------------------------
    def _consolidate(self, task):
        """After a task: EWC adds the task's diagonal Fisher, SI its path integral; both move the anchors."""
        if self.method == "ewc":
            count = min(self.config.ewc_samples, len(task.x_train))
            chosen = self.rng.choice(len(task.x_train), size=count, replace=False)
            fisher = [tf.zeros_like(v) for v in self.variables]
            model = self.train_model

            @tf.function
            def squared_gradients(image, label):
                with tf.GradientTape() as tape:
                    probabilities = model({"image": image[tf.newaxis], "sample_id": tf.constant([-1])})[0]
                    log_likelihood = tf.math.log(probabilities[0, label] + 1e-12)
                return [tf.square(g) for g in tape.gradient(log_likelihood, self.variables)]

            for index in chosen:
                grads = squared_gradients(tf.constant(task.x_train[index]), tf.constant(int(task.y_train[index])))
                fisher = [f + g for f, g in zip(fisher, grads)]
            for omega, f in zip(self.importance, fisher):
                omega.assign_add(f / count)
        elif self.method == "si":
            for omega, w, v, anchor in zip(self.importance, self.path_integral, self.variables, self.anchors):
                omega.assign_add(tf.nn.relu(w) / (tf.square(v - anchor) + self.config.si_xi))
                w.assign(tf.zeros_like(w))
        for anchor, v in zip(self.anchors, self.variables):
            anchor.assign(v)
        self.penalty_weight.assign(1.0)

    def _update_memory(self, task):
        """Class-balanced replay memory of raw images (uint8) within the centers' byte budget."""
        per_image = int(np.prod(self.image_shape)) + 1  # uint8 pixels + a label byte.
        capacity = self.center_bytes(self.config.budget) // per_image
        images = [] if self.memory is None else [self.memory[0]]
        labels = [] if self.memory is None else [self.memory[1]]
        images.append(np.round(task.x_train * 255).astype(np.uint8))
        labels.append(task.y_train)
        images, labels = np.concatenate(images), np.concatenate(labels)
        classes = np.unique(labels)
        per_class = capacity // len(classes)
        keep = np.concatenate([self.rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes])
        self.memory = (images[keep], labels[keep])

    def center_bytes(self, num_centers):
        """Bytes of `num_centers` float32 centers with their float32 soft labels."""
        return int(num_centers) * (self.config.embedding_dim + self.num_classes) * 4

    def stored_bytes(self, tasks_seen):
        if self.method in CENTER_METHODS or self.method in ("nngk", "impostor"):
            return self.center_bytes(self.head.num_centers)
        if self.method == "replay":
            return int(self.memory[0].nbytes + self.memory[1].size)
        if self.method in ("ewc", "si"):
            return int(2 * 4 * sum(int(np.prod(v.shape)) for v in self.variables))
        if self.method == "joint":
            return int(sum(np.prod(t.x_train.shape) + len(t.y_train) for t in tasks_seen))
        return 0

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate(self, tasks, scenario):
        """Accuracy on every task's test set (class-incremental: argmax over all classes; task-incremental:
        over the task's own classes)."""
        accuracies = []
        for task in tasks:
            probabilities = self.predict(task.x_test)
            if scenario == "task_incremental":
                allowed = np.zeros(self.num_classes, bool)
                allowed[task.classes] = True
                probabilities = np.where(allowed, probabilities, -1.0)
            accuracies.append(float(np.mean(np.argmax(probabilities, axis=1) == task.y_test)))
        return accuracies

    def _warn_if_not_learned(self, index, task, accuracy):
        """Warns when the task just trained is recognised no better than chance: its numbers say nothing then."""
        chance = 1.0 / max(len(task.classes), 1)
        if accuracy <= chance + 0.02:
            steps = self.config.epochs * -(-len(task.x_train) // self.config.batch_size)
            logging.warning("%s learned nothing on task %d (accuracy %.1f%%, chance %.1f%%) in %d training steps; "
                            "raise --epochs or lower --batch_size, or use a larger benchmark, before reading its "
                            "results.", self.method, index + 1, 100 * accuracy, 100 * chance, steps)

    def fit(self, tasks):
        """Trains on `tasks` in order; returns the results dict (accuracy matrix, average accuracy, forgetting)."""
        config = self.config
        check_tasks(tasks, config.scenario)
        self.num_tasks = len(tasks)
        self.center_log = []
        self._prepare(tasks)
        matrix, stored, start = [], [], time.time()
        for index, task in enumerate(tasks):
            description = f"{self.method}: task {index + 1}/{len(tasks)} (classes {list(map(int, task.classes))})"
            ids = np.arange(self.task_offsets[index], self.task_offsets[index + 1])
            if config.freeze_backbone_after and index == config.freeze_backbone_after:
                self.frozen = True  # Only the head trains from now on; BatchNorm statistics stay as they are.
                self.backbone.trainable = False
                self.variables = self.train_model.trainable_variables
                self._train_step = self._make_train_step()
            if index == 1 and config.freeze_batchnorm and self.uses_centers and not self.frozen:
                # BatchNorm statistics of later tasks would move every stored center at once: keep the first task's.
                for layer in center_sync.all_layers(self.backbone):
                    if isinstance(layer, keras.layers.BatchNormalization):
                        layer.trainable = False
                self.bn_frozen = True
                self.variables = self.train_model.trainable_variables
                self._train_step = self._make_train_step()
            if self.teacher is not None and index > 0:  # Distil from the network as it was before this task.
                self.teacher.set_weights(self.backbone.get_weights())
                self.distill_active.assign(1.0)
            if self.uses_centers:
                self._fit_center_task(task, ids, description)
            else:
                images, labels = task.x_train, task.y_train.astype(np.int64)
                if self.method == "joint":
                    images = np.concatenate([t.x_train for t in tasks[:index + 1]])
                    labels = np.concatenate([t.y_train for t in tasks[:index + 1]]).astype(np.int64)
                    ids = np.arange(len(images))
                recalibration_images = images
                if self.method == "replay" and self.memory is not None:
                    recalibration_images = np.concatenate([images, self.memory[0].astype(np.float32) / 255.0])
                self._run_epochs(config.epochs, images, labels, ids, description)
                self._recalibrate(recalibration_images)
                if self.method in ("ewc", "si"):
                    self._consolidate(task)
                if self.method == "replay":
                    self._update_memory(task)
            matrix.append(self.evaluate(tasks, config.scenario))
            self._warn_if_not_learned(index, task, matrix[-1][index])
            stored.append(self.stored_bytes(tasks[:index + 1]))
            logging.info("%s after task %d: accuracies %s", self.method, index + 1,
                         " ".join(f"{a:.3f}" for a in matrix[-1]))
        average, forgetting = accuracy_matrix_summary(matrix)
        results = {
            "method": self.method, "scenario": config.scenario, "benchmark": config.benchmark,
            "task_classes": [list(map(int, task.classes)) for task in tasks],
            "accuracy_matrix": matrix, "average_accuracy": average, "forgetting": forgetting,
            "average_accuracy_per_task": [accuracy_matrix_summary(matrix[:t + 1])[0] for t in range(len(matrix))],
            "stored_bytes": stored[-1], "stored_bytes_per_task": stored, "budget_centers": config.budget,
            "budget_bytes": self.center_bytes(config.budget), "seconds": round(time.time() - start, 1),
            "config": config.to_dict(),
        }
        if self.uses_centers:
            results["num_centers"] = self.head.num_centers
            results["center_log"] = self.center_log
            results["sigma"] = float(self.head.sigma.numpy())
        return results


def run(config, workdir, verbose=1):
    """Runs one method on its benchmark and writes `results.json`, plots and `model.keras` into `workdir`.

    A workdir that already holds the finished results of the same config is kept as it is (a rerun of
    `--method=all` after an interruption continues with the methods not yet done).
    """
    config.validate()
    path = os.path.join(workdir, "results.json")
    if os.path.exists(path):
        try:
            with open(path) as handle:
                saved = json.load(handle)
        except (OSError, json.JSONDecodeError):
            saved = {}
        if saved.get("config") == config.to_dict() and os.path.exists(os.path.join(workdir, "model.keras")):
            logging.info("%s already holds the results of this config; kept.", workdir)
            return saved
    benchmark = load_benchmark(config.benchmark, data_dir=config.data_dir or None,
                               max_train_per_task=config.max_train_per_task or None, seed=config.seed)
    with files.WorkdirLock(workdir, purpose="trainers.continual"):
        trainer = ContinualTrainer(config, benchmark.num_classes, benchmark.image_shape, verbose=verbose)
        results = trainer.fit(benchmark.tasks)
        files.save_model(trainer.inference_model, os.path.join(workdir, "model.keras"))
        plots.plot_accuracy_matrix(results, os.path.join(workdir, "accuracy_matrix.png"))
        write_json_atomically(path, results)  # Last: results.json marks a finished method.
    return results


def compare(results_by_method, workdir):
    """Writes `summary.json` and `average_accuracy.png` comparing methods run on the same benchmark."""
    summary = {method: {"average_accuracy": r["average_accuracy"], "forgetting": r["forgetting"],
                        "stored_bytes": r["stored_bytes"]} for method, r in results_by_method.items()}
    write_json_atomically(os.path.join(workdir, "summary.json"), summary)
    plots.plot_average_accuracy(results_by_method, os.path.join(workdir, "average_accuracy.png"))
    return summary


def format_table(summary):
    lines = ["| method | average accuracy | forgetting | stored bytes |", "|---|---|---|---|"]
    for method, row in summary.items():
        lines.append(f"| {method} | {100 * row['average_accuracy']:.1f}% | {100 * row['forgetting']:.1f} | "
                     f"{row['stored_bytes']:,} |")
    return "\n".join(lines)


__all__ = ["ContinualConfig", "ContinualTrainer", "Task", "Benchmark", "load_benchmark", "check_tasks",
           "accuracy_matrix_summary", "run", "compare", "format_table", "METHODS", "BENCHMARKS", "SCENARIOS"]
