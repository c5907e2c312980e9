"""Training-step cost of the nearest-neighbour heads against the dense head, on the same backbone and batch.

    python bench/train_step.py                  # small conv, 28x28x1, batch 128, N = 6,000 and 60,000 centers
    python bench/train_step.py --heads dense nngk nngk-hnsw --sizes 60000

Each head's compiled `train_function` runs on a fixed batch; the heads are measured in interleaved rounds (all
heads once per round, median over rounds) so that machine noise hits them alike; the last column is each head's
ratio to the dense step within a round, median and interquartile range over rounds. Also timed in the same process:
the exact search alone (the (B, N) product plus the top-k) and its floor, the bare product; one center refresh
(embedding all N training images) against the steps of one epoch; and, with an `nngk-candM` head, one build of
its candidate lists (an exact search of every center against all of them).
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

import keras_nngk as kn  # noqa: E402


def build(head, num_centers, rng, shape, batch):
    keras.utils.set_random_seed(0)
    backbone = kn.backbones.get("small_conv", shape, 64)
    candidates = 0
    if head == "biased":
        models = kn.models.biased_network(shape, 10, capacity=num_centers)
        train_model, center_head = models.train_model, None
        keys = rng.normal(size=(num_centers, 16)).astype(np.float32)
        models.lookup.assign_keys_values(keys, rng.normal(size=(num_centers, 64)).astype(np.float32))
    else:
        base, _, suffix = head.partition("-")
        writes = suffix.startswith("writes") or suffix.endswith("-writes")
        # "ivf-writes", "hnsw-writes": a faiss index with the writes on (an IVF index follows them step by step).
        suffix = suffix[:-len("-writes")] if suffix.endswith("-writes") else suffix
        # "writes-nocache": the same step computing the centers' norms itself, as before the head cached them.
        uncached = suffix == "writes-nocache"
        # "writes-rowmajor": the norms cached, the product from the (N, d) centers, as before the transposed copy.
        row_major = suffix == "writes-rowmajor"
        suffix = "" if suffix.startswith("writes") else suffix
        candidates = int(suffix[len("cand"):]) if suffix.startswith("cand") else 0
        search = f"faiss-{suffix}" if suffix and not candidates else "exact"
        models = kn.models.nngk_classifier(backbone, 10, head=base, capacity=num_centers,
                                           tie="tied" if head == "impostor" else "loose", search=search)
        train_model, center_head = models.train_model, models.center_head
    train_model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", jit_compile=False)
    if center_head is not None:
        centers = rng.normal(size=(num_centers, 64)).astype(np.float32)
        center_head.assign_centers(centers / np.linalg.norm(centers, axis=1, keepdims=True),
                                   rng.integers(0, 10, num_centers))
        if candidates:
            center_head.set_candidate_lists(candidates)
        if uncached:
            center_head._norm_cache_in_use = lambda: False  # pylint: disable=protected-access
        if row_major:
            center_head._transposed_cache_in_graph = lambda: False  # pylint: disable=protected-access
        center_head.write_training_centers = writes
    images = rng.uniform(size=(batch,) + shape).astype(np.float32)
    # Distinct ids, as in an epoch (with `-writes`, each step writes the batch's rows over their centers).
    inputs = {"image": images, "sample_id": rng.permutation(num_centers)[:batch].astype(np.int32)}
    iterator = iter(tf.data.Dataset.from_tensors((inputs, rng.integers(0, 10, batch))).repeat())
    step = train_model.make_train_function()
    for _ in range(3):
        step(iterator)
    return lambda: step(iterator), backbone, center_head


def side_timings(size, batch, backbone, rng, shape):
    """Exact search alone, its matmul floor (ms), and one embedding pass over `size` images (s)."""
    centers = tf.constant(rng.normal(size=(size, 64)).astype(np.float32))
    queries = tf.constant(rng.normal(size=(batch, 64)).astype(np.float32))
    search = tf.function(lambda: kn.search.exact_search(queries, centers, 33))
    floor = tf.function(lambda: tf.matmul(queries, centers, transpose_b=True))
    images = rng.uniform(size=(size,) + shape).astype(np.float32)
    return (1e3 * kn.metrics.median_seconds(lambda: search()[1].numpy(), repeats=20),
            1e3 * kn.metrics.median_seconds(lambda: floor().numpy(), repeats=20),
            kn.metrics.median_seconds(lambda: backbone.predict(images, batch_size=512, verbose=0), 3))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[6000, 60000])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=5, help="steps per measurement")
    parser.add_argument("--heads", nargs="+", default=["dense", "nngk", "nngk-hnsw", "impostor", "biased"],
                        help="dense first; nngk-writes: NNGK writing each batch's embeddings over their centers "
                             "(the default refresh mode of trainers.fit, 'training'; nngk-writes-nocache: the same, "
                             "the centers' norms computed in every step, as before the head cached them; "
                             "nngk-writes-rowmajor: the norms cached, the product from the (N, d) centers, as before "
                             "the transposed copy); nngk-hnsw / "
                             "nngk-ivf: the NNGK head searching a faiss HNSW / IVF index (nngk-ivf-writes: with the "
                             "writes, which the IVF index follows); nngk-candM: ranking M cached candidates per sample "
                             "(--candidates=M)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    shape = (28, 28, 1)
    print(f"small conv, input {shape}, batch {args.batch}, 64-d embeddings, k=32; median of {args.rounds} "
          f"interleaved rounds of {args.steps} steps; last column: the ratio to the dense step within each round, "
          "median (interquartile range)")
    print("| N | head | ms per step | / dense | search ms | matmul floor ms | refresh s | steps per epoch s | "
          "/ dense per round |")
    print("|---|------|-------------|---------|-----------|-----------------|-----------|-------------------|"
          "-------------------|")
    for size in args.sizes:
        steps = {head: build(head, size, rng, shape, args.batch) for head in args.heads}
        times = {head: [] for head in steps}
        for _ in range(args.rounds):
            for head, (run, *_) in steps.items():
                start = time.perf_counter()
                for _ in range(args.steps):
                    run()
                times[head].append((time.perf_counter() - start) / args.steps)
        median = {head: float(np.median(values)) for head, values in times.items()}
        search_ms, floor_ms, refresh_s = side_timings(size, args.batch, steps["dense"][1], rng, shape)
        epoch_s = median.get("nngk", float("nan")) * -(-size // args.batch)  # The side columns need an nngk row.
        for head in steps:
            if "-cand" in head:
                start = time.perf_counter()
                steps[head][2].rebuild_candidate_lists()
                print(f"(one build of {head}'s candidate lists over {size} centers: "
                      f"{time.perf_counter() - start:.2f} s)")
        for head in steps:
            extra = (f"{search_ms:9.1f} | {floor_ms:15.1f} | {refresh_s:9.2f} | {epoch_s:17.2f}"
                     if head == "nngk" else f"{'':9} | {'':15} | {'':9} | {'':17}")
            # The ratio within each round: both steps met the same machine state, so its spread shows the noise.
            q1, q2, q3 = np.percentile(np.array(times[head]) / np.array(times["dense"]), [25, 50, 75])
            print(f"| {size} | {head} | {1e3 * median[head]:11.1f} | {median[head] / median['dense']:7.2f} | {extra} | "
                  f"{q2:.2f} ({q1:.2f}-{q3:.2f}) |")


if __name__ == "__main__":
    main()
