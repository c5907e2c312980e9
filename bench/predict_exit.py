"""`model.predict` on arrays against `kn.utils.pipelines.predict` (no tf.data autotuning thread), and what that does
to a samples-per-class experiment.

    python bench/predict_exit.py                  # 2,000 and 200 images through the small conv, 10 interleaved rounds
    python bench/predict_exit.py --experiment     # also samples_per_class (n = 6, dense + nngk, seed 0)

Keras' `predict` on NumPy arrays builds a tf.data pipeline whose autotuning thread sleeps between re-tunings;
deleting the pipeline's iterator at the end of `predict` waits for that sleep to end. `pipelines.predict` feeds the
same batches through a pipeline without the thread. Part 1 times both on the same network in interleaved rounds (5
calls per round; median and slowest call) and checks that they return the same outputs bit for bit. Part 2 runs
`trainers.experiments.samples_per_class` with the library's pipelines as they are (`pipelines`) and with Keras'
own (`keras`: `pipelines.predict` = `model.predict`, the thread kept everywhere), each run in a fresh process, the
variants in turns, and prints each head's seconds and test accuracy (equal between the variants).
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
from keras_nngk.utils import pipelines
if {keras_pipelines!r}:  # Keras' own pipelines, with the autotuning thread, as before 2026-12-01.
    pipelines.predict = lambda model, inputs, batch_size=32, verbose=0: model.predict(inputs, batch_size=batch_size,
                                                                                      verbose=verbose)
    pipelines.without_autotune_thread = lambda dataset: dataset
spc = importlib.import_module("keras_nngk.experiments.samples_per_class")  # The package exports the function.
config = spc.FewShotConfig(dataset={dataset!r}, examples_per_class=(6,), heads=("dense", "nngk"), seeds=({seed!r},),
                           max_test=2000)
results = spc.samples_per_class(config, {workdir!r}, verbose=0)
print(json.dumps([row for row in results["runs"] if "seconds" in row]))
"""


def predict_table(sizes, rounds, calls):
    import numpy as np  # pylint: disable=g-import-not-at-top

    import keras_nngk as kn  # pylint: disable=g-import-not-at-top
    backbone = kn.backbones.get("small_conv", (28, 28, 1), 256, pooling="flatten")
    rng = np.random.default_rng(0)
    print(f"small conv (flattened 256-d), batch 512; {rounds} interleaved rounds of {calls} calls per variant")
    print("| images | variant | ms per call (median) | slowest call ms | same outputs |")
    print("|---|---|---|---|---|")
    rows = []
    for size in sizes:
        images = rng.uniform(size=(size, 28, 28, 1)).astype(np.float32)
        variants = {"model.predict": lambda x=images: backbone.predict(x, batch_size=512, verbose=0),
                    "pipelines.predict": lambda x=images: kn.utils.pipelines.predict(backbone, x, batch_size=512)}
        same = bool(np.array_equal(variants["model.predict"](), variants["pipelines.predict"]()))
        times = {name: [] for name in variants}
        for _ in range(rounds):
            for name, run in variants.items():
                for _ in range(calls):
                    start = time.perf_counter()
                    run()
                    times[name].append(time.perf_counter() - start)
        for name, values in times.items():
            rows.append({"images": size, "variant": name, "seconds": values})
            print(f"| {size} | {name} | {1e3 * np.median(values):.0f} | {1e3 * max(values):.0f} | {same} |")
    return rows


def experiment_table(dataset, runs, seed):
    results = {"keras": [], "pipelines": []}
    for number in range(runs):
        for variant in results:
            with tempfile.TemporaryDirectory() as workdir:
                code = CHILD.format(root=ROOT, keras_pipelines=variant == "keras", dataset=dataset, seed=seed,
                                    workdir=workdir)
                output = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True,
                                        check=True).stdout
            results[variant].append(json.loads(output.strip().splitlines()[-1]))
            print(f"run {number + 1}/{runs} {variant}: {results[variant][-1]}", file=sys.stderr, flush=True)
    print(f"\nsamples_per_class, {dataset}, n = 6, seed {seed}, max_test 2000; {runs} runs per variant in turns")
    print("| variant | dense s (each run) | nngk s (each run) | dense / nngk test accuracy |")
    print("|---|---|---|---|")
    for variant, values in results.items():
        cells = []
        for head in ("dense", "nngk"):
            cells.append(", ".join(f"{row['seconds']:.1f}" for run in values for row in run if row["head"] == head))
        accuracies = {f"{row['test_accuracy']:.4f}" for run in values for row in run if row["head"] == "dense"}, {
            f"{row['test_accuracy']:.4f}" for run in values for row in run if row["head"] == "nngk"}
        print(f"| {variant} | {cells[0]} | {cells[1]} | {'/'.join(sorted(accuracies[0]))} / "
              f"{'/'.join(sorted(accuracies[1]))} |")
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 200])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=5, help="calls per variant per round")
    parser.add_argument("--experiment", action="store_true", help="also time samples_per_class in fresh processes")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--runs", type=int, default=2, help="experiment runs per variant")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the measurements here")
    args = parser.parse_args()
    print(time.strftime("%Y-%m-%d"))
    output = {"args": vars(args), "predict": predict_table(args.sizes, args.rounds, args.calls)}
    if args.experiment:
        output["experiment"] = experiment_table(args.dataset, args.runs, args.seed)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(output, handle, indent=1)


if __name__ == "__main__":
    main()
