"""Whole training runs: the dense head against NNGK per center-refresh mode, what a user waits for.

    python bench/epoch.py                                   # Fashion-MNIST, 60,000 centers, 2 epochs, 3 rounds
    python bench/epoch.py --dataset=mnist5k --epochs=2 --rounds=2 --variants dense training

Each variant is one `kn.training.fit` run (the same as `python -m trainers.fit`): the training steps, the center
refreshes and BatchNorm recalibrations its refresh mode does, and the held-out pass after every epoch (the same for
every head). First an untimed warm-up (one small dense run: the data set's first load and TensorFlow's start-up
would otherwise count against the first variant). The variants take turns in each round, so machine noise hits them
alike; the table gives the median
training time over the rounds, its ratio to the dense run of the same round (median, min and max over the rounds),
the same for the "middle" epochs (neither the first, which traces the step, nor the last, which ends with the final
refresh: what each further epoch costs; runs of 3 epochs or more), and the test accuracy of each run.

Variants: `dense` (softmax head; BatchNorm recalibrated once at the end), `embed:N` (NNGK, an embedding pass over
the training images every N epochs, each after a recalibration; plus one at the start and, when the last epoch did
not refresh, at the end), `training` (NNGK, centers written from the training steps; embedding passes at the start
and the end only). `@<search>` picks the neighbour search (default: auto), e.g. `training@faiss-ivf`: a faiss IVF
index whose trained quantizer is kept across refreshes, so rebuilding it after every epoch only adds the centers.
`+candM/E` (NNGK variants) ranks M cached candidates per training sample, lists rebuilt every E epochs (default 1):
`--candidates=M --candidates_every=E`, e.g. `training+cand64/2`. `training~rowmajor`: `training` with the steps'
search reading the `(N, d)` centers, as before the head kept their transposed copy (`CenterLayer._transposed_cache`).
`~stale` (with a faiss IVF search, e.g. `training@faiss-ivf~stale`): the index holds each epoch's starting centers
until the epoch's end, as before it followed the steps' writes.
"""

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import keras_nngk as kn  # noqa: E402


def variant_config(variant, dataset, epochs, seed):
    """`dense`, `embed:N` or `training`, optionally `+candM/E` and `@<search>` (e.g. `training+cand64/2`)."""
    name, _, search = variant.partition("@")
    name, search = name.removesuffix("~rowmajor"), search.removesuffix("~stale")
    name, _, listed = name.partition("+cand")
    candidates, _, every = listed.partition("/")
    options = {"epochs": epochs, "seed": seed, "search": search or None, "candidates": int(candidates or 0),
               "candidates_every": int(every or 1)}
    if name == "dense":
        return kn.training.Config.for_dataset(dataset, head="dense", **options)
    if name == "training":
        return kn.training.Config.for_dataset(dataset, head="nngk", refresh_mode="training", **options)
    if name.startswith("embed:"):
        return kn.training.Config.for_dataset(dataset, head="nngk", refresh_mode="embed",
                                              refresh_every=int(name.split(":")[1]), **options)
    raise ValueError(f"Unknown variant {variant!r}; valid: dense, embed:N, training, each optionally +candM[/E] and "
                     "@<search>.")


EPOCH_TIMES = []  # (start, end) of each epoch of the current run, recorded by the HistoryLog callback.


def _timed(method, index):
    def wrapped(self, epoch, logs=None):
        if index == 0:
            EPOCH_TIMES.append([time.perf_counter(), None])
        result = method(self, epoch, logs)
        if index == 1:
            EPOCH_TIMES[-1][1] = time.perf_counter()
        return result
    return wrapped


def time_epochs():
    """Times every epoch from HistoryLog's epoch start to its epoch end: the training steps and what the callbacks
    before it do at the epoch's end (a refresh, the held-out pass); a refresh at an epoch's start comes before."""
    log = kn.training.callbacks.HistoryLog
    log.on_epoch_begin = _timed(log.on_epoch_begin, 0)
    log.on_epoch_end = _timed(log.on_epoch_end, 1)


@contextlib.contextmanager
def as_before(variant):
    """`~rowmajor`: the training steps' search reads the `(N, d)` centers instead of the heads' transposed copy;
    `~stale`: a faiss index does not follow the steps' writes (rebuilt at each epoch's end only)."""
    switches = {"~rowmajor": "_transposed_cache_in_graph", "~stale": "_index_follows_writes"}
    originals = {name: getattr(kn.layers.CenterLayer, name) for name in switches.values()}
    for suffix, name in switches.items():
        if variant.endswith(suffix):
            setattr(kn.layers.CenterLayer, name, lambda self: False)
    try:
        yield
    finally:
        for name, method in originals.items():
            setattr(kn.layers.CenterLayer, name, method)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="the same seed in every run (data order, weights)")
    parser.add_argument("--variants", nargs="+", default=["dense", "embed:1", "embed:2", "training"],
                        help="dense first")
    parser.add_argument("--json", help="also write the runs' times and accuracies here")
    args = parser.parse_args()
    configs = {variant: variant_config(variant, args.dataset, args.epochs, args.seed) for variant in args.variants}
    time_epochs()
    runs = {variant: [] for variant in args.variants}
    warm_up = kn.training.Config.for_dataset(args.dataset, head="dense", epochs=1, examples_per_class=20)
    with tempfile.TemporaryDirectory() as workdir:
        kn.training.fit(warm_up, workdir, verbose=0)
    for round_number in range(args.rounds):
        for variant, config in configs.items():
            EPOCH_TIMES.clear()
            with tempfile.TemporaryDirectory() as workdir, as_before(variant):
                results = kn.training.fit(config, workdir, verbose=0)
            epochs = [end - start for start, end in EPOCH_TIMES]
            runs[variant].append({"seconds": results["train_seconds"], "accuracy": results["test_accuracy"],
                                  "epoch_seconds": epochs, "middle_epoch_seconds": float(np.median(
                                      epochs[1:-1])) if len(epochs) > 2 else None})
            print(f"round {round_number + 1}/{args.rounds} {variant}: {results['train_seconds']:.1f} s, "
                  f"accuracy {results['test_accuracy']:.4f}", file=sys.stderr, flush=True)
    data = kn.data.load(args.dataset)
    print(f"{args.dataset}, {data.num_train} training images (= centers), small conv, 64-d, k = 32, batch 128, "
          f"{args.epochs} epochs per run, seed {args.seed}; {args.rounds} rounds, variants in turns")
    print("| variant | train s (median) | s per epoch | / dense (median) | / dense (min-max) | middle epoch s | "
          "/ dense (median) | / dense (min-max) | test accuracy |")
    print("|---|---|---|---|---|---|---|---|---|")
    dense = runs.get("dense")
    for variant, values in runs.items():
        seconds = np.array([run["seconds"] for run in values])
        accuracies = [run["accuracy"] for run in values]
        middle = np.array([np.nan if run["middle_epoch_seconds"] is None else run["middle_epoch_seconds"]
                           for run in values])
        ratio = spread = middle_ratio = middle_spread = ""
        if dense is not None:
            ratios = seconds / np.array([run["seconds"] for run in dense])
            ratio, spread = f"{np.median(ratios):.2f}", f"{ratios.min():.2f}-{ratios.max():.2f}"
            if not np.isnan(middle).any():
                ratios = middle / np.array([run["middle_epoch_seconds"] for run in dense])
                middle_ratio, middle_spread = f"{np.median(ratios):.2f}", f"{ratios.min():.2f}-{ratios.max():.2f}"
        print(f"| {variant} | {np.median(seconds):.1f} | {np.median(seconds) / args.epochs:.1f} | {ratio} | {spread} | "
              f"{np.median(middle):.1f} | {middle_ratio} | {middle_spread} | {100 * np.mean(accuracies):.2f}% |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "runs": runs}, handle, indent=1)


if __name__ == "__main__":
    main()
