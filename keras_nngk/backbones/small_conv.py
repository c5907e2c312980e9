"""A small convolutional network for 28x28 (or other small) images."""

import tf_keras as keras

from keras_nngk.backbones import common


def small_conv(input_shape=(28, 28, 1), embedding_dim=64, l2_normalize=True, weights=None, name="small_conv",
               pooling="avg"):
    """Conv 32-64-128 (3x3, BatchNorm, ReLU) with two max-pools, global average pooling, linear embedding.

    With `pooling="flatten"` the embedding is a linear map of the whole last feature map (7 x 7 x 128 at 28 x 28)
    instead of its average: it keeps where in the image a feature is, which aligned images (digits, Fashion-MNIST)
    carry and raw-pixel neighbours use.

    Args:
        input_shape: image shape `(H, W, C)`, values in [0, 1].
        embedding_dim: size of the embedding.
        l2_normalize: scale embeddings to unit norm.
        weights: optional local weights file for the whole backbone.
        pooling: "avg" (global average pooling) or "flatten".

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
    if pooling == "flatten":
        x = keras.layers.Flatten(name="flatten")(x)
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    else:
        raise ValueError(f"Unknown pooling {pooling!r}; valid: avg, flatten. Received: pooling={pooling!r}")
    model = keras.Model(images, common.embedding_head(x, embedding_dim, l2_normalize), name=name)
    if weights:
        model.load_weights(weights)
    return model
