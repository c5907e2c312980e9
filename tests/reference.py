"""Plain NumPy (float64) references of the review's equations, written independently of the library.

No TensorFlow here: every function is the textbook formula, with neighbours found by
a stable argsort of all distances.
"""

import numpy as np


def squared_distances(queries, centers):
    """|q - c|^2 by explicit differences, (B, N)."""
    queries = np.asarray(queries, np.float64)
    centers = np.asarray(centers, np.float64)
    return ((queries[:, None, :] - centers[None, :, :]) ** 2).sum(-1)


def nearest_neighbours(queries, centers, k, query_sample_ids=None, center_sample_ids=None):
    """The k nearest centers by stable argsort, leaving out centers whose sample id equals the query's.

    Returns (distances, ids) of shape (B, min(k, available)).
    """
    distances = squared_distances(queries, centers)
    if query_sample_ids is not None:
        query_sample_ids = np.asarray(query_sample_ids).reshape(-1, 1)
        same = (np.asarray(center_sample_ids)[None, :] == query_sample_ids) & (query_sample_ids >= 0)
        distances = np.where(same, np.inf, distances)
    order = np.argsort(distances, axis=1, kind="stable")
    available = int(np.isfinite(distances).sum(1).min())
    order = order[:, :min(k, available)]
    return np.take_along_axis(distances, order, 1), order


def one_hot(labels, num_classes):
    return np.eye(num_classes)[np.asarray(labels)]


def dense_classifier(embeddings, kernel, bias):
    """Eq. 2 with a softmax activation: softmax(W z + b)."""
    logits = np.asarray(embeddings, np.float64) @ np.asarray(kernel, np.float64) + np.asarray(bias, np.float64)
    logits -= logits.max(1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(1, keepdims=True)


def gaussian_kernel(squared_distance, sigma):
    """Eq. 5."""
    return np.exp(-np.asarray(squared_distance, np.float64) / (2.0 * sigma ** 2))


def nngk_classifier(queries, centers, center_labels, k, sigma, weights=None, query_sample_ids=None,
                    center_sample_ids=None):
    """Eq. 7: sum_i w_i y_i k(z, c_i) / sum_i w_i k(z, c_i) over the k nearest centers.

    The kernel values are divided by that of the nearest neighbour before summing
    (the ratio is unchanged), so tiny sigma does not underflow to 0/0 in float64.
    """
    center_labels = np.asarray(center_labels, np.float64)
    weights = np.ones(len(centers)) if weights is None else np.asarray(weights, np.float64)
    distances, ids = nearest_neighbours(queries, centers, k, query_sample_ids, center_sample_ids)
    relative = gaussian_kernel(distances - distances[:, :1], sigma)  # k(z, c_i) / k(z, c_nearest)
    terms = weights[ids] * relative
    return np.einsum("bk,bkc->bc", terms, center_labels[ids]) / terms.sum(1, keepdims=True)


def knn_classifier(queries, centers, labels, k, num_classes, query_sample_ids=None, center_sample_ids=None):
    """Eq. 3: majority class among the k nearest; ties go to the class with the nearest member."""
    _, ids = nearest_neighbours(queries, centers, k, query_sample_ids, center_sample_ids)
    labels = np.asarray(labels)
    predictions = []
    for row in ids:
        neighbour_labels = labels[row]
        counts = np.bincount(neighbour_labels, minlength=num_classes)
        tied = np.flatnonzero(counts == counts.max())
        first_seen = {label: position for position, label in reversed(list(enumerate(neighbour_labels)))}
        predictions.append(min(tied, key=lambda label: first_seen[label]))
    return np.array(predictions)


def cross_entropy(probabilities, labels):
    """Mean of -log y_true (eq. 1)."""
    probabilities = np.asarray(probabilities, np.float64)
    return float(-np.mean(np.log(probabilities[np.arange(len(labels)), labels])))


def pq_decode(codes, rotation, codebooks):
    """Reconstruct OPQ-coded vectors: concatenate the chosen codebook entries, undo the rotation (x = y A)."""
    pieces = [np.asarray(codebooks, np.float64)[m][np.asarray(codes)[:, m]] for m in range(codes.shape[1])]
    return np.concatenate(pieces, axis=1) @ np.asarray(rotation, np.float64)


def adc_distances(queries, codes, rotation, codebooks):
    """Asymmetric distances: exact query, decoded centers (rotation is orthogonal, so distances are preserved)."""
    return squared_distances(queries, pq_decode(codes, rotation, codebooks))


def tie_term(embeddings, own_centers, tie_weight):
    """The batch estimate of eq. 8's L2 term: tie_weight * mean_b |f(x_b) - c_b|^2."""
    difference = np.asarray(embeddings, np.float64) - np.asarray(own_centers, np.float64)
    return float(tie_weight * np.mean((difference ** 2).sum(1)))


def neighbour_lookup(queries, keys, values, k, sigma, counts=None):
    """Eq. 14's lookup and gate: z1 = kernel average of the values, g = mean kernel value over the k nearest keys.

    With `counts` (prototypes), each key weighs in the average by its count: z1 = sum n_j k_j v_j / sum n_j k_j.
    """
    distances, ids = nearest_neighbours(queries, keys, k)
    kernel = gaussian_kernel(distances, sigma)
    relative = gaussian_kernel(distances - distances[:, :1], sigma)
    if counts is not None:
        relative = relative * np.asarray(counts, np.float64)[ids]
    looked_up = np.einsum("bk,bkd->bd", relative, np.asarray(values, np.float64)[ids]) / relative.sum(1, keepdims=True)
    return looked_up, kernel.mean(1, keepdims=True)


def class_means_by_assignment(keys, values, labels, assignment):
    """Per (class, cluster) pair: the mean key, the mean value and the member count (a prototype's definition)."""
    groups = {}
    for index, pair in enumerate(zip(np.asarray(labels).tolist(), np.asarray(assignment).tolist())):
        groups.setdefault(pair, []).append(index)
    return {pair: (np.mean(np.asarray(keys, np.float64)[members], 0), np.mean(np.asarray(values, np.float64)[members],
                                                                           0), len(members))
            for pair, members in groups.items()}


def influence_redistribution(centers, labels, active, drop, k, sigma, weights=None, sign=1.0):
    """Eq. 13: the labels after center `drop` passes its label to its k nearest other active centers.

    For each such neighbour j: y_j += sign * w_0 k(z_j, z_0) / sum_{i in N_k(z_j)} w_i k(z_j, z_i) * (y_0 - y_j),
    where N_k(z_j) are j's k nearest other active centers before the change; then y_j is clipped at 0 and divided by
    its sum (a probability vector again). sign=-1 is the compensation for a center `drop` just added. Written with
    explicit loops.
    """
    centers = np.asarray(centers, np.float64)
    labels = np.asarray(labels, np.float64).copy()
    weights = np.ones(len(centers)) if weights is None else np.asarray(weights, np.float64)
    active = [int(i) for i in np.flatnonzero(active)]

    def nearest(point, exclude):
        candidates = [i for i in active if i != exclude]
        distances = [float(np.sum((centers[i] - centers[point]) ** 2)) for i in candidates]
        order = np.argsort(distances, kind="stable")[:k]
        return [candidates[i] for i in order], [distances[i] for i in order]

    original = labels.copy()
    neighbours, _ = nearest(drop, drop)
    for j in neighbours:
        own, own_distances = nearest(j, j)
        total = sum(weights[i] * np.exp(-d / (2 * sigma ** 2)) for i, d in zip(own, own_distances))
        term = weights[drop] * np.exp(-np.sum((centers[j] - centers[drop]) ** 2) / (2 * sigma ** 2))
        updated = original[j] + sign * term / total * (original[drop] - original[j])
        updated = np.array([max(value, 0.0) for value in updated])
        labels[j] = updated / sum(updated)
    return labels


def map_at_r(embeddings, labels):
    """MAP@R and R-precision by a loop over queries: the R nearest others by stable argsort, leave-one-out."""
    labels = np.asarray(labels)
    distances = squared_distances(embeddings, embeddings)
    np.fill_diagonal(distances, np.inf)
    average_precisions, r_precisions = [], []
    for query in range(len(labels)):
        r = int(np.sum(labels == labels[query])) - 1
        if r < 1:
            continue
        retrieved = np.argsort(distances[query], kind="stable")[:r]
        relevant = labels[retrieved] == labels[query]
        precisions = [relevant[:rank].sum() / rank for rank in range(1, r + 1)]
        average_precisions.append(sum(p for p, hit in zip(precisions, relevant) if hit) / r)
        r_precisions.append(relevant.sum() / r)
    return float(np.mean(average_precisions)), float(np.mean(r_precisions))


def class_spread(embeddings, labels):
    """Mean squared distance over same-class pairs of distinct embeddings over the mean over different-class pairs,
    by a loop over the pairs."""
    same, different = [], []
    for i in range(len(labels)):
        for j in range(len(labels)):
            if i != j:
                (same if labels[i] == labels[j] else different).append(np.sum((embeddings[i] - embeddings[j]) ** 2))
    return float(np.mean(same) / np.mean(different))


def class_statistics(features, labels, num_classes):
    """Batch twin of the streaming statistics: counts, class means and the pooled within-class scatter."""
    features = np.asarray(features, np.float64)
    counts = np.array([np.sum(labels == c) for c in range(num_classes)], np.float64)
    means = np.array([features[labels == c].mean(0) if counts[c] else np.zeros(features.shape[1])
                      for c in range(num_classes)])
    centred = features - means[labels]
    return counts, means, centred.T @ centred


def gaussian_classifier(queries, features, labels, num_classes, shrinkage, sigma=1.0, priors=False):
    """LDA posteriors by the textbook formula: `softmax_c(-(x - m_c)^T S^-1 (x - m_c) / (2 sigma^2) + log pi_c)`,
    `S` the shrunk pooled covariance (inverted directly), classes without data at probability 0."""
    counts, means, scatter = class_statistics(features, labels, num_classes)
    seen = counts > 0
    covariance = scatter / (counts.sum() - seen.sum())
    dim = len(covariance)
    covariance = (1 - shrinkage) * covariance + shrinkage * np.trace(covariance) / dim * np.eye(dim)
    precision = np.linalg.inv(covariance)
    queries = np.asarray(queries, np.float64)
    logits = np.full((len(queries), num_classes), -np.inf)
    for c in np.flatnonzero(seen):
        difference = queries - means[c]
        logits[:, c] = -np.einsum("nd,de,ne->n", difference, precision, difference) / (2 * sigma * sigma)
        if priors:
            logits[:, c] += np.log(counts[c] / counts.sum())
    logits -= logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits)
    return probabilities / probabilities.sum(axis=1, keepdims=True)
