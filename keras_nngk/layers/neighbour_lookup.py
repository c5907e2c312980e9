"""A kernel-weighted lookup of stored value vectors by nearest keys, with a confidence gate (eq. 14)."""

import numpy as np
import tensorflow as tf
import tf_keras as keras

from keras_nngk import kernels, prototypes
from keras_nngk.layers import center_layer, kernel_layer


@keras.saving.register_keras_serializable(package="keras_nngk")
class NeighbourLookup(kernel_layer.KernelCenterLayer):
    """Returns `z1 = sum_i z_i k(phi, phi_i) / sum_i k(phi, phi_i)` and `g = mean_i k(phi, phi_i)` over `N_k(phi)`.

    The lookup half of the biased network (section 5 of the review, eq. 14): the
    stored keys `phi_i` are projected features of the training images (the
    layer's centers) and the values `z_i` their descriptors. The gate `g` is the
    mean kernel value over the (valid) neighbours: near 1 when the query sits on
    top of stored keys, near 0 far from them. It shares the search, leave-one-out
    and kernel code of the other center layers; the stored "labels" are unused.

    With `prototypes_per_class`, a refresh stores class-balanced k-means
    prototypes of the keys instead of every key (`keras_nngk.prototypes`): each
    holds the mean value of its members and weighs in the kernel average by its
    member count, `z1 = sum_j n_j k(phi, c_j) v_j / sum_j n_j k(phi, c_j)`, and
    the search runs over `num_classes * prototypes_per_class` keys (the layer's
    capacity) instead of the whole training set.

    Args:
        value_dim: dimension of the stored values `z_i`.
        num_neighbours, capacity, search, chunk_size: see `CenterLayer`.
        sigma: initial kernel width; learn_sigma: train it.
        prototypes_per_class: None (store every key, the review's lookup) or the
            number of k-means prototypes kept per class (refreshes need labels).

    Call arguments:
        inputs: `keys (B, p)` or `[keys, sample_ids]` (leave-one-out in training).

    Returns:
        `(z1 (B, value_dim), g (B, 1))`.
    """

    def __init__(self, value_dim, num_neighbours=32, sigma=1.0, learn_sigma=True, capacity=None, search="auto",
                 chunk_size=center_layer.search_lib.exact.DEFAULT_CHUNK_SIZE, prototypes_per_class=None, **kwargs):
        kwargs.pop("num_classes", None)
        super().__init__(num_classes=1, num_neighbours=num_neighbours, sigma=sigma, learn_sigma=learn_sigma,
                         capacity=capacity, search=search, chunk_size=chunk_size, **kwargs)
        self.value_dim = center_layer.check_positive_int("value_dim", value_dim)
        self.prototypes_per_class = (None if prototypes_per_class is None else
                                     center_layer.check_positive_int("prototypes_per_class", prototypes_per_class))

    def build_center_state(self):
        self.center_values = self.add_weight(name="center_values", shape=(self.capacity, self.value_dim),
                                             initializer="zeros", trainable=False)
        self.build_kernel_width()  # After the values: the variable order of saved models.
        if self.prototypes_per_class:
            self.center_log_counts = self.add_weight(name="center_log_counts", shape=(self.capacity,),
                                                     initializer="zeros", trainable=False)

    def neighbour_log_weights(self, ids):
        """Prototypes weigh by their member counts (log n_j); stored keys weigh equally."""
        return tf.gather(self.center_log_counts, ids) if self.prototypes_per_class else None

    def assign_keys_values(self, keys, values, sample_ids=None):
        """Stores `keys (N, p)` (searched) and `values (N, value_dim)` (averaged)."""
        values = tf.convert_to_tensor(values, tf.float32)
        if values.shape.rank != 2 or values.shape[1] != self.value_dim or values.shape[0] != len(keys):
            raise ValueError(f"`values` must have shape ({len(keys)}, {self.value_dim}), one per key. "
                             f"Received: shape={values.shape}")
        self.assign_centers(keys, tf.zeros([len(keys)], tf.int32).numpy(), sample_ids, reset_weights=False)
        pad = self.capacity - len(keys)
        self.center_values.assign(tf.pad(values, [[0, pad], [0, 0]]))

    def refresh_centers(self, embedded, labels=None, sample_ids=None):
        """Stores `embedded = (keys, values)` of the training samples, or their class prototypes.

        `labels` are used only to balance prototypes over classes.
        """
        keys, values = embedded
        if not self.prototypes_per_class:
            self.assign_keys_values(keys, values, sample_ids)
            return
        if labels is None:
            raise ValueError("A lookup with prototypes_per_class needs the training labels at refresh, to cluster "
                             "each class's keys; pass labels to refresh_centers.")
        keys, values, counts, _ = prototypes.class_prototypes(np.asarray(keys), np.asarray(values),
                                                              np.asarray(labels).astype(np.int64),
                                                              self.prototypes_per_class)
        # Prototypes are no training sample's own key: ids -1, no leave-one-out exclusion.
        self.assign_keys_values(keys, values, np.full(len(keys), -1))
        self.center_log_counts.assign(np.pad(np.log(counts).astype(np.float32), (0, self.capacity - len(counts))))

    def call(self, inputs):
        looked_up, _, _, distances, valid = self.kernel_average(inputs, self.center_values)
        kernel = kernels.gaussian_kernel(distances, self.sigma) * tf.cast(valid, distances.dtype)
        count = tf.maximum(tf.reduce_sum(tf.cast(valid, distances.dtype), axis=-1, keepdims=True), 1.0)
        gate = tf.reduce_sum(kernel, axis=-1, keepdims=True) / count
        return looked_up, gate

    def compute_output_shape(self, input_shape):
        batch = center_layer.embedding_shape(input_shape)[:-1]
        return batch.concatenate([self.value_dim]), batch.concatenate([1])

    def get_config(self):
        config = super().get_config()
        del config["num_classes"]
        config["value_dim"] = self.value_dim
        if self.prototypes_per_class:  # Absent otherwise: configs of earlier saved models stay as they were.
            config["prototypes_per_class"] = self.prototypes_per_class
        return config
