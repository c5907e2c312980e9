"""Streaming class statistics (keras_nngk.gaussian) against their batch twins, for any split and order of the data."""

import numpy as np
import pytest

from keras_nngk import gaussian
from tests import reference


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streaming_equals_batch_for_any_split_and_order(seed):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(300, 6)) * rng.uniform(0.5, 3, 6) + 5.0  # Offset: cancellation would show.
    labels = rng.integers(0, 4, 300)
    expected = reference.class_statistics(features, labels, 5)  # Class 4 never appears.
    order = rng.permutation(300)
    cuts = np.sort(rng.choice(np.arange(1, 300), size=rng.integers(1, 8), replace=False))
    state = gaussian.empty_state(5, 6)
    for part in np.split(order, cuts):  # Uneven batches in a random order; some miss classes.
        state = gaussian.update(state, features[part], labels[part])
    for got, want in zip(state, expected):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    by_task = gaussian.empty_state(5, 6)
    for c in (3, 0, 2, 1):  # Class-incremental: one class at a time, in another order.
        by_task = gaussian.update(by_task, features[labels == c], labels[labels == c])
    for got, want in zip(by_task, expected):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_covariance_and_whitening_by_hand():
    # Class 0: x in {(0, 0), (2, 0)}; class 1: {(0, 1), (0, 3)}. Scatter diag(2, 2), 4 - 2 = 2 degrees of freedom.
    state = gaussian.update(gaussian.empty_state(2, 2), np.array([[0, 0], [2, 0], [0, 1], [0, 3]]), [0, 0, 1, 1])
    np.testing.assert_allclose(state[1], [[1, 0], [0, 2]])
    np.testing.assert_allclose(gaussian.covariance(state, 0.0), np.eye(2))
    stretched = gaussian.update(gaussian.empty_state(1, 2), np.array([[-2, 0], [2, 0], [0, 1], [0, -1]]),
                                [0, 0, 0, 0])  # Scatter diag(8, 2) over 3 dof; shrinkage 0.5 towards trace / 2.
    covariance = np.diag([8 / 3, 2 / 3])
    np.testing.assert_allclose(gaussian.covariance(stretched, 0.5), 0.5 * covariance + 0.5 * (10 / 6) * np.eye(2))
    transform = gaussian.whitening(stretched, 0.5)
    np.testing.assert_allclose(transform @ transform.T, np.linalg.inv(gaussian.covariance(stretched, 0.5)),
                               rtol=1e-12)


def test_bad_input_gets_one_line_errors():
    state = gaussian.empty_state(3, 2)
    with pytest.raises(ValueError, match=r"Expected features \(n, 2\) and labels \(n,\)"):
        gaussian.update(state, np.zeros((4, 3)), [0, 1, 2, 0])
    with pytest.raises(ValueError, match=r"Labels must be in \[0, 3\)"):
        gaussian.update(state, np.zeros((2, 2)), [0, 3])
    with pytest.raises(ValueError, match="NaN or infinity"):
        gaussian.update(state, np.array([[0.0, np.nan]]), [0])
    np.testing.assert_allclose(gaussian.covariance(state, 0.1), np.eye(2))  # No data yet: the identity.
