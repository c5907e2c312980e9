"""TFLite size and batch-1 latency: SqueezeNet 1.1 with a dense head vs NNGK heads (float and 16-byte PQ centers).

    python bench/export.py                         # 28x28x1 input (Fashion-MNIST; upsampled to 64x64 inside)
    python bench/export.py --embedding_dim=128     # a smaller embedding: a 4x cheaper search
    python bench/export.py --image_size=224 --channels=3 --num_centers=5994   # CUB-sized

Heads: dense; nngk (float centers); nngk-opq16 (OPQ rotation + 16 codes of 8 bits per center); nngk-pq16x4 (no
rotation, 32 codes of 4 bits per center: 16x smaller codebooks). The NNGK heads store class ids, not label rows.

Untrained weights (size and latency do not depend on them). Centers are the network's embeddings of random images.
Latency: median of --repeats single-image invocations after a warm-up, on this machine's CPU, one thread; the models
take turns in 10 rounds, so that the ratios compare models measured at the same moments.
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tf_keras as keras  # noqa: E402

import keras_nngk as kn  # noqa: E402


def interleaved_latencies_ms(paths, image, repeats, rounds=10):
    """Median batch-1 latency of each model; the models take turns (`rounds` of `repeats / rounds` invocations
    each) so that the machine's slow moments hit them all alike."""
    from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
    runners = {}
    for path in paths:
        interpreter = Interpreter(model_path=path, num_threads=1)
        interpreter.allocate_tensors()
        index = interpreter.get_input_details()[0]["index"]
        for _ in range(10):
            interpreter.set_tensor(index, image)
            interpreter.invoke()
        runners[path] = (interpreter, index)
    times = {path: [] for path in paths}
    for _ in range(rounds):
        for path, (interpreter, index) in runners.items():
            for _ in range(max(1, repeats // rounds)):
                start = time.perf_counter()
                interpreter.set_tensor(index, image)
                interpreter.invoke()
                times[path].append(time.perf_counter() - start)
    return {path: 1e3 * float(np.median(values)) for path, values in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image_size", type=int, default=28)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--num_centers", type=int, default=6000)
    parser.add_argument("--embedding_dim", type=int, default=512)
    parser.add_argument("--num_classes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    shape = (args.image_size, args.image_size, args.channels)
    rng = np.random.default_rng(0)
    backbone = kn.backbones.get("squeezenet", input_shape=shape, embedding_dim=args.embedding_dim)
    images = rng.uniform(size=(args.num_centers,) + shape).astype(np.float32)
    centers = backbone.predict(images, batch_size=256, verbose=0)
    labels = rng.integers(0, args.num_classes, args.num_centers)
    nngk = kn.layers.NNGKClassifier(args.num_classes, num_neighbours=32)
    nngk.assign_centers(centers, labels)
    heads = {"dense": kn.layers.DenseClassifier(args.num_classes), "nngk": nngk,
             "nngk-opq16": kn.layers.compress(nngk, pq_bytes=16),
             "nngk-pq16x4": kn.layers.compress(nngk, pq_bytes=16, bits=4, rotation=False)}
    calibration = [images[:100]]
    image = images[:1]
    rows = []
    folder = tempfile.mkdtemp()
    for head_name, head in heads.items():
        inputs = keras.Input(shape)
        model = keras.Model(inputs, head(backbone(inputs)))
        for quantization in ("none", "dynamic", "int8"):
            path = kn.export.to_tflite(model, os.path.join(folder, f"{head_name}-{quantization}.tflite"),
                                       quantization=quantization, representative_data=calibration)
            rows.append((head_name, quantization, path))
    latencies = interleaved_latencies_ms([path for _, _, path in rows], image, args.repeats)
    rows = [(head_name, quantization, os.path.getsize(path), latencies[path]) for head_name, quantization, path in rows]
    dense = {quantization: (size, ms) for head_name, quantization, size, ms in rows if head_name == "dense"}
    print(f"SqueezeNet 1.1, input {shape}, embedding {args.embedding_dim}, {args.num_centers} centers, k=32, "
          f"batch 1, 1 thread, median of {args.repeats}")
    print("| head        | quantization | file KiB | latency ms | NNGK/dense latency | NNGK - dense size KB |")
    print("|-------------|--------------|----------|------------|--------------------|----------------------|")
    for head_name, quantization, size, ms in rows:
        ratio = f"{ms / dense[quantization][1]:.2f}" if head_name != "dense" else ""
        extra = f"{(size - dense[quantization][0]) / 1000:.0f}" if head_name != "dense" else ""
        print(f"| {head_name:<11} | {quantization:<12} | {size / 1024:>8.0f} | {ms:>10.2f} | {ratio:>18} "
              f"| {extra:>20} |")


if __name__ == "__main__":
    main()
