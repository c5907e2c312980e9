"""Exact search with TensorFlow ops only: usable inside the graph, exportable to SavedModel and TFLite."""

import math

import numpy as np
import tensorflow as tf

from keras_nngk.search import base

DEFAULT_CHUNK_SIZE = 65536
BLOCK_PRUNING_MIN_WIDTH = 8192

def float_keys(values):
    """int32 keys in the reverse order of float32 `values` (the largest key for the smallest value; NaN last).

    The bits of a non-negative float32 read as an int32 grow with the value; a
    negative float's other 31 bits grow with its magnitude, so they are flipped.
    """
    bits = tf.bitcast(tf.cast(values, tf.float32), tf.int32)
    ascending = tf.where(bits < 0, tf.bitwise.bitwise_xor(bits, tf.constant(0x7FFFFFFF, tf.int32)), bits)
    return -1 - ascending


def _top_k_by_keys(values, keys, k):
    """The `k` entries of `values` with the largest int32 `keys`: `(values, positions)`."""
    _, positions = _top_k_pruned(keys, k, tf.int32.min)
    return tf.gather(values, positions, batch_dims=1), positions


def block_size(width, k):
    """Block width for pruning a row of `width` entries: about `sqrt(width / k)`, a divisor of `width` if one is near.

    A divisor spares padding the whole `(B, width)` matrix (a copy as large as it).
    """
    target = max(8, int(round(math.sqrt(width / k))))
    divisors = [size for size in range(max(8, target * 2 // 3), target * 3 // 2 + 1) if width % size == 0]
    return min(divisors, key=lambda size: abs(size - target)) if divisors else target


def _top_k_pruned(scores, k, lowest):
    """`top_k` of each row of `scores`, block-pruned for wide rows (see `smallest_k`); `lowest` pads."""
    width = scores.shape[-1]
    if width is None or width < BLOCK_PRUNING_MIN_WIDTH or 16 * k > width:
        return tf.math.top_k(scores, k=k)
    block = block_size(width, k)
    groups = -(-width // block)
    if groups * block > width:
        scores = tf.pad(scores, [[0, 0], [0, groups * block - width]], constant_values=lowest)
    blocks = tf.reshape(scores, [-1, groups, block])
    _, best_blocks = tf.math.top_k(tf.reduce_max(blocks, axis=2), k=k)
    best_blocks = tf.sort(best_blocks, axis=1)  # Keep position order among the candidates.
    candidates = tf.reshape(tf.gather(blocks, best_blocks, batch_dims=1), [-1, k * block])
    top, flat = tf.math.top_k(candidates, k=k)
    return top, tf.gather(best_blocks, flat // block, batch_dims=1) * block + flat % block


def smallest_k(values, k, integer_ranking=False):
    """The `k` smallest entries of each row, ascending: `(values, positions)`; exact, and fast for wide rows.

    `tf.math.top_k` over a wide row costs a few ns per entry; for rows of at least
    `BLOCK_PRUNING_MIN_WIDTH` entries this splits the row into blocks of about
    `sqrt(n / k)`, keeps the `k` blocks with the smallest minima (every one of the
    `k` smallest entries lies in one of them: a block outside holds no entry below
    `k` other blocks' minima) and runs `top_k` on those blocks only. Measured here:
    128 x 60,000 values, k = 33: 23 ms with one `top_k`, 3 ms pruned. Among exactly
    equal values at the k-th place, the one kept may differ from a plain `top_k`.

    With `integer_ranking`, the ranking runs on order-preserving int32 images of
    the values (`float_keys`; same result) and the float values of the winners are
    gathered. The int8 TFLite export needs it: its quantizer quantizes `TOPK_V2` and
    the reshapes before it whenever it holds calibration ranges for them, even for
    ops it was told to leave float, and 8-bit distances reorder neighbours
    (measured: argmax agreement with Keras fell to 49%); integer tensors are never
    quantized.
    """
    if integer_ranking:
        return _top_k_by_keys(values, float_keys(values), k)
    negative, positions = _top_k_pruned(-values, k, -float("inf"))
    return -negative, positions


def largest_k(values, k, integer_ranking=False):
    """The `k` largest entries of each row, descending: `(values, positions)`, as `smallest_k` ranks."""
    if integer_ranking:
        return _top_k_by_keys(values, float_keys(-values), k)
    return _top_k_pruned(values, k, -float("inf"))


def chunked_top_k(distance_fn, num_centers, k, batch_size, center_mask=None, chunk_size=DEFAULT_CHUNK_SIZE,
                  dtype=tf.float32, negated=False, integer_ranking=False):
    """The `k` smallest of `distance_fn(start, stop) -> (B, stop - start)` over chunks of centers, merged.

    Memory stays `O(B * chunk_size)`; with one chunk the graph is the distances
    plus one `top_k`. With `negated=True`, `distance_fn` returns minus the
    distances (which spares a negation pass over the matrix). Returns
    `(distances, ids)` `(B, k)`, ascending, ids -1 and distance `inf` past the
    available centers, ties to the lower position. `integer_ranking`: see `smallest_k`.
    """
    found = min(int(k), int(num_centers))
    infinity = tf.constant(float("inf"), dtype=dtype)
    select = largest_k if negated else smallest_k
    partial_distances, partial_ids = [], []
    for start in range(0, num_centers, chunk_size):
        stop = min(start + chunk_size, num_centers)
        distances = distance_fn(start, stop)
        if center_mask is not None:
            distances = tf.where(center_mask[tf.newaxis, start:stop], distances, -infinity if negated else infinity)
        distances, ids = select(distances, min(found, stop - start), integer_ranking)
        partial_distances.append(distances)
        partial_ids.append(ids + start)
    if len(partial_distances) == 1:
        distances, ids = partial_distances[0], partial_ids[0]
    else:
        merged_distances = tf.concat(partial_distances, axis=1)
        merged_ids = tf.concat(partial_ids, axis=1)
        distances, order = select(merged_distances, found, integer_ranking)
        ids = tf.gather(merged_ids, order, batch_dims=1)
    if negated:
        distances = -distances
    ids = tf.where(tf.math.is_finite(distances), ids, -tf.ones_like(ids))
    if found < k:
        distances = tf.concat([distances, tf.fill([batch_size, k - found], infinity)], axis=1)
        ids = tf.concat([ids, tf.fill([batch_size, k - found], tf.constant(-1, ids.dtype))], axis=1)
    return distances, ids


def exact_search(queries, centers, k, center_mask=None, chunk_size=DEFAULT_CHUNK_SIZE, integer_ranking=False,
                 center_norms=None, transposed_centers=None):
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
        integer_ranking: rank on int32 keys (for the int8 TFLite export, see `smallest_k`).
        center_norms: optional `(N,)` squared norms of the centers, `reduce_sum(square(centers), -1)` kept by the
            caller (the same values bit for bit, so the same neighbours): spares that pass over the centers.
        transposed_centers: optional `(d, N)` copy of the centers kept by the caller, with `center_norms` (then
            `centers` may be None): the product reads it instead (measured: 1.3x faster at 128 x 64 x 60,000 on
            AVX-512 CPUs, `bench/product_layout.py`); the same neighbours, products equal up to rounding.

    Returns:
        `(distances, ids)`, both `(B, k)`: squared distances ascending (float32) and
        center positions (int32). Columns past the number of available centers have
        distance `inf` and id `-1`. Ties go to the lower position (see `smallest_k` for
        exactly equal distances at the k-th place in rows of 8,192 centers or more).
    """
    if transposed_centers is not None:
        if center_norms is None:
            raise ValueError("exact_search with transposed_centers needs center_norms too.")
        transposed_centers = tf.convert_to_tensor(transposed_centers)
        num_centers = transposed_centers.shape[1]
    else:
        centers = tf.convert_to_tensor(centers)  # One read of a variable (each read may copy it, see CenterLayer).
        num_centers = centers.shape[0]
    if num_centers is None:
        shape = transposed_centers.shape if transposed_centers is not None else centers.shape
        raise ValueError(f"exact_search needs a static number of centers. Received: centers of shape {shape}")
    # Rank by 2 q.c - |c|^2, the largest first (the row's |q|^2 does not change the order): the product plus a bias,
    # which oneDNN fuses into the product (measured: 1.2x faster than |c|^2 - 2 q.c, a separate pass over the
    # (B, chunk) matrix). Masked centers get |c|^2 = inf, so they rank last without a separate select.
    # q + q (not 2 * q): the same bits, but the converter cannot fold the doubling into the centers, so a TFLite
    # file stores the centers once, shared by this product and the heads' gather, instead of a doubled copy too.
    doubled_queries = queries + queries
    infinity = tf.constant(float("inf"), dtype=queries.dtype)

    def scores(start, stop):
        whole = (start, stop) == (0, num_centers)
        if transposed_centers is not None:
            products = tf.matmul(doubled_queries, transposed_centers if whole else transposed_centers[:, start:stop])
        else:
            chunk = centers if whole else centers[start:stop]
            products = tf.matmul(doubled_queries, chunk, transpose_b=True)
        if center_norms is None:
            chunk_norms = tf.reduce_sum(tf.square(chunk), axis=-1)
        else:
            chunk_norms = center_norms if whole else center_norms[start:stop]
        if center_mask is not None:
            chunk_norms = tf.where(center_mask[start:stop], chunk_norms, infinity)
        return tf.nn.bias_add(products, -chunk_norms)

    ranked, ids = chunked_top_k(scores, int(num_centers), k, tf.shape(queries)[0], None, chunk_size, queries.dtype,
                                negated=True, integer_ranking=integer_ranking)
    query_norms = tf.reduce_sum(tf.square(queries), axis=-1, keepdims=True)
    return tf.maximum(ranked + query_norms, 0.0), ids


# Eager dispatch of the ~20 ops cost ~10 ms per call: one graph per (number of centers, k, chunk size), for any
# number of queries (a search's last, shorter query batch and the next search's reuse it; tracing costs ~40 ms).
_compiled_exact_search = tf.function(exact_search, autograph=False)  # Python loops only: nothing to convert.


def _exact_search_graph(queries, centers, k, chunk_size):
    query_spec = tf.TensorSpec((None, queries.shape[1]), queries.dtype)
    return _compiled_exact_search.get_concrete_function(query_spec, tf.TensorSpec(centers.shape, centers.dtype), k,
                                                        chunk_size=chunk_size)


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
        search = _exact_search_graph(queries, self._centers, k, self.chunk_size)
        all_distances, all_positions = [], []
        for start in range(0, queries.shape[0], self.query_batch_size):
            distances, positions = search(tf.constant(queries[start:start + self.query_batch_size]), self._centers)
            all_distances.append(distances.numpy())
            all_positions.append(positions.numpy())
        distances = np.concatenate(all_distances)
        positions = np.concatenate(all_positions)
        return distances, np.where(positions >= 0, self._ids[np.maximum(positions, 0)], -1)

    def get_config(self):
        return {"chunk_size": self.chunk_size, "query_batch_size": self.query_batch_size}
