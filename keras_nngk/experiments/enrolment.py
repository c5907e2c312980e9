"""On-device enrolment, measured: a network trained on some classes learns new ones from n images each, in TFLite.

`enrolment(config, workdir)` trains (or takes) a run on the known classes only,
exports it as an enrollable TFLite model, and for every seed and n enrols n
training images of each new class into a fresh interpreter, then measures the
accuracy over all classes on test images. Beside it:

- the same enrolment in Keras (`add_centers` on an NNGK head with the same table):
  predictions must agree (argmax agreement reported);
- the alternative an app developer would otherwise have: a softmax layer over the
  same frozen embeddings, fitted on n images of every class (the known classes'
  n images too: without them softmax forgets them).

Writes `enrolment.json` and `enrolment.png` (accuracy against n).
"""

import dataclasses
import os
import time

import numpy as np
import tf_keras as keras
from absl import logging

from keras_nngk import data as data_lib
from keras_nngk import layers, metrics, plots
from keras_nngk.experiments.common import mean_spread
from keras_nngk.export import enrolment as enrolment_lib
from keras_nngk.utils import pipelines
from keras_nngk.utils.files import write_json_atomically


@dataclasses.dataclass
class EnrolmentConfig:
    dataset: str = "fashion_mnist"
    known: tuple = (0, 1, 2, 3, 4)  # Classes the network trains on.
    new: tuple = (5, 6, 7, 8, 9)  # Classes enrolled on the device.
    shots: tuple = (1, 5, 20)  # Images enrolled per new class.
    # Exported classifiers: "kernel" (eq. 7 with the head's k), "kernel-k<N>" (k = N), "class_mean".
    variants: tuple = ("kernel", "kernel-k5", "kernel-k1", "class_mean")
    seeds: tuple = (0, 1, 2)
    epochs: int = 5  # Of the base run (when none is given).
    max_test: int = 0  # Test images of the known and new classes evaluated (0: all).
    softmax_steps: int = 300  # Full-batch Adam steps of the softmax alternative.


def _base_run(config, workdir, verbose):
    from keras_nngk.training import Config, fit  # pylint: disable=g-import-not-at-top
    run = os.path.join(workdir, "base")
    settings = dict(task="retrieval", train_classes=",".join(map(str, config.known)),
                    test_classes=",".join(map(str, config.new)), epochs=config.epochs)
    if not os.path.isfile(os.path.join(run, "metrics.json")):
        fit(Config.for_dataset(config.dataset, **settings), run, verbose=verbose)
    return run


def _softmax_accuracy(train_embeddings, train_labels, test_embeddings, test_labels, num_classes, steps, seed):
    """A softmax layer on frozen embeddings, fitted full-batch with Adam on the enrolled images."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input(train_embeddings.shape[1:]), keras.layers.Dense(num_classes,
                                                                                          activation="softmax")])
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", jit_compile=False)
    model.fit(train_embeddings, train_labels, batch_size=len(train_labels), epochs=steps, verbose=0)
    return metrics.accuracy(pipelines.predict(model, test_embeddings, batch_size=1024), test_labels)


def _keras_side(head, table, new_embeddings, new_ids, test_embeddings, rule, k, capacity, num_classes):
    """The same enrolment outside TFLite: an NNGK head (`add_centers`) for the kernel rule, NumPy class means."""
    old = head.num_centers
    if rule == "class_mean":
        centers = np.concatenate([table["centers"][:old], new_embeddings])
        labels = np.concatenate([table["label_rows"][:old].argmax(1), new_ids])
        means = np.stack([centers[labels == c].mean(0) for c in range(num_classes)])
        return ((test_embeddings[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    keras_head = layers.NNGKClassifier(num_classes, num_neighbours=k, sigma=float(head.sigma.numpy()),
                                       capacity=capacity)
    keras_head.assign_centers(table["centers"][:old], table["label_rows"][:old])
    keras_head.log_weights[:old].assign(table["log_weights"][:old])
    keras_head.add_centers(new_embeddings, new_ids, sample_ids=np.arange(len(new_ids)) + 10 ** 6)
    return keras_head(test_embeddings).numpy().argmax(1)


def enrolment(config, workdir, run=None, verbose=1):
    """Runs the experiment (see the module doc); returns and writes the results."""
    from keras_nngk.training import run as run_lib  # pylint: disable=g-import-not-at-top
    os.makedirs(workdir, exist_ok=True)
    run = run or _base_run(config, workdir, verbose)
    run_config, model, backbone = run_lib.load_run(run)
    head = next(layer for layer in model.layers if isinstance(layer, layers.NNGKClassifier))
    known, new = list(config.known), list(config.new)
    num_classes = len(known) + len(new)
    capacity = head.num_centers + max(config.shots) * len(new)
    arrays = data_lib.load_arrays(run_config.dataset)
    ids = {label: index for index, label in enumerate(known + new)}  # The run's head numbers the known classes 0..
    keep = np.isin(arrays.y_test, known + new)
    test_x, test_y = arrays.x_test[keep], np.array([ids[label] for label in arrays.y_test[keep]])
    if config.max_test:
        test_x, test_y = test_x[:config.max_test], test_y[:config.max_test]
    test_embeddings = pipelines.predict(backbone, test_x, batch_size=512)
    is_new = test_y >= len(known)
    rows, softmax_cache, model_bytes = [], {}, {}
    progress = keras.utils.Progbar(len(config.variants) * len(config.seeds) * len(config.shots), verbose=verbose)
    for variant in config.variants:
        rule = "class_mean" if variant == "class_mean" else "kernel"
        k = int(variant.split("-k")[1]) if "-k" in variant else head.num_neighbours
        path = enrolment_lib.to_enrollable_tflite(backbone, head, os.path.join(workdir, f"model_{variant}.tflite"),
                                                  capacity=capacity, max_classes=num_classes, num_neighbours=k,
                                                  rule=rule)
        content = open(path, "rb").read()
        model_bytes[variant] = len(content)
        for seed in config.seeds:
            for n in config.shots:
                rng = np.random.default_rng(seed)
                chosen = {label: rng.choice(np.flatnonzero(arrays.y_train == label), n, replace=False)
                          for label in known + new}
                new_images = np.concatenate([arrays.x_train[chosen[label]] for label in new])
                new_ids = np.repeat([ids[label] for label in new], n)
                lite = enrolment_lib.EnrollableTFLiteModel(content)
                start = time.perf_counter()
                lite.enrol(new_images, new_ids)
                seconds = time.perf_counter() - start
                predicted = lite.classify(test_x).argmax(1)
                keras_predicted = _keras_side(head, lite.table(), pipelines.predict(backbone, new_images), new_ids,
                                              test_embeddings, rule, k, capacity, num_classes)
                if (seed, n) not in softmax_cache:  # The softmax alternative: n images of every class.
                    all_chosen = np.concatenate([chosen[label] for label in known + new])
                    softmax_cache[seed, n] = _softmax_accuracy(
                        pipelines.predict(backbone, arrays.x_train[all_chosen]),
                        np.array([ids[label] for label in arrays.y_train[all_chosen]]), test_embeddings, test_y,
                        num_classes, config.softmax_steps, seed)
                rows.append({"variant": variant, "k": k, "seed": seed, "n": n,
                             "accuracy": float(np.mean(predicted == test_y)),
                             "accuracy_new": float(np.mean(predicted[is_new] == test_y[is_new])),
                             "accuracy_known": float(np.mean(predicted[~is_new] == test_y[~is_new])),
                             "keras_agreement": float(np.mean(keras_predicted == predicted)),
                             "softmax_accuracy": softmax_cache[seed, n],
                             "enrol_ms_per_image": 1e3 * seconds / len(new_ids)})
                logging.info("%s seed %d, n=%d: NNGK enrolment %.4f (new %.4f), softmax %.4f", variant, seed, n,
                             rows[-1]["accuracy"], rows[-1]["accuracy_new"], softmax_cache[seed, n])
                progress.add(1)
    groups = {}
    for row in rows:
        for key in ("accuracy", "accuracy_new", "accuracy_known", "softmax_accuracy", "keras_agreement"):
            groups.setdefault(f"{key}@{row['variant']}", {}).setdefault(str(row["n"]), []).append(row[key])
    results = {"config": dataclasses.asdict(config), "run": run, "num_test": int(len(test_y)),
               "base_run": {"dataset": run_config.dataset, "epochs": run_config.epochs, "centers": head.num_centers,
                            "sigma": float(head.sigma.numpy()), "num_neighbours": head.num_neighbours},
               "bytes_per_enrolled_example": enrolment_lib.bytes_per_example(head.embedding_dim, num_classes),
               "model_bytes": model_bytes, "runs": rows, "table": mean_spread(groups)}
    write_json_atomically(os.path.join(workdir, "enrolment.json"), results)
    plots.plot_enrolment(results["table"], os.path.join(workdir, "enrolment.png"), run_config.dataset)
    return results


def format_enrolment_table(results):
    """Markdown: one row per (exported classifier, n), mean ± spread over seeds."""
    table = results["table"]
    lines = ["| exported classifier | n per new class | all classes | new classes | known classes | softmax on frozen "
             "embeddings | TFLite = Keras/NumPy |", "|---|---|---|---|---|---|---|"]
    variants = [key.split("@", 1)[1] for key in table if key.startswith("accuracy@")]

    def cell(key, n):
        return f"{100 * table[key][n][0]:.1f} ± {100 * table[key][n][1]:.1f}"

    for variant in variants:
        for n in sorted(table[f"accuracy@{variant}"], key=int):
            lines.append(f"| {variant} | {n} | {cell(f'accuracy@{variant}', n)} | {cell(f'accuracy_new@{variant}', n)}"
                         f" | {cell(f'accuracy_known@{variant}', n)} | {cell(f'softmax_accuracy@{variant}', n)} | "
                         f"{100 * table[f'keras_agreement@{variant}'][n][0]:.2f}% |")
    return "\n".join(lines)
