"""Pieces every backbone shares: the embedding projection, L2 normalisation, weight-file checks."""

import os

import tensorflow as tf
import tf_keras as keras

from keras_nngk.utils import layers as utils_layers


@keras.saving.register_keras_serializable(package="keras_nngk")
class L2Normalize(utils_layers.Layer):
    """Scales each embedding to unit Euclidean norm (with `epsilon` against division by zero).

    New backbones use Keras' own `UnitNormalization` (the same `tf.linalg.l2_normalize` with epsilon 1e-12, so the
    same bits); this layer stays so that models saved with it still load.
    """

    def __init__(self, epsilon=1e-12, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, inputs):
        return tf.math.l2_normalize(inputs, axis=-1, epsilon=self.epsilon)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="keras_nngk")
class CaffePreprocessing(utils_layers.Layer):
    """ImageNet "caffe" preprocessing inside the model (VGG16, ResNet50): [0, 1] RGB -> BGR minus the mean pixel."""

    def call(self, inputs):
        bgr = tf.reverse(inputs * 255.0, axis=[-1])
        return bgr - tf.constant([103.939, 116.779, 123.68], dtype=inputs.dtype)


def check_weights_file(weights):
    """`weights` must be None or an existing local file: nothing is downloaded."""
    if weights is None:
        return None
    if weights == "imagenet":
        raise ValueError("weights='imagenet' would download from the internet; pass the path of a local weights file "
                         "(e.g. resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5). Received: weights='imagenet'")
    if not os.path.isfile(weights):
        raise ValueError(f"Weights file not found: {weights!r}; pass an existing local .h5 file or weights=None.")
    return weights


def embedding_head(features, embedding_dim, l2_normalize):
    """Projection of pooled features to `embedding_dim`, optionally L2-normalised (`keras.layers.UnitNormalization`)."""
    embeddings = keras.layers.Dense(embedding_dim, name="embedding")(features)
    if l2_normalize:
        embeddings = keras.layers.UnitNormalization(axis=-1, name="l2_normalize")(embeddings)
    return embeddings


RETRIEVAL_FEATURES = ("embedding", "pooled")


def retrieval_network(backbone, features="embedding"):
    """The model whose outputs are compared in retrieval: the embedding, or the pooled features under it.

    "pooled" is the input of the backbone's `embedding` projection (global average pooling, or the flattened map),
    L2-normalised: the representation below the projection that a metric-learning loss trains through. Features
    below the last projection carry more of what the training classes did not need, and transfer better to unseen
    classes (the projection-head finding of SimCLR; measured here in README "Embedding quality").

    Args:
        backbone: a model built by `keras_nngk.backbones.get` (its projection is the layer named "embedding").
        features: one of RETRIEVAL_FEATURES.
    """
    if features not in RETRIEVAL_FEATURES:
        raise ValueError(f"Unknown retrieval features {features!r}; valid: {', '.join(RETRIEVAL_FEATURES)}. "
                         f"Received: retrieval_features={features!r}")
    if features == "embedding":
        return backbone
    try:
        projection = backbone.get_layer("embedding")
    except ValueError:
        raise ValueError(f"retrieval_features='pooled' needs a backbone whose projection is the layer named "
                         f"'embedding' (keras_nngk.backbones); {backbone.name!r} has none. Use "
                         f"retrieval_features='embedding'.") from None
    pooled = keras.layers.UnitNormalization(axis=-1, name="pooled_l2_normalize")(projection.input)
    return keras.Model(backbone.input, pooled, name=f"{backbone.name}_pooled")
