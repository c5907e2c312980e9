"""A fused exact search in C++ (no score matrix, no copy of the centers) against the training step's TensorFlow one.

    python bench/fused_search.py                         # 128 queries x 60,000 centers x 64, k = 33, 15 rounds
    python bench/fused_search.py --query-block 4 --vectors 4   # another register blocking of the kernel

The question behind it (issue "Training cost": the NNGK step at most 1.2x the dense step): `bench/search_parts.py`
showed that TensorFlow's exact search pays for writing the (128, 60,000) score matrix, its block maxima and two
top_k, and the training step also copies the 15 MB centers at each read (their variable is in copy-on-read mode once
the training writes scatter into it). `native/transposed_top_k.cc` is a TensorFlow op that does the whole search
in one pass: it reads the `(d, N)` variable's buffer under its lock (no copy), packs 256 columns at a time, scores 8
queries x 32 columns in AVX-512 registers and keeps each query's k best in a heap, so no score is written to memory.

Compiled here with g++ against the installed TensorFlow (`tf.sysconfig`, `-march=native`; about 10 s), then timed
in interleaved rounds against, on the same variables put in copy-on-read mode as the training writes put them:
- the exact search as the training step runs it (`exact_search` on a read of the `(d, N)` copy, cached norms);
- the bare product of that read (the search's floor in TensorFlow);
and checked: the ids equal the TensorFlow search's on these (random, unit-norm) centers. Needs g++ and an AVX-512
CPU; the library does not use this op (see bench/README.md, "Training step", for why).
"""

import argparse
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import search_parts  # noqa: E402  (bench/search_parts.py)
import tensorflow as tf  # noqa: E402

from keras_nngk.search import exact  # noqa: E402

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "native", "transposed_top_k.cc")


def compile_op(query_block, vectors):
    """Builds the op's shared library in a temporary folder and loads it."""
    output = os.path.join(tempfile.mkdtemp(prefix="nngk-fused-"), "transposed_top_k.so")
    command = (["g++", "-O3", "-march=native", "-shared", "-fPIC", "-Wno-deprecated-declarations",
                f"-DNNGK_QB={query_block}", f"-DNNGK_NV={vectors}", SOURCE, "-o", output]
               + tf.sysconfig.get_compile_flags() + tf.sysconfig.get_link_flags())
    built = subprocess.run(command, capture_output=True, text=True, check=False)
    if built.returncode:
        sys.exit("error: g++ could not build the op:\n" + built.stderr[-3000:])
    return tf.load_op_library(output)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    search_parts.search_arguments(parser)
    parser.add_argument("--query-block", type=int, default=8, help="queries per micro-kernel")
    parser.add_argument("--vectors", type=int, default=2, help="16-float vectors of columns per micro-kernel")
    args = parser.parse_args()
    if "avx512f" not in open("/proc/cpuinfo").read():
        sys.exit("error: the kernel needs an AVX-512 CPU.")
    op = compile_op(args.query_block, args.vectors)
    rng = np.random.default_rng(0)
    n, d, b, k = args.centers, args.dim, args.queries, args.k
    centers = rng.normal(size=(n, d)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    queries = tf.constant(rng.normal(size=(b, d)).astype(np.float32))
    transposed = tf.Variable(np.ascontiguousarray(centers.T).reshape(-1))  # Flattened, as the layer keeps it.
    norms = tf.Variable(np.sum(centers ** 2, axis=1))
    for variable in (transposed, norms):  # Copy-on-read mode, as the training writes leave them.
        variable.scatter_update(tf.IndexedSlices(variable.sparse_read([0]), [0]))

    functions = {
        f"TensorFlow exact search, k = {k} (the training step's)": tf.function(lambda: exact.exact_search(
            queries, None, k, center_norms=norms.read_value(),
            transposed_centers=tf.reshape(transposed.read_value(), [d, n]))[1]),
        "TensorFlow product alone (its floor)": tf.function(
            lambda: tf.matmul(queries + queries, tf.reshape(transposed.read_value(), [d, n]))),
        f"fused C++ op, k = {k} ({args.query_block} x {16 * args.vectors} blocking)": tf.function(
            lambda: op.nngk_transposed_top_k(queries, transposed.handle, -norms.read_value(), k=k)[0]),
    }
    names = list(functions)
    same = np.array_equal(functions[names[0]]().numpy(), functions[names[2]]().numpy())
    times = search_parts.interleaved_times(functions, args.rounds)
    print(f"{b} queries x {n} centers x {d}, variables in copy-on-read mode; median and interquartile range of "
          f"{args.rounds} interleaved rounds of 5 calls; ids of the fused op equal TensorFlow's: {same}")
    print("| search | ms per call (median) | interquartile range | / TensorFlow search |\n|---|---|---|---|")
    reference = np.median(times[names[0]])
    for name, values in times.items():
        low, high = np.percentile(values, [25, 75])
        print(f"| {name} | {np.median(values):.2f} | {low:.2f}-{high:.2f} | {np.median(values) / reference:.2f} |")


if __name__ == "__main__":
    main()
