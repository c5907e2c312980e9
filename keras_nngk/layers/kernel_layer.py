"""Shared base of the center layers with a Gaussian kernel: one kernel width, one kernel-average call."""

import math

import numpy as np
import tensorflow as tf
import tf_keras as keras

from keras_nngk import kernels
from keras_nngk.layers import center_layer
from keras_nngk.utils.checks import check_positive_float

SIGMA_RULES = ("nearest", "neighbours")


class KernelCenterLayer(center_layer.CenterLayer):
    """A `CenterLayer` whose output is a Gaussian-kernel average over the nearest centers (eq. 7, 9 and 14).

    Holds the kernel width as `log_sigma` (trainable with `learn_sigma`), checked
    and serialised here once for the NNGK, impostor and neighbour-lookup layers.

    Args:
        sigma: initial kernel width (a positive finite number).
        learn_sigma: train `sigma` (stored as `log_sigma`).
        **kwargs: see `CenterLayer`.
    """

    def __init__(self, num_classes, num_neighbours=32, sigma=1.0, learn_sigma=True, **kwargs):
        super().__init__(num_classes=num_classes, num_neighbours=num_neighbours, **kwargs)
        self.sigma_initial = check_positive_float("sigma", sigma)
        self.learn_sigma = bool(learn_sigma)

    def build_center_state(self):
        self.build_kernel_width()

    def build_kernel_width(self):
        """Creates `log_sigma` (subclasses call it where their variable order puts it)."""
        self.log_sigma = self.add_weight(
            name="log_sigma", shape=(), initializer=keras.initializers.Constant(math.log(self.sigma_initial)),
            trainable=self.learn_sigma)

    @property
    def sigma(self):
        """The current kernel width `sigma`."""
        return tf.exp(self.log_sigma)

    def sigma_from_centers(self, rule, scale=1.0, max_queries=2048):
        """A kernel width set from the stored centers' distances to their nearest other centers (leave-one-out).

        Rules: "nearest", `scale` times the median distance from a center to its
        nearest other center; "neighbours", `scale` times the mean distance from a
        center to its `num_neighbours` nearest other centers. At most `max_queries`
        centers (the first stored) are measured. Centers whose sample id is -1 are not
        left out of their own neighbours; a refresh stores ids.

        Returns:
            The width (a positive Python float); assign `log(width)` to `log_sigma` to use it. A width of 0 (the
            rule's distances are 0: centers that coincide) is a ValueError.
        """
        if rule not in SIGMA_RULES:
            raise ValueError(f"Unknown sigma rule {rule!r}; valid: {', '.join(SIGMA_RULES)}. Received: rule={rule!r}")
        check_positive_float("scale", scale)
        mask = self.center_mask.numpy() if self.built else np.zeros(0, bool)
        if mask.sum() < 2:
            raise ValueError(f"A sigma rule needs at least two stored centers; {self.name} holds {int(mask.sum())}. "
                             "Call assign_centers(embeddings, labels) first.")
        stored = self.centers.numpy()[mask][:max_queries]
        sample_ids = self.center_sample_ids.numpy()[mask][:max_queries]
        squared, _, valid = self._neighbours(tf.constant(stored), tf.constant(sample_ids))
        distances = np.sqrt(squared.numpy())
        if rule == "nearest":
            value = np.median(distances[:, 0])
        else:
            value = np.mean(distances[valid.numpy()])
        if not value > 0:
            raise ValueError(f"The {rule!r} rule gives a kernel width of 0: the centers' distances to their nearest "
                             "others are 0 (centers that coincide). Use the other rule or a fixed sigma.")
        return scale * float(value)

    def neighbour_log_weights(self, ids):
        """`log w_i` of the neighbours `ids (B, k)`, or None for a head without importance weights."""
        del ids
        return None

    def kernel_state(self):
        return float(self.sigma.numpy()), None

    def kernel_average(self, inputs, values, training=None):
        """The kernel-weighted average of `values` (a `(capacity, m)` variable) over each query's neighbours.

        Returns:
            `(averages (B, m), embeddings, sample_ids, distances, valid)`: rows without a neighbour are zeros.
        """
        embeddings, sample_ids = center_layer.split_inputs(inputs)
        embeddings, sample_ids = self.check_queries(embeddings, sample_ids)
        distances, ids, valid = self._neighbours(embeddings, sample_ids, training)
        averages = kernels.kernel_average(distances, tf.gather(values, ids), self.sigma,
                                          self.neighbour_log_weights(ids), valid)
        return averages, embeddings, sample_ids, distances, valid

    def classify(self, inputs, training=None):
        """Class probabilities (uniform where no neighbour exists), with the checked embeddings and sample ids."""
        probabilities, embeddings, sample_ids, _, valid = self.kernel_average(inputs, self.center_labels, training)
        has_neighbour = tf.reduce_any(valid, axis=-1, keepdims=True)
        uniform = tf.fill(tf.shape(probabilities), 1.0 / self.num_classes)
        return tf.where(has_neighbour, probabilities, uniform), embeddings, sample_ids

    def compute_output_shape(self, input_shape):
        return center_layer.embedding_shape(input_shape)[:-1].concatenate([self.num_classes])

    def get_config(self):
        config = super().get_config()
        config.update({"sigma": self.sigma_initial, "learn_sigma": self.learn_sigma})
        return config
