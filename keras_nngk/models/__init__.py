"""Model builders (functional API)."""

from keras_nngk.models.classifier import ClassifierModels
from keras_nngk.models.classifier import HEADS
from keras_nngk.models.classifier import nngk_classifier
from keras_nngk.models.classifier import TrainModel

__all__ = ["nngk_classifier", "ClassifierModels", "HEADS", "TrainModel"]
