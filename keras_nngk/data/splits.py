"""Index arithmetic on labels: stratified train/test splits, class-disjoint splits, few-shot subsets."""

import numpy as np


def stratified_split(labels, test_fraction=0.2, seed=0):
    """Seeded split keeping class proportions; returns sorted `(train_indices, test_indices)`."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut = int(round(len(members) * test_fraction))
        test.append(members[:cut])
        train.append(members[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def class_disjoint(x_train, y_train, x_test, y_test, num_classes):
    """Retrieval protocol on unseen classes: train images of the first half of the classes, test images of the rest.

    Test labels are shifted to start at 0. Returns `(x_train, y_train), (x_test, y_test), num_train_classes`.
    """
    half = num_classes // 2
    train = y_train < half
    test = y_test >= half
    return (x_train[train], y_train[train]), (x_test[test], y_test[test] - half), half


def few_shot_indices(labels, examples_per_class, seed=0):
    """Sorted indices of `examples_per_class` seeded random examples of every class (all of a smaller class)."""
    labels = np.asarray(labels)
    if isinstance(examples_per_class, bool) or not isinstance(examples_per_class, (int, np.integer)) or \
            examples_per_class < 1:
        raise ValueError(f"`examples_per_class` must be a positive integer. Received: {examples_per_class!r}")
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == label))[:examples_per_class] for label in np.unique(labels)]
    return np.sort(np.concatenate(chosen))
