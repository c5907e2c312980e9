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


def check_class_split(train_classes, test_classes, num_classes):
    """`(train_classes, test_classes)` as int arrays: non-empty, without repeats, disjoint, in `[0, num_classes)`."""
    train_classes, test_classes = np.asarray(train_classes, np.int64), np.asarray(test_classes, np.int64)
    for name, classes in (("train_classes", train_classes), ("test_classes", test_classes)):
        if classes.size == 0 or np.unique(classes).size != classes.size or classes.min() < 0 or \
                classes.max() >= num_classes:
            raise ValueError(f"`{name}` must list distinct classes in [0, {num_classes}). Received: "
                             f"{name}={classes.tolist()}")
    if np.intersect1d(train_classes, test_classes).size:
        raise ValueError("`train_classes` and `test_classes` must be disjoint (retrieval is on unseen classes). "
                         f"Received: both hold {np.intersect1d(train_classes, test_classes).tolist()}")
    return train_classes, test_classes


def class_disjoint(x_train, y_train, x_test, y_test, num_classes, train_classes=None, test_classes=None):
    """Retrieval protocol on unseen classes: train images of some classes, test images of others.

    By default the first half of the classes trains and the rest is tested. Labels
    are renumbered from 0 in the order the classes are listed. Returns
    `(x_train, y_train), (x_test, y_test), num_train_classes`.
    """
    half = num_classes // 2
    if train_classes is None and test_classes is None:
        train_classes, test_classes = np.arange(half), np.arange(half, num_classes)
    train_classes, test_classes = check_class_split(train_classes, test_classes, num_classes)
    train_ids = np.full(num_classes, -1)
    train_ids[train_classes] = np.arange(len(train_classes))
    test_ids = np.full(num_classes, -1)
    test_ids[test_classes] = np.arange(len(test_classes))
    train = np.isin(y_train, train_classes)
    test = np.isin(y_test, test_classes)
    return ((x_train[train], train_ids[y_train[train]]), (x_test[test], test_ids[y_test[test]]),
            len(train_classes))


def few_shot_indices(labels, examples_per_class, seed=0):
    """Sorted indices of `examples_per_class` seeded random examples of every class (all of a smaller class)."""
    labels = np.asarray(labels)
    if isinstance(examples_per_class, bool) or not isinstance(examples_per_class, (int, np.integer)) or \
            examples_per_class < 1:
        raise ValueError(f"`examples_per_class` must be a positive integer. Received: {examples_per_class!r}")
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == label))[:examples_per_class] for label in np.unique(labels)]
    return np.sort(np.concatenate(chosen))


def split_tasks(labels, classes_per_task=2, class_order=None):
    """Split-X continual benchmarks (Zenke et al. 2017): consecutive groups of classes, one task each.

    Args:
        labels: int labels of the whole training (or test) set.
        classes_per_task: classes in each task (2 gives the usual 5 tasks of Split MNIST).
        class_order: optional permutation of the classes (default: ascending).

    Returns:
        A list of `(task_classes, indices)`: the classes of each task and the sorted
        indices of its examples in `labels`. Tasks never share classes.
    """
    labels = np.asarray(labels)
    classes = np.unique(labels) if class_order is None else np.asarray(class_order)
    if class_order is not None and (np.unique(classes).size != classes.size or
                                    not np.array_equal(np.sort(classes), np.unique(labels))):
        raise ValueError("`class_order` must be a permutation of the classes present in `labels`, each once: tasks "
                         f"cannot overlap in a class-incremental run. Received: class_order={list(class_order)}")
    if isinstance(classes_per_task, bool) or not isinstance(classes_per_task, (int, np.integer)) or \
            classes_per_task < 1 or len(classes) % classes_per_task:
        raise ValueError(f"`classes_per_task` must divide the {len(classes)} classes. "
                         f"Received: classes_per_task={classes_per_task!r}")
    tasks = []
    for start in range(0, len(classes), classes_per_task):
        task_classes = classes[start:start + classes_per_task]
        tasks.append((task_classes, np.flatnonzero(np.isin(labels, task_classes))))
    return tasks
