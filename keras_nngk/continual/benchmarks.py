"""Continual benchmarks: Split-X task sequences built from the registered data sets, and their checks."""

import dataclasses

import numpy as np

from keras_nngk import data as data_lib

SCENARIOS = ("class_incremental", "task_incremental")
# name -> (data set, classes per task). Split CIFAR-100 uses 10 tasks of 10 classes.
BENCHMARKS = {
    "split_mnist5k": ("mnist5k", 2),
    "split_fashion_mnist": ("fashion_mnist", 2),
    "split_digits": ("digits", 2),
    "split_mnist": ("mnist", 2),
    "split_cifar10": ("cifar10", 2),
    "split_cifar100": ("cifar100", 10),
}


@dataclasses.dataclass
class Task:
    """One task of a continual benchmark: its classes and its train and test examples (images in [0, 1])."""

    classes: np.ndarray
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclasses.dataclass
class Benchmark:
    name: str
    tasks: list
    num_classes: int
    image_shape: tuple
    class_names: tuple


def load_benchmark(name, data_dir=None, max_train_per_task=None, seed=0):
    """Builds a Split-X benchmark from a registered data set (see `BENCHMARKS`).

    Args:
        name: benchmark name.
        data_dir: tfds data dir (or the Fashion-MNIST idx folder).
        max_train_per_task: keep at most this many (seeded, stratified) training images per task, for quick runs.
    """
    if name not in BENCHMARKS:
        raise ValueError(f"Unknown benchmark {name!r}; valid: {', '.join(BENCHMARKS)}. Received: benchmark={name!r}")
    dataset, classes_per_task = BENCHMARKS[name]
    arrays = data_lib.load_arrays(dataset, data_dir=data_dir)
    train_tasks = data_lib.splits.split_tasks(arrays.y_train, classes_per_task)
    test_tasks = data_lib.splits.split_tasks(arrays.y_test, classes_per_task)
    tasks = []
    for (classes, train), (_, test) in zip(train_tasks, test_tasks):
        if max_train_per_task and len(train) > max_train_per_task:
            per_class = max(1, max_train_per_task // len(classes))
            train = train[data_lib.splits.few_shot_indices(arrays.y_train[train], per_class, seed)]
        tasks.append(Task(classes, arrays.x_train[train], arrays.y_train[train], arrays.x_test[test],
                          arrays.y_test[test]))
    num_classes = int(max(arrays.y_train.max(), arrays.y_test.max()) + 1)
    return Benchmark(name, tasks, num_classes, tuple(arrays.x_train.shape[1:]), tuple(arrays.class_names))


def check_tasks(tasks, scenario):
    """Raises a one-line ValueError for task lists a run cannot use."""
    if scenario not in SCENARIOS:
        raise ValueError(f"Unknown scenario {scenario!r}; valid: {', '.join(SCENARIOS)}. Received: scenario="
                         f"{scenario!r}")
    if not tasks:
        raise ValueError("A continual run needs at least one task. Received: 0 tasks")
    seen = {}
    for index, task in enumerate(tasks):
        if len(task.x_train) == 0 or len(task.x_train) != len(task.y_train):
            raise ValueError(f"Task {index} has {len(task.x_train)} training images and {len(task.y_train)} labels; "
                             "each task needs matching, non-empty training data.")
        if not np.all(np.isin(task.y_train, task.classes)) or not np.all(np.isin(task.y_test, task.classes)):
            raise ValueError(f"Task {index} has labels outside its classes {list(task.classes)}.")
        for label in task.classes:
            if scenario == "class_incremental" and int(label) in seen:
                raise ValueError(f"Tasks {seen[int(label)]} and {index} share class {int(label)}: a class-incremental "
                                 "run needs tasks with disjoint classes (or use --scenario=task_incremental).")
            seen.setdefault(int(label), index)
