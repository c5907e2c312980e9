"""`kn.utils.pipelines`: `predict` gives `model.predict`'s outputs through a pipeline without tf.data's autotuning
thread (deleting an iterator waits for that thread's sleep: bench/README.md, "Prediction on arrays")."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import keras_nngk as kn
from keras_nngk.training import center_sync
from keras_nngk.utils import pipelines


def _model():
    keras.utils.set_random_seed(0)
    images = keras.Input((5,), name="image")
    ids = keras.Input((), dtype="int32", name="sample_id")
    hidden = keras.layers.Dense(4, name="dense")(images)
    shifted = keras.layers.Lambda(lambda pair: pair[0] + tf.cast(pair[1], tf.float32)[:, None])([hidden, ids])
    return keras.Model(images, hidden), keras.Model({"image": images, "sample_id": ids}, [shifted, hidden])


class _Spy:
    """Wraps a model; records what its `predict` received."""

    def __init__(self, model):
        self.model, self.received = model, []

    def predict(self, inputs, **kwargs):
        self.received.append(inputs)
        return self.model.predict(inputs, **kwargs)


def test_predict_equals_keras_predict_on_arrays_dicts_and_datasets_without_the_thread():
    plain, named = _model()
    x = np.random.default_rng(0).normal(size=(23, 5)).astype(np.float32)  # 23: a shorter last batch.
    ids = np.arange(23, dtype=np.int32)
    spy = _Spy(plain)
    np.testing.assert_array_equal(pipelines.predict(spy, x, batch_size=8), plain.predict(x, batch_size=8, verbose=0))
    assert isinstance(spy.received[0], tf.data.Dataset)
    assert spy.received[0].options().autotune.enabled is False
    assert [len(batch[0]) for batch in spy.received[0].as_numpy_iterator()] == [8, 8, 7]
    got = pipelines.predict(named, {"image": x, "sample_id": ids}, batch_size=8)
    expected = named.predict({"image": x, "sample_id": ids}, batch_size=8, verbose=0)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(got[0] - got[1], np.repeat(ids[:, None], 4, axis=1).astype(np.float32), atol=1e-5)
    batches = tf.data.Dataset.from_tensor_slices(x).batch(5)
    spy = _Spy(plain)
    np.testing.assert_array_equal(pipelines.predict(spy, batches), plain.predict(x, batch_size=5, verbose=0))
    assert spy.received[0].options().autotune.enabled is False
    np.testing.assert_array_equal(pipelines.predict(plain, tf.constant(x)), plain.predict(x, verbose=0))


def test_predict_passes_other_inputs_to_keras_unchanged():
    plain, _ = _model()
    spy = _Spy(plain)
    x = [np.ones((3, 5), np.float32)]  # A list of arrays: Keras' own handling.
    np.testing.assert_array_equal(pipelines.predict(spy, x), plain.predict(x, verbose=0))
    assert spy.received[0] is x


@pytest.mark.parametrize("make", [lambda x: x, lambda x: tf.data.Dataset.from_tensor_slices(x).batch(4)])
def test_center_sync_embeds_and_recalibrates_through_pipelines_without_the_thread(monkeypatch, make):
    backbone = kn.backbones.get("small_conv", (8, 8, 1), 4)
    x = np.random.default_rng(1).uniform(size=(10, 8, 8, 1)).astype(np.float32)
    seen = []
    original = pipelines.without_autotune_thread
    monkeypatch.setattr(pipelines, "without_autotune_thread", lambda dataset: seen.append(dataset) or original(dataset))
    sync = center_sync.CenterSync(None, backbone, batch_size=4)
    np.testing.assert_array_equal(sync.embed(make(x)), backbone.predict(x, batch_size=4, verbose=0))
    assert len(seen) == 1
    assert center_sync.recalibrate_batchnorm(backbone, tf.data.Dataset.from_tensor_slices(x).batch(4), 2) == 2
    assert len(seen) == 2
