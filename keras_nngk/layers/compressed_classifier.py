"""A nearest-neighbour head whose centers are compressed with OPQ to `pq_bytes` bytes each (Lebedev et al. 2018)."""

import numpy as np
import tensorflow as tf
import tf_keras as keras

from keras_nngk import kernels
from keras_nngk.layers import center_layer
from keras_nngk.search import pq
from keras_nngk.utils import layers as utils_layers
from keras_nngk.utils.checks import check_positive_float

BITS = (4, 8)


@keras.saving.register_keras_serializable(package="keras_nngk")
class CompressedClassifier(utils_layers.Layer):
    """Eq. 7 / eq. 9 over product-quantized centers, searched in-graph by asymmetric distance computation.

    Stores `pq_bytes` bytes of codes per center: `M = 8 pq_bytes / bits`
    sub-quantizers of `2**bits` sub-vectors each (codebooks `(M, 2**bits, d / M)`;
    4-bit codes are packed two per byte), an optional OPQ rotation `(d, d)`, the
    centers' labels (class ids when every label is one-hot, else soft label rows)
    and (from an NNGK head) their log-weights. The kernel uses the ADC distances,
    so neither faiss nor the float centers are needed at inference; SavedModel and
    TFLite exports carry only the codes. Build one from a trained head with
    `keras_nngk.layers.compress(head, pq_bytes=16)`.

    Args:
        num_classes, num_neighbours: as in `NNGKClassifier`.
        embedding_dim: dimension `d` of the embeddings.
        pq_bytes: bytes of codes per center; `8 pq_bytes / bits` must divide `d`.
        capacity: number of stored centers.
        sigma: kernel width (fixed: this layer is for inference).
        sample_weights: whether per-center log-weights are stored (NNGK heads).
        chunk_size: centers per ADC chunk.
        bits: bits per code, 8 (256 sub-vectors per codebook) or 4 (16: codebooks
            16x smaller, coarser codes).
        rotation: store an OPQ rotation (`d * d` floats: 1 MiB at `d = 512`); False
            for plain product quantization.
        hard_labels: store one class id per center (uint8 for up to 256 classes)
            instead of a row of `num_classes` floats.

    Call arguments:
        inputs: `embeddings (B, d)`.

    Returns:
        `(B, num_classes)` probabilities.
    """

    def __init__(self, num_classes, num_neighbours, embedding_dim, pq_bytes, capacity, sigma=1.0,
                 sample_weights=False, chunk_size=center_layer.search_lib.exact.DEFAULT_CHUNK_SIZE, bits=8,
                 rotation=True, hard_labels=False, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = center_layer.check_positive_int("num_classes", num_classes)
        self.num_neighbours = center_layer.check_positive_int("num_neighbours", num_neighbours)
        self.embedding_dim = center_layer.check_positive_int("embedding_dim", embedding_dim)
        self.pq_bytes = center_layer.check_positive_int("pq_bytes", pq_bytes)
        self.capacity = center_layer.check_positive_int("capacity", capacity)
        self.chunk_size = center_layer.check_positive_int("chunk_size", chunk_size)
        if bits not in BITS:
            raise ValueError(f"`bits` must be 4 or 8. Received: bits={bits!r}")
        self.bits = int(bits)
        self.num_subquantizers = self.pq_bytes * 8 // self.bits
        if self.embedding_dim % self.num_subquantizers:
            valid = [m * self.bits // 8 for m in range(1, self.embedding_dim + 1)
                     if self.embedding_dim % m == 0 and (m * self.bits) % 8 == 0]
            raise ValueError(f"`pq_bytes` must divide embedding_dim={self.embedding_dim} into sub-vectors "
                             f"(bits={self.bits}); valid: {valid}. Received: pq_bytes={self.pq_bytes}")
        self.use_rotation = bool(rotation)
        self.hard_labels = bool(hard_labels)
        self.sigma_value = check_positive_float("sigma", sigma)
        self.sample_weights = bool(sample_weights)

    # Rank neighbours on int32 keys in graphs traced from now on (set by the int8 TFLite export; not config).
    integer_ranking = False

    def build(self, input_shape):
        shape = center_layer.embedding_shape(input_shape)
        if shape[-1] != self.embedding_dim:
            raise ValueError(f"CompressedClassifier expects embeddings of dimension {self.embedding_dim}. "
                             f"Received: input_shape={input_shape}")
        sub_dimension = self.embedding_dim // self.num_subquantizers
        self.rotation = None
        if self.use_rotation:
            self.rotation = self.add_weight(name="rotation", shape=(self.embedding_dim, self.embedding_dim),
                                            initializer="identity", trainable=False)
        self.pq_codebooks = self.add_weight(
            name="pq_codebooks", shape=(self.num_subquantizers, 2 ** self.bits, sub_dimension), initializer="zeros",
            trainable=False)
        self.pq_codes = self.add_weight(name="pq_codes", shape=(self.capacity, self.pq_bytes), dtype=tf.uint8,
                                        initializer="zeros", trainable=False)
        if self.hard_labels:
            self.center_labels = self.add_weight(
                name="center_classes", shape=(self.capacity,), dtype=tf.uint8 if self.num_classes <= 256 else tf.int32,
                initializer="zeros", trainable=False)
        else:
            self.center_labels = self.add_weight(name="center_labels", shape=(self.capacity, self.num_classes),
                                                 initializer="zeros", trainable=False)
        self.center_mask = self.add_weight(name="center_mask", shape=(self.capacity,), dtype=tf.bool,
                                           initializer="zeros", trainable=False)
        self.log_weights = None
        if self.sample_weights:
            self.log_weights = self.add_weight(name="log_weights", shape=(self.capacity,), initializer="zeros",
                                               trainable=False)
        super().build(input_shape)

    def call(self, inputs):
        if isinstance(inputs, (list, tuple, dict)):
            raise ValueError("CompressedClassifier is an inference layer: pass embeddings only (no sample ids).")
        inputs = center_layer.check_embeddings(inputs, self.embedding_dim)
        k = min(self.num_neighbours, self.capacity)
        # Transposed before `unfolded`: the converter folds that transpose into a uint8 constant of the same size.
        codes_by_byte = pq.unfolded(tf.transpose(self.pq_codes), inputs)
        distances, ids = pq.adc_search(inputs, self.rotation, self.pq_codebooks, codes_by_byte, k, self.center_mask,
                                       self.chunk_size, self.bits, by_byte=True,
                                       integer_ranking=self.integer_ranking)
        valid = ids >= 0
        ids = tf.where(valid, ids, tf.zeros_like(ids))
        distances = tf.where(valid, distances, tf.zeros_like(distances))
        log_weights = tf.gather(self.log_weights, ids) if self.log_weights is not None else None
        neighbour_labels = tf.gather(self.center_labels, ids)
        if self.hard_labels:
            neighbour_labels = tf.one_hot(tf.cast(neighbour_labels, tf.int32), self.num_classes)
        probabilities = kernels.kernel_average(distances, neighbour_labels, self.sigma_value, log_weights, valid)
        has_neighbour = tf.reduce_any(valid, axis=-1, keepdims=True)
        return tf.where(has_neighbour, probabilities, tf.fill(tf.shape(probabilities), 1.0 / self.num_classes))

    def codes(self):
        """The codes `(capacity, M)`, one code per sub-quantizer (4-bit codes unpacked, low nibble first)."""
        return pq.unpack_codes(self.pq_codes, self.bits)

    def reconstructed_centers(self):
        """The decoded (approximate) centers `(capacity, d)`."""
        return pq.decode(self.codes(), self.rotation, self.pq_codebooks)

    def memory_report(self):
        """Bytes of each stored part, and the float32 centers they replace."""
        num_centers = int(tf.reduce_sum(tf.cast(self.center_mask, tf.int32)))
        return {
            "num_centers": num_centers,
            "pq_bytes_per_center": self.pq_bytes,
            "bits": self.bits,
            "codes_bytes": num_centers * self.pq_bytes,
            "pq_codes_weight_bytes": int(np.prod(self.pq_codes.shape)) * self.pq_codes.dtype.size,
            "codebooks_bytes": int(np.prod(self.pq_codebooks.shape)) * 4,
            "rotation_bytes": int(np.prod(self.rotation.shape)) * 4 if self.rotation is not None else 0,
            "labels_bytes": int(np.prod(self.center_labels.shape)) * self.center_labels.dtype.size,
            "float_centers_bytes": num_centers * self.embedding_dim * 4,
        }

    def compute_output_shape(self, input_shape):
        return center_layer.embedding_shape(input_shape)[:-1].concatenate([self.num_classes])

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "num_neighbours": self.num_neighbours,
                       "embedding_dim": self.embedding_dim, "pq_bytes": self.pq_bytes, "capacity": self.capacity,
                       "sigma": self.sigma_value, "sample_weights": self.sample_weights,
                       "chunk_size": self.chunk_size, "bits": self.bits, "rotation": self.use_rotation,
                       "hard_labels": self.hard_labels})
        return config


def compress(head, pq_bytes=16, bits=8, rotation=True, name=None):
    """A `CompressedClassifier` with the centers of a trained NNGK or impostor head, coded in `pq_bytes` bytes.

    Trains the OPQ rotation (or none, `rotation=False`) and the codebooks of
    `2**bits` entries with faiss on the head's current centers (at least `2**bits`
    of them). Labels (as class ids when all are one-hot), sigma and (NNGK)
    importance weights are copied.
    """
    from keras_nngk.search import faiss_index  # pylint: disable=g-import-not-at-top
    if not isinstance(head, center_layer.CenterLayer) or not head.built or head.num_centers == 0:
        raise ValueError("compress() needs a built NNGK or impostor head holding centers (call assign_centers first).")
    mask = head.center_mask.numpy()
    centers = head.centers.numpy()[mask]
    if bits not in BITS:
        raise ValueError(f"`bits` must be 4 or 8. Received: bits={bits!r}")
    rotation_matrix, codebooks, codes = faiss_index.train_opq(centers, pq_bytes * 8 // bits, bits=bits,
                                                              rotation=rotation)
    log_weights = getattr(head, "log_weights", None)
    labels = head.center_labels.numpy()[mask]
    hard_labels = bool(np.all((labels == 0) | (labels == 1)) and np.all(labels.sum(axis=1) == 1))
    compressed = CompressedClassifier(head.num_classes, head.num_neighbours, head.embedding_dim, pq_bytes,
                                      capacity=len(centers), sigma=float(head.sigma.numpy()),
                                      sample_weights=log_weights is not None, chunk_size=head.chunk_size, bits=bits,
                                      rotation=rotation, hard_labels=hard_labels,
                                      name=name or f"{head.name}_pq{pq_bytes}")
    compressed.build(tf.TensorShape((None, head.embedding_dim)))
    if rotation:
        compressed.rotation.assign(rotation_matrix)
    compressed.pq_codebooks.assign(codebooks)
    compressed.pq_codes.assign(pq.pack_codes(codes, bits))
    compressed.center_labels.assign(labels.argmax(axis=1) if hard_labels else labels)
    compressed.center_mask.assign(np.ones(len(centers), dtype=bool))
    if log_weights is not None:
        compressed.log_weights.assign(log_weights.numpy()[mask])
    return compressed
