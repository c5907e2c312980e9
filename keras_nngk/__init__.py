"""keras-nngk: Nearest Neighbour Gaussian Kernel heads for tf_keras models.

This is the one place that selects Keras 2 (`tf_keras`): TensorFlow's `tf.keras`
is pointed at it unless the user chose otherwise before importing us.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

# pylint: disable=g-import-not-at-top,wrong-import-position
from keras_nngk import (
           attacks,
           backbones,
           data,
           export,
           kernels,
           layers,
           metrics,
           models,
           prototypes,
           search,
           surgery,
           training,
           utils,
)
from keras_nngk.training import callbacks

__version__ = "0.1.0"


def __getattr__(name):
    """`kn.continual`, `kn.experiments` and `kn.plots` load on first use: they bring matplotlib, which a model user
    does not need."""
    if name in ("continual", "experiments", "plots"):
        import importlib  # pylint: disable=g-import-not-at-top
        return importlib.import_module(f"keras_nngk.{name}")
    raise AttributeError(f"module 'keras_nngk' has no attribute {name!r}")


__all__ = ["attacks", "backbones", "callbacks", "continual", "data", "experiments", "export", "kernels", "layers",
           "prototypes", "metrics", "models", "plots", "search", "surgery", "training", "utils", "__version__"]
