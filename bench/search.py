"""Neighbour search on trained embeddings: exact in-graph search vs faiss Flat, HNSW, IVF-Flat and IVF-PQ.

    python bench/search.py                                   # N = 10k, 100k; d = 64, 128; batch 256; k = 32
    python bench/search.py --sizes 10000 100000 1000000 --dims 64 128 512 --json bench/search.json

Embeddings come from a small conv network trained for one epoch on Fashion-MNIST (one network per d, softmax
head, L2-normalised embeddings); N above 60,000 embeds augmented training images (random shifts, flips and
contrast), never noise. Queries are embeddings of test images. For every index: queries per second (median over
repeats after a warm-up), recall@k against the exact search (fraction of the exact k nearest found), build time;
and the arithmetic floor, the bare (batch, N) matmul, so the table shows how close the exact search is to it.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

import keras_nngk as kn  # noqa: E402

INDEXES = ("exact", "faiss-flat", "faiss-hnsw", "faiss-ivf", "faiss-ivfpq")


def trained_embeddings(dimension, sizes, num_queries, seed=0):
    """`{N: centers}` and the queries, from a network trained one epoch on Fashion-MNIST with this embedding size."""
    arrays = kn.data.load_arrays("fashion_mnist")
    keras.utils.set_random_seed(seed)
    backbone = kn.backbones.get("small_conv", arrays.x_train.shape[1:], dimension)
    built = kn.models.nngk_classifier(backbone, 10, head="dense")
    built.inference_model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    built.inference_model.fit(arrays.x_train, arrays.y_train, batch_size=128, epochs=1, verbose=0)
    base = backbone.predict(arrays.x_train, batch_size=1024, verbose=0)
    rng = np.random.default_rng(seed)
    extra = max(sizes) - len(base)
    augmented = []
    for start in range(0, max(0, extra), 60_000):
        count = min(60_000, extra - start)
        images = arrays.x_train[rng.integers(0, len(arrays.x_train), count)]
        shifted = tf.image.random_flip_left_right(tf.roll(images, shift=int(rng.integers(-3, 4)), axis=2),
                                                  seed=int(rng.integers(1 << 30)))
        contrast = tf.image.random_contrast(shifted, 0.7, 1.3, seed=int(rng.integers(1 << 30)))
        augmented.append(backbone.predict(tf.clip_by_value(contrast, 0.0, 1.0), batch_size=1024, verbose=0))
    pool = np.concatenate([base] + augmented)
    queries = backbone.predict(arrays.x_test[rng.choice(len(arrays.x_test), num_queries, replace=False)],
                               batch_size=1024, verbose=0)
    return {size: pool[:size] for size in sizes}, queries


def make_index(name, size, dimension):
    if name == "faiss-ivf":
        lists = int(4 * np.sqrt(size))
        return kn.search.get({"class_name": "faiss", "config": {"factory": f"IVF{lists},Flat", "nprobe": 16}})
    if name == "faiss-ivfpq":
        lists = int(4 * np.sqrt(size))
        m = dimension // 4 if dimension <= 128 else 64
        return kn.search.get({"class_name": "faiss", "config": {"factory": f"IVF{lists},PQ{m}", "nprobe": 16}})
    return kn.search.get(name)


def measure(name, centers, queries, k, repeats):
    index = make_index(name, *centers.shape)
    start = time.perf_counter()
    index.add(centers)
    index.search(queries[:1], k)  # faiss indexes are built (trained, graph made) at the first search.
    build = time.perf_counter() - start
    seconds = kn.metrics.median_seconds(lambda: index.search(queries, k), repeats)
    return index.search(queries, k)[1], seconds, build


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--indexes", nargs="+", default=list(INDEXES), choices=INDEXES)
    parser.add_argument("--queries", type=int, default=256)
    parser.add_argument("-k", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args()
    rows = []
    for dimension in args.dims:
        pools, queries = trained_embeddings(dimension, args.sizes, args.queries)
        for size in args.sizes:
            centers = pools[size]
            query_tensor, center_tensor = tf.constant(queries), tf.constant(centers)
            product = tf.function(lambda a=query_tensor, b=center_tensor: tf.matmul(a, b, transpose_b=True))
            floor = kn.metrics.median_seconds(lambda product=product: product().numpy(), args.repeats)
            exact_ids = None
            for name in args.indexes:
                ids, seconds, build = measure(name, centers, queries, args.k, args.repeats)
                if name == "exact":
                    exact_ids = ids
                recall = float(np.mean([len(np.intersect1d(a, b)) / args.k for a, b in zip(ids, exact_ids)])) \
                    if exact_ids is not None else float("nan")
                rows.append({"N": size, "d": dimension, "index": name, "ms": 1e3 * seconds,
                             "qps": args.queries / seconds, "recall": recall, "build_s": build,
                             "floor_ms": 1e3 * floor, "vs_floor": seconds / floor})
                print(f"N={size} d={dimension} {name}: {1e3 * seconds:.1f} ms, recall {recall:.4f}", flush=True)
    print(f"\ntrained Fashion-MNIST embeddings; batch {args.queries}, k={args.k}, median of {args.repeats}")
    print("| N | d | index | ms per batch | queries/s | recall@k | build s | / matmul floor |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['N']} | {row['d']} | {row['index']} | {row['ms']:.1f} | {row['qps']:.0f} | {row['recall']:.4f} |"
              f" {row['build_s']:.2f} | {row['vs_floor']:.2f} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
