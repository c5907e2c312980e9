"""Early exit of finished biased runs: skip rate, accuracy cost and latency against the plain path, in one process.

    python bench/early_exit.py --runs saved_models/biased_p32,saved_models/biased_exact --json early_exit.json

For each run (trained with `--model=biased`, threshold and exit rule chosen on its held-out split), on the test set:
accuracy of the full biased network and with early exit, the share of images that skip f2 (rule and threshold chosen
again on the run's held-out split, as `trainers.fit` does with the current code), and latencies measured in
turns (median of rounds): Keras, per batch of 256 (plain path clf(f2(f1(x))), the same network without lookup, vs
early exit); TFLite at batch 1 (plain path vs the front/back pair of `trainers.export --format=early_exit_tflite`),
one image at a time as an app runs it.
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_nngk as kn  # noqa: E402
from keras_nngk.export import run as export_run  # noqa: E402
from keras_nngk.models import biased_eval  # noqa: E402
from keras_nngk.training import run as run_lib  # noqa: E402


def seconds_per_call(function, inputs, rounds):
    """Median over `rounds` of the mean seconds per element of `inputs` (one call each)."""
    function(inputs[0])
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for element in inputs:
            function(element)
        times.append((time.perf_counter() - start) / len(inputs))
    return float(np.median(times))


def measure(workdir, rounds, tflite_images):
    config, model, _ = run_lib.load_run(workdir)
    parts = kn.export.early_exit.biased_parts(model)
    data = kn.data.load(config.dataset, **config.data_options())
    images = np.concatenate([batch for batch, _ in data.test.batch(4096).as_numpy_iterator()])
    labels = np.concatenate([batch for _, batch in data.test.batch(4096).as_numpy_iterator()])
    full = model.predict(images, batch_size=1024, verbose=0)
    # The exit rule and threshold, chosen again on the run's held-out split with the current code.
    if not config.threshold_split:
        raise ValueError(f"{workdir} was trained without a held-out split (--threshold_split); nothing to choose on.")
    _, held_out = kn.data.hold_out(data, config.threshold_split, config.seed)
    choices = biased_eval.choose_exit(parts, *held_out)
    rule = biased_eval.best_exit_rule(choices)
    threshold = choices[rule]["threshold"]
    threshold = 2.0 if threshold is None else threshold  # None: nothing may exit (scores are at most 1).
    early, skipped = parts.predict_early_exit(images, threshold, rule=rule)
    batches = [tf.constant(images[start:start + 256]) for start in range(0, min(len(images) - 255, 2048), 256)]
    plain = tf.function(lambda x: parts.classifier(parts.f2(parts.f1(x, training=False), training=False)))
    step = tf.function(lambda x: parts._early_exit_step(x, tf.constant(threshold, tf.float32), rule))  # pylint: disable=protected-access
    keras_times = {"plain": [], "early_exit": []}
    tflite_times = {"plain": [], "early_exit": []}
    with tempfile.TemporaryDirectory() as directory:
        pair = kn.export.EarlyExitTFLiteModel(kn.export.to_early_exit_tflite(parts, os.path.join(directory, "ee"),
                                                                            threshold, rule))
        plain_tflite = kn.export.TFLiteModel(kn.export.convert_to_tflite(export_run._plain_path(parts)))  # pylint: disable=protected-access
        sample = images[:tflite_images]
        for _ in range(rounds):  # In turns: the machine's load drifts between them.
            keras_times["plain"].append(seconds_per_call(lambda x: plain(x).numpy(), batches, 1))
            keras_times["early_exit"].append(seconds_per_call(lambda x: step(x)[0].numpy(), batches, 1))
            tflite_times["plain"].append(seconds_per_call(lambda x: plain_tflite.predict(x[None]), sample, 1))
            tflite_times["early_exit"].append(seconds_per_call(pair.predict_one, sample, 1))
        tflite_skip = float(np.mean([pair.predict_one(image)[1] for image in sample]))
    keras_ratios = np.array(keras_times["early_exit"]) / np.array(keras_times["plain"])
    tflite_ratios = np.array(tflite_times["early_exit"]) / np.array(tflite_times["plain"])
    return {
        "run": os.path.basename(os.path.normpath(workdir)), "backbone": config.backbone,
        "lookup_keys": int(parts.lookup.center_mask.numpy().sum()), "exit_rule": rule, "threshold": threshold,
        "validation_skip_rate": choices[rule]["validation_skip_rate"],
        "skip_rate": float(skipped.mean()), "accuracy_full": float(np.mean(full.argmax(1) == labels)),
        "accuracy_early_exit": float(np.mean(early.argmax(1) == labels)),
        "keras_plain_ms": 1e3 * float(np.median(keras_times["plain"])),
        "keras_early_exit_ms": 1e3 * float(np.median(keras_times["early_exit"])),
        "keras_ratio": float(np.median(keras_ratios)), "keras_ratio_range": [float(keras_ratios.min()),
                                                                            float(keras_ratios.max())],
        "tflite_plain_ms": 1e3 * float(np.median(tflite_times["plain"])),
        "tflite_early_exit_ms": 1e3 * float(np.median(tflite_times["early_exit"])),
        "tflite_ratio": float(np.median(tflite_ratios)), "tflite_ratio_range": [float(tflite_ratios.min()),
                                                                               float(tflite_ratios.max())],
        "tflite_images": int(len(sample)), "tflite_skip_rate": tflite_skip, "exit_rules": choices,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", required=True, help="comma-separated biased run folders")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tflite_images", type=int, default=300)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = []
    for workdir in args.runs.split(","):
        rows.append(measure(workdir, args.rounds, args.tflite_images))
        print(rows[-1], flush=True)
    print("\n| run | trunk | lookup keys | exit rule | skip f2 (test) | accuracy: full / early exit | Keras ms per 256:"
          " plain / early exit (ratio, range) | TFLite ms per image: plain / early exit (ratio, range) |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        cells = [row["run"], row["backbone"], str(row["lookup_keys"]), row["exit_rule"],
                 f"{100 * row['skip_rate']:.1f}%",
                 f"{100 * row['accuracy_full']:.2f}% / {100 * row['accuracy_early_exit']:.2f}%"]
        for engine, digits in (("keras", 1), ("tflite", 2)):
            low, high = row[f"{engine}_ratio_range"]
            cells.append(f"{row[f'{engine}_plain_ms']:.{digits}f} / {row[f'{engine}_early_exit_ms']:.{digits}f} "
                         f"({row[f'{engine}_ratio']:.2f}x, {low:.2f}-{high:.2f})")
        print("| " + " | ".join(cells) + " |")
    if args.json:
        kn.utils.write_json_atomically(args.json, rows)


if __name__ == "__main__":
    main()
