"""Centers written from the training pass: the "training" refresh mode's in-graph write (a mixin of `CenterLayer`)."""

import numpy as np
import tensorflow as tf
from tensorflow.python.saved_model import save_context  # pylint: disable=g-direct-tensorflow-import

from keras_nngk import search as search_lib


class TrainingWrites:
    """Mixin of `CenterLayer`: writes each training batch's embeddings over its own samples' centers."""

    def write_training_embeddings(self, embeddings, sample_ids, after=None):
        """Writes training embeddings over their samples' own centers, in the graph (the "training" refresh mode).

        The center of sample `i` is the one in slot `i` when that slot holds sample
        `i` (the layout of a refresh in data order, `sample_ids` `0..N-1`);
        samples stored elsewhere or not at all are skipped. The write has static
        shapes (XLA compiles it): rows to skip write the batch's first written row
        again, so duplicate slots always carry the same value. Under a
        multi-replica strategy on one machine (`MirroredStrategy`) the rows of all
        replicas are written, in cross-replica context, to every copy. A faiss
        index that updates in place (IVF on the CPU) gets the same rows before
        its next search, so the next step searches the written centers as the
        exact search does; other indexes follow at the epoch's end
        (`rebuild_index`).

        Args:
            embeddings: `(B, d)` embeddings of the batch (no gradient flows into the centers).
            sample_ids: `(B,)` their sample ids.
            after: optional tensor (the head's output) the write waits for: then the step's search has finished
                reading the centers, and the write updates them in place instead of copying them.
        """
        embeddings = tf.stop_gradient(tf.cast(embeddings, self.centers.dtype))
        sample_ids = tf.reshape(tf.cast(sample_ids, tf.int32), [-1])
        if after is not None:
            with tf.control_dependencies([after]):
                embeddings, sample_ids = tf.identity(embeddings), tf.identity(sample_ids)
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            self._scatter_own_rows(embeddings, sample_ids)
            return
        if getattr(context.strategy.extended, "_num_workers", 1) > 1:  # MultiWorkerMirroredStrategy: workers.
            raise ValueError("Centers from the training pass are written on one machine only (MirroredStrategy); "
                             "with several workers use the refresh mode 'embed'.")

        def write_all(strategy, embeddings, sample_ids):
            self._scatter_own_rows(tf.concat(strategy.experimental_local_results(embeddings), axis=0),
                                   tf.concat(strategy.experimental_local_results(sample_ids), axis=0))

        context.merge_call(write_all, args=(embeddings, sample_ids))

    def _scatter_own_rows(self, embeddings, sample_ids):
        slots, owned = self.own_slots(sample_ids)
        first = tf.argmax(tf.cast(owned, tf.int32), output_type=tf.int32)  # 0 when no row is owned.
        any_owned = tf.reduce_any(owned)
        filler_slot = tf.where(any_owned, slots[first], 0)
        filler = tf.where(any_owned, embeddings[first], tf.gather(self.centers, 0))  # A row, not a whole read.
        slots = tf.where(owned, slots, filler_slot)
        values = tf.where(owned[:, tf.newaxis], embeddings, filler[tf.newaxis, :])
        self.centers.scatter_update(tf.IndexedSlices(values, slots))
        if self._norm_cache_in_graph():  # The written rows' norms, as `exact_search` computes them (bit for bit).
            self._norm_cache.scatter_update(tf.IndexedSlices(tf.reduce_sum(tf.square(values), axis=-1), slots))
        if self._index_follows_writes():
            tf.py_function(self._write_index_rows, [values, slots, owned], [])
        if self._transposed_cache_in_graph():  # Column `slot` of the flattened (d, capacity) copy: d scalar writes.
            offsets = tf.range(self.embedding_dim)[:, tf.newaxis] * self.capacity + slots[tf.newaxis, :]
            self._transposed_cache.scatter_update(tf.IndexedSlices(tf.reshape(tf.transpose(values), [-1]),
                                                                   tf.reshape(offsets, [-1])))

    def _index_follows_writes(self):
        """Whether the step also writes its rows into the faiss index: one that updates in place (IVF on the CPU),
        outside a function traced for a SavedModel. Other indexes follow the writes at each epoch's end
        (`rebuild_index` in `CenterRefresh`)."""
        if search_lib.is_in_graph(self.active_search) or save_context.in_save_context():
            return False
        if self._index is None:
            self._index = search_lib.get(self.active_search)
        return bool(getattr(self._index, "updates_in_place", False))

    def _write_index_rows(self, values, slots, owned):
        """The eager half of a write: queues the owned rows for the faiss index, which the next search applies
        (`_apply_pending_index_rows`). Applying them here would run faiss' threads beside the step's backward pass
        on the same cores (measured: 6 ms a step at 60,000 x 64, against 1.2 ms alone)."""
        slots = slots.numpy()
        stored = owned.numpy() & self.center_mask.numpy()[slots]  # The index holds the masked-in centers.
        if stored.any():
            self._pending_index_rows.append((slots[stored], values.numpy()[stored]))

    def _apply_pending_index_rows(self):
        """Writes the queued rows into the faiss index, the latest value of each slot (a slot written twice, in
        two steps or twice in a batch, ends with its last row, as the centers do)."""
        if not self._pending_index_rows:
            return
        slots = np.concatenate([rows[0] for rows in self._pending_index_rows])
        values = np.concatenate([rows[1] for rows in self._pending_index_rows])
        self._pending_index_rows.clear()
        last = len(slots) - 1 - np.unique(slots[::-1], return_index=True)[1]
        if self._index.size:
            self._index.update(values[last], slots[last])
