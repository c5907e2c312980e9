"""`ContinualTrainer`: trains one registered method over a sequence of tasks and measures it.

The trainer owns what every method shares (backbone, optimizer, the compiled training step,
BatchNorm handling, evaluation, the accuracy matrix); the method (`keras_nngk.continual.methods`)
owns its head, its loss terms, how it trains a task and what it stores.
"""

import time

import numpy as np
import tensorflow as tf
import tf_keras as keras
from absl import logging

from keras_nngk import backbones
from keras_nngk.continual import methods
from keras_nngk.continual.benchmarks import check_tasks
from keras_nngk.continual.metrics import accuracy_matrix_summary
from keras_nngk.training import center_sync
from keras_nngk.utils import interrupts, pipelines


class ContinualTrainer:
    """Trains one continual-learning method over a sequence of tasks and measures it.

    `fit(tasks)` returns the accuracy matrix `R[t, s]` (accuracy on the test set of task s
    after training on task t), the average accuracy after the last task, forgetting, and the
    bytes the method stores between tasks besides the network.

    Args:
        config: a `ContinualConfig` (method, budget, epochs, ...); the method's preset is applied.
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
        self.config = config.resolved()
        self.num_classes = int(num_classes)
        self.image_shape = tuple(image_shape)
        self.verbose = verbose
        self.rng = np.random.default_rng(self.config.seed)
        keras.utils.set_random_seed(self.config.seed)
        self.method = self.config.method
        self.algorithm = methods.get(self.method)(self)
        self.backbone = backbones.get(self.config.backbone, input_shape=self.image_shape,
                                      embedding_dim=self.config.embedding_dim,
                                      l2_normalize=self.config.embedding_normalized)
        self.head = self.train_model = self.inference_model = self.teacher = None
        self.frozen = self.bn_frozen = False
        self.optimizer = keras.optimizers.Adam(self.config.learning_rate)
        self.variables = None
        self.num_tasks = None
        self._train_step = None

    @property
    def uses_centers(self):
        return self.algorithm.uses_centers

    @property
    def budget_bytes(self):
        """What every method may store: `budget` float32 centers with their float32 soft labels."""
        return self.center_bytes(self.config.budget)

    def center_bytes(self, num_centers):
        """Bytes of `num_centers` float32 centers with their float32 soft labels."""
        return int(num_centers) * (self.config.embedding_dim + self.num_classes) * 4

    # -- setup ----------------------------------------------------------------------------------
    def prepare(self, tasks):
        """Builds the head and the models for `tasks` (called by `fit`)."""
        self.num_tasks = len(tasks)
        sizes = [len(task.x_train) for task in tasks]
        self.task_offsets = np.concatenate([[0], np.cumsum(sizes)])
        self.head = self.algorithm.make_head(sizes)
        image = keras.Input(self.image_shape, name="image")
        sample_id = keras.Input((), dtype="int32", name="sample_id")
        embedding = self.backbone(image)
        # Training outputs the embedding too, for the distillation term.
        self.train_model = keras.Model({"image": image, "sample_id": sample_id},
                                       [self.head([embedding, sample_id]), embedding], name="train_model")
        self.inference_model = keras.Model(image, self.head(embedding), name="classifier")
        self.sync = center_sync.CenterSync(self.head, self.backbone, batch_size=512)
        self.variables = self.train_model.trainable_variables
        self.distill_active = tf.Variable(0.0, trainable=False)
        self.algorithm.setup()
        # The optimizer's variables now, not in the step's first call: a tf.function creating variables traces twice.
        self.optimizer.build(self.variables)
        self._train_step = self._make_train_step()

    def _make_train_step(self):
        model, variables, optimizer, algorithm = self.train_model, self.variables, self.optimizer, self.algorithm
        teacher = self.teacher

        @tf.function
        def step(images, sample_ids, labels):
            with tf.GradientTape() as tape:
                probabilities, embeddings = model({"image": images, "sample_id": sample_ids}, training=True)
                loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, probabilities))
                total = loss
                penalty = algorithm.penalty()
                if penalty is not None:
                    total = total + penalty
                if teacher is not None:
                    targets = teacher(images, training=False)
                    drift = tf.reduce_mean(tf.reduce_sum(tf.square(embeddings - targets), axis=-1))
                    total = total + self.distill_active * self.config.distill_weight * drift
            gradients = tape.gradient(total, variables)
            before = [tf.identity(v) for v in variables] if algorithm.keeps_before else None
            optimizer.apply_gradients(zip(gradients, variables))
            algorithm.after_update(gradients, before)
            return loss

        return step

    def retrace(self):
        """Recompiles the training step after the set of trainable variables changed."""
        self.variables = self.train_model.trainable_variables
        self._train_step = self._make_train_step()

    # -- pieces used by the methods ---------------------------------------------------------------
    def embed(self, images):
        return self.sync.embed(images)

    def predict(self, images, sample_ids=None):
        """Class probabilities; with sample ids, each stored center of the same sample is left out."""
        if sample_ids is None:
            return self.algorithm.predict(images)
        return pipelines.predict(self.train_model, {"image": images, "sample_id": np.asarray(sample_ids, np.int32)},
                                 batch_size=512)[0]

    def recalibrate(self, images):
        """Re-estimates BatchNorm statistics on `images` (unless the backbone or its BatchNorm is frozen)."""
        if self.frozen or self.bn_frozen:
            return
        batches = tf.data.Dataset.from_tensor_slices(images).shuffle(len(images), seed=self.config.seed).batch(
            self.config.batch_size)
        self.sync.recalibrate(batches)

    def run_epochs(self, epochs, images, labels, sample_ids, description, refresh=None):
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
                x, y, ids = self.algorithm.extend_batch(images[batch], labels[batch], sample_ids[batch])
                loss = self._train_step(tf.constant(x, tf.float32), tf.constant(ids, tf.int32),
                                        tf.constant(y, tf.int64))
                progress.update(step + 1, [("loss", float(loss))])
                interrupts.raise_if_interrupted()  # A Ctrl-C that TensorFlow swallowed during the step.

    def head_predict(self, embeddings, sample_ids=None, batch_size=1024):
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

    def freeze_backbone(self):
        """Only the head trains from now on; BatchNorm statistics stay as they are."""
        self.frozen = True
        self.backbone.trainable = False
        self.retrace()

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

    def _begin_task(self, index):
        config = self.config
        if config.freeze_backbone_after and index == config.freeze_backbone_after:
            self.freeze_backbone()
        if index == 1 and config.freeze_batchnorm and self.uses_centers and not self.frozen:
            # BatchNorm statistics of later tasks would move every stored center at once: keep the first task's.
            for layer in center_sync.all_layers(self.backbone):
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False
            self.bn_frozen = True
            self.retrace()
        if self.teacher is not None and index > 0:  # Distil from the network as it was before this task.
            self.teacher.set_weights(self.backbone.get_weights())
            self.distill_active.assign(1.0)

    def fit(self, tasks):
        """Trains on `tasks` in order; returns the results dict (accuracy matrix, average accuracy, forgetting)."""
        config = self.config
        check_tasks(tasks, config.scenario)
        self.prepare(tasks)
        matrix, stored, start = [], [], time.time()
        for index, task in enumerate(tasks):
            description = f"{self.method}: task {index + 1}/{len(tasks)} (classes {list(map(int, task.classes))})"
            ids = np.arange(self.task_offsets[index], self.task_offsets[index + 1])
            self._begin_task(index)
            self.algorithm.begin_task(index, tasks)
            self.algorithm.train_task(index, task, ids, tasks, description)
            self.algorithm.end_task(index, task)
            matrix.append(self.evaluate(tasks, config.scenario))
            self._warn_if_not_learned(index, task, matrix[-1][index])
            stored.append(self.algorithm.stored_bytes(tasks[:index + 1]))
            logging.info("%s after task %d: accuracies %s", self.method, index + 1,
                         " ".join(f"{a:.3f}" for a in matrix[-1]))
        average, forgetting = accuracy_matrix_summary(matrix)
        results = {
            "method": self.method, "scenario": config.scenario, "benchmark": config.benchmark,
            "task_classes": [list(map(int, task.classes)) for task in tasks],
            "accuracy_matrix": matrix, "average_accuracy": average, "forgetting": forgetting,
            "average_accuracy_per_task": [accuracy_matrix_summary(matrix[:t + 1])[0] for t in range(len(matrix))],
            "stored_bytes": stored[-1], "stored_bytes_per_task": stored, "budget_centers": config.budget,
            "budget_bytes": self.budget_bytes, "seconds": round(time.time() - start, 1),
            "config": config.to_dict(),
        }
        results.update(self.algorithm.results())
        return results
