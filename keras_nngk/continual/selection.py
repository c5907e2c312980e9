"""Which centers Algorithm 1 drops and which samples it adds: the review's rules and the repaired ones, in NumPy.

The review's rules (section 4): drop the best-predicted centers, add the worst-predicted
samples. Measured on Split Fashion-MNIST, they hollow out pure class cores and fill the
budget with samples that lie inside other classes' regions. The repairs, each optional:

- `class_quotas`: every class seen keeps an equal share of the budget;
- a floor: drops never leave a class with fewer than `floor` centers;
- "redundant" drops: the center closest to another center of its own class goes first
  (greedy; after each drop the distances are updated);
- "own_mean" admission: a sample is added only if its nearest class mean is its own class.

Every function takes arrays and returns indices into them; nothing here touches a layer.
"""

import numpy as np


def class_quotas(budget, classes):
    """An equal share of `budget` for each class in `classes` (the first `budget % n` classes get one more)."""
    classes = np.unique(np.asarray(classes))
    share, extra = divmod(int(budget), max(len(classes), 1))
    return {int(c): share + (1 if i < extra else 0) for i, c in enumerate(classes)}


def ordered_with_floor(order, labels, count, floor):
    """The first `count` of `order` (indices into `labels`) that keep every class at `floor` or more remaining."""
    labels = np.asarray(labels)
    remaining = {int(c): int(n) for c, n in zip(*np.unique(labels, return_counts=True))}
    chosen = []
    for index in order:
        if len(chosen) >= count:
            break
        label = int(labels[index])
        if remaining[label] > floor:
            chosen.append(int(index))
            remaining[label] -= 1
    return np.array(chosen, np.int64)


def redundant_drops(centers, labels, count, floor=0):
    """`count` indices of centers to drop, most redundant first: greedily the center nearest to another center of
    its own class, never taking a class below `floor` centers (nor below one)."""
    centers = np.asarray(centers, np.float64)
    labels = np.asarray(labels)
    n = len(centers)
    squared = np.sum(centers ** 2, axis=1)
    distances = np.maximum(squared[:, None] + squared[None] - 2.0 * centers @ centers.T, 0.0)
    distances[labels[:, None] != labels[None]] = np.inf
    np.fill_diagonal(distances, np.inf)
    alive = np.ones(n, bool)
    remaining = {int(c): int(m) for c, m in zip(*np.unique(labels, return_counts=True))}
    nearest = distances.min(axis=1)
    chosen = []
    while len(chosen) < count:
        candidates = np.where(alive & np.array([remaining[int(c)] > max(floor, 1) for c in labels]), nearest, np.inf)
        index = int(np.argmin(candidates))
        if not np.isfinite(candidates[index]):
            break
        chosen.append(index)
        alive[index] = False
        remaining[int(labels[index])] -= 1
        distances[:, index] = np.inf
        distances[index, :] = np.inf
        stale = alive & (labels == labels[index])
        nearest[stale] = distances[stale].min(axis=1)
        nearest[index] = np.inf
    return np.array(chosen, np.int64)


def own_mean_admitted(embeddings, labels, means, mean_classes):
    """True where a sample's nearest class mean (squared L2) is the mean of its own class."""
    embeddings, means = np.asarray(embeddings, np.float64), np.asarray(means, np.float64)
    squared = np.sum(embeddings ** 2, 1)[:, None] + np.sum(means ** 2, 1)[None] - 2.0 * embeddings @ means.T
    return np.asarray(mean_classes)[np.argmin(squared, axis=1)] == np.asarray(labels)
