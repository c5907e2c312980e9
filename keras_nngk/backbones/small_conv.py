"""A small convolutional network for 28x28 (or other small) images."""

import tf_keras as keras

from keras_nngk.backbones import common


def small_conv(input_shape=(28, 28, 1), embedding_dim=64, l2_normalize=True, weights=None, name="small_conv"):
    """Conv 32-64-128 (3x3, BatchNorm, ReLU) with two max-pools, global average pooling, linear embedding.

    Args:
        input_shape: image shape `(H, W, C)`, values in [0, 1].
        embedding_dim: size of the embedding.
        l2_normalize: scale embeddings to unit norm.
        weights: optional local weights file for the whole backbone.

    Returns:
        A `keras.Model` mapping images to `(B, embedding_dim)` embeddings.
    """
    weights = common.check_weights_file(weights)
    images = keras.Input(input_shape, name="image")
    x = images
    for index, filters in enumerate((32, 64, 128)):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{index + 1}")(x)
        # Synchronized: under a multi-replica strategy the statistics cover the global batch, so a distributed
        # step equals a single-device one (a no-op with one replica).
        x = keras.layers.BatchNormalization(synchronized=True, name=f"bn{index + 1}")(x)
        x = keras.layers.ReLU(name=f"relu{index + 1}")(x)
        if index < 2:
            x = keras.layers.MaxPooling2D(name=f"pool{index + 1}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(images, common.embedding_head(x, embedding_dim, l2_normalize), name=name)
    if weights:
        model.load_weights(weights)
    return model
