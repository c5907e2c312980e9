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


RETRIEVAL_FEATURES = ("embedding", "pooled", "map")


def _feature_map(backbone, projection):
    """The 4-D feature map that the backbone pools into its projection's input (a tensor of `backbone`'s graph)."""
    node = projection._inbound_nodes[0]  # pylint: disable=protected-access
    pooling = node.inbound_layers
    if isinstance(pooling, (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D,
                            keras.layers.Flatten)):
        return pooling.input
    if isinstance(pooling, keras.Model) and isinstance(
            pooling.layers[-1], (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)):
        # A keras.applications network built with pooling="avg", nested in the backbone: call its layers up to the
        # pooling on the nested network's own input tensor in the backbone's graph.
        inner = keras.Model(pooling.input, pooling.layers[-1].input, name=f"{pooling.name}_map")
        return inner(node.parent_nodes[0].call_args[0])
    raise ValueError(f"retrieval_features='map' needs a backbone whose projection ('embedding') reads a pooled or "
                     f"flattened feature map; {backbone.name!r} feeds it from {type(pooling).__name__}. Use "
                     f"retrieval_features='pooled' or 'embedding'.")


def retrieval_network(backbone, features="embedding"):
    """The model whose outputs are compared in retrieval: the embedding, or the features under it.

    "pooled" is the input of the backbone's `embedding` projection (global average pooling, or the flattened map),
    L2-normalised: the representation below the projection that a metric-learning loss trains through. Features
    below the last projection carry more of what the training classes did not need, and transfer better to unseen
    classes (the projection-head finding of SimCLR; measured here in README "Embedding quality"). "map" is the
    feature map under that pooling, flattened and L2-normalised: it also keeps where on the image each feature is,
    which global pooling discards and which aligned images (Fashion-MNIST, digits) share between classes, as raw
    pixels do (README "Embedding quality"); it has `H * W` times the pooled size (6,272 for small_conv at 28 x 28).

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
        raise ValueError(f"retrieval_features={features!r} needs a backbone whose projection is the layer named "
                         f"'embedding' (keras_nngk.backbones); {backbone.name!r} has none. Use "
                         f"retrieval_features='embedding'.") from None
    if features == "map":
        flat = keras.layers.Flatten(name="map_flatten")(_feature_map(backbone, projection))
        flat = keras.layers.UnitNormalization(axis=-1, name="map_l2_normalize")(flat)
        return keras.Model(backbone.input, flat, name=f"{backbone.name}_map")
    pooled = keras.layers.UnitNormalization(axis=-1, name="pooled_l2_normalize")(projection.input)
    return keras.Model(backbone.input, pooled, name=f"{backbone.name}_pooled")
