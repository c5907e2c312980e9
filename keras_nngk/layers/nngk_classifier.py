"""The Nearest Neighbour Gaussian Kernel classifier (eq. 7, Meyer, Harwood and Drummond 2017)."""

import numpy as np
import tensorflow as tf
import tf_keras as keras

from keras_nngk.layers import center_layer, kernel_layer


@keras.saving.register_keras_serializable(package="keras_nngk")
class NNGKClassifier(kernel_layer.KernelCenterLayer):
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
        training: in training mode, with sample ids and `write_training_centers`
            set (`CenterRefresh(mode="training")`), the batch's embeddings are
            also written over their own centers after the lookup.

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
        super().__init__(num_classes=num_classes, num_neighbours=num_neighbours, sigma=sigma,
                         learn_sigma=learn_sigma, capacity=capacity, search=search, chunk_size=chunk_size, **kwargs)
        self.sample_weights = bool(sample_weights)

    supports_training_writes = True

    def build_center_state(self):
        self.build_kernel_width()
        self.log_weights = None
        if self.sample_weights:
            self.log_weights = self.add_weight(
                name="log_weights", shape=(self.capacity,), initializer="zeros", trainable=True)

    def reset_center_state(self, slots):
        if self.log_weights is not None:
            self.log_weights.scatter_update(tf.IndexedSlices(tf.zeros([len(slots)]), tf.constant(slots, tf.int32)))

    def neighbour_log_weights(self, ids):
        return tf.gather(self.log_weights, ids) if self.log_weights is not None else None

    def kernel_state(self):
        weights = None if self.log_weights is None else np.exp(self.log_weights.numpy())
        return float(self.sigma.numpy()), weights

    def call(self, inputs, training=None):
        probabilities, embeddings, sample_ids = self.classify(inputs, training)
        if training and self.write_training_centers and sample_ids is not None:
            self.write_training_embeddings(embeddings, sample_ids, after=probabilities)
        return probabilities

    def get_config(self):
        config = super().get_config()
        config["sample_weights"] = self.sample_weights
        return config
