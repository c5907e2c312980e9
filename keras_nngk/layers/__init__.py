"""Keras layers: the NNGK classifier (eq. 7), impostor heads (eq. 8-9) and the baseline heads (eq. 2 and 3),
and the streaming-statistics head for continual learning."""

from keras_nngk.layers.center_layer import CenterLayer, Lookup
from keras_nngk.layers.compressed_classifier import CompressedClassifier, compress
from keras_nngk.layers.dense_classifier import DenseClassifier
from keras_nngk.layers.gaussian_classifier import GaussianClassifier
from keras_nngk.layers.impostor_classifier import ImpostorClassifier
from keras_nngk.layers.kernel_layer import KernelCenterLayer
from keras_nngk.layers.knn_classifier import KNNClassifier
from keras_nngk.layers.neighbour_lookup import NeighbourLookup
from keras_nngk.layers.nngk_classifier import NNGKClassifier
from keras_nngk.layers.random_features import RandomFeatures

__all__ = ["CenterLayer", "Lookup", "CompressedClassifier", "compress", "DenseClassifier", "GaussianClassifier",
           "ImpostorClassifier", "KernelCenterLayer", "KNNClassifier", "NeighbourLookup", "NNGKClassifier",
           "RandomFeatures"]
