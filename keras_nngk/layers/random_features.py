"""A fixed random projection with a ReLU, regenerated from its seed (RanPAC-style feature expansion)."""

import numpy as np
import tensorflow as tf
import tf_keras as keras

from keras_nngk.layers import center_layer
from keras_nngk.utils import layers as utils_layers


@keras.saving.register_keras_serializable(package="keras_nngk")
class RandomFeatures(utils_layers.Layer):
    """`relu(x R)` with a fixed Gaussian matrix `R (d, units)`, entries N(0, 1/d), drawn from `seed`.

    A wide random ReLU expansion makes class-conditional Gaussians with one shared
    covariance fit better (RanPAC, McDonnell et al., NeurIPS 2023), so a `GaussianClassifier`
    on top separates more classes. `R` is never trained and is recomputed from the seed
    (NumPy's PCG64, so the same on every machine): a continual learner does not need to
    store it. Inputs of any shape are flattened first (pixels or pooled features).

    Args:
        units: output width.
        seed: the seed of `R`.

    Returns:
        `(B, units)` non-negative features.

    Example:

    >>> features = RandomFeatures(360, seed=0)(images)
    """

    def __init__(self, units, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.units = center_layer.check_positive_int("units", units)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"`seed` must be a non-negative integer. Received: seed={seed!r}")
        self.seed = int(seed)

    def build(self, input_shape):
        shape = tf.TensorShape(input_shape)
        if shape.rank is None or shape.rank < 2 or not shape[1:].is_fully_defined():
            raise ValueError(f"RandomFeatures needs a known input shape (batch, ...). Received: input_shape={shape}")
        dim = int(np.prod(shape[1:]))
        self.projection = self.add_weight(name="projection", shape=(dim, self.units), initializer="zeros",
                                          trainable=False)
        self.projection.assign(self.matrix(dim))
        super().build(input_shape)

    def matrix(self, dim):
        """The projection for inputs of `dim` values, from the seed alone."""
        rng = np.random.default_rng(self.seed)
        return (rng.standard_normal((dim, self.units)) / np.sqrt(dim)).astype(np.float32)

    def call(self, inputs):
        inputs = tf.convert_to_tensor(inputs)
        dim = int(self.projection.shape[0])
        if inputs.shape.rank is not None and inputs.shape[1:].is_fully_defined() and int(
                np.prod(inputs.shape[1:])) != dim:
            raise ValueError(f"RandomFeatures was built for inputs of {dim} values each. Received: "
                             f"shape={inputs.shape}")
        flat = tf.reshape(tf.cast(inputs, self.projection.dtype), (-1, dim))
        return tf.nn.relu(tf.matmul(flat, self.projection))

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([input_shape[0], self.units])

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units, "seed": self.seed})
        return config
