"""Streaming class statistics (Gaussian class-conditionals with one shared covariance) as pure NumPy functions.

The state after any number of updates is `(counts (C,), means (C, d), scatter (d, d))`:
per-class counts and means and the pooled within-class scatter
`sum_c sum_{x in c} (x - mean_c)(x - mean_c)^T`. `update` merges a batch into it with the
pairwise formula of Chan, Golub and LeVeque (1979), so the result does not depend on how
the data was split into batches or tasks, nor on their order, and stays accurate in
float32 (no `E[x x^T] - m m^T` cancellation).

From the state: the shared covariance with shrinkage towards `trace / d * I`, and the
whitening matrix `L` (`L L^T = covariance^-1`), under which squared Euclidean distances are
Mahalanobis distances. Linear discriminant analysis is then the Gaussian kernel of eq. 7
over the class means in the whitened space with `sigma = 1` and `k = C` (deep streaming
LDA, Hayes and Kanan, CVPRW 2020). `layers.GaussianClassifier` keeps this state in Keras
variables; `tests/reference.py` holds batch twins.
"""

import numpy as np


def empty_state(num_classes, dim):
    """Statistics of no data: zero counts, means and scatter (float64)."""
    return np.zeros((num_classes,), np.float64), np.zeros((num_classes, dim)), np.zeros((dim, dim))


def update(state, features, labels):
    """Returns the statistics of the data in `state` plus `features (n, d)` with integer `labels (n,)`."""
    counts, means, scatter = (np.array(part, np.float64) for part in state)
    features = np.asarray(features, np.float64)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if features.ndim != 2 or features.shape[1] != means.shape[1] or len(features) != len(labels):
        raise ValueError(f"Expected features (n, {means.shape[1]}) and labels (n,). Received: features "
                         f"{features.shape}, labels {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(counts)):
        raise ValueError(f"Labels must be in [0, {len(counts)}). Received: labels in [{labels.min()}, {labels.max()}]")
    if not np.all(np.isfinite(features)):
        raise ValueError("Features contain NaN or infinity; check the inputs and the network's training.")
    for label in np.unique(labels):
        batch = features[labels == label]
        n_b, mean_b = len(batch), batch.mean(axis=0)
        centred = batch - mean_b
        n_a, mean_a = counts[label], means[label]
        delta = mean_b - mean_a
        total = n_a + n_b
        scatter += centred.T @ centred + np.outer(delta, delta) * (n_a * n_b / total)
        means[label] = mean_a + delta * (n_b / total)
        counts[label] = total
    return counts, means, scatter


def covariance(state, shrinkage):
    """The shared within-class covariance, shrunk: `(1 - a) S + a trace(S) / d I` (unbiased `S`; `a` in [0, 1])."""
    counts, means, scatter = state
    seen = int(np.sum(np.asarray(counts) > 0))
    dof = float(np.sum(counts)) - seen
    dim = means.shape[1]
    if dof <= 0:  # One sample per class (or none): no within-class spread yet; use the identity.
        return np.eye(dim)
    shared = np.asarray(scatter, np.float64) / dof
    scale = np.trace(shared) / dim
    if scale <= 0:
        return np.eye(dim)
    return (1.0 - shrinkage) * shared + shrinkage * scale * np.eye(dim)


def whitening(state, shrinkage):
    """`L (d, d)` with `L L^T = covariance^-1`: `|x L - y L|^2` is the Mahalanobis distance of `x - y`."""
    cholesky = np.linalg.cholesky(covariance(state, shrinkage))  # C = G G^T, so C^-1 = G^-T G^-1 = L L^T.
    return np.linalg.inv(cholesky).T

