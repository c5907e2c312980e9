"""The Nearest Neighbour Gaussian Kernel classifier (eq. 7, Meyer, Harwood and Drummond 2017)."""

import math

import tensorflow as tf
import tf_keras as keras

from keras_nngk import kernels
from keras_nngk.layers import center_layer


@keras.saving.register_keras_serializable(package="keras_nngk")
class NNGKClassifier(center_layer.CenterLayer):
    """Classifies an embedding by a Gaussian-kernel average of its nearest centers' labels.

    Implements eq. 7 of the review,

        y(z) = sum_i w_i y_i k(z, c_i) / sum_i w_i k(z, c_i),   k(z, c) = exp(-|z - c|^2 / (2 sigma^2)),

    over the `num_neighbours` centers nearest to `z`, computed in log space as
    `softmax(-|z - c_i|^2 / (2 sigma^2) + log w_i) . y_i`, so it stays exact where
    every kernel value underflows. The centers are the training embeddings, stored
    in non-trainable variables and refreshed every few epochs (the "weak update",
    see `keras_nngk.callbacks.CenterRefresh`); the gradient flows through `z`, the
    importance weights `w_i` and `sigma`, never through the stale centers.

    Args:
        num_classes: number of classes.
        num_neighbours: `k` (32 in the paper). Larger than the number of centers:
            every center is used (logged once).
        sigma: initial kernel width (> 0).
        learn_sigma: train `sigma` (stored as `log_sigma`).
        sample_weights: learn one importance weight `w_i` per center (stored as
            `log_weights`, initialised to `w_i = 1`).
        capacity, search, chunk_size: see `CenterLayer`.

    Call arguments:
        inputs: `embeddings (B, d)`, or `[embeddings, sample_ids (B,)]` to leave
            each sample's own center out (training, leave-one-out evaluation).

    Returns:
        `(B, num_classes)` class probabilities; each row sums to 1 (uniform where
        no neighbour exists).

    Example:

    >>> head = NNGKClassifier(num_classes=10, num_neighbours=32, sigma=1.0)
    >>> head.assign_centers(train_embeddings, train_labels)
    >>> probs = head(query_embeddings)

    Reference: B. J. Meyer, B. Harwood, T. Drummond, "Nearest Neighbour Radial
    Basis Function Solvers for Deep Neural Networks", arXiv:1705.09780. The
    equations and their symbols: docs/method.md.
    """

    def __init__(self, num_classes, num_neighbours=32, sigma=1.0, learn_sigma=True, sample_weights=True,
                 capacity=None, search="auto", chunk_size=center_layer.search_lib.exact.DEFAULT_CHUNK_SIZE,
                 **kwargs):
        super().__init__(num_classes=num_classes, num_neighbours=num_neighbours, capacity=capacity, search=search,
                         chunk_size=chunk_size, **kwargs)
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma <= 0:
            raise ValueError(f"`sigma` must be a positive finite number. Received: sigma={sigma!r}")
        self.sigma_initial = float(sigma)
        self.learn_sigma = bool(learn_sigma)
        self.sample_weights = bool(sample_weights)

    def build_center_state(self):
        self.log_sigma = self.add_weight(
            name="log_sigma", shape=(), initializer=keras.initializers.Constant(math.log(self.sigma_initial)),
            trainable=self.learn_sigma)
        self.log_weights = None
        if self.sample_weights:
            self.log_weights = self.add_weight(
                name="log_weights", shape=(self.capacity,), initializer="zeros", trainable=True)

    def reset_center_state(self, slots):
        if self.log_weights is not None:
            self.log_weights.scatter_update(tf.IndexedSlices(tf.zeros([len(slots)]), tf.constant(slots, tf.int32)))

    @property
    def sigma(self):
        """The current kernel width `sigma`."""
        return tf.exp(self.log_sigma)

    def call(self, inputs):
        embeddings, sample_ids = center_layer.split_inputs(inputs)
        embeddings, sample_ids = self.check_queries(embeddings, sample_ids)
        distances, ids, valid = self._neighbours(embeddings, sample_ids)
        log_weights = tf.gather(self.log_weights, ids) if self.log_weights is not None else None
        neighbour_labels = tf.gather(self.center_labels, ids)
        probabilities = kernels.kernel_average(distances, neighbour_labels, self.sigma, log_weights, valid)
        has_neighbour = tf.reduce_any(valid, axis=-1, keepdims=True)
        uniform = tf.fill(tf.shape(probabilities), 1.0 / self.num_classes)
        return tf.where(has_neighbour, probabilities, uniform)

    def compute_output_shape(self, input_shape):
        return center_layer.embedding_shape(input_shape)[:-1].concatenate([self.num_classes])

    def get_config(self):
        config = super().get_config()
        config.update({
            "sigma": self.sigma_initial,
            "learn_sigma": self.learn_sigma,
            "sample_weights": self.sample_weights,
        })
        return config
