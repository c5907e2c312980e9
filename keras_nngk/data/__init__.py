"""Data sets (`load(name)`) and label-level splits."""

from keras_nngk.data import images
from keras_nngk.data import splits
from keras_nngk.data.datasets import DataSplits
from keras_nngk.data.datasets import DatasetNotAvailableError
from keras_nngk.data.datasets import DEFAULT
from keras_nngk.data.datasets import load
from keras_nngk.data.datasets import NAMES

__all__ = ["load", "NAMES", "DEFAULT", "DataSplits", "DatasetNotAvailableError", "images", "splits"]
