"""Keras' `train_on_batch` against the compiled step of `samples_per_class` (`compiled_train_step`), and what that
does to a samples-per-class experiment.

    python bench/train_on_batch.py                 # small conv (flattened 256-d), batch 128, dense and nngk heads
    python bench/train_on_batch.py --experiment    # also samples_per_class (n = 6, dense + nngk, seed 0)

`train_on_batch` makes and deletes a tf.data iterator for every batch, resets the metrics and converts the logs to
NumPy; `keras_nngk.experiments.samples_per_class.compiled_train_step` runs the model's `train_step` on the batch's
tensors in one compiled function. Part 1 trains two copies of the same model side by side, one step of each in
turn (200 steps), prints the median time per step and checks that the weights are equal bit for bit at the end.
Part 2 runs `samples_per_class` with `train_on_batch` restored (`train_on_batch`) and as it is (`compiled`), each
run in a fresh process, the variants in turns, and prints each head's seconds and test accuracy.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CHILD = """
import importlib, json, sys
sys.path.insert(0, {root!r})
spc = importlib.import_module("keras_nngk.experiments.samples_per_class")  # The package exports the function.
if {train_on_batch!r}:  # Keras' train_on_batch, as before 2026-12-01.
    spc.compiled_train_step = lambda model: lambda images, ids, labels: model.train_on_batch(
        {{"image": images, "sample_id": ids}}, labels)
config = spc.FewShotConfig(dataset={dataset!r}, examples_per_class=(6,), heads=("dense", "nngk"), seeds=({seed!r},),
                           max_test=2000)
results = spc.samples_per_class(config, {workdir!r}, verbose=0)
print(json.dumps([row for row in results["runs"] if "seconds" in row]))
"""


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


def experiment_table(dataset, runs, seed):
    results = {"train_on_batch": [], "compiled": []}
    for number in range(runs):
        for variant in results:
            with tempfile.TemporaryDirectory() as workdir:
                code = CHILD.format(root=ROOT, train_on_batch=variant == "train_on_batch", dataset=dataset,
                                    seed=seed, workdir=workdir)
                output = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True,
                                        check=True).stdout
            results[variant].append(json.loads(output.strip().splitlines()[-1]))
            print(f"run {number + 1}/{runs} {variant}: {results[variant][-1]}", file=sys.stderr, flush=True)
    print(f"\nsamples_per_class, {dataset}, n = 6, seed {seed}, max_test 2000; {runs} runs per variant in turns")
    print("| variant | dense s (each run) | nngk s (each run) | dense / nngk test accuracy |")
    print("|---|---|---|---|")
    for variant, values in results.items():
        cells = [", ".join(f"{row['seconds']:.1f}" for run in values for row in run if row["head"] == head)
                 for head in ("dense", "nngk")]
        accuracies = ["/".join(sorted({f"{row['test_accuracy']:.4f}" for run in values for row in run
                                       if row["head"] == head})) for head in ("dense", "nngk")]
        print(f"| {variant} | {cells[0]} | {cells[1]} | {accuracies[0]} / {accuracies[1]} |")
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--experiment", action="store_true", help="also time samples_per_class in fresh processes")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--runs", type=int, default=2, help="experiment runs per variant")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the measurements here")
    args = parser.parse_args()
    print(time.strftime("%Y-%m-%d"))
    output = {"args": vars(args), "steps": step_table(args.steps)}
    if args.experiment:
        output["experiment"] = experiment_table(args.dataset, args.runs, args.seed)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(output, handle, indent=1)


if __name__ == "__main__":
    main()
