"""Accuracy against the number of training images per class (the review's few-shot comparison).

`samples_per_class(...)` trains every head on the same backbone, seeds and step
budget for each number n of training images per class and reports the test
accuracy (mean and spread over seeds), with a raw-pixel 1-NN floor.
"""

import dataclasses
import math
import os
import time

import numpy as np
import tensorflow as tf
import tf_keras as keras
from absl import logging

from keras_nngk import backbones, layers, metrics, models, plots
from keras_nngk import data as data_lib
from keras_nngk.experiments.common import mean_spread
from keras_nngk.training import center_sync, sparse_adam
from keras_nngk.utils import interrupts, pipelines
from keras_nngk.utils.checks import check_positive_float, check_positive_int
from keras_nngk.utils.files import write_json_atomically

HEADS = ("dense", "knn", "nngk", "impostor")


@dataclasses.dataclass
class FewShotConfig:
    """Settings shared by every head and every n (same budget for all)."""

    dataset: str = "fashion_mnist"
    examples_per_class: tuple = (1, 3, 6, 10, 30, 100, 0)  # 0: all.
    heads: tuple = HEADS
    seeds: tuple = (0, 1, 2)
    steps: int = 600  # Optimizer steps per run, the same at every n.
    eval_every: int = 50  # Validation accuracy is measured every this many steps; the best step is kept.
    validation_per_class: int = 20  # Validation images per class, drawn outside the training subset.
    batch_size: int = 128
    learning_rate: float = 1e-3
    # Decoupled weight decay (Adam's `weight_decay`, AdamW) per step on every weight of the backbone and the dense
    # and auxiliary classifiers, every head alike; not on the centers, the kernel width or the per-center weights.
    weight_decay: float = 0.0
    embedding_dim: int = 256  # With the flattened map: 48.4 vs 46.1% at n = 1 for 64 (README "Embedding quality").
    num_neighbours: int = 32
    knn_neighbours: int = 1
    sigma: float = 0.5  # Not Config.sigma (1.0): the value the README table was measured with (see README).
    learn_sigma: bool = True
    # nngk/impostor: "none", or set the width at every refresh from the centers' distances (KernelCenterLayer.
    # sigma_from_centers: "nearest" or "neighbours", times `sigma_scale`); needs learn_sigma=False.
    sigma_rule: str = "none"
    sigma_scale: float = 1.0
    sample_weights: bool = True  # nngk: learn one importance weight per center (w_i of eq. 7).
    backbone: str = "small_conv"
    # small_conv's "flatten" or "avg" (keras_nngk.backbones.POOLINGS): the spatial embedding learns from few images
    # what the pooled one cannot (Fashion-MNIST n = 6: NNGK 66.9 vs 60.1%, softmax 66.6 vs 62.3%; README).
    pooling: str = "flatten"
    augment: str = "none"  # Training batches, every head alike: "none" or e.g. "shift,flip" (keras_nngk.data.augment).
    # An augmented image may match its own stored (unaugmented) center: the positive that a class with one image
    # lacks under leave-one-out. Only the NNGK head uses sample ids.
    self_positive: bool = False
    auxiliary_softmax: float = 0.0  # > 0: nngk/impostor also train a softmax classifier, this weight on its loss.
    max_test: int = 0  # Evaluate on the first this many test images (0: all).
    # nngk: re-embed the centers every this many steps (0: every epoch of the subset, at least every 10 steps).
    refresh_every: int = 0
    # Only these classes of the data set, relabelled 0, 1, ... in this order (empty: all): e.g. the classes that a
    # network given as `weights` was not trained on.
    classes: tuple = ()
    # A local weights file the backbone of every head starts from (e.g. a run's backbone.keras); "": from scratch.
    weights: str = ""
    # Also validate before the first step (step 0), as a candidate for the best step: a trained network's embedding
    # may already serve the nearest-neighbour heads, which need no trained parameter to answer.
    eval_at_start: bool = False

    def validate(self):
        unknown = [head for head in self.heads if head not in HEADS]
        if unknown:
            raise ValueError(f"Unknown head {unknown[0]!r}; valid: {', '.join(HEADS)}. Received: heads={self.heads}")
        for n in self.examples_per_class:
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ValueError("`examples_per_class` must be non-negative integers (0: all). "
                                 f"Received: {self.examples_per_class}")
        if data_lib.augment.parse(self.augment) is None:
            raise ValueError("`augment` must be 'none' or a set such as 'shift,flip' here ('auto' is a data set's "
                             f"default in trainers.fit). Received: augment={self.augment!r}")
        backbones.check_pooling(self.backbone, self.pooling)
        for name in ("steps", "eval_every", "batch_size", "validation_per_class"):
            check_positive_int(name, getattr(self, name))
        if isinstance(self.refresh_every, bool) or not isinstance(self.refresh_every, int) or self.refresh_every < 0:
            raise ValueError("`refresh_every` must be a non-negative integer (0: every epoch of the subset, at least "
                             f"every 10 steps). Received: refresh_every={self.refresh_every!r}")
        if isinstance(self.learning_rate, bool) or not isinstance(self.learning_rate, (int, float)) or not (
                math.isfinite(self.learning_rate) and self.learning_rate >= 0):
            raise ValueError("`learning_rate` must be a non-negative number (0 trains nothing). "
                             f"Received: learning_rate={self.learning_rate!r}")
        if isinstance(self.weight_decay, bool) or not isinstance(self.weight_decay, (int, float)) or not (
                math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError("`weight_decay` must be a non-negative number (0: none). "
                             f"Received: weight_decay={self.weight_decay!r}")
        if self.sigma_rule not in ("none",) + layers.kernel_layer.SIGMA_RULES:
            raise ValueError(f"Unknown sigma rule {self.sigma_rule!r}; valid: none, "
                             f"{', '.join(layers.kernel_layer.SIGMA_RULES)}. Received: sigma_rule={self.sigma_rule!r}")
        if self.sigma_rule != "none" and self.learn_sigma:
            raise ValueError("A sigma rule sets the kernel width at every refresh: turn off learning it "
                             f"(learn_sigma=False, --nolearn_sigma). Received: sigma_rule={self.sigma_rule!r}, "
                             "learn_sigma=True")
        check_positive_float("sigma_scale", self.sigma_scale)
        if not self.seeds:
            raise ValueError("At least one seed is needed. Received: seeds=()")
        if self.classes and (len(set(self.classes)) != len(self.classes) or len(self.classes) < 2 or any(
                isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in self.classes)):
            raise ValueError("`classes` must be at least two distinct non-negative integers (empty: all). "
                             f"Received: classes={self.classes}")
        if self.weights:
            backbones.common.check_weights_file(self.weights)
        return self


def compiled_train_step(model):
    """`model`'s training step on one batch, `(images, sample_ids, labels) -> None`, compiled once.

    What `model.train_on_batch` computes (the same updates, bit for bit), without its per-call work: a tf.data
    iterator made and deleted for every batch (and the autotuning thread's wait at its deletion), metrics reset and
    logs converted to NumPy (`bench/train_on_batch.py`).
    """

    @tf.function
    def step(images, sample_ids, labels):
        model.train_step(({"image": images, "sample_id": sample_ids}, labels))

    return step


def make_optimizer(config, center_head=None):
    """Adam at `config.learning_rate` with `config.weight_decay` (decoupled: each step multiplies a weight by
    `1 - learning_rate * weight_decay`), not on `center_head`'s trainable variables (kernel width, per-center weights,
    an impostor's centers)."""
    optimizer = keras.optimizers.Adam(config.learning_rate, weight_decay=config.weight_decay or None)
    if config.weight_decay and center_head is not None:
        optimizer.exclude_from_weight_decay(var_list=center_head.trainable_variables)
    return optimizer


def _train_head(head, x, y, x_val, y_val, config, seed, num_classes):
    """Trains backbone + head for `config.steps` steps; returns the inference model at the best validation step."""
    keras.utils.set_random_seed(seed)
    backbone = backbones.get(config.backbone, input_shape=x.shape[1:], embedding_dim=config.embedding_dim,
                             pooling=config.pooling, weights=config.weights or None)
    built = models.nngk_classifier(backbone, num_classes, head=head, capacity=len(x),
                                   num_neighbours=min(config.num_neighbours, len(x)), sigma=config.sigma,
                                   learn_sigma=config.learn_sigma, sample_weights=config.sample_weights,
                                   knn_neighbours=config.knn_neighbours, tie="loose",
                                   auxiliary_softmax=config.auxiliary_softmax if head in ("nngk", "impostor") else 0.0)
    augment = data_lib.augment.make(config.augment, x.shape[1])
    optimizer = make_optimizer(config, built.center_head)
    built.train_model.compile(optimizer, "sparse_categorical_crossentropy", jit_compile=False)
    if head == "impostor":
        built.train_model.set_center_optimizer(sparse_adam.SparseAdam(config.learning_rate),
                                               [built.center_head.centers])
    images = tf.data.Dataset.from_tensor_slices(x).batch(256)
    sync = center_sync.CenterSync(built.center_head, backbone, batch_size=256,
                                  recalibration_images=images.shuffle(64, seed=seed).take(50))
    rng = np.random.default_rng(seed)
    steps_per_epoch = max(1, math.ceil(len(x) / config.batch_size))
    refresh_every = config.refresh_every or max(steps_per_epoch, 10)

    def refresh():
        sync.assign(images, y)
        if config.sigma_rule != "none" and head in ("nngk", "impostor"):
            width = built.center_head.sigma_from_centers(config.sigma_rule, config.sigma_scale)
            built.center_head.log_sigma.assign(math.log(width))

    if head in ("nngk", "impostor", "knn"):
        refresh()
    best = (-1.0, None, 0)

    def evaluate(step):
        nonlocal best
        if head in ("nngk", "knn"):
            refresh()
        else:
            sync.recalibrate()
        accuracy = metrics.accuracy(pipelines.predict(built.inference_model, x_val, batch_size=512), y_val)
        if accuracy > best[0]:
            best = (accuracy, built.inference_model.get_weights(), step)

    if config.eval_at_start:
        evaluate(0)
    train_step = compiled_train_step(built.train_model)
    order = np.zeros(0, np.int64)
    for step in range(1, config.steps + 1):
        if len(order) < config.batch_size:
            order = np.concatenate([order, rng.permutation(len(x))])
        batch, order = order[:config.batch_size], order[config.batch_size:]
        batch_images = x[batch] if augment is None else augment(x[batch])
        ids = np.full(len(batch), -1, np.int32) if config.self_positive else batch.astype(np.int32)
        train_step(tf.constant(batch_images, tf.float32), tf.constant(ids), tf.constant(y[batch]))
        interrupts.raise_if_interrupted()  # A Ctrl-C that TensorFlow swallowed during the step.
        if head == "nngk" and step % refresh_every == 0:
            refresh()
        if step % config.eval_every == 0 or step == config.steps:
            evaluate(step)
    built.inference_model.set_weights(best[1])
    return built.inference_model, best[2], best[0]


def embedding_model(model):
    """The backbone inside an inference model of `models.nngk_classifier` (image -> backbone -> head)."""
    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


def class_spreads(backbone, x, y, x_val, y_val):
    """`metrics.class_spread` of the training subset and of the validation images, embedded by `backbone` (None: raw
    pixels); None where a set has no class with two images (n = 1)."""

    def spread(images, labels):
        features = images.reshape(len(images), -1) if backbone is None else pipelines.predict(backbone, images, 512)
        if np.bincount(labels).max() < 2:
            return None
        return round(metrics.class_spread(features, labels), 5)

    return {"train_class_spread": spread(x, y), "validation_class_spread": spread(x_val, y_val)}


def pixel_knn_accuracy(x_train, y_train, x_test, y_test, k=1):
    """kNN majority vote on raw pixels: the floor every learned head should clear."""
    return metrics.knn_accuracy(x_train.reshape(len(x_train), -1), y_train, x_test.reshape(len(x_test), -1), y_test,
                                k)


def only_classes(arrays, classes):
    """`arrays` restricted to `classes`, relabelled 0, 1, ... in the order given."""
    missing = [c for c in classes if not np.any(arrays.y_train == c)]
    if missing:
        raise ValueError(f"Class {missing[0]} has no training image; this data set has classes 0-"
                         f"{int(arrays.y_train.max())}. Received: classes={tuple(classes)}")
    relabel = np.full(max(int(arrays.y_train.max()), max(classes)) + 1, -1, np.int64)
    relabel[list(classes)] = np.arange(len(classes))

    def keep(x, y):
        mask = np.isin(y, classes)
        return x[mask], relabel[y[mask]].astype(y.dtype)

    x_train, y_train = keep(arrays.x_train, arrays.y_train)
    x_test, y_test = keep(arrays.x_test, arrays.y_test)
    return dataclasses.replace(arrays, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                               class_names=tuple(arrays.class_names[c] for c in classes))


def samples_per_class(config, workdir, verbose=1):
    """Runs the samples-per-class experiment; writes `samples_per_class.json` and `.png` to `workdir`."""
    config.validate()
    arrays = data_lib.load_arrays(config.dataset)
    if config.classes:
        arrays = only_classes(arrays, config.classes)
    num_classes = int(arrays.y_train.max()) + 1
    x_test, y_test = arrays.x_test, arrays.y_test
    if config.max_test:
        x_test, y_test = x_test[:config.max_test], y_test[:config.max_test]
    rows = []
    os.makedirs(workdir, exist_ok=True)
    runs = [(n, seed) for n in config.examples_per_class for seed in config.seeds]
    progress = keras.utils.Progbar(len(runs) * len(config.heads), verbose=verbose)
    done = 0
    for n, seed in runs:
        # Validation images first (fixed per seed), then the training subset from the rest.
        validation = data_lib.splits.few_shot_indices(arrays.y_train, config.validation_per_class, seed=1000 + seed)
        rest = np.setdiff1d(np.arange(len(arrays.y_train)), validation)
        chosen = rest if n == 0 else rest[data_lib.splits.few_shot_indices(arrays.y_train[rest], n, seed)]
        x, y = arrays.x_train[chosen], arrays.y_train[chosen]
        x_val, y_val = arrays.x_train[validation], arrays.y_train[validation]
        label = "all" if n == 0 else n
        rows.append({"n": label, "seed": seed, "head": "pixels_1nn", "test_accuracy":
                     pixel_knn_accuracy(x, y, x_test, y_test, 1), **class_spreads(None, x, y, x_val, y_val)})
        for head in config.heads:
            start = time.time()
            model, best_step, val_accuracy = _train_head(head, x, y, x_val, y_val, config, seed, num_classes)
            accuracy = metrics.accuracy(pipelines.predict(model, x_test, batch_size=512), y_test)
            spreads = class_spreads(embedding_model(model), x, y, x_val, y_val)
            rows.append({"n": label, "seed": seed, "head": head, "test_accuracy": accuracy,
                         "validation_accuracy": val_accuracy, "best_step": best_step, **spreads,
                         "seconds": round(time.time() - start, 1)})
            logging.info("n=%s seed=%d %s: %.4f (best step %d; class spread %s on the subset, %s on validation)",
                         label, seed, head, accuracy, best_step, spreads["train_class_spread"],
                         spreads["validation_class_spread"])
            done += 1
            progress.update(done)
    table = summarise(rows)
    results = {"dataset": config.dataset, "config": dataclasses.asdict(config), "runs": rows, "table": table,
               "class_spread": {part: summarise(rows, f"{part}_class_spread") for part in ("train", "validation")}}
    write_json_atomically(os.path.join(workdir, "samples_per_class.json"), results)
    plots.plot_samples_per_class(table, os.path.join(workdir, "samples_per_class.png"), config.dataset)
    return results


def summarise(rows, key="test_accuracy"):
    """`{head: {n: [mean, std, count]}}` of `key` over seeds (rows without a value for it left out)."""
    groups = {}
    for row in rows:
        if row.get(key) is not None:
            groups.setdefault(row["head"], {}).setdefault(str(row["n"]), []).append(row[key])
    return mean_spread(groups)


def format_samples_table(table, scale=100, digits=1):
    """A Markdown table of `summarise`'s means ± stds, one row per head (accuracy in %: `scale` 100)."""
    columns = list(dict.fromkeys(n for by_n in table.values() for n in by_n))
    lines = ["| head | " + " | ".join(f"n={n}" for n in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for head, by_n in table.items():
        cells = [f"{scale * by_n[n][0]:.{digits}f} ± {scale * by_n[n][1]:.{digits}f}" if n in by_n else ""
                 for n in columns]
        lines.append(f"| {head} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
