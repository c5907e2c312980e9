"""Conversion to SavedModel and TFLite (builtin ops only), and a TFLite runner; see `keras_nngk.export`.

Files are written under a temporary name and renamed, so an interrupted export never
leaves a half-written file under the final name.
"""

import contextlib
import os

import numpy as np
import tensorflow as tf

from keras_nngk import layers
from keras_nngk import search as search_lib
from keras_nngk.utils.files import save_model, write_atomically  # noqa: F401  (write_atomically: public here too)

QUANTIZATIONS = ("none", "dynamic", "int8", "int8-full")


def center_layers(model, types=(layers.CenterLayer,)):
    """Every layer of `types` (default: `CenterLayer`) in a model, nested models included."""
    found = []
    for layer in model.layers:
        if isinstance(layer, types):
            found.append(layer)
        elif hasattr(layer, "layers"):
            found.extend(center_layers(layer, types))
    return found


def _ranking_layers(model):
    """The layers that rank neighbours: they stay float in an `int8` export."""
    return center_layers(model, (layers.CenterLayer, layers.CompressedClassifier))


@contextlib.contextmanager
def _integer_ranking(heads):
    """The heads rank on int32 keys in the graphs traced inside (the int8 quantizer leaves integers alone)."""
    previous = [layer.integer_ranking for layer in heads]
    for layer in heads:
        layer.integer_ranking = True
    try:
        yield
    finally:
        for layer, value in zip(heads, previous):
            layer.integer_ranking = value


def use_exact_search(model):
    """Switches every center layer to the exportable in-graph search; returns the layers that changed."""
    switched = [layer for layer in center_layers(model) if not search_lib.is_in_graph(layer.active_search)]
    for layer in switched:
        layer.set_search("exact")
    if switched and getattr(model, "predict_function", None) is not None:
        model.make_predict_function(force=True)
    return switched


def serving_function(model):
    """The model's "serving_default" signature as Keras writes it: inputs named as the model's inputs, a dict of
    outputs keyed by the model's output names, inference mode."""
    specs = [tf.TensorSpec(tensor.shape, tensor.dtype, name=name)
             for tensor, name in zip(model.inputs, model.input_names)]

    @tf.function(input_signature=specs)
    def serve(*inputs):
        outputs = model(inputs[0] if len(inputs) == 1 else list(inputs), training=False)
        return dict(zip(model.output_names, tf.nest.flatten(outputs)))

    return serve


def to_saved_model(model, path):
    """Writes a SavedModel that runs without keras_nngk, faiss or Python callbacks (`tf.saved_model.load`).

    Its "serving_default" signature is the model's; Keras' per-layer traces are left out (`save_traces=False`:
    `keras.models.load_model` rebuilds the model from the layers' configs, with keras_nngk imported), which halves
    the time a run spends writing it (2.1 s -> 1.0 s for the small network on digits).
    """
    use_exact_search(model)
    return save_model(model, path, save_format="tf", save_traces=False, signatures=serving_function(model))


def _calibration_images(representative_data, input_shape, num_samples):
    """Up to `num_samples` single images `(1, *input_shape)` float32 from what a user passes as representative data.

    Accepts an array of images `(N, *input_shape)` (or one image), a `tf.data.Dataset` or any iterable of image
    batches, of single images, of `[batch]` lists (TFLite's own convention) or of `(images, labels)` pairs. Shapes
    and values are checked here: the converter's calibrator crashes the process on input it does not expect.
    """
    def elements():
        if isinstance(representative_data, np.ndarray):
            yield representative_data
            return
        if isinstance(representative_data, tf.data.Dataset):
            yield from representative_data.as_numpy_iterator()
            return
        if callable(representative_data) and not hasattr(representative_data, "__iter__"):
            yield from representative_data()  # A TFLite-style generator function.
            return
        yield from representative_data

    samples = []
    for element in elements():
        if isinstance(element, dict) and len(element) == 1:
            element = next(iter(element.values()))
        if isinstance(element, (list, tuple)):
            element = element[0]  # [batch] (TFLite's convention) or (images, labels).
        try:
            batch = np.asarray(element, dtype=np.float32)
        except (TypeError, ValueError) as error:
            raise ValueError(f"representative_data must hold float images of shape {input_shape}. Received: an "
                             f"element that is not numeric ({type(element).__name__}: {error})") from None
        if _fits(batch.shape, input_shape):
            batch = batch[np.newaxis]
        if not _fits(batch.shape[1:], input_shape):
            raise ValueError(f"representative_data must hold images of shape {input_shape} (the model's input), as "
                             f"an array (N, {', '.join(map(str, input_shape))}), a dataset or an iterable of batches. "
                             f"Received: an element of shape {batch.shape}")
        if not np.all(np.isfinite(batch)):
            raise ValueError("representative_data contains NaN or Inf values; pass real training images.")
        for sample in batch:
            samples.append(sample[np.newaxis])
            if len(samples) >= num_samples:
                return samples
    return samples


def _fits(shape, input_shape):
    """Whether an array shape matches a model input shape (None: any size)."""
    return len(shape) == len(input_shape) and all(want is None or want == got for got, want in zip(shape, input_shape))


def _representative_dataset(representative_data, input_shape, num_samples):
    samples = _calibration_images(representative_data, input_shape, num_samples)
    if not samples:
        raise ValueError("The representative data set for int8 quantization is empty; pass some training images "
                         "(e.g. 100 to 500).")
    return lambda: ([sample] for sample in samples)


def convert_to_tflite(model, quantization="none", representative_data=None, num_calibration_samples=300):
    """Converts a Keras model to TFLite bytes with builtin ops only.

    Args:
        model: a tf_keras model (center layers are switched to exact search).
        quantization: "none" (float32); "dynamic" (int8 weights, float
            activations); "int8" (the backbone's weights and activations in int8,
            calibrated on `representative_data`, the nearest-neighbour heads kept
            in float: 8-bit distances reorder neighbours); "int8-full" (every op
            that has an int8 kernel, the heads included). Inputs and outputs stay
            float32 in every case.
        representative_data: training images, required for the int8 modes: an array `(N, H, W, C)`, a
            `tf.data.Dataset` or an iterable of image batches (see `_calibration_images`).
        num_calibration_samples: images used to calibrate int8 ranges.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"Unknown quantization {quantization!r}; valid: {', '.join(QUANTIZATIONS)}. "
                         f"Received: quantization={quantization!r}")
    use_exact_search(model)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization.startswith("int8"):
        if representative_data is None:
            raise ValueError(f"quantization={quantization!r} needs representative_data (training images) to "
                             "calibrate.")
        input_shape = tuple(model.inputs[0].shape[1:])
        converter.representative_dataset = _representative_dataset(representative_data, input_shape,
                                                                    num_calibration_samples)
    heads = _ranking_layers(model)
    if quantization == "int8" and heads:
        with _integer_ranking(heads):
            content = _quantize_keeping_float(converter, model, [layer.name for layer in heads])
    else:
        content = converter.convert()
    flex = [name for name in op_names(content) if name.startswith("Flex") or name == "CUSTOM"]
    if flex:
        raise ValueError(f"The TFLite model needs non-builtin ops {sorted(set(flex))}; it would not run on a plain "
                         "TFLite runtime.")
    if quantization == "int8" and quantized_rankings(content):
        raise ValueError("The int8 converter quantized the neighbour ranking (TOPK_V2 on 8-bit values), which "
                         "reorders neighbours; export with quantization='dynamic' instead.")
    return content


def quantized_rankings(content):
    """Names of the `TOPK_V2` ops of a TFLite model that rank 8-bit values (an int8 export must have none)."""
    interpreter = _interpreter_class()(model_content=content)
    tensors = {detail["index"]: detail for detail in interpreter.get_tensor_details()}
    found = []
    for op in interpreter._get_ops_details():  # pylint: disable=protected-access
        if op["op_name"] == "TOPK_V2" and tensors[op["inputs"][0]]["dtype"] in (np.int8, np.uint8):
            found.append(tensors[op["outputs"][0]]["name"])
    return found


def _quantize_keeping_float(converter, model, head_names):
    """Full-integer quantization except for the ops of the named layers, which stay float32."""
    float_converter = tf.lite.TFLiteConverter.from_keras_model(model)
    float_converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    interpreter = _interpreter_class()(model_content=float_converter.convert())
    keep_float = [detail["name"] for detail in interpreter.get_tensor_details()
                  if any(f"/{name}/" in detail["name"] for name in head_names)]
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=keep_float)
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=converter.representative_dataset, debug_options=options)
    return debugger.get_nondebug_quantized_model()


def to_tflite(model, path, quantization="none", representative_data=None, num_calibration_samples=300):
    """Converts (see `convert_to_tflite`) and writes the `.tflite` file atomically; returns its path."""
    content = convert_to_tflite(model, quantization, representative_data, num_calibration_samples)
    return write_atomically(path, content)


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
    except ImportError:  # The TensorFlow copy is deprecated but identical.
        Interpreter = tf.lite.Interpreter  # pylint: disable=invalid-name
    return Interpreter


def op_names(content):
    """Names of the operators in a TFLite flatbuffer."""
    interpreter = _interpreter_class()(model_content=content)
    return [op["op_name"] for op in interpreter._get_ops_details()]  # pylint: disable=protected-access


class TFLiteModel:
    """Runs a `.tflite` classifier on batches of images (invoked one image at a time, as on a device)."""

    def __init__(self, path_or_content):
        if isinstance(path_or_content, (bytes, bytearray)):
            self.interpreter = _interpreter_class()(model_content=bytes(path_or_content))
        else:
            if not os.path.isfile(path_or_content):
                raise ValueError(f"No TFLite model at {path_or_content!r}; export one with "
                                 "python -m trainers.export --model=<run> --format=tflite")
            self.interpreter = _interpreter_class()(model_path=path_or_content)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        signature = list(self.input.get("shape_signature", self.input["shape"]))
        if signature[0] == -1:  # A dynamic batch: run one image at a time, as a device would.
            self.interpreter.resize_tensor_input(self.input["index"], [1] + list(self.input["shape"][1:]))
        self.batch_size = 1 if signature[0] == -1 else int(self.input["shape"][0])
        self.interpreter.allocate_tensors()

    @property
    def input_shape(self):
        return tuple(int(value) for value in self.input["shape"][1:])

    def predict(self, images):
        """Probabilities for `(N, H, W, C)` images, fed in the model's batch size (padded at the end)."""
        images = np.asarray(images, dtype=np.float32)
        outputs = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start:start + self.batch_size]
            count = len(batch)
            if count < self.batch_size:
                batch = np.concatenate([batch, np.repeat(batch[-1:], self.batch_size - count, axis=0)])
            self.interpreter.set_tensor(self.input["index"], batch)
            self.interpreter.invoke()
            outputs.append(self.interpreter.get_tensor(self.output["index"])[:count].copy())
        return np.concatenate(outputs)
