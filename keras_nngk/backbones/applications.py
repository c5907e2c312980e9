"""VGG16 and ResNet50 from tf_keras.applications, with ImageNet preprocessing inside the model, never downloaded."""

import tf_keras as keras

from keras_nngk.backbones import common

_APPLICATIONS = {"vgg16": keras.applications.VGG16, "resnet50": keras.applications.ResNet50}


def application(architecture, input_shape=(224, 224, 3), embedding_dim=512, l2_normalize=True, weights=None):
    """A tf_keras application's convolutional part, average-pooled, with an embedding projection.

    Args:
        architecture: "vgg16" or "resnet50".
        input_shape: `(H, W, 3)` RGB in [0, 1] (converted to the caffe
            preprocessing these networks were trained with).
        embedding_dim: size of the embedding.
        l2_normalize: scale embeddings to unit norm.
        weights: None (random init) or a local ImageNet "notop" weights file.
    """
    weights = common.check_weights_file(weights)
    images = keras.Input(input_shape, name="image")
    preprocessed = common.CaffePreprocessing(name="caffe_preprocessing")(images)
    features = _APPLICATIONS[architecture](include_top=False, weights=weights, input_shape=input_shape,
                                           pooling="avg")
    x = features(preprocessed)
    return keras.Model(images, common.embedding_head(x, embedding_dim, l2_normalize), name=architecture)


def vgg16(**kwargs):
    return application("vgg16", **kwargs)


def resnet50(**kwargs):
    return application("resnet50", **kwargs)
