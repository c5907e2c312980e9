"""Changes to a center set after training: drop, add and move centers (continual learning, section 4).

`CenterSurgery` is mixed into `CenterLayer`; the arithmetic of the influence rule
(eq. 13) is the pure function `keras_nngk.surgery.influence_shifts`. Shapes stay
static: a dropped center frees its slot, an added one takes a free slot.
"""

import numpy as np
import tensorflow as tf

from keras_nngk import surgery
from keras_nngk.utils.checks import check_soft_labels


class CenterSurgery:
    """Drop, add and move centers of a `CenterLayer` by sample id, with eq. 13's label redistribution."""

    def kernel_state(self):
        """`(sigma, weights or None)` of the head's kernel, as NumPy values: what the influence rule needs."""
        raise ValueError(f"{type(self).__name__} has no kernel: label redistribution needs an NNGK or impostor head.")

    def influence_shifts(self, slot, sign=1.0):
        """Eq. 13 for center `slot`: `(neighbour_slots, new_labels)`, see `keras_nngk.surgery.influence_shifts`."""
        sigma, weights = self.kernel_state()
        return surgery.influence_shifts(self.centers.numpy(), self.center_labels.numpy(), self.center_mask.numpy(),
                                        slot, self.num_neighbours, sigma, weights, sign)

    def _slots_of(self, sample_ids):
        sample_ids = np.asarray(sample_ids).reshape(-1)
        stored = self.center_sample_ids.numpy()
        mask = self.center_mask.numpy()
        slot_of = {int(sample_id): slot for slot, sample_id in enumerate(stored) if mask[slot] and sample_id >= 0}
        slots = []
        for sample_id in sample_ids:
            if int(sample_id) not in slot_of:
                raise ValueError(f"Sample id {int(sample_id)} is not a center of {self.name}; drop only ids that "
                                 "assign_centers/add_centers stored.")
            slots.append(slot_of[int(sample_id)])
        return slots

    def drop_centers(self, sample_ids, redistribute=True):
        """Removes the centers of these samples (slots are freed, shapes stay static).

        With `redistribute`, each dropped center's label is first passed to its k
        nearest centers by the influence rule (eq. 13), so predictions around it
        change as little as possible. Centers are then dropped one after another;
        without it they are dropped at once.
        """
        slots = self._slots_of(sample_ids)
        if redistribute:
            for slot in slots:
                neighbours, new_labels = self.influence_shifts(slot)
                if len(neighbours):
                    self.center_labels.scatter_update(tf.IndexedSlices(new_labels, neighbours))
                self._free_slots([slot])
        elif slots:
            self._free_slots(slots)
        self.rebuild_index()

    def _free_slots(self, slots):
        slots = tf.constant(np.asarray(slots, np.int32))
        count = int(slots.shape[0])
        self.center_mask.scatter_update(tf.IndexedSlices(tf.zeros([count], tf.bool), slots))
        self.center_sample_ids.scatter_update(tf.IndexedSlices(tf.fill([count], -1), slots))

    def move_centers(self, sample_ids, embeddings):
        """Sets new positions for the centers of these samples (e.g. re-embedded by the current network)."""
        embeddings = np.asarray(embeddings, dtype=np.float32).reshape(-1, self.embedding_dim)
        slots = self._slots_of(sample_ids)
        if len(slots) != len(embeddings):
            raise ValueError(f"move_centers needs one embedding per sample id. Received: {len(slots)} ids and "
                             f"{len(embeddings)} embeddings")
        if not np.all(np.isfinite(embeddings)):
            raise ValueError("`embeddings` of the moved centers contain NaN or Inf.")
        self.centers.scatter_update(tf.IndexedSlices(embeddings, tf.constant(np.asarray(slots, np.int32))))
        self.rebuild_index()

    def add_centers(self, embeddings, labels, sample_ids, compensate=False):
        """Stores new centers in free slots (raise `capacity` to make room).

        With `compensate`, the labels of each new center's k nearest centers move by
        eq. 13 with the opposite sign, offsetting the pull the new center exerts on
        predictions around it (the review's "same with S_a").
        """
        embeddings = np.asarray(embeddings, dtype=np.float32).reshape(-1, self.embedding_dim)
        if not np.all(np.isfinite(embeddings)):
            raise ValueError("`embeddings` of the new centers contain NaN or Inf.")
        soft_labels = check_soft_labels(labels, len(embeddings), self.num_classes)
        sample_ids = np.asarray(sample_ids).reshape(-1)
        free = np.flatnonzero(~self.center_mask.numpy())
        if len(embeddings) > len(free):
            raise ValueError(f"Adding {len(embeddings)} centers exceeds the capacity {self.capacity} "
                             f"({self.capacity - len(free)} in use); create the layer with a larger capacity=.")
        if np.isin(sample_ids, self.center_sample_ids.numpy()[self.center_mask.numpy()]).any():
            raise ValueError("Some `sample_ids` are centers already; drop_centers() them first.")
        if np.unique(sample_ids).size != sample_ids.size or len(sample_ids) != len(embeddings):
            raise ValueError("`sample_ids` must be unique, one per new center.")
        slots = free[:len(embeddings)]
        if not compensate:
            indices = tf.constant(slots.astype(np.int32))
            self.centers.scatter_update(tf.IndexedSlices(embeddings, indices))
            self.center_labels.scatter_update(tf.IndexedSlices(soft_labels, indices))
            self.center_sample_ids.scatter_update(tf.IndexedSlices(sample_ids.astype(np.int32), indices))
            self.center_mask.scatter_update(tf.IndexedSlices(tf.ones([len(slots)], tf.bool), indices))
            self.reset_center_state(slots)
            self.rebuild_index()
            return

        def update(variable, value, slot):
            variable.scatter_update(tf.IndexedSlices(tf.constant([value]), tf.constant([int(slot)])))

        for slot, embedding, label, sample_id in zip(slots, embeddings, soft_labels, sample_ids):
            update(self.centers, embedding, slot)
            update(self.center_labels, label, slot)
            update(self.center_sample_ids, np.int32(sample_id), slot)
            update(self.center_mask, True, slot)
            self.reset_center_state(np.array([slot]))
            neighbours, new_labels = self.influence_shifts(int(slot), sign=-1.0)
            if len(neighbours):
                self.center_labels.scatter_update(tf.IndexedSlices(new_labels, neighbours))
        self.rebuild_index()
