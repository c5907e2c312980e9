"""One test helper for every layer, in the spirit of keras' `run_layer_test`.

A `LayerCase` builds a layer with its state (centers, weights) and says what its
output should be by an independent reference (`tests/reference.py`). The checks:

- `check_reference`: the output equals the NumPy reference;
- `check_config_round_trip`: `from_config(get_config())` gives the same config and, with the same weights, the same
  output;
- `check_keras_round_trip`: a model around the layer saved as .keras and loaded with `kn.utils.load_model`;
- `saved_models_in_one_fresh_process` + `check_saved_model_served`: the SavedModels of every layer run in one new
  Python process that imports only TensorFlow;
- `check_tflite_parity`: the TFLite model gives the Keras output;
- `check_training_step`: gradients are finite, reach the embeddings when the layer is differentiable, and one
  step on the embeddings lowers the loss (with sample ids for the center layers: leave-one-out);
- `check_bad_input`: wrong dimension and NaN queries get one-line ValueErrors naming the problem.
"""

import dataclasses
import json
import os
import textwrap
from typing import Callable, Optional

import numpy as np
import tensorflow as tf
import tf_keras as keras

import keras_nngk as kn
from tests import processes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass
class LayerCase:
    """A layer under test.

    Attributes:
        name: test id.
        make: `rng -> layer`, built and holding its state.
        reference: `(layer, queries) -> expected (B, m)` from `tests/reference.py` (outputs concatenated).
        dimension: embedding dimension of the queries.
        num_classes: classes of a classifier (labels of the training step); None for other layers.
        differentiable: the output has a gradient with respect to the embeddings.
        sample_ids: the layer takes `[embeddings, sample_ids]` (leave-one-out in training).
        checks_nan: the layer rejects NaN queries itself (center layers do; the dense head leaves NaN to the model).
        atol: tolerance of the comparisons with the reference and between formats.
    """

    name: str
    make: Callable
    reference: Callable
    dimension: int
    num_classes: Optional[int] = None
    differentiable: bool = True
    sample_ids: bool = True
    checks_nan: bool = True
    atol: float = 1e-5


def outputs_of(layer, queries):
    """The layer's output for queries, tuple outputs concatenated, as a NumPy array."""
    output = layer(tf.constant(queries, tf.float32))
    if isinstance(output, (tuple, list)):
        output = tf.concat(list(output), axis=-1)
    return output.numpy()


def inference_model(layer, dimension):
    """`embeddings -> output` around the layer (tuple outputs concatenated: one output tensor for every format)."""
    inputs = keras.Input((dimension,), name="embeddings")
    output = layer(inputs)
    if isinstance(output, (tuple, list)):
        output = keras.layers.Concatenate(name="outputs")(list(output))
    return keras.Model(inputs, output)


def queries_for(case, rng, count=9):
    return rng.normal(size=(count, case.dimension)).astype(np.float32)


def check_reference(case, layer, queries):
    np.testing.assert_allclose(outputs_of(layer, queries), case.reference(layer, queries), atol=case.atol,
                               err_msg=f"{case.name}: output differs from the NumPy reference")


def check_config_round_trip(case, layer, queries):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    clone.build(tf.TensorShape((None, case.dimension)))
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(outputs_of(clone, queries), outputs_of(layer, queries), atol=case.atol)


def check_keras_round_trip(case, layer, queries, directory):
    model = inference_model(layer, case.dimension)
    expected = model.predict(queries, verbose=0)
    path = os.path.join(directory, f"{case.name}.keras")
    kn.utils.save_model(model, path)
    loaded = kn.utils.load_model(path)
    np.testing.assert_allclose(loaded.predict(queries, verbose=0), expected, atol=case.atol)


def saved_models_in_one_fresh_process(built, directory):
    """Exports each `(case, layer, queries)` of `built` as a SavedModel, then serves them all in one new Python
    process without keras_nngk (one TensorFlow start-up for every layer, instead of one each).

    Returns:
        `{case name: (expected, served outputs or the error message)}`; `check_saved_model_served` checks one.
    """
    expected, jobs = {}, []
    for case, layer, queries in built:
        model = inference_model(layer, case.dimension)
        expected[case.name] = model.predict(queries, verbose=0)
        path = os.path.join(directory, f"{case.name}_saved_model")
        kn.export.to_saved_model(model, path)
        np.save(os.path.join(directory, f"{case.name}_queries.npy"), queries)
        jobs.append((case.name, path))
    script = textwrap.dedent(f"""
        import json, sys, numpy as np, tensorflow as tf
        errors = {{}}
        for name, path in {jobs!r}:
            try:
                serve = tf.saved_model.load(path).signatures["serving_default"]
                outputs = serve(tf.constant(np.load(path.replace("_saved_model", "_queries.npy"))))
                assert len(outputs) == 1, outputs.keys()
                np.save(path.replace("_saved_model", "_outputs.npy"), next(iter(outputs.values())).numpy())
            except Exception as error:  # Every layer is reported, not only the first that fails.
                errors[name] = f"{{type(error).__name__}}: {{error}}"
        assert not any(name.startswith("keras_nngk") for name in sys.modules), "keras_nngk was imported"
        json.dump(errors, open("errors.json", "w"))
    """)
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH="")
    result = processes.run_code(script, env=environment, cwd=directory, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    with open(os.path.join(directory, "errors.json")) as handle:
        errors = json.load(handle)
    return {name: (expected[name], errors[name] if name in errors else
                   np.load(os.path.join(directory, f"{name}_outputs.npy"))) for name in expected}


def check_saved_model_served(case, served):
    """The outputs `saved_models_in_one_fresh_process` served for `case` equal the Keras model's."""
    expected, got = served[case.name]
    assert not isinstance(got, str), got
    np.testing.assert_allclose(got, expected, atol=case.atol)


def check_tflite_parity(case, layer, queries, directory):
    model = inference_model(layer, case.dimension)
    expected = model.predict(queries, verbose=0)
    path = kn.export.to_tflite(model, os.path.join(directory, f"{case.name}.tflite"))
    np.testing.assert_allclose(kn.export.TFLiteModel(path).predict(queries), expected, atol=max(case.atol, 1e-5))


def check_training_step(case, layer, queries, rng):
    embeddings = tf.Variable(queries)
    labels = rng.integers(0, case.num_classes or 2, len(queries))
    sample_ids = tf.constant(np.arange(len(queries), dtype=np.int32))

    def loss_and_output():
        inputs = [embeddings, sample_ids] if case.sample_ids else embeddings
        output = layer(inputs, training=True)
        if isinstance(output, (tuple, list)) or case.num_classes is None:  # Not a classifier (the lookup, features):
            if isinstance(output, (tuple, list)):  # a squared error on the outputs.
                output = tf.concat(list(output), axis=-1)
            return tf.reduce_mean(tf.square(output - 1.0)), output
        return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, output)), output

    with tf.GradientTape() as tape:
        loss, output = loss_and_output()
    assert np.all(np.isfinite(output.numpy()))
    variables = [embeddings] + layer.trainable_variables
    gradients = tape.gradient(loss, variables)
    for variable, gradient in zip(variables, gradients):
        if gradient is not None:
            values = gradient.values if isinstance(gradient, tf.IndexedSlices) else gradient
            assert np.all(np.isfinite(values.numpy())), f"{case.name}: non-finite gradient for {variable.name}"
    if not case.differentiable:
        assert gradients[0] is None or not np.any(gradients[0].numpy()), f"{case.name}: unexpected gradient"
        return
    assert gradients[0] is not None and np.any(gradients[0].numpy()), f"{case.name}: no gradient reaches z"
    embeddings.assign_sub(1e-2 * gradients[0] / (tf.norm(gradients[0]) + 1e-12))
    new_loss, _ = loss_and_output()
    assert float(new_loss) < float(loss), f"{case.name}: a step along -gradient did not lower the loss"


def check_bad_input(case, layer):
    wrong = np.zeros((2, case.dimension + 1), np.float32)
    try:
        layer(tf.constant(wrong))
    except ValueError as error:  # Keras wraps a layer's message in lines of its own; ours is one of them.
        assert any(str(case.dimension) in line and "Received" in line for line in str(error).splitlines()), error
    else:
        raise AssertionError(f"{case.name}: queries of the wrong dimension were accepted")
    if case.checks_nan:
        bad = np.zeros((2, case.dimension), np.float32)
        bad[1, 0] = np.nan
        try:
            layer(tf.constant(bad))
        except ValueError as error:
            assert "NaN" in str(error), str(error)
        else:
            raise AssertionError(f"{case.name}: NaN queries were accepted")
