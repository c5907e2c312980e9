"""Training: configuration, the run (`fit`, `evaluate_run`), the custom loop and callbacks."""

from keras_nngk.training import callbacks
from keras_nngk.training.config import PRESETS, Config
from keras_nngk.training.loop import CustomLoop
from keras_nngk.training.run import evaluate_run, fit, load_run
from keras_nngk.training.sparse_adam import SparseAdam

__all__ = ["SparseAdam", "Config", "PRESETS", "CustomLoop", "fit", "evaluate_run", "load_run", "callbacks"]
