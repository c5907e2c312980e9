"""The exact search's product from the centers as stored `(N, d)` (with `transpose_b`) against a transposed `(d, N)`
copy: time and whether the bits agree.

    python bench/product_layout.py                # 128 queries x 60,000 centers x 64, 30 interleaved rounds

The question behind it (bench/README.md, "Training step"): would a transposed copy of the centers, kept like the
norms cache, make the training step's product cheaper without changing a result? A second table times what a
training step does around the product: a write of a batch of `--queries` rows followed by the product, for the
`(N, d)` centers (a row scatter, after which TensorFlow copies the variable at every read: copy-on-read mode) and for
a transposed copy written column by column (a 2-D `scatter_nd_update`, or a 1-D `scatter_update` of the flattened
copy), each read with and without `tf.raw_ops.DisableCopyOnRead`; and the writes alone.
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
    print()
    write_and_read(rng, args, queries)


def write_and_read(rng, args, queries):
    """Write the rows of `queries` over random centers, then the product: the training step's pattern."""
    n, d = args.centers, args.dim
    values = rng.normal(size=(n, d)).astype(np.float32)
    ids = tf.constant(rng.permutation(n)[:args.queries].astype(np.int32))
    grid = tf.stack([tf.repeat(tf.range(d), args.queries), tf.tile(ids, [d])], axis=1)  # (row, column) pairs.
    offsets = tf.reshape(tf.range(d)[:, tf.newaxis] * n + ids[tf.newaxis, :], [-1])  # The same, flattened.
    columns = tf.reshape(tf.transpose(queries), [-1])

    def disabled(variable, on):
        return [tf.raw_ops.DisableCopyOnRead(resource=variable.handle)] if on else []

    def rows(disable):
        variable = tf.Variable(values)

        def step():
            variable.scatter_update(tf.IndexedSlices(queries, ids))
            with tf.control_dependencies(disabled(variable, disable)):
                return tf.reduce_sum(tf.matmul(queries, variable.read_value(), transpose_b=True)[:, :1])
        return tf.function(step)

    def transposed(flat, disable, write=True, read=True):
        variable = tf.Variable(values.T.reshape(-1) if flat else values.T.copy())

        def step():
            if write:
                if flat:
                    variable.scatter_update(tf.IndexedSlices(columns, offsets))
                else:
                    variable.scatter_nd_update(grid, columns)
            if not read:
                return tf.constant(0.0)
            with tf.control_dependencies(disabled(variable, disable)):
                matrix = tf.reshape(variable.read_value(), [d, n])
                return tf.reduce_sum(tf.matmul(queries, matrix)[:, :1])
        return tf.function(step)

    def plain():
        variable = tf.Variable(values)
        return tf.function(lambda: tf.reduce_sum(tf.matmul(queries, variable, transpose_b=True)[:, :1]))

    steps = {
        "(N, d), no write": plain(),
        "(N, d), row write, then product": rows(False),
        "(N, d), row write, copy-on-read off, then product": rows(True),
        "(d, N), no write": transposed(False, False, write=False),
        "(d, N), 2-D scatter_nd write, copy-on-read off, then product": transposed(False, True),
        "(d, N) flattened, 1-D write, then product": transposed(True, False),
        "(d, N) flattened, 1-D write, copy-on-read off, then product": transposed(True, True),
        "(d, N), 2-D scatter_nd write alone": transposed(False, False, read=False),
        "(d, N) flattened, 1-D write alone": transposed(True, False, read=False),
    }
    for step in steps.values():
        step()
    times = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(5):
                step()
            times[name].append((time.perf_counter() - start) / 5 * 1e3)
    print(f"write {args.queries} centers, then the product; median of {args.rounds} interleaved rounds of 5")
    print("| centers stored, per call | ms |\n|---|---|")
    for name, values_ms in times.items():
        print(f"| {name} | {np.median(values_ms):.2f} |")


if __name__ == "__main__":
    main()
