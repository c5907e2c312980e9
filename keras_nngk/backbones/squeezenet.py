"""SqueezeNet 1.1 (Iandola et al. 2016) in tf_keras: the mobile backbone of the Impostor Networks paper."""

import tf_keras as keras

from keras_nngk.backbones import common

# He initialisation: SqueezeNet has no BatchNorm, and with Glorot weights the activations of a from-scratch network
# shrink ~10x per fire module (global-pool features of 4e-5 measured at init), so nothing trains.
_INIT = "he_uniform"


def _fire(x, squeeze, expand, name):
    x = keras.layers.Conv2D(squeeze, 1, activation="relu", kernel_initializer=_INIT, name=f"{name}_squeeze")(x)
    left = keras.layers.Conv2D(expand, 1, activation="relu", kernel_initializer=_INIT, name=f"{name}_expand1x1")(x)
    right = keras.layers.Conv2D(expand, 3, padding="same", activation="relu", kernel_initializer=_INIT,
                                name=f"{name}_expand3x3")(x)
    return keras.layers.Concatenate(name=f"{name}_concat")([left, right])


MIN_SIZE = 64


def stem(images, input_shape):
    """Upsampling of small images, conv1 (64 3x3/2) and pool1: the cheap first stage (the biased network's f1)."""
    x = images
    if min(input_shape[0], input_shape[1]) < MIN_SIZE:
        x = keras.layers.Resizing(max(MIN_SIZE, input_shape[0]), max(MIN_SIZE, input_shape[1]), name="upsample")(x)
    x = keras.layers.Conv2D(64, 3, strides=2, activation="relu", kernel_initializer=_INIT, name="conv1")(x)
    return keras.layers.MaxPooling2D(3, strides=2, name="pool1")(x)


def features(x, dropout=0.5):
    """fire2-fire9 with two max-pools, dropout and global average pooling on the stem's output `x`."""
    x = _fire(x, 16, 64, "fire2")
    x = _fire(x, 16, 64, "fire3")
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool3")(x)
    x = _fire(x, 32, 128, "fire4")
    x = _fire(x, 32, 128, "fire5")
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool5")(x)
    for index, (squeeze, expand) in enumerate(((48, 192), (48, 192), (64, 256), (64, 256))):
        x = _fire(x, squeeze, expand, f"fire{index + 6}")
    x = keras.layers.Dropout(dropout, name="drop9")(x)
    return keras.layers.GlobalAveragePooling2D(name="gap")(x)


def squeezenet(input_shape=(224, 224, 3), embedding_dim=512, l2_normalize=True, weights=None, dropout=0.5,
               name="squeezenet"):
    """SqueezeNet 1.1 features (conv1 64x3x3/2, fire2-fire9 with three max-pools), global average pooling, embedding.

    The final 1x1 classifier convolution of the original is replaced by the
    embedding projection. About 0.72M feature parameters (2.9 MB in float32).

    Args:
        input_shape: `(H, W, C)`, values in [0, 1]. Images smaller than 64x64
            (28x28 Fashion-MNIST, say) are upsampled to 64x64 inside the model:
            SqueezeNet's three stride-2 poolings need room.
        embedding_dim: size of the embedding (512 in the Impostor paper).
        l2_normalize: scale embeddings to unit norm.
        weights: optional local weights file (loaded by layer name, so the
            feature weights of a SqueezeNet 1.1 with these layer names load).
        dropout: dropout rate before pooling, as in the original.
    """
    weights = common.check_weights_file(weights)
    images = keras.Input(input_shape, name="image")
    x = features(stem(images, input_shape), dropout)
    model = keras.Model(images, common.embedding_head(x, embedding_dim, l2_normalize), name=name)
    if weights:
        model.load_weights(weights, by_name=weights.endswith(".h5"), skip_mismatch=weights.endswith(".h5"))
    return model
