"""Keras' `train_on_batch` against the compiled step of `samples_per_class` (`compiled_train_step`).

    python bench/train_on_batch.py                 # small conv (flattened 256-d), batch 128, dense and nngk heads

`train_on_batch` makes and deletes a tf.data iterator for every batch, resets the metrics and converts the logs to
NumPy; `keras_nngk.experiments.samples_per_class.compiled_train_step` runs the model's `train_step` on the batch's
tensors in one compiled function. This trains two copies of the same model side by side, one step of each in
turn (200 steps), prints the median time per step and checks that the weights are equal bit for bit at the end.
What it does to a whole experiment: `bench/few_shot_runs.py`.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

def step_table(steps):
    import numpy as np  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tf_keras as keras  # pylint: disable=g-import-not-at-top

    import keras_nngk as kn  # pylint: disable=g-import-not-at-top
    from keras_nngk.experiments.samples_per_class import compiled_train_step  # pylint: disable=g-import-not-at-top

    def build(head, images, labels):
        keras.utils.set_random_seed(0)
        backbone = kn.backbones.get("small_conv", (28, 28, 1), 256, pooling="flatten")
        built = kn.models.nngk_classifier(backbone, 10, head=head, capacity=len(images), num_neighbours=32,
                                          sigma=0.5, knn_neighbours=1, tie="loose")
        built.train_model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", jit_compile=False)
        if built.center_head is not None:
            built.center_head.assign_centers(backbone.predict(images, verbose=0), labels)
        return built.train_model

    rng = np.random.default_rng(0)
    images = rng.uniform(size=(60, 28, 28, 1)).astype(np.float32)  # Six images per class, as at n = 6.
    labels = np.repeat(np.arange(10), 6)
    batches = rng.integers(0, len(images), size=(steps, 128))
    print(f"small conv (flattened 256-d), 60 images, batch 128, {steps} steps of each variant in turns")
    print("| head | train_on_batch ms per step (median) | compiled step ms | ratio | same weights |")
    print("|---|---|---|---|---|")
    rows = []
    for head in ("dense", "nngk"):
        keras_model, compiled_model = build(head, images, labels), build(head, images, labels)
        step = compiled_train_step(compiled_model)
        keras_times, compiled_times = [], []
        for batch in batches:
            inputs = {"image": images[batch], "sample_id": batch.astype(np.int32)}
            start = time.perf_counter()
            keras_model.train_on_batch(inputs, labels[batch])
            keras_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            step(tf.constant(inputs["image"]), tf.constant(inputs["sample_id"]), tf.constant(labels[batch]))
            compiled_times.append(time.perf_counter() - start)
        same = all(np.array_equal(a, b) for a, b in zip(keras_model.get_weights(), compiled_model.get_weights()))
        keras_ms, compiled_ms = 1e3 * np.median(keras_times[5:]), 1e3 * np.median(compiled_times[5:])
        rows.append({"head": head, "train_on_batch_ms": keras_ms, "compiled_ms": compiled_ms, "same_weights": same})
        print(f"| {head} | {keras_ms:.1f} | {compiled_ms:.1f} | {compiled_ms / keras_ms:.2f} | {same} |")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--json", help="also write the measurements here")
    args = parser.parse_args()
    print(time.strftime("%Y-%m-%d"))
    output = {"args": vars(args), "steps": step_table(args.steps)}
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(output, handle, indent=1)


if __name__ == "__main__":
    main()
