"""Evaluation metrics on embeddings and predictions: Recall@K, MAP@R and R-precision (leave-one-out), accuracy,
kNN accuracy, and how tightly the classes of a set of embeddings have gathered (class spread)."""

import time

import numpy as np

from keras_nngk import search as search_lib


def _labels(labels):
    return np.asarray(labels).reshape(-1)


def _neighbours_leaving_one_out(embeddings, labels, count):
    """`(N, count)` ids of each embedding's nearest other embeddings (exact search), nearest first."""
    index = search_lib.ExactSearch()
    index.add(embeddings)
    _, ids = index.search(embeddings, count + 1)
    own = ids == np.arange(len(labels))[:, None]
    # Drop each query's own entry (or the last column when a duplicate pushed it out), keeping the order.
    order = np.argsort(own, axis=1, kind="stable")[:, :count]
    return np.take_along_axis(ids, order, axis=1)


def _checked(embeddings, labels):
    embeddings = np.asarray(embeddings, np.float32)
    labels = _labels(labels)
    if len(embeddings) != len(labels):
        raise ValueError(f"One label per embedding expected. Received: {len(embeddings)} embeddings and "
                         f"{len(labels)} labels")
    return embeddings, labels


def map_at_r(embeddings, labels):
    """MAP@R and R-precision, leave-one-out (Musgrave, Belongie and Lim 2020; pytorch-metric-learning's
    `AccuracyCalculator` reports the same two numbers).

    For a query whose class has `R` other members, its `R` nearest other
    embeddings are retrieved. R-precision is the fraction of them of the query's
    class; MAP@R is `(1/R) sum_{i<=R} P(i) rel(i)`, the precision at each rank
    that holds a same-class embedding, averaged over the `R` ranks. Queries whose
    class has no other member are skipped.

    Returns:
        `{"map@r": value, "r_precision": value}`, means over the queries.
    """
    embeddings, labels = _checked(embeddings, labels)
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    relevant = counts[inverse] - 1  # R of each query.
    if relevant.max(initial=0) < 1:
        raise ValueError("MAP@R needs a class with at least two embeddings. Received: "
                         f"{len(classes)} classes of one embedding each")
    hits = labels[_neighbours_leaving_one_out(embeddings, labels, int(relevant.max()))] == labels[:, None]
    ranks = np.arange(1, hits.shape[1] + 1)
    within_r = ranks[None, :] <= relevant[:, None]
    hits = hits & within_r
    precision_at_rank = np.cumsum(hits, axis=1) / ranks[None, :]
    queries = relevant > 0
    r = relevant[queries]
    average_precision = (precision_at_rank * hits)[queries].sum(axis=1) / r
    r_precision = hits[queries].sum(axis=1) / r
    return {"map@r": float(average_precision.mean()), "r_precision": float(r_precision.mean())}


def recall_at_k(embeddings, labels, ks=(1, 2, 4, 8)):
    """Recall@K over a query set, leave-one-out (the metric-learning protocol of Cars196 / CUB).

    For every embedding, its `K` nearest other embeddings of the same set are
    found (exact search, squared Euclidean); Recall@K is the fraction of queries
    with at least one of the same label among them.

    Returns:
        `{K: recall}` for each K.
    """
    embeddings, labels = _checked(embeddings, labels)
    largest = max(ks)
    if largest >= len(labels):
        raise ValueError(f"Recall@{largest} needs more than {largest} embeddings. Received: {len(labels)}")
    hits = labels[_neighbours_leaving_one_out(embeddings, labels, largest)] == labels[:, None]
    return {int(k): float(np.mean(hits[:, :k].any(axis=1))) for k in ks}


def class_spread(embeddings, labels):
    """Mean squared distance between two embeddings of one class over that between two of different classes.

    Over all pairs of distinct embeddings; 0 when every class has collapsed onto one point, about 1 when a class is
    no tighter than the whole set. Training sets drift towards 0 as a network fits them (the within-class
    variability collapse of Papyan, Han and Donoho 2020); held-out images of the same classes show what the fit left
    for new images. O(N d): the pair sums come from per-class sums, `sum_{i,j} |x_i - x_j|^2 = 2 n sum_i |x_i|^2 -
    2 |sum_i x_i|^2`.
    """
    embeddings, labels = _checked(embeddings, labels)
    embeddings = embeddings.reshape(len(labels), -1).astype(np.float64)
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if len(classes) < 2 or counts.max() < 2:
        raise ValueError("The class spread needs two classes and a class with at least two embeddings. Received: "
                         f"{len(classes)} classes, the largest with {int(counts.max(initial=0))} embeddings")
    norms = np.sum(embeddings ** 2, axis=1)
    sums = np.zeros((len(classes), embeddings.shape[1]))
    np.add.at(sums, inverse, embeddings)
    class_norms = np.bincount(inverse, weights=norms)
    within = np.sum(2 * counts * class_norms - 2 * np.sum(sums ** 2, axis=1))  # Ordered pairs; i = j adds 0.
    total = 2 * len(labels) * norms.sum() - 2 * np.sum(embeddings.sum(axis=0) ** 2)
    within_pairs = np.sum(counts * (counts - 1))
    between_pairs = len(labels) ** 2 - np.sum(counts ** 2)
    between = max(total - within, 0.0) / between_pairs
    if between == 0.0:
        raise ValueError("The class spread is undefined when every embedding is the same point.")
    return float(max(within, 0.0) / within_pairs / between)


def accuracy(probabilities, labels):
    """Fraction of rows whose argmax is the label."""
    return float(np.mean(np.argmax(probabilities, axis=-1) == _labels(labels)))


def knn_accuracy(train_embeddings, train_labels, test_embeddings, test_labels, num_neighbours=1):
    """Accuracy of the majority vote of the `num_neighbours` nearest training embeddings (ties: nearer wins)."""
    train_labels = _labels(train_labels)
    index = search_lib.ExactSearch()
    index.add(train_embeddings)
    _, ids = index.search(test_embeddings, num_neighbours)
    neighbour_labels = train_labels[ids]
    num_classes = int(max(train_labels.max(), _labels(test_labels).max()) + 1)
    counts = np.zeros((len(ids), num_classes))
    first = np.full((len(ids), num_classes), num_neighbours, dtype=np.float64)
    rows = np.arange(len(ids))
    for position in range(num_neighbours - 1, -1, -1):
        counts[rows, neighbour_labels[:, position]] += 1
        first[rows, neighbour_labels[:, position]] = position
    predictions = np.argmax(counts * (num_neighbours + 1) - first, axis=1)
    return float(np.mean(predictions == _labels(test_labels)))


def median_seconds(function, repeats=5, warmup=1):
    """Median wall time of `function()` over `repeats` calls after `warmup` calls (for latency tables)."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def auroc(scores, positives):
    """Area under the ROC curve of `scores` for telling `positives` (bool) from the rest; ties count one half.

    The probability that a random positive scores above a random negative: 1 ranks
    perfectly, 0.5 is chance. NaN when either class is empty.
    """
    scores = np.asarray(scores, np.float64)
    positives = np.asarray(positives, bool)
    count_positive, count_negative = int(positives.sum()), int((~positives).sum())
    if count_positive == 0 or count_negative == 0:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # Average ranks over ties (1-based), then the Mann-Whitney U statistic.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(average, counts)
    u = ranks[positives].sum() - count_positive * (count_positive + 1) / 2.0
    return float(u / (count_positive * count_negative))
