"""Training: configuration, the run (`fit`, `evaluate_run`), the custom loop and callbacks."""

from keras_nngk.training import callbacks
from keras_nngk.training.config import PRESETS, Config
from keras_nngk.training.loop import CustomLoop
from keras_nngk.training.run import evaluate_run, fit, load_run
from keras_nngk.training.sparse_adam import SparseAdam

__all__ = ["SparseAdam", "Config", "PRESETS", "CustomLoop", "fit", "evaluate_run", "load_run", "callbacks"]


def __getattr__(name):
    """`keras_nngk.training.continual` moved to `keras_nngk.continual`; the old name still resolves to it."""
    if name == "continual":
        import importlib  # pylint: disable=g-import-not-at-top
        return importlib.import_module("keras_nngk.continual")
    raise AttributeError(f"module 'keras_nngk.training' has no attribute {name!r}")
