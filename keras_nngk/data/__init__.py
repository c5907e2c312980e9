"""Data sets (`load(name)`) and label-level splits."""

from keras_nngk.data import augment, images, splits
from keras_nngk.data.datasets import DEFAULT, NAMES, DatasetNotAvailableError, DataSplits, hold_out, load, load_arrays

__all__ = ["load", "load_arrays", "hold_out", "NAMES", "DEFAULT", "DataSplits", "DatasetNotAvailableError", "images",
           "augment", "splits"]
