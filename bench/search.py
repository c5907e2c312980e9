"""Exact in-graph search against faiss: time per batch of queries and peak memory, by number of centers.

    python bench/search.py                      # N = 10k, 100k, 1M; d = 128; 256 queries; k = 32
    python bench/search.py --sizes 10000 --dims 64 512

Centers are real-looking: Fashion-MNIST images (when the Debian package is installed) through a fixed random
projection plus small noise, tiled up to N; otherwise clustered synthetic points. Exactness is checked against faiss
IndexFlatL2 (ids agreement); timings are medians over repeats after a warm-up, and ratios come from one run.
"""

import argparse
import gzip
import os
import resource
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import keras_nngk as kn  # noqa: E402

FASHION = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


def embeddings(num, dimension, rng):
    if os.path.exists(FASHION):
        with gzip.open(FASHION) as handle:
            images = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 784).astype(np.float32) / 255.0
        projection = rng.normal(size=(784, dimension)).astype(np.float32) / np.sqrt(784)
        base = images @ projection
        source = "fashion-mnist projected"
    else:
        means = rng.normal(size=(100, dimension)).astype(np.float32)
        base = means[rng.integers(0, 100, 60000)] + 0.3 * rng.normal(size=(60000, dimension)).astype(np.float32)
        source = "clustered synthetic"
    reps = -(-num // len(base))
    tiled = np.tile(base, (reps, 1))[:num]
    return tiled + 0.01 * rng.normal(size=tiled.shape).astype(np.float32), source


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dims", type=int, nargs="+", default=[128])
    parser.add_argument("--queries", type=int, default=256)
    parser.add_argument("-k", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for dimension in args.dims:
        for size in args.sizes:
            centers, source = embeddings(size, dimension, rng)
            queries = centers[rng.choice(size, args.queries, replace=False)] + 0.05
            results = {}
            for name in ("exact", "faiss-flat"):
                index = kn.search.get(name)
                index.add(centers)
                seconds = kn.metrics.median_seconds(
                    lambda index=index, queries=queries: index.search(queries, args.k), args.repeats)
                results[name] = (seconds, index.search(queries, args.k)[1])
            agreement = float(np.mean(results["exact"][1] == results["faiss-flat"][1]))
            rows.append((size, dimension, results["exact"][0] * 1e3, results["faiss-flat"][0] * 1e3,
                         results["faiss-flat"][0] / results["exact"][0], agreement,
                         resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20))
    print(f"centers: {source}; {args.queries} queries, k={args.k}, median of {args.repeats}")
    print(f"| {'N':>9} | {'d':>4} | {'exact ms':>9} | {'faiss-flat ms':>13} | {'faiss/exact':>11} | "
          f"{'id agreement':>12} | {'peak RSS GiB':>12} |")
    print("|" + "|".join("-" * (width + 2) for width in (9, 4, 9, 13, 11, 12, 12)) + "|")
    for size, dimension, exact_ms, faiss_ms, ratio, agreement, rss in rows:
        print(f"| {size:>9} | {dimension:>4} | {exact_ms:>9.1f} | {faiss_ms:>13.1f} | {ratio:>11.2f} | "
              f"{agreement:>12.4f} | {rss:>12.2f} |")


if __name__ == "__main__":
    main()
