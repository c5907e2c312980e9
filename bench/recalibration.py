"""BatchNorm recalibration: the compiled pass against eager calls, per number of batches.

    python bench/recalibration.py                 # small conv, 28x28x1, batches of 128, 10/25/50 batches, 5 rounds

`center_sync.recalibrate_batchnorm` runs its batches through one compiled training-mode pass per network (traced
once; the layers read their momentum from a variable). The eager column runs the same function with
`tf.config.run_functions_eagerly(True)`, i.e. one eager network call per batch, as the code did before 2026-11-30.
Both take turns in each round; the table gives medians.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_nngk as kn  # noqa: E402
from keras_nngk.training import center_sync  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[10, 25, 50])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(128 * max(args.batches), 28, 28, 1)).astype(np.float32)
    network = kn.backbones.get("small_conv", (28, 28, 1), 64)
    batches = tf.data.Dataset.from_tensor_slices(images).batch(128)
    center_sync.recalibrate_batchnorm(network, batches, 2)  # Traces the compiled pass.
    print(f"small conv, 28x28x1, batches of 128; median of {args.rounds} rounds")
    print("| batches | compiled s | eager s | eager / compiled |")
    print("|---|---|---|---|")
    for count in args.batches:
        times = {"compiled": [], "eager": []}
        for _ in range(args.rounds):
            for mode in times:
                tf.config.run_functions_eagerly(mode == "eager")
                start = time.perf_counter()
                center_sync.recalibrate_batchnorm(network, batches, count)
                times[mode].append(time.perf_counter() - start)
        tf.config.run_functions_eagerly(False)
        compiled, eager = (float(np.median(times[mode])) for mode in ("compiled", "eager"))
        print(f"| {count} | {compiled:.2f} | {eager:.2f} | {eager / compiled:.1f} |")


if __name__ == "__main__":
    main()
