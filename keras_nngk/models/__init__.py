"""Model builders (functional API)."""

from keras_nngk.models.biased import BiasedModels, GatedMix, biased_network
from keras_nngk.models.classifier import HEADS, ClassifierModels, TrainModel, nngk_classifier

__all__ = ["biased_network", "BiasedModels", "GatedMix", "nngk_classifier", "ClassifierModels", "HEADS", "TrainModel"]
