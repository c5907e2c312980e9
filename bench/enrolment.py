"""On-device enrolment cost: batch-1 classify latency and enrol time per image as the center table grows.

    python bench/enrolment.py                                  # tables of 1,000 / 10,000 / 60,000 centers, d = 64
    python bench/enrolment.py --sizes 1000 60000 --rule=class_mean

The small conv backbone on 28x28x1 images (Fashion-MNIST's shape), untrained (cost does not depend on the
weights); the table is filled with the network's embeddings of random images to the given size, with 10 classes and
room for 100 more centers. Latency: median over --repeats single-image calls of the `classify` signature, one
thread; the table sizes take turns in rounds so that the machine's slow moments hit them alike. Enrol: median time of
one `enrol` call with one image. Also the file size and the table bytes one enrolled example adds.
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import keras_nngk as kn  # noqa: E402


def build(size, rule, folder, embedding_dim):
    backbone = kn.backbones.get("small_conv", input_shape=(28, 28, 1), embedding_dim=embedding_dim)
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(min(size, 2000), 28, 28, 1)).astype(np.float32)
    embeddings = backbone.predict(images, batch_size=500, verbose=0)
    centers = embeddings[rng.integers(0, len(embeddings), size)] + 0.01 * rng.normal(
        size=(size, embedding_dim)).astype(np.float32)
    head = kn.layers.NNGKClassifier(10, num_neighbours=32, sigma=0.5)
    head.assign_centers(centers, rng.integers(0, 10, size))
    path = os.path.join(folder, f"enrollable_{size}.tflite")
    kn.export.to_enrollable_tflite(backbone, head, path, capacity=size + 100, max_classes=10, rule=rule)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 60000])
    parser.add_argument("--rule", default="kernel", choices=["kernel", "class_mean"])
    parser.add_argument("--embedding_dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    image = np.random.default_rng(1).uniform(size=(1, 28, 28, 1)).astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        models = {}
        for size in args.sizes:
            path = build(size, args.rule, folder, args.embedding_dim)
            models[size] = (path, kn.export.EnrollableTFLiteModel(path, batch_size=1, num_threads=1))
        for _, model in models.values():  # Warm-up.
            for _ in range(5):
                model.classify(image)
        classify = {size: [] for size in models}
        enrol = {size: [] for size in models}
        per_round = max(1, args.repeats // args.rounds)
        for _ in range(args.rounds):
            for size, (_, model) in models.items():
                for _ in range(per_round):
                    start = time.perf_counter()
                    model.classify(image)
                    classify[size].append(time.perf_counter() - start)
                for _ in range(max(1, per_round // 10)):
                    start = time.perf_counter()
                    model.enrol(image, 3)
                    enrol[size].append(time.perf_counter() - start)
                    if model.num_centers >= model.capacity:
                        model.forget(3)
        print(f"Enrollable TFLite, small conv 28x28x1, d = {args.embedding_dim}, rule {args.rule}, batch 1, one "
              f"thread; median of {len(classify[args.sizes[0]])} classify and {len(enrol[args.sizes[0]])} enrol calls")
        print("| centers | file MB | classify ms | enrol ms per image | classify / smallest table |")
        print("|---|---|---|---|---|")
        smallest = np.median(classify[args.sizes[0]])
        for size, (path, _) in models.items():
            print(f"| {size:,} | {os.path.getsize(path) / 1e6:.1f} | {1e3 * np.median(classify[size]):.2f} | "
                  f"{1e3 * np.median(enrol[size]):.2f} | {np.median(classify[size]) / smallest:.2f} |")
        print(f"Table bytes per enrolled example: {kn.export.enrolment.bytes_per_example(args.embedding_dim, 10)} "
              f"(center, label row of 10 classes, log-weight, mask; float32)")


if __name__ == "__main__":
    main()
