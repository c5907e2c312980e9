"""Algorithm 1's repaired selection rules (keras_nngk.continual.selection) on hand-built examples."""

import numpy as np

from keras_nngk.continual import selection


def test_class_quotas_share_the_budget():
    assert selection.class_quotas(10, [3, 1, 2, 1]) == {1: 4, 2: 3, 3: 3}
    assert sum(selection.class_quotas(2000, range(10)).values()) == 2000


def test_floor_is_kept():
    labels = np.array([0, 0, 0, 1, 1])
    # Best first: 0, 1, 2 (class 0), 3, 4 (class 1). Floor 2: class 0 may lose one, class 1 none.
    assert selection.ordered_with_floor([0, 1, 2, 3, 4], labels, 3, floor=2).tolist() == [0]
    assert selection.ordered_with_floor([4, 0, 1], labels, 2, floor=1).tolist() == [4, 0]
    assert selection.ordered_with_floor([0, 1, 2, 3, 4], labels, 3, floor=0).tolist() == [0, 1, 2]


def test_redundant_drops_take_the_closest_same_class_pairs_first():
    centers = np.array([[0.0], [0.1], [5.0], [10.0], [10.05], [20.0]])
    labels = np.array([0, 0, 0, 1, 1, 1])
    # Closest same-class pair: 10 and 10.05 (the first of them goes), then 0 and 0.1; 5 and 20 are far from theirs.
    assert selection.redundant_drops(centers, labels, 2).tolist() == [3, 0]
    # A center of another class nearby does not make one redundant: 0.1 is nearest to 0 (its class), not to 0.12.
    mixed = np.array([[0.0], [0.12], [0.1], [3.0]])
    assert selection.redundant_drops(mixed, np.array([0, 1, 0, 1]), 1).tolist() == [0]
    # With a floor of 2 per class, only one center of each class can go.
    assert selection.redundant_drops(centers, labels, 4, floor=2).tolist() == [3, 0]
    # Never the last center of a class.
    assert selection.redundant_drops(centers[:2], labels[:2], 2).tolist() == [0]


def test_own_mean_admission_refuses_samples_nearer_another_class():
    means = np.array([[0.0, 0.0], [10.0, 0.0]])
    samples = np.array([[1.0, 0.0], [6.0, 0.0], [9.0, 0.0], [4.0, 0.0]])
    labels = np.array([0, 0, 1, 1])
    admitted = selection.own_mean_admitted(samples, labels, means, np.array([0, 1]))
    assert admitted.tolist() == [True, False, True, False]
