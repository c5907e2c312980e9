"""What the training step's exact search is made of, and what a cheaper first stage would have to beat.

    python bench/search_parts.py              # 128 queries x 60,000 centers x 64, 15 interleaved rounds

The question behind it (issue "Training cost": the NNGK step at most 1.2x the dense step): could a cheaper
candidate stage (a product over fewer dimensions, e.g. principal components with a lower bound on the rest, or in
bfloat16) followed by an exact re-rank of M candidates per query beat the exact search, while returning its
neighbours? Each part is timed alone, on unit-norm random centers (the cost does not depend on their values):

- the exact search as the training step runs it (`exact_search` on the `(d, N)` copy with cached norms, k = 33);
- its first part, the scores (product plus the norms' bias), over d, d / 2 and d / 4 dimensions, and in bfloat16:
  the cost of a candidate stage that scores every center;
- the block-pruned top-k of the scores (`largest_k`) for k = 33 (what the search takes) and M = 64, 128, 256
  (what a candidate stage has to keep for an exact re-rank to be certain);
- the re-rank of M candidates: gather their rows, score them, keep the top 33.
A candidate stage pays its scores, its top-M and the re-rank; the table shows whether that sum can come under the
exact search.

    python bench/search_parts.py --certify                      # also: how many candidates exactness needs
    python bench/search_parts.py --certify --backbone runs/nngk/backbone.keras   # on a trained network's embeddings

`--certify` embeds the 60,000 Fashion-MNIST training images (Debian's dataset-fashion-mnist) with an untrained small
conv (seed 0) and, with `--backbone`, with a trained one (a `trainers.fit` run's backbone.keras), and counts for 512
of them as queries (float64, NumPy) how often a lower bound on the distance from the first m principal components
plus the norm of the rest proves that the best M centers by the bound hold the exact k nearest (the k-th exact
distance among them is below the (M+1)-th smallest bound).
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_nngk.search import exact  # noqa: E402


def unit_rows(rng, n, d):
    rows = rng.normal(size=(n, d)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def parts(args):
    """`{name: (function, description)}`: each function takes no argument and returns tensors."""
    rng = np.random.default_rng(0)
    n, d, b, k = args.centers, args.dim, args.queries, args.k
    centers = unit_rows(rng, n, d)
    queries = tf.constant(unit_rows(rng, b, d))
    rows = tf.Variable(centers)
    norms = tf.Variable(np.sum(centers ** 2, axis=1))
    functions = {}

    def add(name, function):
        functions[name] = tf.function(function)

    transposed = {}
    for width in sorted({d, max(1, d // 2), max(1, d // 4)}, reverse=True):
        transposed[width] = tf.Variable(np.ascontiguousarray(centers[:, :width].T))
    add(f"exact search, k = {k} (the training step's)",
        lambda: exact.exact_search(queries, None, k, center_norms=norms, transposed_centers=transposed[d]))
    for width, copy in transposed.items():
        add(f"scores over {width} dimensions", lambda copy=copy, width=width: tf.nn.bias_add(
            tf.matmul(queries[:, :width] + queries[:, :width], copy), -norms))
    bf16_queries = tf.cast(queries, tf.bfloat16)
    bf16_centers = tf.Variable(tf.cast(transposed[d], tf.bfloat16))
    add(f"scores over {d} dimensions, bfloat16", lambda: tf.nn.bias_add(
        tf.matmul(bf16_queries + bf16_queries, bf16_centers), -tf.cast(norms, tf.bfloat16)))
    scores = tf.constant(tf.nn.bias_add(tf.matmul(queries + queries, transposed[d]), -norms))
    for size in (k,) + tuple(args.candidates):
        add(f"top-{size} of the scores (block-pruned)", lambda size=size: exact.largest_k(scores, size))
    for size in args.candidates:
        candidates = tf.constant(rng.integers(0, n, size=(b, size)).astype(np.int32))

        def rerank(candidates=candidates):
            scored = 2.0 * tf.einsum("bd,bmd->bm", queries, tf.gather(rows, candidates)) - tf.gather(norms, candidates)
            return tf.math.top_k(scored, k)
        add(f"re-rank {size} candidates (gather, score, top-{k})", rerank)
    return functions


def certified_fraction(centers, queries, k, components, candidates):
    """`{(m, M): fraction of queries}` whose exact `k` nearest centers the principal-component bound proves lie in
    the best `M` by the bound (the bound is a lower bound on the squared distance, for any orthonormal basis)."""
    centers, queries = centers.astype(np.float64), queries.astype(np.float64)
    distances = (np.sum(queries ** 2, 1)[:, None] + np.sum(centers ** 2, 1)[None] - 2 * queries @ centers.T)
    _, vectors = np.linalg.eigh(np.cov(centers.T))
    vectors = vectors[:, ::-1]  # Largest variance first.
    fractions = {}
    for m in components:
        basis = vectors[:, :m]
        center_part, query_part = centers @ basis, queries @ basis
        center_rest = np.sqrt(np.maximum(np.sum(centers ** 2, 1) - np.sum(center_part ** 2, 1), 0))
        query_rest = np.sqrt(np.maximum(np.sum(queries ** 2, 1) - np.sum(query_part ** 2, 1), 0))
        bound = (np.sum(query_part ** 2, 1)[:, None] + np.sum(center_part ** 2, 1)[None]
                 - 2 * query_part @ center_part.T + (query_rest[:, None] - center_rest[None]) ** 2)
        order = np.argsort(bound, axis=1)
        for size in candidates:
            kept = np.sort(np.take_along_axis(distances, order[:, :size], 1), axis=1)[:, k - 1]
            outside = np.take_along_axis(bound, order[:, size:size + 1], 1)[:, 0]
            fractions[(m, size)] = float(np.mean(kept < outside))
    return fractions


def certify(args):
    import tf_keras as keras  # pylint: disable=import-outside-toplevel

    import keras_nngk as kn  # pylint: disable=import-outside-toplevel

    images = kn.data.load_arrays("fashion_mnist").x_train
    keras.utils.set_random_seed(0)
    networks = {"untrained small conv": kn.backbones.get("small_conv", images.shape[1:], args.dim)}
    if args.backbone:
        networks["trained (--backbone)"] = keras.models.load_model(args.backbone, compile=False)
    components = (args.dim // 4, args.dim * 3 // 8, args.dim // 2)
    queries = np.random.default_rng(0).choice(len(images), 512, replace=False)
    print(f"\nFashion-MNIST training images as centers ({len(images)}), 512 of them as queries, k = {args.k}: "
          "fraction of queries whose exact k nearest are proven to lie in the best M by the bound of m principal "
          "components")
    print("| network | " + " | ".join(f"m = {m}, M = {size}" for m in components for size in args.candidates)
          + " |\n|---|" + "---|" * (len(components) * len(args.candidates)))
    for name, network in networks.items():
        embeddings = kn.utils.pipelines.predict(network, images, batch_size=512)
        fractions = certified_fraction(embeddings, embeddings[queries], args.k, components, args.candidates)
        print(f"| {name} | " + " | ".join(f"{fraction:.3f}" for fraction in fractions.values()) + " |")


def search_arguments(parser):
    """The search's shape and the rounds: the flags this benchmark shares with bench/fused_search.py."""
    parser.add_argument("--queries", type=int, default=128)
    parser.add_argument("--centers", type=int, default=60000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--k", type=int, default=33, help="neighbours the search keeps (k = 32 plus the sample itself)")
    parser.add_argument("--rounds", type=int, default=15)


def interleaved_times(functions, rounds):
    """`{name: [ms per call, one per round]}`: every function once per round (5 calls), after a warm-up call."""
    for function in functions.values():
        function()  # Trace and warm up.
    times = {name: [] for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            start = time.perf_counter()
            for _ in range(5):
                function()  # Eager calls on the CPU return when the outputs are computed: nothing to fetch.
            times[name].append((time.perf_counter() - start) / 5 * 1e3)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    search_arguments(parser)
    parser.add_argument("--candidates", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--certify", action="store_true", help="also count how many candidates exactness needs")
    parser.add_argument("--backbone", default="", help="with --certify: a trained backbone.keras to embed with too")
    args = parser.parse_args()
    times = interleaved_times(parts(args), args.rounds)
    scores_mb = args.queries * args.centers * 4 / 1e6
    print(f"{args.queries} queries x {args.centers} centers x {args.dim}, k = {args.k}; median and interquartile "
          f"range of {args.rounds} interleaved rounds of 5 calls; the float32 scores are {scores_mb:.1f} MB")
    print("| part | ms per call (median) | interquartile range |\n|---|---|---|")
    for name, values in times.items():
        low, high = np.percentile(values, [25, 75])
        print(f"| {name} | {np.median(values):.2f} | {low:.2f}-{high:.2f} |")
    if args.certify:
        certify(args)


if __name__ == "__main__":
    main()
