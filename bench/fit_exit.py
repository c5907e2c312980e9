"""How long `model.fit` takes to return after its last callback, with and without tf.data's autotuning thread.

    python bench/fit_exit.py                       # dense head, 1 epoch of Fashion-MNIST, 4 runs per variant
    python bench/fit_exit.py --head=nngk --runs=2

Deleting a tf.data iterator waits for the pipeline's autotuning thread to finish its current sleep, whose period
doubles up to a minute (TensorFlow 2.21); Keras deletes the training iterator when `fit` returns. The run pipelines
of `keras_nngk.training.run` are built without that thread (`without_autotune_thread`); `--variants autotune`
builds them with it, as before. Each run is `kn.training.fit` in a fresh process (the stall depends on where the
thread's period stands when training ends, so it varies from run to run); the variants take turns. Prints, per run,
the seconds from the end of the last callback (`on_train_end`) to `fit`'s return and the run's `train_seconds`.
"""

import argparse
import json
import os
import time

import fresh_processes  # bench/fresh_processes.py

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = """
import json, sys, tempfile, time
sys.path.insert(0, {root!r})
import tf_keras as keras
from tf_keras.src import callbacks as keras_callbacks
import keras_nngk as kn
from keras_nngk.training import run
if {autotune!r}:
    run.without_autotune_thread = lambda dataset: dataset  # The pipelines as they were before.
ended = {{}}
on_train_end = keras_callbacks.CallbackList.on_train_end
def timed_on_train_end(self, *args, **kwargs):
    result = on_train_end(self, *args, **kwargs)
    ended["at"] = time.perf_counter()
    return result
keras_callbacks.CallbackList.on_train_end = timed_on_train_end
fit = keras.Model.fit
def timed_fit(self, *args, **kwargs):
    result = fit(self, *args, **kwargs)
    ended["exit"] = time.perf_counter() - ended["at"]
    return result
keras.Model.fit = timed_fit
config = kn.training.Config.for_dataset({dataset!r}, head={head!r}, epochs={epochs!r})
with tempfile.TemporaryDirectory() as workdir:
    results = kn.training.fit(config, workdir, verbose=0)
print(json.dumps({{"exit_seconds": ended["exit"], "train_seconds": results["train_seconds"]}}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--head", default="dense")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--runs", type=int, default=4, help="runs per variant")
    parser.add_argument("--variants", nargs="+", default=["autotune", "no-autotune-thread"])
    parser.add_argument("--json", help="also write the runs here")
    args = parser.parse_args()
    runs = fresh_processes.run_in_turns(args.variants, args.runs, lambda variant, folder: CHILD.format(
        root=ROOT, autotune=variant == "autotune", dataset=args.dataset, head=args.head, epochs=args.epochs))
    print(f"{args.dataset}, {args.head} head, {args.epochs} epoch(s) per run, {args.runs} runs per variant in turns, "
          f"{time.strftime('%Y-%m-%d')}")
    print("| variant | fit returned after the last callback, s (each run) | train s (each run) |")
    print("|---|---|---|")
    for variant, values in runs.items():
        exits = ", ".join(f"{run['exit_seconds']:.1f}" for run in values)
        trains = ", ".join(f"{run['train_seconds']:.1f}" for run in values)
        print(f"| {variant} | {exits} | {trains} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "runs": runs}, handle, indent=1)


if __name__ == "__main__":
    main()
