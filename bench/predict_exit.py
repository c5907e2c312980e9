"""`model.predict` on arrays against `kn.utils.pipelines.predict` (no tf.data autotuning thread).

    python bench/predict_exit.py                  # 2,000 and 200 images through the small conv, 10 interleaved rounds

Keras' `predict` on NumPy arrays builds a tf.data pipeline whose autotuning thread sleeps between re-tunings;
deleting the pipeline's iterator at the end of `predict` waits for that sleep to end. `pipelines.predict` feeds the
same batches through a pipeline without the thread. This times both on the same network in interleaved rounds (5
calls per round; median and slowest call) and checks that they return the same outputs bit for bit. What it does to
a whole experiment: `bench/few_shot_runs.py`.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def predict_table(sizes, rounds, calls):
    import numpy as np  # pylint: disable=g-import-not-at-top

    import keras_nngk as kn  # pylint: disable=g-import-not-at-top
    backbone = kn.backbones.get("small_conv", (28, 28, 1), 256, pooling="flatten")
    rng = np.random.default_rng(0)
    print(f"small conv (flattened 256-d), batch 512; {rounds} interleaved rounds of {calls} calls per variant")
    print("| images | variant | ms per call (median) | slowest call ms | same outputs |")
    print("|---|---|---|---|---|")
    rows = []
    for size in sizes:
        images = rng.uniform(size=(size, 28, 28, 1)).astype(np.float32)
        variants = {"model.predict": lambda x=images: backbone.predict(x, batch_size=512, verbose=0),
                    "pipelines.predict": lambda x=images: kn.utils.pipelines.predict(backbone, x, batch_size=512)}
        same = bool(np.array_equal(variants["model.predict"](), variants["pipelines.predict"]()))
        times = {name: [] for name in variants}
        for _ in range(rounds):
            for name, run in variants.items():
                for _ in range(calls):
                    start = time.perf_counter()
                    run()
                    times[name].append(time.perf_counter() - start)
        for name, values in times.items():
            rows.append({"images": size, "variant": name, "seconds": values})
            print(f"| {size} | {name} | {1e3 * np.median(values):.0f} | {1e3 * max(values):.0f} | {same} |")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 200])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=5, help="calls per variant per round")
    parser.add_argument("--json", help="also write the measurements here")
    args = parser.parse_args()
    print(time.strftime("%Y-%m-%d"))
    output = {"args": vars(args), "predict": predict_table(args.sizes, args.rounds, args.calls)}
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(output, handle, indent=1)


if __name__ == "__main__":
    main()
