"""Candidate lists: each stored sample's nearest other centers, cached so that a training step searches only those.

A training query is the embedding of a stored sample. Instead of ranking all `N`
centers at every step (a `(B, N)` product, the whole cost of an NNGK step), the
step can rank the `m` centers that were nearest to the sample's own center when
the lists were built: a `(B, m)` gather. That pays only while neighbourhoods move
little between builds; on Fashion-MNIST from scratch they did not (the lists held
4-14% of the exact neighbours an epoch later, and accuracy fell by a point:
bench/README.md, "Candidate lists"), so it is off by default. This is the "weak
update" of section 3 of the review applied to the neighbour search as well as to
the centers; Meyer et al. use an approximate
neighbour graph (FANNG) the same way. It is approximate: a center that came closer
than every listed one since the lists were built is missed until the next build,
which `candidate_recall` measures.

`build_candidate_lists` ranks every stored center against all others (the exact
search, in batches), `candidate_search` ranks a batch's listed candidates.
"""

import numpy as np
import tensorflow as tf

from keras_nngk import kernels
from keras_nngk.search import exact


def build_candidate_lists(centers, center_mask, num_candidates, batch_size=512):
    """For every center slot, the slots of its `num_candidates` nearest other centers (exact search).

    Args:
        centers: `(capacity, d)` float tensor or variable.
        center_mask: `(capacity,)` bool: which slots hold a center.
        num_candidates: `m`, how many candidates to keep per slot.
        batch_size: query slots per exact search call.

    Returns:
        int32 NumPy `(capacity, m)`: nearest first, the slot itself left out, -1 where fewer than `m` other centers
        exist and on every row of an empty slot.
    """
    mask = np.asarray(center_mask, dtype=bool)
    capacity = mask.shape[0]
    lists = np.full((capacity, num_candidates), -1, np.int32)
    slots = np.flatnonzero(mask)
    found = min(num_candidates + 1, capacity)
    centers = tf.convert_to_tensor(centers)
    center_mask = tf.convert_to_tensor(mask)
    for start in range(0, len(slots), batch_size):
        rows = slots[start:start + batch_size]
        _, ids = exact._compiled_exact_search(  # pylint: disable=protected-access
            tf.gather(centers, rows), centers, found, center_mask=center_mask)
        ids = ids.numpy()
        # Leave the slot itself out wherever it ranks (equal centers may come first), keep the others' order.
        order = np.argsort(ids == rows[:, np.newaxis], axis=1, kind="stable")[:, :num_candidates]
        kept = np.take_along_axis(ids, order, axis=1)
        kept[np.take_along_axis(ids == rows[:, np.newaxis], order, axis=1)] = -1
        lists[rows, :kept.shape[1]] = kept
    return lists


def candidate_search(queries, centers, center_mask, candidates, k):
    """The `k` nearest of each query's candidate centers: center slots `(B, k)`, nearest first, -1 past them.

    Args:
        queries: `(B, d)`.
        centers: `(capacity, d)`.
        center_mask: `(capacity,)` bool.
        candidates: `(B, m)` int32 slots (-1: none), e.g. the rows of `build_candidate_lists` for the queries'
            own samples.
        k: how many to return (at most `m`).
    """
    valid = candidates >= 0
    slots = tf.maximum(candidates, 0)
    valid = tf.logical_and(valid, tf.gather(center_mask, slots))
    distances = kernels.gathered_squared_distances(tf.stop_gradient(queries), tf.gather(centers, slots))
    distances = tf.where(valid, distances, tf.constant(float("inf"), distances.dtype))
    negative, order = tf.math.top_k(-distances, k=k)
    ids = tf.gather(candidates, order, batch_dims=1)
    return tf.where(tf.math.is_finite(negative), ids, -tf.ones_like(ids))


def candidate_recall(centers, center_mask, lists, slots, k):
    """How well the lists still hold the neighbours: for the centers at `slots` as queries, the mean fraction of
    their exact `k` nearest other centers that `candidate_search` over their lists returns (a float in [0, 1])."""
    slots = np.asarray(slots, np.int32)
    queries = tf.gather(centers, slots)
    _, exact_ids = exact.exact_search(queries, centers, k + 1, center_mask)
    listed = candidate_search(queries, centers, center_mask, tf.gather(lists, slots), k).numpy()
    exact_ids = exact_ids.numpy()
    hits = []
    for slot, truth, found in zip(slots, exact_ids, listed):
        truth = [i for i in truth if i >= 0 and i != slot][:k]
        hits.append(len(set(truth) & set(found[found >= 0].tolist())) / max(1, len(truth)))
    return float(np.mean(hits))
