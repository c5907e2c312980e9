"""Pure tensor functions: squared distances and Gaussian-kernel averages (eq. 5 and 7).

Everything here is stateless and works in eager mode, inside `tf.function`, and
in SavedModel / TFLite graphs (builtin ops only).
"""

import numpy as np
import tensorflow as tf

_SMALLEST_NORMAL = float(np.finfo(np.float32).tiny)


def squared_distances(queries, centers):
    """All pairwise squared Euclidean distances, by one matrix product.

    Args:
        queries: float tensor `(B, d)`.
        centers: float tensor `(N, d)`.

    Returns:
        `(B, N)` tensor of `|q - c|^2`, clipped at 0 against rounding.
    """
    query_norms = tf.reduce_sum(tf.square(queries), axis=-1, keepdims=True)
    center_norms = tf.reduce_sum(tf.square(centers), axis=-1)
    products = tf.matmul(queries, centers, transpose_b=True)
    return tf.maximum(query_norms - 2.0 * products + center_norms[tf.newaxis, :], 0.0)


def gathered_squared_distances(queries, neighbour_centers):
    """Squared distances from each query to its own gathered neighbours.

    Computed as a sum of squared differences (exact, no cancellation), so that the
    gradient with respect to the query is `2 (q - c)`.

    Args:
        queries: `(B, d)`.
        neighbour_centers: `(B, k, d)`.

    Returns:
        `(B, k)` squared distances.
    """
    return tf.reduce_sum(tf.square(queries[:, tf.newaxis, :] - neighbour_centers), axis=-1)


def gaussian_kernel(squared_distance, sigma):
    """The Gaussian (RBF) kernel of eq. 5: `exp(-|z - c|^2 / (2 sigma^2))`."""
    return tf.exp(-squared_distance / (2.0 * tf.maximum(tf.square(sigma), _SMALLEST_NORMAL)))  # 0/0 never happens.


def kernel_logits(squared_distance, sigma, log_weights=None, valid=None):
    """Log of the unnormalised kernel terms `log(w_i k(z, c_i))`.

    Args:
        squared_distance: `(B, k)` squared distances to the neighbours.
        sigma: scalar kernel width (> 0).
        log_weights: optional `(B, k)` log importance weights `log w_i`.
        valid: optional boolean `(B, k)`; invalid neighbours get a log term of -inf.

    Returns:
        `(B, k)` logits.
    """
    # The width is kept above float32's smallest normal number, so it never underflows to 0 (0/0 = NaN).
    width = 2.0 * tf.maximum(tf.square(sigma), _SMALLEST_NORMAL)
    logits = -squared_distance / width
    if log_weights is not None:
        logits = logits + log_weights
    if valid is not None:
        logits = tf.where(valid, logits, tf.fill(tf.shape(logits), -float("inf")))
    # With a width so small that every valid term underflows to -inf, measure the distances from the nearest
    # neighbour instead: softmax does not change under that shift, and the nearest neighbours keep finite logits
    # (the sigma -> 0 limit, a nearest-neighbour vote) instead of the row losing all its neighbours.
    has_finite = tf.reduce_any(tf.math.is_finite(logits), axis=-1, keepdims=True)
    candidates = squared_distance if valid is None else tf.where(valid, squared_distance, tf.reduce_max(
        squared_distance, axis=-1, keepdims=True) + tf.zeros_like(squared_distance))
    shifted = -(squared_distance - tf.reduce_min(candidates, axis=-1, keepdims=True)) / width
    if log_weights is not None:
        shifted = shifted + log_weights
    if valid is not None:
        shifted = tf.where(valid, shifted, tf.fill(tf.shape(shifted), -float("inf")))
    return tf.where(has_finite, logits, shifted)


def kernel_coefficients(logits):
    """Normalised kernel coefficients `softmax(logits)` over the neighbours.

    Rows whose logits are all -inf (no valid neighbour) get all-zero coefficients
    instead of NaN.
    """
    row_max = tf.reduce_max(logits, axis=-1, keepdims=True)
    has_any = tf.math.is_finite(row_max)
    safe_max = tf.where(has_any, row_max, tf.zeros_like(row_max))
    # exp(-inf) = 0 for invalid entries; valid entries are <= 1 after the shift.
    numerators = tf.exp(logits - tf.stop_gradient(safe_max))
    denominators = tf.reduce_sum(numerators, axis=-1, keepdims=True)
    denominators = tf.where(has_any, denominators, tf.ones_like(denominators))
    return numerators / denominators


def kernel_average(squared_distance, neighbour_values, sigma, log_weights=None, valid=None):
    """The kernel-weighted average of eq. 7 (and eq. 9 without weights), in log space.

    `y(z) = sum_i w_i y_i k(z, c_i) / sum_i w_i k(z, c_i)` over the neighbours,
    computed as `softmax(-d_i / (2 sigma^2) + log w_i) . y_i`, which stays finite
    when every kernel value underflows in float32 (large distances, tiny sigma).

    Args:
        squared_distance: `(B, k)`.
        neighbour_values: `(B, k, m)` values to average (labels, or vectors).
        sigma: scalar kernel width.
        log_weights: optional `(B, k)` log importance weights.
        valid: optional boolean `(B, k)` mask of neighbours that exist.

    Returns:
        `(B, m)` averages. Rows with no valid neighbour are all zeros.
    """
    coefficients = kernel_coefficients(kernel_logits(squared_distance, sigma, log_weights, valid))
    # MUL + SUM rather than einsum: builtin TFLite ops only.
    return tf.reduce_sum(coefficients[:, :, tf.newaxis] * neighbour_values, axis=1)
