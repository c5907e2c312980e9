"""The exact search's product from the centers as stored `(N, d)` (with `transpose_b`) against a transposed `(d, N)`
copy: time and whether the bits agree.

    python bench/product_layout.py                # 128 queries x 60,000 centers x 64, 30 interleaved rounds

The question behind it (bench/README.md, "Training step"): would a transposed copy of the centers, kept like the
norms cache, make the training step's product cheaper without changing a result?
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=128)
    parser.add_argument("--centers", type=int, default=60000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    centers = tf.Variable(rng.normal(size=(args.centers, args.dim)).astype(np.float32))
    transposed = tf.Variable(tf.transpose(centers))
    queries = tf.constant(rng.normal(size=(args.queries, args.dim)).astype(np.float32))
    products = {"(N, d), transpose_b": tf.function(lambda: tf.matmul(queries, centers, transpose_b=True)),
                "(d, N)": tf.function(lambda: tf.matmul(queries, transposed))}
    results = {name: product().numpy() for name, product in products.items()}
    first, second = results.values()
    times = {name: [] for name in products}
    for _ in range(args.rounds):
        for name, product in products.items():
            start = time.perf_counter()
            for _ in range(5):
                product()
            times[name].append((time.perf_counter() - start) / 5 * 1e3)
    print(f"({args.queries} x {args.dim}) by ({args.dim} x {args.centers}); median of {args.rounds} interleaved "
          "rounds of 5")
    print("| centers stored | ms per product |\n|---|---|")
    for name, values in times.items():
        print(f"| {name} | {np.median(values):.2f} |")
    print(f"same bits: {np.array_equal(first, second)} (largest difference {np.abs(first - second).max():.3g})")


if __name__ == "__main__":
    main()
