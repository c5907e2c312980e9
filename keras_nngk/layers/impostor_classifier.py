"""Impostor networks (Lebedev, Babenko, Lempitsky 2018): NNGK without sample weights, with tied/fixed/loose centers."""

import tensorflow as tf
import tf_keras as keras

from keras_nngk.layers import center_layer, kernel_layer

TIES = ("tied", "fixed", "loose")


@keras.saving.register_keras_serializable(package="keras_nngk")
class ImpostorClassifier(kernel_layer.KernelCenterLayer):
    """Eq. 9 of the review: `y(z) = sum_i y_i k(z, c_i) / sum_i k(z, c_i)` over the `k` nearest centers.

    Trained with eq. 8, `L = cross-entropy + lambda / N * sum_i |f(x_i) - c_i|^2`. Three
    ways of choosing the centers (`tie`):

    - "tied": `c_i = f_theta(x_i)`, refreshed from the current network as in NNGK;
    - "fixed": `c_i = f_theta0(x_i)`, computed once from the network at the start
      and never changed;
    - "loose": `c_i` are trainable ("impostors"), initialised from `f_theta0(x_i)`
      and kept close to the descriptors by the L2 term. The term is estimated on
      each batch against the samples' own centers: `tie_weight * mean_b |z_b -
      c_b|^2` (added with `add_loss` in training mode, when sample ids are given).
      Gradients reach only the gathered rows (`IndexedSlices`); train them with
      `keras_nngk.training.SparseAdam` so untouched rows are not even read.

    There are no per-center importance weights (the paper drops them).

    Args:
        num_classes, num_neighbours, capacity, search, chunk_size: see `CenterLayer`.
        sigma: initial kernel width; learn_sigma: train it.
        tie: "tied", "fixed" or "loose".
        tie_weight: lambda of eq. 8 (used by "loose").

    Call arguments:
        inputs: `embeddings` or `[embeddings, sample_ids]`.
        training: adds the tie term when True (and `tie="loose"`).

    Returns:
        `(B, num_classes)` probabilities.

    Example:

    >>> head = ImpostorClassifier(num_classes=200, num_neighbours=32, sigma=1.0, tie="loose", tie_weight=1e-3)
    >>> head.assign_centers(initial_embeddings, labels)

    Reference: V. Lebedev, A. Babenko, V. Lempitsky, "Impostor Networks for Fast
    Fine-Grained Recognition", arXiv:1806.05217. The equations
    and their symbols: docs/method.md.
    """

    def __init__(self, num_classes, num_neighbours=32, sigma=1.0, learn_sigma=True, tie="loose", tie_weight=1e-3,
                 capacity=None, search="auto", chunk_size=center_layer.search_lib.exact.DEFAULT_CHUNK_SIZE, **kwargs):
        if tie not in TIES:
            raise ValueError(f"Unknown tie {tie!r}; valid: {', '.join(TIES)}. Received: tie={tie!r}")
        if not tie_weight >= 0:
            raise ValueError(f"`tie_weight` must be >= 0. Received: tie_weight={tie_weight!r}")
        super().__init__(num_classes=num_classes, num_neighbours=num_neighbours, sigma=sigma,
                         learn_sigma=learn_sigma, capacity=capacity, search=search, chunk_size=chunk_size, **kwargs)
        self.tie = tie
        self.tie_weight = float(tie_weight)

    @property
    def centers_trainable(self):
        return self.tie == "loose"

    @property
    def supports_training_writes(self):
        """Tied centers can follow the network through the training pass."""
        return self.tie == "tied"

    @property
    def center_schedule(self):
        """Tied centers follow the network; fixed and loose ones come from the initial network, once."""
        return "periodic" if self.tie == "tied" else "initial"

    def tie_term(self, embeddings, sample_ids):
        """`tie_weight * mean_b |z_b - c_b|^2` over the batch samples that have a center of their own."""
        sample_ids = tf.reshape(tf.cast(sample_ids, tf.int32), [-1, 1])
        same = tf.equal(self.center_sample_ids[tf.newaxis, :], sample_ids)
        has_own = tf.logical_and(tf.reduce_any(same, axis=1), sample_ids[:, 0] >= 0)
        own = tf.gather(self.centers, tf.argmax(tf.cast(same, tf.int32), axis=1, output_type=tf.int32))
        squared = tf.reduce_sum(tf.square(embeddings - own), axis=-1)
        count = tf.maximum(tf.reduce_sum(tf.cast(has_own, embeddings.dtype)), 1.0)
        return self.tie_weight * tf.reduce_sum(tf.where(has_own, squared, tf.zeros_like(squared))) / count

    def call(self, inputs, training=None):
        probabilities, embeddings, sample_ids = self.classify(inputs, training)
        if training and self.tie == "loose" and sample_ids is not None and self.tie_weight > 0:
            self.add_loss(self.tie_term(embeddings, sample_ids))
        if training and self.write_training_centers and self.tie == "tied" and sample_ids is not None:
            self.write_training_embeddings(embeddings, sample_ids, after=probabilities)
        return probabilities

    def get_config(self):
        config = super().get_config()
        config.update({"tie": self.tie, "tie_weight": self.tie_weight})
        return config
