"""Memory: bytes per stored center (float32, float16, OPQ 8/16/32 bytes) and peak process memory of training.

    python bench/memory.py                       # N = 60,000 centers, d = 64; peak RSS of 1-epoch Fashion-MNIST runs
    python bench/memory.py --no-training         # the per-center table only

Per-center bytes are read from the layers' own variables (the center table, soft labels, mask, sample ids and
per-center weights) divided by N, and the OPQ figures include the rotation and codebooks spread over the N centers.
Peak training memory is the maximum resident set size of a `python -m trainers.fit` child process (one epoch on
Fashion-MNIST, 60,000 centers) for the dense head and the nearest-neighbour heads, measured in one run.
"""

import argparse
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

import keras_nngk as kn  # noqa: E402


def variable_bytes(variables):
    return sum(int(np.prod(v.shape)) * v.dtype.size for v in variables)


def center_table(num_centers, dimension, num_classes, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(num_classes * 10, dimension)).astype(np.float32)
    labels = rng.integers(0, num_classes * 10, num_centers)
    centers = means[labels] + 0.3 * rng.normal(size=(num_centers, dimension)).astype(np.float32)
    head = kn.layers.NNGKClassifier(num_classes, capacity=num_centers)
    head.assign_centers(centers, labels % num_classes)
    rows = []
    center_only = head.centers
    rest = [v for v in head.weights if v is not center_only]
    per_center_rest = variable_bytes(rest) / num_centers
    rows.append(("float32", dimension * 4, per_center_rest, variable_bytes(head.weights) / num_centers))
    rows.append(("float16", dimension * 2, per_center_rest, (dimension * 2 * num_centers + variable_bytes(rest))
                 / num_centers))
    variants = [(f"OPQ {pq_bytes} B", pq_bytes, 8, True) for pq_bytes in (8, 16, 32)]
    variants.append(("PQ 16 B, 4-bit", 16, 4, False))
    for label, pq_bytes, bits, rotation in variants:
        if dimension % (pq_bytes * 8 // bits):
            continue
        # The variables' sizes do not depend on the trained values: build the layer without training OPQ. Class ids
        # as compress() stores them for one-hot labels.
        compressed = kn.layers.CompressedClassifier(num_classes, head.num_neighbours, dimension, pq_bytes,
                                                    capacity=num_centers, bits=bits, rotation=rotation,
                                                    hard_labels=True)
        compressed.build((None, dimension))
        report = compressed.memory_report()
        tables = report["pq_codes_weight_bytes"] + report["codebooks_bytes"] + report["rotation_bytes"]
        others = variable_bytes([v for v in compressed.weights if v.name.split("/")[-1].split(":")[0] not in (
            "pq_codes", "pq_codebooks", "rotation")])
        total = variable_bytes(compressed.weights)
        rows.append((label, tables / num_centers, others / num_centers, total / num_centers))
    return rows


CHILD = ("import atexit, resource, runpy, sys\n"
         "atexit.register(lambda: print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
         "file=sys.stderr, flush=True))\n"
         "sys.argv = ['trainers.fit'] + sys.argv[1:]\n"
         "runpy.run_module('trainers.fit', run_name='__main__')\n")


def peak_training_rss(head, epochs=1):
    """Peak RSS (GiB) of a child `trainers.fit` process on Fashion-MNIST with this head."""
    with tempfile.TemporaryDirectory() as workdir:
        result = subprocess.run(
            [sys.executable, "-c", CHILD, "--dataset=fashion_mnist", f"--head={head}", f"--epochs={epochs}",
             f"--workdir={workdir}/run", "--verbose=0"], cwd=ROOT, capture_output=True, text=True,
            env={**os.environ, "PYTHONPATH": ROOT})
    lines = [line for line in result.stderr.splitlines() if line.startswith("MAXRSS")]
    if result.returncode or not lines:
        raise RuntimeError(result.stderr[-2000:])
    return int(lines[-1].split()[1]) / 2 ** 20  # ru_maxrss is in KiB on Linux.


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--centers", type=int, default=60_000)
    parser.add_argument("--dims", type=int, nargs="+", default=[64])
    parser.add_argument("--no-training", action="store_true")
    parser.add_argument("--heads", nargs="+", default=["dense", "nngk", "impostor"], help="heads whose training "
                        "memory is measured")
    args = parser.parse_args()
    print(f"{args.centers} centers, 10 classes (soft labels float32, mask, sample ids, log-weights)")
    print("| d | storage | center bytes / center | other per-center bytes | total bytes / center |")
    print("|---|---|---|---|---|")
    for dimension in args.dims:
        for name, center_bytes, other, total in center_table(args.centers, dimension, 10):
            print(f"| {dimension} | {name} | {center_bytes:.1f} | {other:.1f} | {total:.1f} |")
    if args.no_training:
        return
    print("\npeak resident memory of `trainers.fit --dataset=fashion_mnist --epochs=1` (60,000 centers)")
    print("| head | peak RSS GiB |")
    print("|---|---|")
    for head in args.heads:
        print(f"| {head} | {peak_training_rss(head):.2f} |", flush=True)


if __name__ == "__main__":
    main()
