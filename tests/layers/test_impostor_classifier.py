"""ImpostorClassifier: eq. 9 against NumPy, the tie term, sparse center gradients, serialization, errors."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import keras_nngk as kn
from tests import reference


@pytest.fixture
def problem(rng):
    return (rng.normal(size=(50, 6)).astype(np.float32), rng.integers(0, 3, 50),
            rng.normal(size=(12, 6)).astype(np.float32))


@pytest.mark.parametrize("tie", ["tied", "fixed", "loose"])
def test_matches_eq9_reference(problem, tie):
    centers, labels, queries = problem
    head = kn.layers.ImpostorClassifier(3, num_neighbours=5, sigma=0.7, tie=tie)
    head.assign_centers(centers, labels)
    expected = reference.nngk_classifier(queries, centers, reference.one_hot(labels, 3), 5, 0.7)
    np.testing.assert_allclose(head(queries).numpy(), expected, rtol=1e-5, atol=1e-6)
    assert head.centers.trainable == (tie == "loose")
    assert not hasattr(head, "log_weights")  # No importance weights in impostor networks.


def test_tie_term_and_sparse_center_gradients(problem):
    centers, labels, queries = problem
    head = kn.layers.ImpostorClassifier(3, num_neighbours=4, sigma=1.0, tie="loose", tie_weight=0.5)
    head.assign_centers(centers, labels, sample_ids=np.arange(100, 150))
    ids = np.array([100, 149, 7, 120])  # Sample 7 has no center: it does not count in the tie term.
    z = tf.Variable(queries[:4])
    with tf.GradientTape() as tape:
        probabilities = head([z, ids], training=True)
        tie = tf.add_n(head.losses)
        loss = tf.reduce_mean(-tf.math.log(tf.reduce_max(probabilities, axis=1))) + tie
    own = centers[[0, 49, 20]]
    assert float(tie) == pytest.approx(reference.tie_term(queries[[0, 1, 3]], own, 0.5), rel=1e-5)
    gradient = tape.gradient(loss, head.centers)
    assert isinstance(gradient, tf.IndexedSlices)  # Only gathered rows.
    assert set(gradient.indices.numpy()) <= set(range(50))
    assert len(set(gradient.indices.numpy())) <= 4 * 5 + 3
    # No tie term at inference.
    head([z, ids], training=False)
    assert not head.losses


def test_sparse_adam_touches_only_gathered_rows(rng):
    table = tf.Variable(rng.normal(size=(10, 3)).astype(np.float32))
    optimizer = kn.training.SparseAdam(learning_rate=0.1)
    optimizer.build([table])
    before = table.numpy().copy()
    gradient = tf.IndexedSlices(tf.constant([[1.0, 2.0, 3.0], [1.0, 0.0, -1.0], [0.5, 0.5, 0.5]]),
                                tf.constant([2, 5, 2]))
    optimizer.apply_gradients([(gradient, table)])
    after = table.numpy()
    untouched = [0, 1, 3, 4, 6, 7, 8, 9]
    np.testing.assert_array_equal(after[untouched], before[untouched])
    # First Adam step moves each coordinate by lr * sign(g) (bias-corrected m / sqrt(v) = g / |g|).
    summed = np.array([1.5, 2.5, 3.5])
    np.testing.assert_allclose(after[2], before[2] - 0.1 * np.sign(summed), rtol=1e-5)
    np.testing.assert_allclose(after[5], before[5] - 0.1 * np.array([1.0, 0.0, -1.0]), rtol=1e-4, atol=1e-6)


def test_config_round_trip_and_errors(problem, tmp_path):
    centers, labels, queries = problem
    head = kn.layers.ImpostorClassifier(3, num_neighbours=4, tie="fixed", tie_weight=0.1, sigma=0.5)
    assert kn.layers.ImpostorClassifier.from_config(head.get_config()).get_config() == head.get_config()
    head.assign_centers(centers, labels)
    inputs = keras.Input((6,))
    model = keras.Model(inputs, head(inputs))
    model.save(str(tmp_path / "impostor.keras"))
    reloaded = keras.models.load_model(str(tmp_path / "impostor.keras"))
    np.testing.assert_allclose(reloaded.predict(queries, verbose=0), model.predict(queries, verbose=0), rtol=1e-6)
    with pytest.raises(ValueError, match="Unknown tie 'soft'; valid: tied, fixed, loose"):
        kn.layers.ImpostorClassifier(3, tie="soft")
    with pytest.raises(ValueError, match="tie_weight"):
        kn.layers.ImpostorClassifier(3, tie_weight=-1.0)
