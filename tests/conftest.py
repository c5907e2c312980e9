"""Shared test setup: quiet TensorFlow, tf_keras selected, deterministic seeds."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tf_keras as keras  # noqa: E402

import keras_nngk  # noqa: E402,F401

try:  # faiss' OpenMP threads spin against TensorFlow's on 2 cores (an OPQ test: 78 s with all threads, 8 s with one).
    import faiss  # noqa: E402  pylint: disable=g-import-not-at-top

    faiss.omp_set_num_threads(1)
except ImportError:
    pass


@pytest.fixture(autouse=True)
def seeded():
    keras.utils.set_random_seed(0)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def clustered(rng, num_points, dimension, num_clusters=20, spread=0.3):
    """Points around random cluster means: structured like real embeddings, without exact ties."""
    means = rng.normal(size=(num_clusters, dimension))
    assignment = rng.integers(0, num_clusters, num_points)
    points = means[assignment] + spread * rng.normal(size=(num_points, dimension))
    return points.astype(np.float32), assignment


# The test files that take longest (seconds of work in one run of the suite with `--durations=0`, 2026-12-01,
# after commands were forked from a server instead of each importing TensorFlow: 105, 89, 71, 57, 48, 44, 31, 29,
# 23, 22 s of 642 s) are collected first. With `-n auto --dist loadfile` pytest-xdist hands whole files to the
# workers in collection order, so a long file collected late leaves the other worker idle at the end; longest
# first, the run ends within the shortest files (a simulation of that run's two workers,
# `python bench/suite_schedule.py <log>`: 332 s in path order, 321 s longest first, the lower bound being 321 s).
# Other files keep their order.
SLOWEST_FILES = ("tests/continual/test_continual.py", "tests/trainers/test_fit.py", "tests/trainers/test_faults.py",
                 "tests/test_export.py", "tests/training/test_experiments.py", "tests/trainers/test_distributed.py",
                 "tests/training/test_callbacks.py", "tests/trainers/test_impostor.py",
                 "tests/trainers/test_hardening.py", "tests/test_tuning.py")


def pytest_collection_modifyitems(config, items):
    del config
    rank = {path: position for position, path in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # Stable: files stay whole.
