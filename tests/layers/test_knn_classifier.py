"""KNNClassifier (eq. 3) against the NumPy majority vote, with hand-checked tie-breaking."""

import numpy as np
import pytest
import tf_keras as keras

import keras_nngk as kn
from tests import reference


@pytest.mark.parametrize("k", [1, 4, 7])
def test_matches_reference(rng, k):
    centers = rng.normal(size=(80, 6)).astype(np.float32)
    labels = rng.integers(0, 3, 80)
    queries = rng.normal(size=(40, 6)).astype(np.float32)
    head = kn.layers.KNNClassifier(3, num_neighbours=k)
    head.assign_centers(centers, labels)
    got = head(queries).numpy()
    np.testing.assert_array_equal(got.argmax(1), reference.knn_classifier(queries, centers, labels, k, 3))
    np.testing.assert_array_equal(got.sum(1), 1.0)
    ids = np.arange(80)
    loo = head([centers, ids]).numpy().argmax(1)
    np.testing.assert_array_equal(loo, reference.knn_classifier(centers, centers, labels, k, 3, ids, ids))


def test_tie_goes_to_class_of_nearest_neighbour():
    # Neighbours of the origin at distances 1, 2, 3, 4 with classes 2, 0, 0, 2: a 2-2 tie, class 2 is nearer.
    centers = np.array([[1.0, 0.0], [0.0, np.sqrt(2.0)], [np.sqrt(3.0), 0.0], [0.0, 2.0], [9.0, 9.0]], "float32")
    labels = np.array([2, 0, 0, 2, 1])
    head = kn.layers.KNNClassifier(3, num_neighbours=4)
    head.assign_centers(centers, labels)
    np.testing.assert_array_equal(head(np.zeros((1, 2), "float32")).numpy(), [[0.0, 0.0, 1.0]])
    # Drop the nearest (class 2) point by leave-one-out: votes 0, 0, 2, 1 -> class 0 wins outright.
    np.testing.assert_array_equal(head([np.zeros((1, 2), "float32"), np.array([0])]).numpy(), [[1.0, 0.0, 0.0]])


def test_soft_labels_vote_for_their_argmax(rng):
    centers = rng.normal(size=(30, 4)).astype(np.float32)
    soft = rng.dirichlet(np.ones(5), size=30).astype(np.float32)
    head = kn.layers.KNNClassifier(5, num_neighbours=5)
    head.assign_centers(centers, soft)
    queries = rng.normal(size=(10, 4)).astype(np.float32)
    np.testing.assert_array_equal(head(queries).numpy().argmax(1),
                                  reference.knn_classifier(queries, centers, soft.argmax(1), 5, 5))


def test_keras_round_trip(rng, tmp_path):
    centers = rng.normal(size=(30, 4)).astype(np.float32)
    head = kn.layers.KNNClassifier(3, num_neighbours=3)
    head.assign_centers(centers, rng.integers(0, 3, 30))
    inputs = keras.Input((4,))
    model = keras.Model(inputs, head(inputs))
    model.save(str(tmp_path / "knn.keras"))
    reloaded = keras.models.load_model(str(tmp_path / "knn.keras"))
    queries = rng.normal(size=(8, 4)).astype(np.float32)
    np.testing.assert_array_equal(reloaded.predict(queries, verbose=0), model.predict(queries, verbose=0))
    assert reloaded.layers[-1].get_config() == head.get_config()
