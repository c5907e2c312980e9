"""Impostor heads in whole runs: fixed centers never move, tied ones follow the network, loose ones train."""

import os

import numpy as np
import pytest
import tf_keras as keras

import keras_nngk as kn


def _centers(workdir):
    model = keras.models.load_model(os.path.join(workdir, "model.keras"))
    return model.get_layer("impostor_head").centers.numpy()


def _run(workdir, tie, epochs, **overrides):
    config = kn.training.Config.for_dataset("digits", head="impostor", tie=tie, epochs=epochs, **overrides)
    return kn.training.fit(config, workdir, verbose=0)


@pytest.mark.slow
def test_fixed_centers_are_bit_identical_after_training(tmp_path):
    _run(str(tmp_path), "fixed", 1)
    first = _centers(str(tmp_path))
    results = _run(str(tmp_path), "fixed", 3)  # Resumes the same run for two more epochs.
    assert results["initial_epoch"] == 1
    np.testing.assert_array_equal(_centers(str(tmp_path)), first)


@pytest.mark.slow
def test_tied_centers_equal_the_networks_embeddings(tmp_path):
    _run(str(tmp_path), "tied", 2)
    backbone = keras.models.load_model(os.path.join(tmp_path, "backbone.keras"))
    data = kn.data.load("digits")
    embeddings = backbone.predict(np.stack([image for image, _ in data.train.as_numpy_iterator()]), verbose=0)
    np.testing.assert_allclose(_centers(str(tmp_path)), embeddings, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_loose_centers_move_and_training_learns(tmp_path):
    _run(str(tmp_path), "loose", 1)
    first = _centers(str(tmp_path))
    results = _run(str(tmp_path), "loose", 3)
    moved = np.abs(_centers(str(tmp_path)) - first).max(axis=1) > 0
    assert moved.mean() > 0.5
    assert results["test_accuracy"] > 0.8


@pytest.mark.slow
@pytest.mark.parametrize("bits,rotation", [(8, True), (4, False)])
def test_pq_compressed_centers_reported_beside_float(tmp_path, bits, rotation):
    results = _run(str(tmp_path), "loose", 3, pq_bytes=16, pq_bits=bits, pq_rotation=rotation)
    assert abs(results["test_accuracy"] - results["test_accuracy_pq"]) < 0.05
    memory = results["memory"]
    assert memory["codes_bytes"] == results["num_train"] * 16 and memory["bits"] == bits
    assert memory["rotation_bytes"] == (64 * 64 * 4 if rotation else 0)
    assert memory["labels_bytes"] == results["num_train"]  # one uint8 class id per center
    assert memory["float_centers_bytes"] == results["num_train"] * 64 * 4
    assert os.path.exists(tmp_path / "model_pq.keras")
    with pytest.raises(ValueError, match=r"pq_bytes` must divide embedding_dim=64; valid: \[1, 2, 4, 8, 16, 32, 64\]"):
        kn.training.Config.for_dataset("digits", head="impostor", pq_bytes=12)
    with pytest.raises(ValueError, match=r"valid: \[1, 2, 4, 8, 16, 32\] \(pq_bits=4\)"):
        kn.training.Config.for_dataset("digits", head="impostor", pq_bytes=64, pq_bits=4)
    with pytest.raises(ValueError, match="`pq_bits` must be 4 or 8"):
        kn.training.Config.for_dataset("digits", head="impostor", pq_bytes=16, pq_bits=2)
    with pytest.raises(ValueError, match="Unknown tie 'soft'"):
        kn.training.Config.for_dataset("digits", head="impostor", tie="soft")
