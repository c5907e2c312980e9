"""The dense softmax classifier (eq. 2), the usual parametric head."""

import tensorflow as tf
import tf_keras as keras

from keras_nngk.layers import center_layer
from keras_nngk.utils import layers as utils_layers


@keras.saving.register_keras_serializable(package="keras_nngk")
class DenseClassifier(utils_layers.Layer):
    """`y(z) = softmax(W z + b)` (eq. 2 of the review with a softmax activation).

    Accepts the same inputs as the nearest-neighbour heads (`embeddings` or
    `[embeddings, sample_ids]`, the ids being ignored), so heads can be swapped in
    one model.

    Args:
        num_classes: number of classes.
        use_bias: learn the bias `b`.
        kernel_initializer, bias_initializer, kernel_regularizer: as in `keras.layers.Dense`.

    Returns:
        `(B, num_classes)` class probabilities.

    Example:

    >>> head = DenseClassifier(num_classes=10)
    >>> probs = head(embeddings)
    """

    def __init__(self, num_classes, use_bias=True, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = center_layer.check_positive_int("num_classes", num_classes)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        shape = center_layer.embedding_shape(input_shape)
        if shape.rank != 2 or shape[-1] is None:
            raise ValueError("DenseClassifier expects embeddings (batch, dimension). "
                             f"Received: input_shape={input_shape}")
        self.kernel = self.add_weight(name="kernel", shape=(int(shape[-1]), self.num_classes),
                                      initializer=self.kernel_initializer, regularizer=self.kernel_regularizer)
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.num_classes,), initializer=self.bias_initializer)
        super().build(input_shape)

    def call(self, inputs):
        embeddings, _ = center_layer.split_inputs(inputs)
        embeddings = center_layer.check_embeddings(embeddings, self.kernel.shape[0], self.kernel.dtype,
                                                   check_finite=False)  # NaN is the model's to catch here.
        logits = tf.matmul(embeddings, self.kernel)
        if self.bias is not None:
            logits = logits + self.bias
        return tf.nn.softmax(logits)

    def compute_output_shape(self, input_shape):
        return center_layer.embedding_shape(input_shape)[:-1].concatenate([self.num_classes])

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_classes": self.num_classes,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
        })
        return config
