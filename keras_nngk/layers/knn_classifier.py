"""The plain k-nearest-neighbour majority vote (eq. 3), a baseline head."""

import tensorflow as tf
import tf_keras as keras

from keras_nngk.layers import center_layer


@keras.saving.register_keras_serializable(package="keras_nngk")
class KNNClassifier(center_layer.CenterLayer):
    """Predicts the majority class among the `k` nearest centers (eq. 3 of the review).

    `y(z) = argmax_y |{z_i in N_k(z) : y_i = y}|`; among classes with the same
    count, the one with the nearest member wins. Soft center labels vote for
    their most likely class. Non-differentiable: no training signal flows through.

    Args:
        num_classes, num_neighbours, capacity, search, chunk_size: see `CenterLayer`.

    Call arguments:
        inputs: `embeddings (B, d)` or `[embeddings, sample_ids]` (leave-one-out).

    Returns:
        `(B, num_classes)` one-hot predictions (uniform where no neighbour exists).

    Example:

    >>> head = KNNClassifier(num_classes=10, num_neighbours=5)
    >>> head.assign_centers(train_embeddings, train_labels)
    >>> predicted = tf.argmax(head(test_embeddings), axis=-1)
    """

    center_schedule = "final"  # Trains nothing: its centers are the final network's embeddings.

    def call(self, inputs):
        embeddings, sample_ids = center_layer.split_inputs(inputs)
        embeddings, sample_ids = self.check_queries(embeddings, sample_ids)
        _, ids, valid = self._neighbours(embeddings, sample_ids)
        k = ids.shape[-1]
        neighbour_classes = tf.argmax(tf.gather(self.center_labels, ids), axis=-1, output_type=tf.int32)
        votes = tf.one_hot(neighbour_classes, self.num_classes) * tf.cast(valid, tf.float32)[..., tf.newaxis]
        counts = tf.reduce_sum(votes, axis=1)  # (B, C)
        # Position of each class' nearest valid member (k where it has none); neighbours come sorted by distance.
        positions = tf.cast(tf.range(k), tf.float32)[tf.newaxis, :, tf.newaxis]
        first_position = tf.reduce_min(tf.where(votes > 0, positions, float(k)), axis=1)
        score = counts * (k + 1) - first_position
        prediction = tf.one_hot(tf.argmax(score, axis=-1), self.num_classes)
        has_neighbour = tf.reduce_any(valid, axis=-1, keepdims=True)
        return tf.where(has_neighbour, prediction, tf.fill(tf.shape(prediction), 1.0 / self.num_classes))

    def compute_output_shape(self, input_shape):
        return center_layer.embedding_shape(input_shape)[:-1].concatenate([self.num_classes])
