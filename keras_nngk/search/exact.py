"""Exact search with TensorFlow ops only: usable inside the graph, exportable to SavedModel and TFLite."""

import numpy as np
import tensorflow as tf

from keras_nngk import kernels
from keras_nngk.search import base

DEFAULT_CHUNK_SIZE = 65536


def chunked_top_k(distance_fn, num_centers, k, batch_size, center_mask=None, chunk_size=DEFAULT_CHUNK_SIZE,
                  dtype=tf.float32):
    """The `k` smallest of `distance_fn(start, stop) -> (B, stop - start)` over chunks of centers, merged.

    Memory stays `O(B * chunk_size)`; with one chunk the graph is the distances
    plus one `top_k`. Returns `(distances, ids)` `(B, k)`, ascending, ids -1 and
    distance `inf` past the available centers, ties to the lower position.
    """
    found = min(int(k), int(num_centers))
    infinity = tf.constant(float("inf"), dtype=dtype)
    partial_distances, partial_ids = [], []
    for start in range(0, num_centers, chunk_size):
        stop = min(start + chunk_size, num_centers)
        distances = distance_fn(start, stop)
        if center_mask is not None:
            distances = tf.where(center_mask[tf.newaxis, start:stop], distances, infinity)
        negative, ids = tf.math.top_k(-distances, k=min(found, stop - start))
        partial_distances.append(-negative)
        partial_ids.append(ids + start)
    if len(partial_distances) == 1:
        distances, ids = partial_distances[0], partial_ids[0]
    else:
        merged_distances = tf.concat(partial_distances, axis=1)
        merged_ids = tf.concat(partial_ids, axis=1)
        negative, order = tf.math.top_k(-merged_distances, k=found)
        distances = -negative
        ids = tf.gather(merged_ids, order, batch_dims=1)
    ids = tf.where(tf.math.is_finite(distances), ids, -tf.ones_like(ids))
    if found < k:
        distances = tf.concat([distances, tf.fill([batch_size, k - found], infinity)], axis=1)
        ids = tf.concat([ids, tf.fill([batch_size, k - found], tf.constant(-1, ids.dtype))], axis=1)
    return distances, ids


def exact_search(queries, centers, k, center_mask=None, chunk_size=DEFAULT_CHUNK_SIZE):
    """The `k` nearest centers of each query, by squared Euclidean distance.

    Distances are computed by one matrix product per chunk of `chunk_size`
    centers, the top `k` of each chunk are kept and the chunks' results merged,
    so memory stays `O(B * chunk_size)` however many centers there are. With one
    chunk (the usual case for exported models) the graph is matmul + `top_k`,
    which converts to TFLite builtin ops.

    Args:
        queries: `(B, d)` float tensor.
        centers: `(N, d)` float tensor with a static `N`.
        k: number of neighbours (Python int >= 1).
        center_mask: optional boolean `(N,)`; centers where it is False are never returned.
        chunk_size: centers per chunk.

    Returns:
        `(distances, ids)`, both `(B, k)`: squared distances ascending (float32) and
        center positions (int32). Columns past the number of available centers have
        distance `inf` and id `-1`. Ties go to the lower position.
    """
    num_centers = centers.shape[0]
    if num_centers is None:
        raise ValueError("exact_search needs a static number of centers. Received: centers.shape="
                         f"{centers.shape}")
    return chunked_top_k(lambda start, stop: kernels.squared_distances(queries, centers[start:stop]),
                         int(num_centers), k, tf.shape(queries)[0], center_mask, chunk_size, queries.dtype)


class ExactSearch(base.SearchIndex):
    """Brute-force exact search over the stored vectors, with the same function the layers use in-graph.

    Args:
        chunk_size: centers per matrix product; bounds memory at `batch * chunk_size` floats.

    Example:

    >>> index = ExactSearch()
    >>> index.add(np.eye(3, dtype="float32"), ids=[10, 11, 12])
    >>> distances, ids = index.search(np.array([[0.9, 0.1, 0.0]], "float32"), k=2)
    >>> ids.tolist()
    [[10, 11]]
    """

    name = "exact"

    def __init__(self, chunk_size=DEFAULT_CHUNK_SIZE, query_batch_size=1024):
        super().__init__()
        if chunk_size < 1 or query_batch_size < 1:
            raise ValueError(f"`chunk_size` and `query_batch_size` must be >= 1. "
                             f"Received: chunk_size={chunk_size}, query_batch_size={query_batch_size}")
        self.chunk_size = int(chunk_size)
        self.query_batch_size = int(query_batch_size)
        self._centers = None

    def _on_add(self, vectors, ids):
        self._centers = None

    def _on_remove(self, ids):
        self._centers = None

    def _on_reset(self):
        self._centers = None

    def _search(self, queries, k):
        if self._centers is None:
            self._centers = tf.constant(self._vectors)
        all_distances, all_positions = [], []
        for start in range(0, queries.shape[0], self.query_batch_size):
            distances, positions = exact_search(
                tf.constant(queries[start:start + self.query_batch_size]), self._centers, k,
                chunk_size=self.chunk_size)
            all_distances.append(distances.numpy())
            all_positions.append(positions.numpy())
        distances = np.concatenate(all_distances)
        positions = np.concatenate(all_positions)
        return distances, np.where(positions >= 0, self._ids[np.maximum(positions, 0)], -1)

    def get_config(self):
        return {"chunk_size": self.chunk_size, "query_batch_size": self.query_batch_size}
