"""Where a whole `trainers.fit` run spends its time: the training steps of each epoch and every callback hook.

    python bench/callback_times.py                # fashion_mnist preset, 3 epochs, dense then nngk

Each head runs `kn.training.fit` with the data set's preset (what `python -m trainers.fit` does). "steps" is an
epoch from its start to its end before any other callback's `on_epoch_end` (the training steps and the input
pipeline); each other row is one callback's hook, summed over the run.
"""

import argparse
import collections
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tf_keras as keras  # noqa: E402
from tf_keras.src.callbacks import CallbackList  # noqa: E402

import keras_nngk as kn  # noqa: E402

HOOKS = ("on_train_begin", "on_epoch_begin", "on_epoch_end", "on_train_end")


class EpochSteps(keras.callbacks.Callback):
    """First in the list: an epoch's time before the other callbacks' `on_epoch_end`."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def timed_run(head, dataset, epochs, workdir):
    """`{(hook, callback): seconds}` and the per-epoch step times of one run."""
    hook_seconds = collections.defaultdict(float)
    steps = EpochSteps()
    originals = {name: getattr(CallbackList, name) for name in HOOKS}
    original_fit = keras.Model.fit

    def timed(name):
        def hook(self, *args, **kwargs):
            for callback in self.callbacks:
                start = time.perf_counter()
                getattr(callback, name)(*args, **kwargs)
                hook_seconds[(name, type(callback).__name__)] += time.perf_counter() - start
        return hook

    def fit(self, *args, callbacks=None, **kwargs):
        return original_fit(self, *args, callbacks=[steps] + list(callbacks or []), **kwargs)

    try:
        for name in HOOKS:
            setattr(CallbackList, name, timed(name))
        keras.Model.fit = fit
        start = time.perf_counter()
        kn.training.fit(kn.training.Config.for_dataset(dataset, head=head, epochs=epochs), workdir, verbose=0)
        total = time.perf_counter() - start
    finally:
        for name, original in originals.items():
            setattr(CallbackList, name, original)
        keras.Model.fit = original_fit
    return total, steps.seconds, hook_seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--heads", nargs="+", default=["dense", "nngk"])
    args = parser.parse_args()
    rows = {}
    for head in args.heads:
        workdir = tempfile.mkdtemp(prefix=f"callback_times_{head}_")
        try:
            rows[head] = timed_run(head, args.dataset, args.epochs, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"{args.dataset}, {args.epochs} epochs per run, seconds")
    print("| head | run | steps per epoch | hook (callback): seconds over the run, 0.05 s and more |")
    print("|---|---|---|---|")
    for head, (total, steps, hooks) in rows.items():
        listed = ", ".join(f"{name} ({callback}) {seconds:.2f}" for (name, callback), seconds
                           in sorted(hooks.items(), key=lambda item: -item[1])
                           if seconds >= 0.05 and callback != "EpochSteps")
        print(f"| {head} | {total:.1f} | {' / '.join(f'{s:.1f}' for s in steps)} | {listed} |")


if __name__ == "__main__":
    main()
