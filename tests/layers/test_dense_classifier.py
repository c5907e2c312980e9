"""DenseClassifier (eq. 2) against the NumPy softmax reference."""

import numpy as np
import tf_keras as keras

import keras_nngk as kn
from tests import reference


def test_matches_reference_and_ignores_sample_ids(rng):
    head = kn.layers.DenseClassifier(5)
    embeddings = rng.normal(size=(9, 7)).astype(np.float32)
    out = head(embeddings).numpy()
    kernel, bias = head.get_weights()
    np.testing.assert_allclose(out, reference.dense_classifier(embeddings, kernel, bias), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(head([embeddings, np.arange(9)]).numpy(), out)
    assert len(head.trainable_weights) == 2


def test_config_and_keras_round_trip(rng, tmp_path):
    head = kn.layers.DenseClassifier(3, use_bias=False, kernel_regularizer="l2", name="dense_head")
    assert kn.layers.DenseClassifier.from_config(head.get_config()).get_config() == head.get_config()
    inputs = keras.Input((4,))
    model = keras.Model(inputs, head(inputs))
    model.save(str(tmp_path / "dense.keras"))
    reloaded = keras.models.load_model(str(tmp_path / "dense.keras"))
    x = rng.normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    assert len(head.trainable_weights) == 1
