"""Shared base of the heads that hold a set of stored centers and look up their nearest neighbours."""

import collections
import threading

import numpy as np
import tensorflow as tf
import tf_keras as keras
from absl import logging
from tensorflow.python.saved_model import save_context  # pylint: disable=g-direct-tensorflow-import
from tf_keras.src.utils import control_flow_util

from keras_nngk import kernels
from keras_nngk import search as search_lib
from keras_nngk.layers import candidate_lists, center_surgery, training_writes
from keras_nngk.utils import layers as utils_layers
from keras_nngk.utils.checks import check_positive_int, check_soft_labels


def split_inputs(inputs):
    """`embeddings` or `[embeddings, sample_ids]` -> `(embeddings, sample_ids or None)`."""
    if isinstance(inputs, dict):
        return inputs["embeddings"], inputs.get("sample_ids")
    if isinstance(inputs, (list, tuple)):
        if len(inputs) != 2:
            raise ValueError("Inputs must be `embeddings` or `[embeddings, sample_ids]`. "
                             f"Received: a sequence of {len(inputs)} inputs")
        return inputs[0], inputs[1]
    return inputs, None


def embedding_shape(input_shape):
    if isinstance(input_shape, dict):
        return tf.TensorShape(input_shape["embeddings"])
    if isinstance(input_shape, (list, tuple)) and input_shape and isinstance(
            input_shape[0], (tf.TensorShape, list, tuple)):
        return tf.TensorShape(input_shape[0])
    return tf.TensorShape(input_shape)


def check_embeddings(embeddings, dimension, dtype=tf.float32, check_finite=True):
    """Query embeddings cast to `dtype`, or a one-line ValueError: wrong shape (needs `(batch, dimension)`), or
    (with `check_finite`) NaN/Inf, raised eagerly or, in a graph, by a `check_numerics` op when the batch runs."""
    embeddings = tf.convert_to_tensor(embeddings)
    if embeddings.dtype != dtype:
        embeddings = tf.cast(embeddings, dtype)
    if embeddings.shape.rank != 2 or embeddings.shape[-1] != dimension:
        raise ValueError(f"Query embeddings must have shape (batch, {dimension}), the dimension of the "
                         f"centers. Received: shape={embeddings.shape}")
    if check_finite:
        if tf.executing_eagerly():
            if not bool(tf.reduce_all(tf.math.is_finite(embeddings))):
                raise ValueError("Query embeddings contain NaN or Inf; check the inputs and the network.")
        else:
            embeddings = tf.debugging.check_numerics(
                embeddings, "Query embeddings contain NaN or Inf; check the inputs and the network.")
    return embeddings


Lookup = collections.namedtuple("Lookup", ["distances", "sample_ids", "labels"])


class CenterLayer(training_writes.TrainingWrites, candidate_lists.CandidateLists, center_surgery.CenterSurgery,
                  utils_layers.Layer):
    """Base layer: stored centers with soft labels, and their nearest-neighbour lookup.

    Holds non-trainable variables created in `build()` with a fixed `capacity`:
    `centers (capacity, d)`, `center_labels (capacity, num_classes)` (soft labels,
    each row a probability vector), `center_mask (capacity,)` (which slots hold a
    center) and `center_sample_ids (capacity,)` (the training sample each center was
    computed from, -1 for none). Centers change only through `assign_centers()`.

    Inputs are either `embeddings (B, d)` or `[embeddings, sample_ids (B,)]`. With
    sample ids, the center computed from the same sample is never one of its
    neighbours (leave-one-out), which training needs: otherwise every sample finds
    itself at distance ~0. A sample id of -1 excludes nothing.

    Args:
        num_classes: number of classes (width of the label vectors).
        num_neighbours: `k`, how many nearest centers each query looks at.
        capacity: maximum number of centers. None: the size of the first
            `assign_centers()` call, which must then come before the layer is built.
        search: "auto" (default: the exact search, or a faiss HNSW index for large
            center sets on a CPU, see `keras_nngk.search.resolve`), "exact" (in-graph,
            exportable), a faiss name ("faiss-flat", "faiss-hnsw", "faiss-ivf",
            "faiss:<factory>"), a config dict, or a `keras_nngk.search.SearchIndex`.
            Faiss runs through `tf.py_function`: fine for training, not exportable
            (export switches to "exact" by itself).
        chunk_size: centers per matrix product in the exact search.
    """

    def __init__(self, num_classes, num_neighbours=32, capacity=None, search="auto",
                 chunk_size=search_lib.exact.DEFAULT_CHUNK_SIZE, **kwargs):
        # Distances and kernels stay float32 under a mixed-precision policy: float16 would reorder neighbours.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.num_neighbours = check_positive_int("num_neighbours", num_neighbours)
        self.capacity = check_positive_int("capacity", capacity, allow_none=True)
        self.chunk_size = check_positive_int("chunk_size", chunk_size)
        search_lib.get(search)  # Validates the name now, with the list of valid ones.
        self.search = search if not isinstance(search, search_lib.SearchIndex) else search_lib.serialize(search)
        self._index = search if isinstance(search, search_lib.SearchIndex) else None
        # Rows the training writes have put in the centers but not yet in the faiss index (`TrainingWrites`): the
        # next search applies them first; a rebuild drops them (it reads the centers, writes included). The lock
        # keeps replicas' searches (MirroredStrategy) from applying them twice. A deque, not a list: Keras would track
        # a list as a dependency of the layer in checkpoints and saved models.
        self._pending_index_rows = collections.deque()
        self._index_lock = threading.Lock()
        # What the faiss index was built from (`_fingerprint`), to notice centers replaced behind its back.
        self._index_fingerprint = None
        self.embedding_dim = None
        self._resolved_search = None
        self._warned_about_k = False

    # -- variables -------------------------------------------------------------------------------
    centers_trainable = False  # Impostor heads with loose centers train them.
    # When the centers follow the network during training (`keras_nngk.training.callbacks.CenterRefresh`):
    # "periodic" (every few epochs), "initial" (once, from the initial network) or "final" (once, after training).
    center_schedule = "periodic"
    # Rank neighbours on int32 keys in graphs traced from now on (set by the int8 TFLite export; not config).
    integer_ranking = False
    _write_training_centers = False
    # The centers' squared norms while the training pass writes the centers (`write_training_centers`), for the
    # training steps' exact search: a (capacity,) variable the writes keep up to date row by row, recomputed when
    # the writes are turned on and with every other change of the centers (`rebuild_index`). Measured: 2.3 ms of a
    # 60 ms step at 128 x 60,000 x 64 (bench/README.md). Created with the centers; a class attribute, so that Keras
    # does not track it: it is derived from `centers`, not layer state (not in the weights, checkpoints or saved
    # models; inference never reads it). An XLA-compiled step and a function traced for a SavedModel neither read
    # nor write it (`_norm_cache_in_graph`); the next `rebuild_index` (every epoch's end in `CenterRefresh`)
    # recomputes it.
    _norm_cache = None
    # With it, for the same steps, a transposed copy of the centers, kept the same way: the `(d, capacity)` matrix
    # flattened (a write of a center is then `d` scalar writes at 1-D offsets, 3x faster than a 2-D `scatter_nd`),
    # read as `(d, capacity)` by the search's product (1.3x faster than from the `(capacity, d)` centers). Nothing in
    # the step then reads the centers whole, so their per-step write no longer makes TensorFlow copy them at the
    # next read (copy-on-read mode, see `_neighbours`); this copy's own write turns that mode off before its read
    # (`_read_transposed_cache`). Twice the centers' memory while training writes them; only where the search runs
    # as one chunk.
    _transposed_cache = None
    # Whether this head's `call` writes training embeddings when `write_training_centers` is set.
    supports_training_writes = False

    def build(self, input_shape):
        shape = embedding_shape(input_shape)
        if shape.rank != 2 or shape[-1] is None:
            raise ValueError(f"{type(self).__name__} expects embeddings of shape (batch, dimension) with a known "
                             f"dimension. Received: input_shape={input_shape}")
        if self.capacity is None:
            raise ValueError(
                f"{type(self).__name__} cannot be built without a center capacity: call "
                "assign_centers(embeddings, labels) before using the layer, or pass capacity=<number of centers>. "
                "Received: capacity=None")
        self._build_centers(int(shape[-1]))
        super().build(input_shape)

    def _build_centers(self, embedding_dim):
        self.embedding_dim = embedding_dim
        self.centers = self.add_weight(
            name="centers", shape=(self.capacity, embedding_dim), initializer="zeros",
            trainable=self.centers_trainable)
        self.center_labels = self.add_weight(
            name="center_labels", shape=(self.capacity, self.num_classes), initializer="zeros", trainable=False)
        self.center_mask = self.add_weight(
            name="center_mask", shape=(self.capacity,), dtype=tf.bool, initializer="zeros", trainable=False)
        self.center_sample_ids = self.add_weight(
            name="center_sample_ids", shape=(self.capacity,), dtype=tf.int32,
            initializer=keras.initializers.Constant(-1), trainable=False)
        with tf.init_scope():  # The norms of the zero centers; see `_norm_cache`.
            self._norm_cache = tf.Variable(tf.zeros([self.capacity]), trainable=False,
                                           name=f"{self.name}_center_norms")
        self.build_center_state()

    def build_center_state(self):
        """Creates any per-center variables of a subclass (e.g. log-weights). Called from `build()`."""

    def reset_center_state(self, slots):
        """Resets a subclass' per-center variables at these slots (new centers)."""

    @property
    def write_training_centers(self):
        """Whether training-mode calls write each batch's embeddings over its own centers (set by `CenterRefresh`
        with `mode="training"`; not config). Heads that support it call `write_training_embeddings` in `call`.
        Retrace the training step after changing it."""
        return self._write_training_centers

    @write_training_centers.setter
    def write_training_centers(self, on):
        self._write_training_centers = bool(on)
        self._sync_norm_cache()

    def _norm_cache_in_use(self):
        # Not for trainable centers (an optimizer writes them) nor mirrored ones (one cache for all replicas), nor
        # where a faiss index answers the search (only the exact search reads the caches).
        return (self._write_training_centers and self._norm_cache is not None and not self.centers_trainable
                and not isinstance(self.centers, tf.distribute.DistributedValues)
                and search_lib.is_in_graph(self.active_search))

    def _norm_cache_in_graph(self):
        """Whether the graph being traced reads and writes the cached norms: not in an XLA-compiled step, whose
        fused reductions differ from TensorFlow's kernels in the last bits, nor in a function traced for a
        SavedModel, which cannot hold a variable that no layer tracks (both compute the norms themselves)."""
        return (self._norm_cache_in_use() and not save_context.in_save_context()
                and not control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))

    def _sync_norm_cache(self):
        """Recomputes the cached squared norms and transposed centers from the centers while they are in use (see
        `_norm_cache` and `_transposed_cache`)."""
        if not self._norm_cache_in_use():
            return
        self._norm_cache.assign(tf.reduce_sum(tf.square(self.centers), axis=-1))  # What `exact_search` computes.
        if self.capacity > self.chunk_size:
            return
        if self._transposed_cache is None:  # Created on first use: the memory is spent only where writes run.
            with tf.init_scope():
                self._transposed_cache = tf.Variable(tf.reshape(tf.transpose(self.centers), [-1]), trainable=False,
                                                     name=f"{self.name}_transposed_centers")
        else:
            self._transposed_cache.assign(tf.reshape(tf.transpose(self.centers), [-1]))

    def _transposed_cache_in_graph(self):
        return self._norm_cache_in_graph() and self._transposed_cache is not None

    def _read_transposed_cache(self):
        """The transposed centers for this step's search, read without a copy: the previous step's write put the
        variable in copy-on-read mode, which copies it at every read; turning the mode off makes the read share its
        buffer, and a later write copies it only if that read is still alive (copy-on-write). The write waits for
        the search (`write_training_embeddings(..., after=)`), so the buffer is free by then."""
        disable = getattr(tf.raw_ops, "DisableCopyOnRead", None)
        dependencies = [] if disable is None else [disable(resource=self._transposed_cache.handle)]
        with tf.control_dependencies(dependencies):
            return tf.reshape(tf.convert_to_tensor(self._transposed_cache), [self.embedding_dim, self.capacity])

    # -- state changes ---------------------------------------------------------------------------
    def assign_centers(self, embeddings, labels, sample_ids=None, reset_weights=True):
        """Replaces the whole center set.

        Args:
            embeddings: `(N, d)` center positions (the training embeddings).
            labels: int class ids `(N,)`, or soft labels `(N, num_classes)` whose rows
                are probability vectors.
            sample_ids: `(N,)` unique ids of the samples the centers were computed
                from, for leave-one-out (default `0..N-1`, the order of the data).
            reset_weights: reset per-center trainable state (importance weights).
                Refreshing the same samples' centers passes False to keep them.
        """
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[0] == 0:
            raise ValueError("`embeddings` must be a non-empty (num_centers, dimension) array. "
                             f"Received: shape={embeddings.shape}")
        if not np.all(np.isfinite(embeddings)):
            raise ValueError("`embeddings` (the centers) contain NaN or Inf: check the network that computed them. "
                             f"Received: {int(np.sum(~np.isfinite(embeddings)))} non-finite entries")
        num_centers, embedding_dim = embeddings.shape
        soft_labels = check_soft_labels(labels, num_centers, self.num_classes)
        if sample_ids is None:
            sample_ids = np.arange(num_centers)
        sample_ids = np.asarray(sample_ids).reshape(-1)
        if sample_ids.shape[0] != num_centers:
            raise ValueError(f"`sample_ids` must have one id per center. Received: {sample_ids.shape[0]} ids for "
                             f"{num_centers} centers")
        known = sample_ids[sample_ids >= 0]
        if np.unique(known).size != known.size:
            raise ValueError("`sample_ids` must be unique (ids < 0 excepted): each names the sample a center "
                             "came from.")
        if not self.built:
            if self.capacity is None:
                self.capacity = num_centers
            self.build(tf.TensorShape((None, embedding_dim)))
        if embedding_dim != self.embedding_dim:
            raise ValueError(f"Centers must have the layer's embedding dimension {self.embedding_dim}. "
                             f"Received: embeddings.shape={embeddings.shape}")
        if num_centers > self.capacity:
            raise ValueError(f"{num_centers} centers do not fit the layer's capacity {self.capacity}; create the "
                             f"layer with capacity>={num_centers}. Received: embeddings.shape={embeddings.shape}")
        if self.num_neighbours > num_centers and not self._warned_about_k:
            self._warned_about_k = True  # Once per layer, not at every refresh.
            logging.warning("%s: num_neighbours=%d exceeds the %d centers; every center is used.", self.name,
                            self.num_neighbours, num_centers)
        pad = self.capacity - num_centers
        self.centers.assign(np.pad(embeddings, ((0, pad), (0, 0))))
        self.center_labels.assign(np.pad(soft_labels, ((0, pad), (0, 0))))
        self.center_mask.assign(np.arange(self.capacity) < num_centers)
        self.center_sample_ids.assign(np.pad(sample_ids.astype(np.int32), (0, pad), constant_values=-1))
        if reset_weights:
            self.reset_center_state(np.arange(self.capacity))
        self.rebuild_index()

    def own_slots(self, sample_ids):
        """`(slots, owned)` for int32 `sample_ids (B,)`: slot `i` holds sample `i`'s center when `owned` (the layout
        of a refresh in data order); where not owned, `slots` is 0. Training writes and candidate lists use it."""
        in_range = tf.logical_and(sample_ids >= 0, sample_ids < self.capacity)
        slots = tf.where(in_range, sample_ids, tf.zeros_like(sample_ids))
        return slots, tf.logical_and(in_range, tf.equal(tf.gather(self.center_sample_ids, slots), sample_ids))

    def refresh_centers(self, embedded, labels, sample_ids=None):
        """Stores what the network computed for the training samples as the centers, keeping learned per-center
        state (the weights of a refresh of the same samples). `CenterSync` calls it; `embedded` is the output of
        the network the head's centers come from."""
        self.assign_centers(embedded, labels, sample_ids, reset_weights=False)

    @property
    def num_centers(self):
        """Number of centers currently stored (0 before any assignment)."""
        if not self.built:
            return 0
        return int(tf.reduce_sum(tf.cast(self.center_mask, tf.int32)))

    def load_own_variables(self, store):
        super().load_own_variables(store)
        self.rebuild_index()

    def set_weights(self, weights):
        super().set_weights(weights)
        self.rebuild_index()

    def rebuild_index(self):
        """Rebuilds what follows the center variables: a faiss index (nothing for "exact"), and the centers' norms
        while the training pass writes them. Every change of the centers outside the training step calls it; a
        faiss search also calls it when the centers were replaced by other means (`model.set_weights`,
        `model.load_weights`, a checkpoint's restore; see `_fingerprint`)."""
        self._sync_norm_cache()
        self._pending_index_rows.clear()
        if search_lib.is_in_graph(self.active_search) or not self.built:
            return
        if self._index is None:
            self._index = search_lib.get(self.active_search)
        self._index.reset()
        mask = self.center_mask.numpy()
        if mask.any():
            self._index.add(self.centers.numpy()[mask], np.flatnonzero(mask))
        self._index_fingerprint = self._fingerprint()

    # Center rows the fingerprint reads: the first slots (those a refresh fills first) and slots spread over the rest.
    FINGERPRINT_ROWS = 8

    def _fingerprint_rows(self):
        count = self.FINGERPRINT_ROWS
        return np.unique(np.concatenate([np.arange(min(count, self.capacity)),
                                         np.linspace(0, self.capacity - 1, count).astype(np.int64)]))

    def _fingerprint(self):
        """A few center rows and the mask (NumPy, read eagerly): what a faiss index was built from, compared at every
        search. The library's own changes of the centers rebuild the index; this notices the others, which replace
        the centers whole (`model.set_weights` or `load_weights`, `tf.train.Checkpoint.restore`: the weights of
        another step differ in every row) or move centers between slots (another mask). It reads 16 rows and the
        mask, not the whole centers."""
        return tf.gather(self.centers, self._fingerprint_rows()).numpy(), self.center_mask.numpy()

    def rebuild_index_if_replaced(self):
        """Rebuilds what follows the centers (`rebuild_index`) if the centers were replaced behind the layer's back;
        returns whether it did.

        While the training pass writes the centers, the caches of the steps' exact search and a faiss index follow
        the writes and are not checked at each search. A restore by other means in the meantime (Keras'
        `BackupAndRestore` resuming a run, a callback calling `model.set_weights`) would leave them describing the
        old centers: the steps would rank neighbours by stale values until the epoch's end. `CenterRefresh` calls
        this at every epoch's start. It compares 16 rows (`_fingerprint`), not the whole centers.
        """
        if not self.built:
            return False
        stale = False
        if self._norm_cache_in_use():
            rows = self._fingerprint_rows()
            centers = tf.gather(self.centers, rows)
            # Dense reads of the caches: a gather from a variable would put it in copy-on-read mode (see
            # `_neighbours`), and every later step's read would copy it.
            stale = not np.array_equal(self._norm_cache.numpy()[rows],
                                       tf.reduce_sum(tf.square(centers), axis=-1).numpy())
            if not stale and self._transposed_cache is not None and self.capacity <= self.chunk_size:
                transposed = self._transposed_cache.numpy().reshape(self.embedding_dim, self.capacity)
                stale = not np.array_equal(transposed[:, rows], centers.numpy().T)
        elif self._index is not None and self._index_fingerprint is not None:
            stale = not self._index_matches_centers()
        if stale:
            logging.info("The centers of %s were replaced outside the layer (e.g. a restore): rebuilding what follows "
                         "them.", self.name)
            self.rebuild_index()
        return stale

    def _index_is_current(self):
        """Whether the faiss index was built from the centers the variables hold (`_fingerprint`). While the training
        pass writes the centers, or an optimizer trains them, the index follows them by design at each epoch's end
        (or never), and this is not checked."""
        if self._index is None or self._index_fingerprint is None:
            return False
        if self._write_training_centers or self.centers_trainable:
            return True
        return self._index_matches_centers()

    def _index_matches_centers(self):
        return all(np.array_equal(now, built) for now, built in zip(self._fingerprint(), self._index_fingerprint))

    @property
    def active_search(self):
        """The search in use: `search`, with "auto" resolved from the capacity and dimension (fixed once built)."""
        if self.search != "auto" or not self.built:
            return self.search
        if self._resolved_search is None:
            self._resolved_search = search_lib.resolve("auto", self.capacity, self.embedding_dim)
        return self._resolved_search

    def set_search(self, search):
        """Switches the search backend (e.g. to "exact" before export). Call
        `model.make_predict_function(force=True)` afterwards if the model already predicted."""
        search_lib.get(search)
        self.search = search if not isinstance(search, search_lib.SearchIndex) else search_lib.serialize(search)
        self._index = search if isinstance(search, search_lib.SearchIndex) else None
        self._resolved_search = None
        self.rebuild_index()

    # -- lookup ------------------------------------------------------------------------------------
    @property
    def effective_neighbours(self):
        return min(self.num_neighbours, self.capacity)

    def check_queries(self, embeddings, sample_ids=None):
        """The queries (and sample ids) ready for lookup, or a clear error for input the layer cannot answer.

        Queries of another dtype (integers, float16) are cast to the centers' float32, also under a mixed-precision
        policy.
        Eagerly, NaN/Inf queries, an empty center set and sample ids of another length raise a ValueError; in a
        graph (`model.predict`, `tf.function`) NaN/Inf raise an InvalidArgumentError with the same message when the
        batch runs (TFLite drops that check).

        Returns:
            `(embeddings, sample_ids)`.
        """
        embeddings = check_embeddings(embeddings, self.embedding_dim, self.centers.dtype, check_finite=False)
        if sample_ids is not None:
            sample_ids = tf.reshape(tf.cast(sample_ids, tf.int32), [-1])  # Keras casts list inputs to float.
            if (sample_ids.shape[0] is not None and embeddings.shape[0] is not None
                    and sample_ids.shape[0] != embeddings.shape[0]):
                raise ValueError(f"`sample_ids` must hold one id per query. Received: {sample_ids.shape[0]} ids for "
                                 f"{embeddings.shape[0]} queries")
        if tf.executing_eagerly():
            if not bool(tf.reduce_any(self.center_mask)):
                raise ValueError(f"{self.name} has no centers: call assign_centers(embeddings, labels) first.")
            if not bool(tf.reduce_all(tf.math.is_finite(embeddings))):
                raise ValueError("Query embeddings contain NaN or Inf; check the inputs and the network.")
            return embeddings, sample_ids
        # In a graph (model.predict, tf.function) the same checks run as ops when the batch runs.
        embeddings = tf.debugging.check_numerics(
            embeddings, "Query embeddings contain NaN or Inf; check the inputs and the network.")
        if sample_ids is not None:
            with tf.control_dependencies([tf.debugging.assert_equal(
                    tf.shape(sample_ids)[0], tf.shape(embeddings)[0],
                    message="`sample_ids` must hold one id per query")]):
                sample_ids = tf.identity(sample_ids)
        return embeddings, sample_ids

    def _search_ids(self, queries, k, centers=None, center_norms=None, transposed_centers=None):
        queries = tf.stop_gradient(queries)
        if search_lib.is_in_graph(self.active_search):
            centers = self.centers if centers is None else centers
            _, ids = search_lib.exact_search(queries, centers, k, self.center_mask, self.chunk_size,
                                             integer_ranking=self.integer_ranking, center_norms=center_norms,
                                             transposed_centers=transposed_centers)
            return ids

        def faiss_ids(query_values):
            with self._index_lock:
                if not self._index_is_current():
                    self.rebuild_index()
                self._apply_pending_index_rows()
                _, found = self._index.search(query_values.numpy(), k)
            return found.astype(np.int32)

        ids = tf.py_function(faiss_ids, [queries], tf.int32)
        ids.set_shape([queries.shape[0], k])
        return ids

    def lookup(self, embeddings, k=None):
        """The `k` nearest stored centers of each embedding, nearest first: what tf-similarity calls a lookup.

        Args:
            embeddings: `(B, d)` query embeddings.
            k: how many neighbours (default `num_neighbours`); beyond the stored centers, rows are padded.

        Returns:
            `Lookup(distances, sample_ids, labels)`, NumPy arrays of shape `(B, k)`: squared Euclidean
            distances (inf where padded), the ids of the samples the centers were computed from, and their
            class ids (the argmax of the soft labels); -1 where padded.

        Example:

        >>> head.assign_centers(train_embeddings, train_labels)
        >>> found = head.lookup(query_embeddings, k=5)
        >>> found.labels[0], found.distances[0]     # the classes and distances of query 0's 5 neighbours
        """
        k = check_positive_int("k", self.num_neighbours if k is None else k)
        embeddings, _ = self.check_queries(embeddings)
        ids = self._search_ids(embeddings, min(k, self.capacity))
        valid = (ids >= 0).numpy()
        slots = tf.maximum(ids, 0)
        distances = kernels.gathered_squared_distances(embeddings, tf.gather(self.centers, slots)).numpy()
        labels = tf.argmax(tf.gather(self.center_labels, slots), axis=-1, output_type=tf.int32).numpy()
        sample_ids = tf.gather(self.center_sample_ids, slots).numpy()
        pad = ((0, 0), (0, k - ids.shape[1]))
        return Lookup(np.pad(np.where(valid, distances, np.inf), pad, constant_values=np.inf),
                      np.pad(np.where(valid, sample_ids, -1), pad, constant_values=-1),
                      np.pad(np.where(valid, labels, -1), pad, constant_values=-1))

    def _neighbours(self, embeddings, sample_ids=None, training=None):
        """The `k` nearest centers of each query, leaving out each query's own center (the heads' `call`).

        In training mode with candidate lists set (`set_candidate_lists`), each query ranks its sample's listed
        candidates only.

        Returns:
            `(distances, ids, valid)`, each `(B, k)`: squared distances recomputed on
            the gathered centers (differentiable in the embeddings, not the centers),
            center slots (0 where invalid), and whether the neighbour exists.
        """
        embeddings = tf.convert_to_tensor(embeddings, dtype=self.compute_dtype)
        in_graph = search_lib.is_in_graph(self.active_search)
        transposed = training and self._transposed_cache_in_graph() and in_graph
        # One read of the centers for the search and the gather: once a sparse op (a gather, a scatter, a sparse
        # optimizer update) has touched a variable, TensorFlow copies it on every dense read (its "copy-on-read
        # mode"), 15 MB at 60,000 x 64, so each further read would cost a copy. With the transposed cache, or a
        # faiss index, the search reads something else and the gather reads the centers' rows only.
        centers = self.centers if transposed or not in_graph else tf.convert_to_tensor(self.centers)
        k = self.effective_neighbours
        exclude = sample_ids is not None
        search_k = min(k + 1, self.capacity) if exclude else k
        if exclude and training and self._candidates is not None:
            ids = self._candidate_ids(embeddings, tf.reshape(tf.cast(sample_ids, tf.int32), [-1]), search_k)
        else:
            norms = tf.convert_to_tensor(self._norm_cache) if training and self._norm_cache_in_graph() else None
            ids = self._search_ids(embeddings, search_k, centers, norms,
                                   self._read_transposed_cache() if transposed else None)
        valid = ids >= 0
        if exclude:
            sample_ids = tf.reshape(tf.cast(sample_ids, tf.int32), [-1, 1])
            neighbour_sample_ids = tf.gather(self.center_sample_ids, tf.maximum(ids, 0))
            is_self = tf.logical_and(tf.equal(neighbour_sample_ids, sample_ids), sample_ids >= 0)
            valid = tf.logical_and(valid, tf.logical_not(is_self))
            if search_k > k:
                # Move the (at most one) own center to the end, keep the order of the rest, drop the last column.
                position = tf.range(search_k)[tf.newaxis, :] + search_k * tf.cast(is_self, tf.int32)
                _, order = tf.math.top_k(-position, k=k)
                ids = tf.gather(ids, order, batch_dims=1)
                valid = tf.gather(valid, order, batch_dims=1)
        ids = tf.where(valid, ids, tf.zeros_like(ids))
        neighbour_centers = tf.gather(centers, ids)
        distances = kernels.gathered_squared_distances(embeddings, neighbour_centers)
        return distances, ids, valid

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_classes": self.num_classes,
            "num_neighbours": self.num_neighbours,
            "capacity": self.capacity,
            "search": self.search,
            "chunk_size": self.chunk_size,
        })
        return config
