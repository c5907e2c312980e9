"""CenterRefresh inside plain model.fit, with leave-one-out through a sample-id input."""

import numpy as np
import pytest
import tf_keras as keras

import keras_nngk as kn
from tests.conftest import clustered


def _setup(rng, search="exact", num_points=240):
    x, clusters = clustered(rng, num_points, 10, num_clusters=6, spread=0.6)
    y = clusters % 3
    backbone = keras.Sequential([keras.Input((10,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(4)])
    head = kn.layers.NNGKClassifier(3, num_neighbours=8, sigma=1.0, capacity=num_points, search=search)
    image = keras.Input((10,), name="image")
    sample_id = keras.Input((), dtype="int32", name="sample_id")
    train_model = keras.Model([image, sample_id], head([backbone(image), sample_id]))
    train_model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", metrics=["accuracy"],
                        jit_compile=False)
    return x, y, backbone, head, train_model


@pytest.mark.parametrize("search", ["exact", "faiss-flat"])
def test_fit_refreshes_centers_and_learns(rng, search):
    x, y, backbone, head, train_model = _setup(rng, search)
    ids = np.arange(len(x))
    refresh = kn.callbacks.CenterRefresh(head, backbone, x, y, every_n_epochs=1, verbose=0)
    history = train_model.fit([x, ids], y, epochs=4, batch_size=32, callbacks=[refresh], verbose=0)
    assert refresh.refresh_count == 1 + 4  # At the start, then after every epoch (the end needs none).
    np.testing.assert_allclose(head.centers.numpy(), backbone.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    assert history.history["loss"][-1] < history.history["loss"][0]
    # Per-center weights learned during training survive the refreshes.
    assert np.abs(head.log_weights.numpy()).max() > 0
    inference = keras.Model(backbone.input, head(backbone.output))
    leave_one_out = head([backbone.predict(x, verbose=0), ids]).numpy().argmax(1)
    assert np.mean(leave_one_out == y) > 0.9
    assert inference.predict(x[:5], verbose=0).shape == (5, 3)


def test_refresh_interval_and_final_refresh(rng):
    x, y, backbone, head, train_model = _setup(rng)
    refresh = kn.callbacks.CenterRefresh(head, backbone, x, y, every_n_epochs=2, verbose=0)
    train_model.fit([x, np.arange(len(x))], y, epochs=3, batch_size=64, callbacks=[refresh], verbose=0)
    assert refresh.refresh_count == 3  # Start, after epoch 2, and at the end since epoch 3 did not refresh.
    np.testing.assert_allclose(head.centers.numpy(), backbone.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="every_n_epochs=0"):
        kn.callbacks.CenterRefresh(head, backbone, x, y, every_n_epochs=0)


def test_models_built_from_a_head_layer_train_with_leave_one_out_and_a_plain_model_is_warned(rng, caplog):
    x, y, backbone, _, _ = _setup(rng)
    head = kn.layers.NNGKClassifier(3, num_neighbours=8, capacity=len(x))
    built = kn.models.nngk_classifier(backbone, 3, head=head)
    assert built.center_head is head and set(built.train_model.input) == {"image", "sample_id"}
    built.train_model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", jit_compile=False)
    refresh = kn.callbacks.CenterRefresh(head, backbone, x, y, verbose=0)
    with caplog.at_level("WARNING"):
        built.train_model.fit({"image": x, "sample_id": np.arange(len(x))}, y, epochs=1, batch_size=64,
                              callbacks=[refresh], verbose=0)
    assert not any("no leave-one-out" in record.getMessage() for record in caplog.records)
    plain = keras.Sequential([backbone, head])  # No sample ids reach the head.
    plain.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", jit_compile=False)
    with caplog.at_level("WARNING"):
        plain.fit(x, y, epochs=1, batch_size=64, callbacks=[refresh], verbose=0)
    assert any("no leave-one-out" in record.getMessage() for record in caplog.records)


@pytest.mark.slow  # Two short runs per loop (about 15 s each).
@pytest.mark.parametrize("loop", ["fit", "custom"])
def test_held_out_metrics_per_epoch_in_history_and_tensorboard(tmp_path, loop):
    """The last epoch's held-out accuracy is the run's test accuracy (centers refreshed after it, nothing changes
    at the end); the loss is the cross-entropy of the saved model's probabilities; TensorBoard gets validation
    curves from both loops."""
    import glob
    import json
    import os

    from tests import reference
    config = kn.training.Config.for_dataset("digits", epochs=2, loop=loop)
    results = kn.training.fit(config, str(tmp_path), verbose=0)
    history = json.load(open(tmp_path / "history.json"))["epochs"]
    assert [entry["epoch"] for entry in history] == [0, 1]
    assert all({"val_accuracy", "val_loss"} <= set(entry) for entry in history)
    assert history[-1]["val_accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-12)
    data = kn.data.load("digits")
    images = np.stack([image for image, _ in data.test.as_numpy_iterator()])
    labels = np.array([label for _, label in data.test.as_numpy_iterator()])
    model = kn.utils.load_model(str(tmp_path / "model.keras"))
    probabilities = np.clip(model.predict(images, verbose=0), 1e-7, 1.0)
    assert history[-1]["val_loss"] == pytest.approx(reference.cross_entropy(probabilities, labels), rel=1e-4)
    assert glob.glob(os.path.join(tmp_path, "logs", "validation", "events.out.tfevents.*"))
    quiet = kn.training.Config.for_dataset("digits", epochs=1, eval_every=0)
    kn.training.fit(quiet, str(tmp_path / "quiet"), verbose=0)
    assert "val_accuracy" not in json.load(open(tmp_path / "quiet" / "history.json"))["epochs"][0]
    with pytest.raises(ValueError, match="`eval_every` must be 0"):
        kn.training.Config.for_dataset("digits", eval_every=-1).validate()
