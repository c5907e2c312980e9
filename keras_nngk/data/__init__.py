"""Data sets (`load(name)`) and label-level splits."""

from keras_nngk.data import images, splits
from keras_nngk.data.datasets import DEFAULT, NAMES, DatasetNotAvailableError, DataSplits, load, load_arrays

__all__ = ["load", "load_arrays", "NAMES", "DEFAULT", "DataSplits", "DatasetNotAvailableError", "images", "splits"]
