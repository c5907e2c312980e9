"""Center-set surgery for continual learning (section 4 of the review): pure NumPy functions of the center arrays.

The layers' `drop_centers(..., redistribute=True)` and `add_centers(..., compensate=True)`
call these with their variables' values; nothing here reads or writes layer state.
Their independent float64 twins are in `tests/reference.py`.

Notation: `centers (N, d)`, soft `labels (N, C)` (rows are probability vectors),
`active (N,)` which slots hold a center, `sigma` the kernel width, `weights (N,)`
the importance weights `w_i` (NNGK) or None (all 1).
"""

import numpy as np

from keras_nngk.search import exact


def kernel_terms(squared_distances, sigma, weights=None):
    """`w_i k(z, c_i) = w_i exp(-|z - c_i|^2 / (2 sigma^2))` for the given squared distances (any shape)."""
    terms = np.exp(-np.asarray(squared_distances) / (2.0 * sigma * sigma))
    return terms if weights is None else terms * weights


def kernel_coefficients(squared_distances, sigma):
    """Kernel values normalised over the last axis (a softmax of `-d / (2 sigma^2)`; finite for any distances)."""
    logits = -np.asarray(squared_distances) / (2.0 * sigma * sigma)
    coefficients = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return coefficients / coefficients.sum(axis=-1, keepdims=True)


def influence_shifts(centers, labels, active, slot, k, sigma, weights=None, sign=1.0):
    """Eq. 13: the new labels of the k nearest other centers j of center `slot`.

    `y_j + sign * w_0 k(z_j, z_0) / sum_{i in N_k(z_j)} w_i k(z_j, z_i) * (y_0 - y_j)`,
    clipped at 0 and renormalised so that each row stays a probability vector (with
    `sign=-1`, the compensation for an added center, a label can otherwise go
    negative). `N_k(z_j)` is j's own k nearest other active centers (leave-one-out,
    as in training), taken before the change, so it contains `slot` when that is near.

    Args:
        centers, labels, active: the center arrays (`active[slot]` must be True).
        slot: the center that is dropped (`sign=1`) or was just added (`sign=-1`).
        k: neighbours (`num_neighbours`); fewer when fewer centers exist.
        sigma: kernel width.
        weights: importance weights `(N,)` or None.
        sign: +1 passes the label of `slot` to its neighbours; -1 takes it away.

    Returns:
        `(neighbour_slots (m,), new_labels (m, C))`, m = min(k, active centers - 1).
    """
    centers = np.asarray(centers, np.float32)
    labels = np.asarray(labels, np.float32)
    slots = np.flatnonzero(active)
    k = min(int(k), len(slots) - 1)
    if k < 1:
        return np.zeros((0,), np.int64), np.zeros((0, labels.shape[1]), np.float32)
    index = exact.ExactSearch()
    index.add(centers[slots], slots)
    _, found = index.search(centers[[slot]], k + 1)
    neighbours = [j for j in found[0] if j != slot][:k]
    distances, near = index.search(centers[neighbours], k + 1)
    new_labels = []
    for row, j in enumerate(neighbours):
        others = near[row] != j
        own_slots, own_distances = near[row][others][:k], distances[row][others][:k]
        total = kernel_terms(own_distances, sigma, None if weights is None else weights[own_slots]).sum()
        term = kernel_terms(np.sum((centers[j] - centers[slot]) ** 2), sigma,
                            None if weights is None else weights[slot])
        updated = np.clip(labels[j] + sign * (term / total) * (labels[slot] - labels[j]), 0.0, None)
        new_labels.append(updated / updated.sum())
    return np.array(neighbours, np.int64), np.array(new_labels, np.float32).reshape(-1, labels.shape[1])
