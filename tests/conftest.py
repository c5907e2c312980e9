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
