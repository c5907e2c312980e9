"""Model builders (functional API)."""

from keras_nngk.models.biased import biased_network
from keras_nngk.models.biased import BiasedModels
from keras_nngk.models.biased import GatedMix
from keras_nngk.models.classifier import ClassifierModels
from keras_nngk.models.classifier import HEADS
from keras_nngk.models.classifier import nngk_classifier
from keras_nngk.models.classifier import TrainModel

__all__ = ["biased_network", "BiasedModels", "GatedMix", "nngk_classifier", "ClassifierModels", "HEADS", "TrainModel"]
