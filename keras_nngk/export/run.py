"""Exporting a finished run: SavedModel or TFLite, parity against Keras on test images, and a model card."""

import datetime
import json
import os
import time

import numpy as np

from keras_nngk import data as data_lib
from keras_nngk.export import convert as export
from keras_nngk.export import early_exit, enrolment
from keras_nngk.training import run as run_lib
from keras_nngk.utils import files, pipelines

FORMATS = ("tflite", "saved_model", "enrollable_tflite", "early_exit_tflite")
SIDECAR_FILES = ("class_names.json", "preprocessing.json")


def _load_run(workdir):
    config, model, backbone = run_lib.load_run(workdir)
    return config, model, backbone


def _enrollable_head(model):
    from keras_nngk import layers  # pylint: disable=g-import-not-at-top
    heads = [layer for layer in export.center_layers(model) if isinstance(layer, (layers.NNGKClassifier,
                                                                                  layers.ImpostorClassifier))]
    if not heads:
        raise ValueError("--format=enrollable_tflite needs a run with an NNGK or impostor head (--head=nngk).")
    return heads[0]


def _storage_report(model):
    """Bytes of the backbone weights and of each center layer's stored state."""
    report = {"backbone_bytes": 0, "centers": []}
    heads = export.center_layers(model)
    head_weights = {id(weight) for layer in heads for weight in layer.weights}
    for weight in model.weights:
        if id(weight) not in head_weights:
            report["backbone_bytes"] += int(np.prod(weight.shape)) * weight.dtype.size
    for layer in heads:
        report["centers"].append({
            "layer": layer.name, "num_centers": layer.num_centers, "capacity": layer.capacity,
            "dimension": layer.embedding_dim,
            "bytes": {weight.name.split("/")[-1].split(":")[0]: int(np.prod(weight.shape)) * weight.dtype.size
                      for weight in layer.weights}})
    return report


def export_run(workdir, export_format="tflite", quantization="none", output=None, num_eval=1000, verbose=0,
               capacity=None, max_classes=None, rule="class_mean", num_neighbours=None):
    """Exports the run's classifier and writes `model_card.md` beside it; returns the report dict.

    Args:
        workdir: a run directory written by `keras_nngk.training.fit`.
        export_format: "tflite" or "saved_model".
        quantization: "none", "dynamic" or "int8" (TFLite only).
        output: output folder (default: `workdir`).
        num_eval: test images on which Keras and the export are compared.
        capacity, max_classes, rule, num_neighbours: the center table's size, the class ids it can hold, the
            classification rule and its k ("enrollable_tflite" only; see `keras_nngk.export.enrolment`). With
            rule="kernel" the export reproduces the trained head (agreement 100%); "class_mean" changes the rule.
    """
    if export_format not in FORMATS:
        raise ValueError(f"Unknown format {export_format!r}; valid: {', '.join(FORMATS)}.")
    if export_format != "tflite" and quantization != "none":
        raise ValueError("Quantization applies to plain TFLite exports only; use --format=tflite.")
    if quantization not in export.QUANTIZATIONS:
        raise ValueError(f"Unknown quantization {quantization!r}; valid: {', '.join(export.QUANTIZATIONS)}. "
                         f"Received: quantization={quantization!r}")
    config, model, backbone = _load_run(workdir)
    output = output or workdir
    os.makedirs(output, exist_ok=True)
    data = data_lib.load(config.dataset, task=config.task, data_dir=config.data_dir, image_size=config.image_size,
                         seed=config.seed, class_split=config.class_split())
    # A retrieval model classifies its training classes only: compare on training images then.
    evaluation = data.test if config.task == "classification" else data.train
    test = evaluation.take(num_eval).batch(num_eval)
    test_images, test_labels = next(iter(pipelines.without_autotune_thread(test).as_numpy_iterator()))
    keras_probabilities = pipelines.predict(model, test_images, verbose=verbose)
    report = {"dataset": config.dataset, "backbone": config.backbone, "head": config.head, "format": export_format,
              "quantization": quantization, "date": datetime.date.today().isoformat(),
              "num_eval": int(len(test_labels)),
              "keras_accuracy": float(np.mean(keras_probabilities.argmax(1) == test_labels)),
              **_storage_report(model)}
    if export_format == "enrollable_tflite":
        head = _enrollable_head(model)
        path = enrolment.to_enrollable_tflite(backbone, head, os.path.join(output, "model_enrollable.tflite"),
                                              capacity=capacity, max_classes=max_classes, rule=rule,
                                              num_neighbours=num_neighbours)
        enrollable = enrolment.EnrollableTFLiteModel(path)
        exported = enrollable.classify(test_images)[:, :head.num_classes]
        report.update({"capacity": int(enrollable.capacity), "max_classes": int(enrollable.max_classes), "rule": rule,
                       "bytes_per_enrolled_example": enrolment.bytes_per_example(enrollable.embedding_dim,
                                                                                 enrollable.max_classes)})
    elif export_format == "early_exit_tflite":
        exported, path = _early_exit_export(workdir, model, test_images, output, report)
    elif export_format == "tflite":
        name = "model.tflite" if quantization == "none" else f"model_{quantization}.tflite"
        representative = (batch for batch, _ in data.train.batch(100).take(3).as_numpy_iterator())
        path = export.to_tflite(model, os.path.join(output, name), quantization=quantization,
                                representative_data=representative)
        exported = export.TFLiteModel(path).predict(test_images)
    else:
        path = export.to_saved_model(model, os.path.join(output, "saved_model"))
        import tensorflow as tf  # pylint: disable=g-import-not-at-top
        serve = tf.saved_model.load(path).signatures["serving_default"]
        exported = list(serve(tf.constant(test_images)).values())[0].numpy()
    report.update({
        "path": path,
        "file_bytes": int(os.path.getsize(path)) if os.path.isfile(path) else _folder_size(path),
        "export_accuracy": float(np.mean(exported.argmax(1) == test_labels)),
        "argmax_agreement": float(np.mean(exported.argmax(1) == keras_probabilities.argmax(1))),
        "max_abs_difference": float(np.abs(exported - keras_probabilities).max()),
    })
    for name in SIDECAR_FILES:
        source = os.path.join(workdir, name)
        if os.path.exists(source) and os.path.abspath(output) != os.path.abspath(workdir):
            with open(source, "rb") as handle:
                files.write_atomically(os.path.join(output, name), handle.read())
    files.write_json_atomically(os.path.join(output, f"export_{os.path.basename(path).split('.')[0]}.json"), report)
    files.write_atomically(os.path.join(output, "model_card.md"), model_card(report).encode())
    return report


def _early_exit_export(workdir, model, test_images, output, report):
    """Writes `early_exit/` with the run's exit rule and validation-chosen threshold; parity and batch-1 latency."""
    with open(os.path.join(workdir, run_lib.METRICS_FILE)) as handle:
        metrics = json.load(handle)
    if metrics.get("chosen_threshold") is None:
        raise ValueError(f"The run in {workdir} has no exit threshold: it was trained without --threshold_split "
                         "(retrain with --threshold_split=0.1), or no threshold kept the held-out accuracy cost "
                         "within 0.5 points (nothing would exit early).")
    parts = early_exit.biased_parts(model)
    threshold, rule = float(metrics["chosen_threshold"]), metrics["exit_rule"]
    path = early_exit.to_early_exit_tflite(parts, os.path.join(output, "early_exit"), threshold, rule)
    device = early_exit.EarlyExitTFLiteModel(path)
    exported, skipped = device.predict(test_images)
    keras_early, keras_skipped = parts.predict_early_exit(test_images, threshold, rule=rule)
    # The same network without lookup, as the app would ship it otherwise: batch 1, in turns with the pair.
    plain = export.TFLiteModel(export.convert_to_tflite(_plain_path(parts)))
    sample = test_images[:min(len(test_images), 300)]
    seconds = {"plain": [], "early_exit": []}
    for _ in range(3):
        for name, function in (("plain", plain.predict), ("early_exit", device.predict)):
            start = time.perf_counter()
            function(sample)
            seconds[name].append((time.perf_counter() - start) / len(sample))
    report.update({"exit_rule": rule, "threshold": threshold, "skip_rate": float(skipped.mean()),
                   "skip_agreement_with_keras": float(np.mean(skipped == keras_skipped)),
                   "argmax_agreement_with_keras_early_exit": float(np.mean(exported.argmax(1) ==
                                                                           keras_early.argmax(1))),
                   "latency_batch1_plain_ms": 1e3 * float(np.median(seconds["plain"])),
                   "latency_batch1_early_exit_ms": 1e3 * float(np.median(seconds["early_exit"]))})
    report["latency_batch1_ratio"] = report["latency_batch1_early_exit_ms"] / report["latency_batch1_plain_ms"]
    return exported, path


def _plain_path(parts):
    """The biased network without its lookup path (clf o f2 o f1), for the latency comparison."""
    import tf_keras as keras  # pylint: disable=g-import-not-at-top
    image = keras.Input(parts.f1.input_shape[1:])
    return keras.Model(image, parts.classifier(parts.f2(parts.f1(image))), name="plain_path")


def _folder_size(path):
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)


def model_card(report):
    """A short Markdown model card from an export report."""
    lines = [f"# Model card: {report['dataset']} / {report['backbone']} / {report['head']} head", "",
             f"- Exported: {report['date']}, format `{report['format']}`, quantization `{report['quantization']}`",
             f"- File: `{os.path.basename(report['path'])}`, {report['file_bytes']:,} bytes",
             f"- Backbone weights: {report['backbone_bytes']:,} bytes (float32)", ""]
    for head in report["centers"]:
        lines.append(f"- Centers of `{head['layer']}`: {head['num_centers']:,} stored (capacity {head['capacity']:,}), "
                     f"dimension {head['dimension']}, in float32")
        for name, size in head["bytes"].items():
            lines.append(f"  - `{name}`: {size:,} bytes")
    lines += ["", f"Accuracy on {report['num_eval']:,} evaluation images:", "",
              "| model | accuracy |", "| --- | --- |",
              f"| Keras | {100 * report['keras_accuracy']:.2f}% |",
              f"| {report['format']} ({report['quantization']}) | {100 * report['export_accuracy']:.2f}% |", "",
              f"Argmax agreement with Keras: {100 * report['argmax_agreement']:.2f}%; largest probability difference "
              f"{report['max_abs_difference']:.2e}.", "",
              "Inputs: images as described in `preprocessing.json` (float32 in [0, 1]); class names in "
              "`class_names.json`. Written by `python -m trainers.export`.", ""]
    return "\n".join(lines)


def report_json(report):
    return json.dumps(report, indent=2, sort_keys=True, default=str)
