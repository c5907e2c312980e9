import numpy as np
import pytest

from keras_nngk import metrics
from tests import reference


def reference_recall(embeddings, labels, k):
    distances = reference.squared_distances(embeddings, embeddings)
    np.fill_diagonal(distances, np.inf)
    order = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return float(np.mean((labels[order] == labels[:, None]).any(1)))


def test_recall_at_k_matches_reference(rng):
    embeddings = rng.normal(size=(300, 5)).astype(np.float32)
    labels = rng.integers(0, 8, 300)
    got = metrics.recall_at_k(embeddings, labels, ks=(1, 2, 4, 8))
    for k in (1, 2, 4, 8):
        assert got[k] == pytest.approx(reference_recall(embeddings, labels, k), abs=1e-12)
    assert got[1] <= got[2] <= got[4] <= got[8]


def test_recall_hand_computed():
    # 1-D points 0, 1, 3, 10 with labels a, b, a, b: nearest others are 1, 0, 1, 3.
    embeddings = np.array([[0.0], [1.0], [3.0], [10.0]], np.float32)
    labels = np.array([0, 1, 0, 1])
    assert metrics.recall_at_k(embeddings, labels, ks=(1, 2))[1] == 0.0
    # Two nearest others: of 0: 1, 3 (hit, 3 is a); of 1: 0, 3 (no b: miss); of 3: 1, 0 (hit); of 10: 3, 1 (hit).
    assert metrics.recall_at_k(embeddings, labels, ks=(1, 2))[2] == 0.75


def test_accuracy_and_knn_accuracy(rng):
    probabilities = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert metrics.accuracy(probabilities, [1, 1, 1]) == pytest.approx(2 / 3)
    train = rng.normal(size=(100, 4)).astype(np.float32)
    train_labels = rng.integers(0, 3, 100)
    test = rng.normal(size=(30, 4)).astype(np.float32)
    test_labels = rng.integers(0, 3, 30)
    for k in (1, 5):
        expected = np.mean(reference.knn_classifier(test, train, train_labels, k, 3) == test_labels)
        assert metrics.knn_accuracy(train, train_labels, test, test_labels, k) == pytest.approx(expected)


def test_bad_input():
    with pytest.raises(ValueError, match="One label per embedding"):
        metrics.recall_at_k(np.zeros((5, 2)), [0, 1])
    with pytest.raises(ValueError, match="more than 8"):
        metrics.recall_at_k(np.random.default_rng(0).normal(size=(5, 2)), [0, 1, 0, 1, 0])


def test_map_at_r_and_r_precision_match_reference(rng):
    embeddings = rng.normal(size=(300, 4)).astype(np.float32)
    labels = rng.integers(0, 12, 300)
    labels[0] = 99  # A class of one embedding: skipped as a query, never relevant.
    got = metrics.map_at_r(embeddings, labels)
    expected_map, expected_r_precision = reference.map_at_r(embeddings, labels)
    assert got["map@r"] == pytest.approx(expected_map, abs=1e-12)
    assert got["r_precision"] == pytest.approx(expected_r_precision, abs=1e-12)
    assert got["map@r"] < got["r_precision"]  # Hits rank late on random data: MAP@R penalises that.


def test_map_at_r_hand_computed():
    # 1-D points 0, 1, 3, 10, 12 with labels a, b, a, b, b (R = 1 for a, 2 for b). Retrieved: 0 -> [1] miss;
    # 1 -> [0, 3] misses; 3 -> [1] miss; 10 -> [12 hit, 3 miss]: AP = 1/2, precision 1/2; 12 -> [10 hit, 3 miss]: same.
    embeddings = np.array([[0.0], [1.0], [3.0], [10.0], [12.0]], np.float32)
    labels = np.array([0, 1, 0, 1, 1])
    assert metrics.map_at_r(embeddings, labels) == {"map@r": pytest.approx(0.2), "r_precision": pytest.approx(0.2)}
    # A hit at rank 2 only: AP = (1/2) / 2 while R-precision = 1/2.
    embeddings = np.array([[0.0], [1.0], [1.5], [5.0]], np.float32)  # Query 0 (b): retrieves 1 (a), then 1.5 (b).
    labels = np.array([1, 0, 1, 1])
    got = metrics.map_at_r(embeddings[[0, 1, 2, 3]], labels)
    expected_map, expected_r_precision = reference.map_at_r(embeddings, labels)
    assert got == {"map@r": pytest.approx(expected_map), "r_precision": pytest.approx(expected_r_precision)}
    with pytest.raises(ValueError, match="at least two embeddings"):
        metrics.map_at_r(embeddings[:2], np.array([0, 1]))


def test_auroc_by_hand():
    # Positives score 0.9, 0.4; negatives 0.8, 0.4, 0.1. Pairs (pos > neg): 0.9 beats all 3; 0.4 beats 0.1, ties 0.4
    # (one half), loses to 0.8: (3 + 1.5) / 6 = 0.75.
    assert metrics.auroc([0.9, 0.8, 0.4, 0.4, 0.1], [True, False, True, False, False]) == pytest.approx(0.75)
    assert metrics.auroc([1, 2, 3], [False, True, True]) == 1.0
    assert np.isnan(metrics.auroc([1, 2], [True, True]))


def test_class_spread_matches_reference_and_hand_computed(rng):
    embeddings = rng.normal(size=(30, 4)).astype(np.float32)
    labels = rng.integers(0, 3, 30)
    assert metrics.class_spread(embeddings, labels) == pytest.approx(reference.class_spread(embeddings, labels),
                                                                     rel=1e-5)
    # 1-D points 0, 1 (class 0) and 3 (class 1): within 1; between (9 + 4) / 2 = 6.5.
    assert metrics.class_spread(np.array([[0.0], [1.0], [3.0]]), [0, 0, 1]) == pytest.approx(1 / 6.5)
    # Each class collapsed onto one point: 0. Classes no tighter than the whole set: about 1.
    assert metrics.class_spread(np.repeat(np.eye(3), 4, axis=0), np.repeat(np.arange(3), 4)) == pytest.approx(0.0)
    mixed = metrics.class_spread(rng.normal(size=(3000, 8)), rng.integers(0, 5, 3000))
    assert mixed == pytest.approx(1.0, abs=0.03)
    with pytest.raises(ValueError, match="needs two classes"):
        metrics.class_spread(np.zeros((4, 2)) + np.arange(4)[:, None], [0, 0, 0, 0])
    with pytest.raises(ValueError, match="largest with 1 embeddings"):
        metrics.class_spread(np.eye(3), [0, 1, 2])
    with pytest.raises(ValueError, match="every embedding is the same point"):
        metrics.class_spread(np.ones((4, 2)), [0, 0, 1, 1])
