"""Keras layers: the NNGK classifier (eq. 7) and the baseline heads (eq. 2 and 3)."""

from keras_nngk.layers.center_layer import CenterLayer
from keras_nngk.layers.dense_classifier import DenseClassifier
from keras_nngk.layers.knn_classifier import KNNClassifier
from keras_nngk.layers.nngk_classifier import NNGKClassifier

__all__ = ["CenterLayer", "DenseClassifier", "KNNClassifier", "NNGKClassifier"]
