"""Lazy (sparse) Adam for center tables: only the rows a step gathered are read and written."""

import tensorflow as tf


class SparseAdam(tf.Module):
    """Adam whose moments and updates touch only the rows present in an `IndexedSlices` gradient.

    A batch of B queries with k neighbours gathers at most B * (k + 1) of N centers;
    Keras' Adam would still decay the moments of all N rows every step. Rows that a
    step does not gather keep their moments unchanged (the "lazy Adam" rule).
    Duplicate indices are summed first.

    Args:
        learning_rate, beta_1, beta_2, epsilon: as in Adam.
    """

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7, name="sparse_adam"):
        super().__init__(name=name)
        self.learning_rate = learning_rate
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
        self._moments = {}

    def build(self, variables):
        """Creates the moment tables (call eagerly, before the first traced step)."""
        for variable in variables:
            key = variable.name  # String keys: the moments are checkpointed with the optimizer.
            if key not in self._moments:
                self._moments[key] = (
                    tf.Variable(tf.zeros_like(variable), trainable=False, name=f"m_{variable.name.split(':')[0]}"),
                    tf.Variable(tf.zeros_like(variable), trainable=False, name=f"v_{variable.name.split(':')[0]}"))

    def apply_gradients(self, grads_and_vars):
        step = tf.cast(self.iterations.assign_add(1), tf.float32)
        scale = self.learning_rate * tf.sqrt(1.0 - self.beta_2 ** step) / (1.0 - self.beta_1 ** step)
        for gradient, variable in grads_and_vars:
            if gradient is None:
                continue
            first, second = self._moments[variable.name]
            if isinstance(gradient, tf.IndexedSlices):
                rows, positions = tf.unique(gradient.indices)
                values = tf.math.unsorted_segment_sum(gradient.values, positions, tf.shape(rows)[0])
            else:
                rows = tf.range(tf.shape(variable)[0])
                values = gradient
            first_rows = self.beta_1 * tf.gather(first, rows) + (1.0 - self.beta_1) * values
            second_rows = self.beta_2 * tf.gather(second, rows) + (1.0 - self.beta_2) * tf.square(values)
            first.scatter_update(tf.IndexedSlices(first_rows, rows))
            second.scatter_update(tf.IndexedSlices(second_rows, rows))
            variable.scatter_sub(tf.IndexedSlices(scale * first_rows / (tf.sqrt(second_rows) + self.epsilon), rows))
