"""Seconds of a samples-per-class run with the experiment loop as it was and as it is (bench/README.md).

    python bench/few_shot_runs.py                  # n = 6, dense + nngk, seed 0, 2 runs per variant

Variants, each run in a fresh process, the variants in turns:
- `before`: Keras' own input pipelines (`model.predict` on arrays, datasets with default options: tf.data's
  autotuning thread, whose sleep each iterator's deletion waits for) and `train_on_batch` for every step, the loop
  as it was before 2026-12-01;
- `pipelines`: `kn.utils.pipelines` (no autotuning thread), still `train_on_batch`;
- `now`: the pipelines and `compiled_train_step` (one compiled function around the model's `train_step`).
Prints each head's seconds (the `seconds` of `samples_per_class.json`: training, validation and test) and test
accuracy, which must be the same bits in every variant.
"""

import argparse
import json
import os
import time

import fresh_processes  # bench/fresh_processes.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ("before", "pipelines", "now")

CHILD = """
import importlib, json, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, {root!r})
from keras_nngk.utils import pipelines
spc = importlib.import_module("keras_nngk.experiments.samples_per_class")  # The package exports the function.
if {variant!r} == "before":  # Keras' own pipelines, with the autotuning thread.
    pipelines.predict = lambda model, inputs, batch_size=32, verbose=0: model.predict(inputs, batch_size=batch_size,
                                                                                      verbose=verbose)
    pipelines.without_autotune_thread = lambda dataset: dataset
if {variant!r} in ("before", "pipelines"):  # Keras' train_on_batch.
    spc.compiled_train_step = lambda model: lambda images, ids, labels: model.train_on_batch(
        {{"image": images, "sample_id": ids}}, labels)
config = spc.FewShotConfig(dataset={dataset!r}, examples_per_class=({n!r},), heads=("dense", "nngk"),
                           seeds=({seed!r},), max_test=2000)
results = spc.samples_per_class(config, {workdir!r}, verbose=0)
print(json.dumps([row for row in results["runs"] if "seconds" in row]))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--n", type=int, default=6, help="images per class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=int, default=2, help="runs per variant")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--json", help="also write the runs here")
    args = parser.parse_args()
    results = fresh_processes.run_in_turns(args.variants, args.runs, lambda variant, folder: CHILD.format(
        root=ROOT, variant=variant, dataset=args.dataset, n=args.n, seed=args.seed, workdir=folder))
    print(f"samples_per_class, {args.dataset}, n = {args.n}, seed {args.seed}, max_test 2000; {args.runs} runs per "
          f"variant in turns, {time.strftime('%Y-%m-%d')}")
    print("| variant | dense s (each run) | nngk s (each run) | dense / nngk test accuracy |")
    print("|---|---|---|---|")
    for variant, runs in results.items():
        rows = [row for run in runs for row in run]
        seconds = [", ".join(f"{row['seconds']:.1f}" for row in rows if row["head"] == head)
                   for head in ("dense", "nngk")]
        accuracies = ["/".join(sorted({f"{row['test_accuracy']:.4f}" for row in rows if row["head"] == head}))
                      for head in ("dense", "nngk")]
        print(f"| {variant} | {seconds[0]} | {seconds[1]} | {accuracies[0]} / {accuracies[1]} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "runs": results}, handle, indent=1)


if __name__ == "__main__":
    main()
