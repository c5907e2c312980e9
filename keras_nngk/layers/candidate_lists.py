"""The candidate lists of a center layer: the training step ranks each sample's cached nearest centers only.

See `keras_nngk.search.candidates` for the idea and the functions; this mixin holds
the lists beside `CenterLayer`'s centers. They are neither config nor part of the
saved model (a loaded model searches every center); a training run checkpoints
them (`reserve_candidate_lists` returns the variables) so that a resumed run ranks
the same candidates as an uninterrupted one.
"""

import numpy as np
import tensorflow as tf

from keras_nngk.search import candidates as candidates_lib
from keras_nngk.utils.checks import check_non_negative_int


class _Unsaved:
    """Holds variables a layer must not track: Keras saves every variable set as a layer attribute."""

    def __init__(self, lists, built_at):
        self.lists = lists
        self.built_at = built_at


class CandidateLists:
    """Mixin of `CenterLayer`: candidate lists for training-mode calls with sample ids."""

    _candidates = None

    @property
    def num_candidates(self):
        """How many candidates per sample the training steps rank (0: they search every center)."""
        return 0 if self._candidates is None else int(self._candidates.lists.shape[1])

    @property
    def candidate_lists_epoch(self):
        """The epoch the lists were built at (`rebuild_candidate_lists(epoch)`); -1: not built yet or unknown."""
        return -1 if self._candidates is None else int(self._candidates.built_at.numpy())

    def reserve_candidate_lists(self, num_candidates):
        """Creates lists of `num_candidates` per center slot, not built yet (all -1); 0 drops them.

        Training-mode calls with sample ids then rank only each sample's listed
        candidates (queries whose sample owns no slot, calls without sample ids and
        inference search every center). Retrace the training step after a change
        (`CenterRefresh` does).

        Returns:
            `{"candidate_lists": ..., "candidate_lists_epoch": ...}`, the variables to checkpoint (empty for 0).
        """
        num_candidates = check_non_negative_int("num_candidates", num_candidates)
        if num_candidates == 0:
            self._candidates = None
            return {}
        if not self.built:
            raise ValueError(f"{self.name} has no centers to list: call assign_centers(embeddings, labels) first.")
        if num_candidates < self.effective_neighbours + 1:
            raise ValueError(f"`num_candidates` must exceed num_neighbours={self.num_neighbours}: the step keeps "
                             f"the nearest {self.num_neighbours} of them. Received: num_candidates={num_candidates}")
        if self.num_candidates != num_candidates:
            self._candidates = _Unsaved(
                tf.Variable(tf.fill([self.capacity, num_candidates], -1), trainable=False, name="candidate_lists"),
                tf.Variable(-1, dtype=tf.int64, trainable=False, name="candidate_lists_epoch"))
        return {"candidate_lists": self._candidates.lists, "candidate_lists_epoch": self._candidates.built_at}

    def set_candidate_lists(self, num_candidates):
        """`reserve_candidate_lists(num_candidates)`, then builds the lists from the stored centers."""
        if num_candidates and (not self.built or self.num_centers == 0):
            raise ValueError(f"{self.name} has no centers to list: call assign_centers(embeddings, labels) first.")
        self.reserve_candidate_lists(num_candidates)
        self.rebuild_candidate_lists()

    def rebuild_candidate_lists(self, epoch=-1):
        """Builds the lists from the current centers (an exact search of each against all), noting `epoch`."""
        if self._candidates is not None:
            self._candidates.lists.assign(candidates_lib.build_candidate_lists(
                self.centers, self.center_mask, self.num_candidates))
            self._candidates.built_at.assign(epoch)

    def candidate_recall(self, num_queries=1000, seed=0):
        """Mean fraction of the exact `num_neighbours` nearest other centers that the lists return, for up to
        `num_queries` stored centers as queries (how stale the lists have grown); None without lists."""
        if self._candidates is None:
            return None
        stored = np.flatnonzero(self.center_mask.numpy())
        slots = np.random.default_rng(seed).choice(stored, min(num_queries, stored.size), replace=False)
        k = min(self.num_neighbours, stored.size - 1)
        return candidates_lib.candidate_recall(self.centers, self.center_mask, self._candidates.lists, slots, k)

    def _candidate_ids(self, queries, sample_ids, k):
        """`k` ids from each query's candidate list, or from every center when a query's sample owns no slot."""
        slots, owned = self.own_slots(sample_ids)
        return tf.cond(
            tf.reduce_all(owned),
            lambda: candidates_lib.candidate_search(queries, self.centers, self.center_mask,
                                                    tf.gather(self._candidates.lists, slots), k),
            lambda: self._search_ids(queries, k))
