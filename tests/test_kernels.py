import numpy as np
import tensorflow as tf

from keras_nngk import kernels
from tests import reference


def test_squared_distances_match_reference(rng):
    queries = rng.normal(size=(7, 5)).astype(np.float32)
    centers = rng.normal(size=(11, 5)).astype(np.float32)
    np.testing.assert_allclose(kernels.squared_distances(queries, centers).numpy(),
                               reference.squared_distances(queries, centers), rtol=1e-5, atol=1e-5)
    neighbours = centers[rng.integers(0, 11, (7, 3))]
    np.testing.assert_allclose(kernels.gathered_squared_distances(queries, neighbours).numpy(),
                               ((queries[:, None] - neighbours) ** 2).sum(-1), rtol=1e-6)


def test_gaussian_kernel_matches_eq5():
    np.testing.assert_allclose(kernels.gaussian_kernel(tf.constant([0.0, 2.0, 8.0]), 2.0).numpy(),
                               [1.0, np.exp(-0.25), np.exp(-1.0)], rtol=1e-6)


def test_kernel_average_matches_naive_formula(rng):
    distances = rng.uniform(0.0, 4.0, size=(6, 8))
    values = rng.normal(size=(6, 8, 3))
    weights = rng.uniform(0.5, 2.0, size=(6, 8))
    sigma = 1.3
    kernel = np.exp(-distances / (2 * sigma ** 2)) * weights
    expected = np.einsum("bk,bkm->bm", kernel, values) / kernel.sum(1, keepdims=True)
    got = kernels.kernel_average(tf.constant(distances, tf.float32), tf.constant(values, tf.float32), sigma,
                                 tf.constant(np.log(weights), tf.float32))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_kernel_average_survives_underflow():
    # Every kernel value is exp(-5000) or smaller: a naive float32 (or float64) ratio is 0/0.
    distances = tf.constant([[100.0, 101.0, 130.0]])
    values = tf.constant([[[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]])
    naive = kernels.gaussian_kernel(distances, 0.1)
    assert float(tf.reduce_sum(naive)) == 0.0
    got = kernels.kernel_average(distances, values, 0.1).numpy()
    # Relative kernel of the second neighbour: exp(-1 / 0.02) = exp(-50).
    second = np.exp(-50.0) / (1 + np.exp(-50.0) + np.exp(-1500.0))
    np.testing.assert_allclose(got, [[1.0 - second, second]], rtol=1e-6, atol=1e-30)
    assert np.all(np.isfinite(got))


def test_kernel_average_masks_invalid_neighbours_and_empty_rows():
    distances = tf.constant([[1.0, 0.0, 2.0], [1.0, 2.0, 3.0]])
    values = tf.constant([[[1.0], [5.0], [3.0]], [[1.0], [2.0], [3.0]]])
    valid = tf.constant([[True, False, True], [False, False, False]])
    got = kernels.kernel_average(distances, values, 1.0, valid=valid).numpy()
    kernel = np.exp(-np.array([1.0, 2.0]) / 2)
    np.testing.assert_allclose(got[0], [(kernel * [1.0, 3.0]).sum() / kernel.sum()], rtol=1e-6)
    np.testing.assert_array_equal(got[1], [0.0])


def test_kernel_average_gradient_has_no_nan_when_masked():
    distances = tf.Variable([[1.0, 2.0, 3.0]])
    values = tf.constant([[[1.0], [0.0], [1.0]]])
    valid = tf.constant([[True, True, False]])
    with tf.GradientTape() as tape:
        out = kernels.kernel_average(distances, values, 1.0, valid=valid)
    gradient = tape.gradient(out, distances).numpy()
    assert np.all(np.isfinite(gradient))
    assert gradient[0, 2] == 0.0
