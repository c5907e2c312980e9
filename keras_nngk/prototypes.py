"""Class-balanced k-means prototypes: a few keys that summarise many stored ones, for a cheap lookup.

The biased network's lookup (section 5 of the review, eq. 14) searches the
projected features of every training image; with 60,000 of them the search costs
more than the convolutional path it lets images skip. `class_prototypes`
replaces them by `per_class` k-means centroids of each class's keys, each
carrying the mean of its members' values and its member count, so the lookup
searches `num_classes * per_class` keys. A count-weighted kernel average over
prototypes approximates the kernel average over their members (exactly, when
every cluster is a single point).
"""

import numpy as np


def kmeans(points, num_clusters, iterations=20, seed=0):
    """Lloyd's k-means with k-means++ seeding: `(centroids (K, d), assignment (N,))`, seeded and deterministic.

    With `num_clusters >= len(points)` every point is its own cluster. A cluster
    that loses all its points keeps its centroid (it is dropped by the caller).
    """
    points = np.asarray(points, np.float64)
    count = len(points)
    if num_clusters >= count:
        return points.copy(), np.arange(count)
    rng = np.random.default_rng(seed)
    centroids = np.empty((num_clusters, points.shape[1]))
    centroids[0] = points[rng.integers(count)]
    nearest = np.sum((points - centroids[0]) ** 2, axis=1)
    for index in range(1, num_clusters):  # k-means++: the next seed drawn in proportion to squared distance.
        total = nearest.sum()
        choice = rng.choice(count, p=nearest / total) if total > 0 else rng.integers(count)
        centroids[index] = points[choice]
        nearest = np.minimum(nearest, np.sum((points - centroids[index]) ** 2, axis=1))
    squared_norms = np.sum(points ** 2, axis=1)
    assignment = None
    for _ in range(iterations):
        distances = squared_norms[:, None] - 2.0 * points @ centroids.T + np.sum(centroids ** 2, axis=1)[None, :]
        new_assignment = np.argmin(distances, axis=1)
        if assignment is not None and np.array_equal(new_assignment, assignment):
            break
        assignment = new_assignment
        sums = np.zeros_like(centroids)
        np.add.at(sums, assignment, points)
        members = np.bincount(assignment, minlength=num_clusters)
        filled = members > 0
        centroids[filled] = sums[filled] / members[filled, None]
    return centroids, assignment


def class_prototypes(keys, values, labels, per_class, iterations=20, seed=0):
    """Summarises `(keys, values)` by `per_class` k-means prototypes of each class's keys.

    Args:
        keys: `(N, p)` stored keys (the searched vectors).
        values: `(N, m)` stored values.
        labels: `(N,)` int class ids: clustering runs within each class, so every
            class keeps `min(per_class, its size)` prototypes however rare it is.
        per_class: prototypes per class (a positive int).
        iterations: Lloyd iterations at most.
        seed: seed of the k-means++ seeding (class c uses `seed + c`).

    Returns:
        `(keys (K, p), values (K, m), counts (K,), labels (K,))`, float32 / int64,
        `K <= num_classes * per_class`: each prototype's key is the mean of its
        members' keys, its value the mean of their values, its count their number.
    """
    keys, values, labels = np.asarray(keys, np.float32), np.asarray(values, np.float32), np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"Prototypes need int class ids (N,) to balance classes. Received: labels of shape "
                         f"{labels.shape} and dtype {labels.dtype}")
    if not (len(keys) == len(values) == len(labels)) or len(keys) == 0:
        raise ValueError(f"`keys`, `values` and `labels` must hold the same non-zero number of rows. Received: "
                         f"{len(keys)}, {len(values)}, {len(labels)}")
    if isinstance(per_class, bool) or int(per_class) != per_class or per_class < 1:
        raise ValueError(f"`per_class` must be a positive integer. Received: per_class={per_class!r}")
    out_keys, out_values, out_counts, out_labels = [], [], [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        _, assignment = kmeans(keys[members], int(per_class), iterations, seed + int(label))
        counts = np.bincount(assignment)
        used = np.flatnonzero(counts)
        for matrix, out in ((keys, out_keys), (values, out_values)):
            sums = np.zeros((len(counts), matrix.shape[1]), np.float64)
            np.add.at(sums, assignment, matrix[members])
            out.append(sums[used] / counts[used, None])
        out_counts.append(counts[used])
        out_labels.append(np.full(len(used), label, np.int64))
    return (np.concatenate(out_keys).astype(np.float32), np.concatenate(out_values).astype(np.float32),
            np.concatenate(out_counts).astype(np.int64), np.concatenate(out_labels))
