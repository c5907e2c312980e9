"""Adding and dropping centers with static shapes, and the influence rule of eq. 13."""

import numpy as np
import pytest

import keras_nngk as kn
from tests import reference
from tests.conftest import clustered


@pytest.fixture
def head(rng):
    centers, clusters = clustered(rng, 120, 6, num_clusters=8, spread=0.5)
    layer = kn.layers.NNGKClassifier(3, num_neighbours=6, sigma=0.7, capacity=150)
    layer.assign_centers(centers, rng.integers(0, 3, 120), sample_ids=np.arange(1000, 1120))
    layer.log_weights[:120].assign(rng.uniform(-0.3, 0.3, 120).astype(np.float32))
    return layer


def test_drop_redistributes_by_eq13(head):
    before_labels = head.center_labels.numpy().copy()
    expected = reference.influence_redistribution(head.centers.numpy(), before_labels, head.center_mask.numpy(), 17,
                                                  6, 0.7, np.exp(head.log_weights.numpy()))
    head.drop_centers([1017])
    after = head.center_labels.numpy()
    keep = np.arange(150) != 17
    np.testing.assert_allclose(after[keep], expected[keep], rtol=1e-5, atol=1e-6)
    assert not np.allclose(after[keep], before_labels[keep])  # Some neighbours changed.
    np.testing.assert_allclose(after[head.center_mask.numpy()].sum(1), 1.0, rtol=1e-5)
    assert head.num_centers == 119 and head.centers.shape == (150, 6)


def test_redistribution_keeps_predictions_near_dropped_centers(rng):
    moved = {}
    for redistribute in (False, True):
        centers, clusters = clustered(np.random.default_rng(5), 300, 4, num_clusters=12, spread=0.6)
        layer = kn.layers.NNGKClassifier(3, num_neighbours=8, sigma=0.6, sample_weights=False)
        layer.assign_centers(centers, clusters % 3)
        dropped = np.random.default_rng(6).choice(300, 30, replace=False)
        nearby = centers[dropped] + 0.05 * np.random.default_rng(7).normal(size=(30, 4)).astype(np.float32)
        before = layer(nearby).numpy()
        layer.drop_centers(dropped, redistribute=redistribute)
        moved[redistribute] = np.abs(layer(nearby).numpy() - before).sum(1).mean()
    assert moved[True] < moved[False], moved


def test_sequential_drops_follow_eq13_one_after_another(head):
    """Each drop redistributes over the centers left by the drops before it."""
    centers, weights = head.centers.numpy(), np.exp(head.log_weights.numpy())
    labels, active = head.center_labels.numpy().astype(np.float64), head.center_mask.numpy().copy()
    for slot in (17, 40, 41, 3):
        labels = reference.influence_redistribution(centers, labels, active, slot, 6, 0.7, weights)
        active[slot] = False
    head.drop_centers([1017, 1040, 1041, 1003])
    np.testing.assert_array_equal(head.center_mask.numpy(), active)
    np.testing.assert_allclose(head.center_labels.numpy()[active], labels[active], rtol=1e-4, atol=1e-5)


def test_compensated_adds_follow_eq13_with_the_opposite_sign(head, rng):
    """Each new center takes its label back from its neighbours (sign -1), including the clip-and-renormalise step
    where a neighbour's label would go negative."""
    new = head.centers.numpy()[[5, 9]] + 0.01 * rng.normal(size=(2, 6)).astype(np.float32)  # Inside dense regions.
    new_labels = np.array([0, 2])
    centers, labels = head.centers.numpy().copy(), head.center_labels.numpy().astype(np.float64)
    active, weights = head.center_mask.numpy().copy(), np.exp(head.log_weights.numpy())
    for slot, embedding, label in zip((120, 121), new, new_labels):  # The first free slots.
        centers[slot], labels[slot], active[slot], weights[slot] = embedding, np.eye(3)[label], True, 1.0
        labels = reference.influence_redistribution(centers, labels, active, slot, 6, 0.7, weights, sign=-1.0)
    head.add_centers(new, new_labels, sample_ids=[5000, 5001], compensate=True)
    np.testing.assert_allclose(head.center_labels.numpy()[active], labels[active], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(head.center_labels.numpy()[active].sum(1), 1.0, rtol=1e-5)
    clipped = (labels[active] == 0) & (head.center_labels.numpy()[active] == 0)
    assert clipped.any(), "no label reached the clip at 0: the test does not exercise it"


def test_add_then_export_with_static_shapes(head, rng, tmp_path):
    new = rng.normal(size=(10, 6)).astype(np.float32)
    head.add_centers(new, rng.integers(0, 3, 10), sample_ids=np.arange(5000, 5010))
    assert head.num_centers == 130
    queries = rng.normal(size=(5, 6)).astype(np.float32)
    active = head.center_mask.numpy()
    expected = reference.nngk_classifier(queries, head.centers.numpy()[active], head.center_labels.numpy()[active], 6,
                                         0.7, np.exp(head.log_weights.numpy()[active]))
    np.testing.assert_allclose(head(queries).numpy(), expected, rtol=1e-5, atol=1e-6)
    import tf_keras as keras  # pylint: disable=g-import-not-at-top
    inputs = keras.Input((6,))
    model = keras.Model(inputs, head(inputs))
    path = kn.export.to_tflite(model, str(tmp_path / "after_surgery.tflite"))
    np.testing.assert_allclose(kn.export.TFLiteModel(path).predict(queries), head(queries).numpy(), atol=1e-5)


def test_surgery_functions_are_pure(head):
    """`keras_nngk.surgery` reads arrays and changes none of them (the layer writes the result)."""
    centers, labels, active = head.centers.numpy(), head.center_labels.numpy(), head.center_mask.numpy()
    copies = [array.copy() for array in (centers, labels, active)]
    slots, new_labels = kn.surgery.influence_shifts(centers, labels, active, 17, 6, 0.7)
    for array, copy in zip((centers, labels, active), copies):
        np.testing.assert_array_equal(array, copy)
    expected = reference.influence_redistribution(centers, labels, active, 17, 6, 0.7)
    np.testing.assert_allclose(new_labels, expected[slots], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(head.center_labels.numpy(), labels)


def test_bad_input(head, rng):
    with pytest.raises(ValueError, match="Sample id 42 is not a center"):
        head.drop_centers([42])
    with pytest.raises(ValueError, match="exceeds the capacity 150 \\(120 in use\\); create the layer with a larger"):
        head.add_centers(rng.normal(size=(31, 6)), np.zeros(31, int), sample_ids=np.arange(31))
    with pytest.raises(ValueError, match="centers already"):
        head.add_centers(rng.normal(size=(1, 6)), [0], sample_ids=[1000])
    knn = kn.layers.KNNClassifier(3, capacity=10)
    knn.assign_centers(rng.normal(size=(10, 6)), np.zeros(10, int))
    with pytest.raises(ValueError, match="no kernel"):
        knn.drop_centers([3])
