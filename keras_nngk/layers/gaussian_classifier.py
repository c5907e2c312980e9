"""A head over streaming class statistics: the Gaussian kernel of eq. 7 over class means in a whitened space (LDA)."""

import numpy as np
import tensorflow as tf
import tf_keras as keras

from keras_nngk import gaussian
from keras_nngk.layers import center_layer
from keras_nngk.utils import layers as utils_layers
from keras_nngk.utils.checks import check_positive_float


@keras.saving.register_keras_serializable(package="keras_nngk")
class GaussianClassifier(utils_layers.Layer):
    """`p(c | z) = softmax_c(-|z L - m_c L|^2 / (2 sigma^2) [+ log pi_c])` over the classes seen so far.

    Keeps streaming Gaussian statistics of the embeddings it is shown: per-class counts
    and means and the pooled within-class scatter (`keras_nngk.gaussian`), updated with
    `update(embeddings, labels)` one batch or one task at a time; the result does not
    depend on the split or order of the data. `L` whitens the shared covariance (with
    shrinkage), so distances are Mahalanobis distances. With `sigma=1` this is linear
    discriminant analysis, i.e. deep streaming LDA (Hayes and Kanan, CVPRW 2020); in the
    review's terms it is the Gaussian kernel of eq. 7 with the class means as centers
    (k = number of classes, w_i = 1) in a space where the kernel's isotropic width fits.
    Nothing of a training image is stored but these sums, which is what continual
    learning without exemplars needs. `call()` is two matrix products and a softmax:
    exportable to SavedModel and TFLite builtin ops.

    Args:
        num_classes: number of classes; classes never shown to `update` get probability 0.
        shrinkage: `a` in `(1 - a) S + a trace(S) / d I`, in [0, 1].
        sigma: kernel width in the whitened space (1: LDA).
        priors: add the log class frequencies (False: equal priors, the right choice when
            the data of each class arrives in different amounts over time).

    Call arguments:
        inputs: `embeddings (B, d)` or `[embeddings, sample_ids]` (ids ignored: no
            sample is stored).

    Returns:
        `(B, num_classes)` class probabilities.

    Example:

    >>> head = GaussianClassifier(num_classes=10)
    >>> head.update(task_embeddings, task_labels)  # Any number of times.
    >>> probabilities = head(embeddings)
    """

    def __init__(self, num_classes, shrinkage=0.01, sigma=1.0, priors=False, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = center_layer.check_positive_int("num_classes", num_classes)
        if isinstance(shrinkage, bool) or not isinstance(shrinkage, (int, float)) or not 0.0 <= shrinkage <= 1.0:
            raise ValueError(f"`shrinkage` must be a number in [0, 1]. Received: shrinkage={shrinkage!r}")
        self.shrinkage = float(shrinkage)
        self.sigma = check_positive_float("sigma", sigma)
        self.priors = bool(priors)

    def build(self, input_shape):
        shape = center_layer.embedding_shape(input_shape)
        if shape.rank != 2 or shape[-1] is None:
            raise ValueError(f"GaussianClassifier expects embeddings (batch, dimension). Received: "
                             f"input_shape={input_shape}")
        dim, classes = int(shape[-1]), self.num_classes

        def weight(name, shape, initializer="zeros"):
            return self.add_weight(name=name, shape=shape, initializer=initializer, trainable=False)

        # The statistics (what is stored between tasks) ...
        self.class_counts = weight("class_counts", (classes,))
        self.class_means = weight("class_means", (classes, dim))
        self.scatter = weight("scatter", (dim, dim))
        # ... and what `call` uses, derived from them by `update`.
        self.whitening = weight("whitening", (dim, dim), "identity")
        self.whitened_means = weight("whitened_means", (classes, dim))
        self.class_bias = self.add_weight(name="class_bias", shape=(classes,), trainable=False,
                                          initializer=keras.initializers.Constant(-1e9))
        super().build(input_shape)

    @property
    def dimension(self):
        return int(self.scatter.shape[0])

    @property
    def state(self):
        """`(counts, means, scatter)` as float64 NumPy arrays."""
        return tuple(v.numpy().astype(np.float64) for v in (self.class_counts, self.class_means, self.scatter))

    @property
    def stored_bytes(self):
        """Bytes of the statistics (float32 counts, means, scatter); the rest is derived from them."""
        return 4 * (self.num_classes * (1 + self.dimension) + self.dimension ** 2)

    def update(self, embeddings, labels):
        """Adds `embeddings (n, d)` with integer `labels (n,)` to the statistics (eagerly, not in a graph)."""
        embeddings = np.asarray(embeddings, np.float32)
        if not self.built:
            self.build(tf.TensorShape([None, embeddings.shape[-1]]))
        if embeddings.ndim != 2 or embeddings.shape[-1] != self.dimension:
            raise ValueError(f"Embeddings must have shape (n, {self.dimension}). Received: shape={embeddings.shape}")
        self.set_state(gaussian.update(self.state, embeddings, labels))

    def set_state(self, state):
        """Replaces the statistics by `(counts, means, scatter)` and recomputes the whitening."""
        counts, means, scatter = state
        self.class_counts.assign(np.asarray(counts, np.float32))
        self.class_means.assign(np.asarray(means, np.float32))
        self.scatter.assign(np.asarray(scatter, np.float32))
        counts, means, scatter = self.state
        transform = gaussian.whitening((counts, means, scatter), self.shrinkage)
        self.whitening.assign(transform.astype(np.float32))
        self.whitened_means.assign((means @ transform).astype(np.float32))
        bias = np.zeros(self.num_classes)
        if self.priors and counts.sum() > 0:
            bias = np.log(np.maximum(counts, 1.0) / counts.sum())
        self.class_bias.assign(np.where(counts > 0, bias, -1e9).astype(np.float32))

    def reset(self):
        self.set_state(gaussian.empty_state(self.num_classes, self.dimension))

    def call(self, inputs):
        embeddings, _ = center_layer.split_inputs(inputs)
        embeddings = center_layer.check_embeddings(embeddings, self.dimension)
        queries = tf.matmul(embeddings, self.whitening)
        means = self.whitened_means
        squared = (tf.reduce_sum(tf.square(queries), axis=1, keepdims=True)
                   - 2.0 * tf.matmul(queries, means, transpose_b=True) + tf.reduce_sum(tf.square(means), axis=1))
        logits = -tf.maximum(squared, 0.0) / (2.0 * self.sigma * self.sigma) + self.class_bias
        return tf.nn.softmax(logits)

    def compute_output_shape(self, input_shape):
        return center_layer.embedding_shape(input_shape)[:-1].concatenate([self.num_classes])

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "shrinkage": self.shrinkage, "sigma": self.sigma,
                       "priors": self.priors})
        return config
