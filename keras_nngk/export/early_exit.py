"""Early exit on the device: the biased network as two TFLite models, the cheap one first.

    kn.export.to_early_exit_tflite(parts, "out/early_exit", threshold=0.4, rule="margin")
    model = kn.export.EarlyExitTFLiteModel("out/early_exit")
    probabilities, skipped = model.predict(images)        # one image at a time, as an app runs it

`front.tflite` maps an image to `probabilities` (clf(z1)), `exit_score`, and the
tensors the rest needs (`features` h, `looked_up` z1, `gate` g): f1, the
projector, the lookup and the classifier, never f2. An app keeps the front's
answer when `exit_score >= threshold`, and otherwise runs `back.tflite`, which
maps `(features, looked_up, gate)` to clf(g z1 + (1 - g) f2(h)). Both have batch 1
and named signature tensors; `early_exit.json` holds the threshold and the rule.
The answers equal `BiasedModels.predict_early_exit` (tested).
"""

import json
import os
import tempfile

import numpy as np
import tensorflow as tf

from keras_nngk.export import convert
from keras_nngk.utils import files

CONFIG_FILE = "early_exit.json"
FRONT_FILE = "front.tflite"
BACK_FILE = "back.tflite"


def biased_parts(model):
    """The `BiasedModels` parts (f1, f2, projector, lookup, classifier) of a saved biased network's inference model."""
    from keras_nngk.models import biased as biased_lib  # pylint: disable=g-import-not-at-top
    try:
        parts = {name: model.get_layer(name) for name in ("f1", "f2", "projector", "lookup", "clf")}
    except ValueError:
        raise ValueError(f"{model.name!r} is not a biased network (it lacks f1, f2, projector, lookup or clf); "
                         "early exit needs a run trained with --model=biased.") from None
    import tf_keras as keras  # pylint: disable=g-import-not-at-top
    image = keras.Input(model.input_shape[1:])
    _, gate = parts["lookup"](parts["projector"](parts["f1"](image)))
    return biased_lib.BiasedModels(train_model=None, inference_model=model, f1=parts["f1"], f2=parts["f2"],
                                   classifier=parts["clf"], projector=parts["projector"], lookup=parts["lookup"],
                                   gate_model=keras.Model(image, gate, name="gate"))


def _convert(function, specs, layers):
    """TFLite bytes of a `tf.function` over `layers` with a "serving_default" signature (named inputs, outputs)."""
    module = tf.Module()
    module.layers = list(layers)  # Tracked: their variables are what the function captures.
    module.function = function
    with tempfile.TemporaryDirectory() as directory:
        tf.saved_model.save(module, directory, signatures={"serving_default": function.get_concrete_function(*specs)})
        converter = tf.lite.TFLiteConverter.from_saved_model(directory)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        return converter.convert()


def to_early_exit_tflite(parts, directory, threshold, rule="gate"):
    """Writes `front.tflite`, `back.tflite` and `early_exit.json` into `directory`; returns `directory`.

    Args:
        parts: a `BiasedModels` (or `biased_parts(inference_model)` of a saved run).
        directory: output folder, written as a whole (atomically).
        threshold: samples whose exit score is at least this skip f2.
        rule: the exit score, one of `keras_nngk.models.biased.EXIT_RULES`.
    """
    from keras_nngk.models import biased as biased_lib  # pylint: disable=g-import-not-at-top
    biased_lib.check_exit_rule(rule)
    if parts.lookup is None:
        raise ValueError("The plain network has no lookup path to exit early from.")
    if not np.isfinite(threshold):
        raise ValueError(f"The exit threshold must be a finite number. Received: threshold={threshold!r}")
    convert.use_exact_search(parts.inference_model)
    image_shape = tuple(parts.f1.input_shape[1:])
    feature_shape = tuple(parts.f1.output_shape[1:])
    value_dim = parts.lookup.value_dim

    @tf.function
    def front(image):
        features, looked_up, gate, early, score = parts.front(image, rule)
        return {"probabilities": early, "exit_score": score, "features": features, "looked_up": looked_up,
                "gate": gate}

    @tf.function
    def back(features, looked_up, gate):
        return {"probabilities": parts.back(features, looked_up, gate)}

    front_content = _convert(front, [tf.TensorSpec((1,) + image_shape, tf.float32, name="image")],
                             [parts.f1, parts.projector, parts.lookup, parts.classifier])
    back_content = _convert(back, [tf.TensorSpec((1,) + feature_shape, tf.float32, name="features"),
                                   tf.TensorSpec((1, value_dim), tf.float32, name="looked_up"),
                                   tf.TensorSpec((1, 1), tf.float32, name="gate")], [parts.f2, parts.classifier])
    for content in (front_content, back_content):
        flex = [name for name in convert.op_names(content) if name.startswith("Flex") or name == "CUSTOM"]
        if flex:
            raise ValueError(f"The early-exit TFLite models need non-builtin ops {sorted(set(flex))}.")

    def write(folder):
        with open(os.path.join(folder, FRONT_FILE), "wb") as handle:
            handle.write(front_content)
        with open(os.path.join(folder, BACK_FILE), "wb") as handle:
            handle.write(back_content)
        with open(os.path.join(folder, CONFIG_FILE), "w") as handle:
            json.dump({"threshold": float(threshold), "rule": rule, "image_shape": list(image_shape),
                       "front": FRONT_FILE, "back": BACK_FILE}, handle, indent=1)

    files.write_folder_atomically(directory, write)
    return directory


def is_early_exit(path):
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, CONFIG_FILE))


class EarlyExitTFLiteModel:
    """Runs an early-exit export one image at a time: the front, and the back only when the score is low."""

    def __init__(self, directory, threshold=None):
        if not is_early_exit(directory):
            raise ValueError(f"No early-exit export in {directory!r} (no {CONFIG_FILE}); write one with "
                             "python -m trainers.export --model=<biased run> --format=early_exit_tflite")
        with open(os.path.join(directory, CONFIG_FILE)) as handle:
            self.config = json.load(handle)
        self.threshold = float(self.config["threshold"] if threshold is None else threshold)
        interpreter = convert._interpreter_class()  # pylint: disable=protected-access
        self.front = interpreter(model_path=os.path.join(directory, self.config["front"])).get_signature_runner()
        self.back = interpreter(model_path=os.path.join(directory, self.config["back"])).get_signature_runner()

    def predict_one(self, image):
        """`(probabilities (C,), skipped)` of one `(H, W, C)` image."""
        front = self.front(image=np.asarray(image, np.float32)[np.newaxis])
        if float(front["exit_score"][0]) >= self.threshold:
            return front["probabilities"][0], True
        back = self.back(features=front["features"], looked_up=front["looked_up"], gate=front["gate"])
        return back["probabilities"][0], False

    def predict(self, images):
        """`(probabilities (N, C), skipped (N,))` of `(N, H, W, C)` images."""
        answers = [self.predict_one(image) for image in np.asarray(images, np.float32)]
        return np.stack([probabilities for probabilities, _ in answers]), np.array([skip for _, skip in answers])
