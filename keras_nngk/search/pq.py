"""In-graph search over product-quantized centers by asymmetric distance computation (ADC).

The query stays float; each center is `M` one-byte codes into `M` codebooks of 256
sub-vectors, after an orthogonal rotation (OPQ). Per query, a table of the squared
distances from each rotated query sub-vector to every codebook entry is computed once
(`(B, M, 256)`); a center's distance is then the sum of `M` table lookups. Builtin
TFLite ops only (BATCH_MATMUL, GATHER, SUM, TOPK_V2).
"""

import numpy as np
import tensorflow as tf

from keras_nngk.search import exact


def pack_codes(codes, bits):
    """`(N, M)` codes as stored: unchanged for 8 bits; two 4-bit codes per byte, code `2j` in the low nibble."""
    codes = np.asarray(codes, dtype=np.uint8)
    if bits == 8:
        return codes
    if codes.shape[1] % 2 or codes.max(initial=0) > 15:
        raise ValueError(f"4-bit packing needs an even number of codes below 16. Received: codes.shape={codes.shape}")
    return (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8)


def unpack_codes(packed, bits):
    """The `(N, M)` int32 codes of `pack_codes` output (FLOOR_MOD / FLOOR_DIV: builtin TFLite ops)."""
    packed = tf.cast(packed, tf.int32)
    if bits == 8:
        return packed
    return tf.reshape(tf.stack([packed % 16, packed // 16], axis=-1), [tf.shape(packed)[0], -1])


def unfolded(constant, anchor):
    """`constant` read through a GATHER of its rows whose index depends on the tensor `anchor` (values unchanged).

    The TFLite converter folds every op whose inputs are all constants: casting
    the stored uint8 codes would be done at conversion time and saved as int32,
    4 times the bytes. Routing the read through `anchor` (the queries) keeps the
    uint8 codes in the file and the cast at run time. The output shape stays
    static (a dynamic-shaped SLICE here cost 0.5 ms per TFLite call); the index
    has one entry per row, so put the short axis first.
    """
    value = tf.reshape(anchor, [-1])[0]
    zero = tf.cast(tf.logical_and(value < 0, value > 0), tf.int32)  # Always 0 (NaN included), unknown to the converter.
    return tf.gather(constant, tf.range(constant.shape[0]) + zero)


def adc_tables(queries, rotation, codebooks):
    """`(B, M, K)` squared distances between rotated query sub-vectors and the codebook entries."""
    num_subquantizers, _, sub_dimension = codebooks.shape
    rotated = tf.matmul(queries, rotation, transpose_b=True) if rotation is not None else queries
    sub_vectors = tf.transpose(tf.reshape(rotated, [-1, num_subquantizers, sub_dimension]), [1, 0, 2])  # (M, B, s)
    products = tf.matmul(sub_vectors, codebooks, transpose_b=True)  # (M, B, K)
    query_norms = tf.reduce_sum(tf.square(sub_vectors), axis=-1, keepdims=True)
    code_norms = tf.reduce_sum(tf.square(codebooks), axis=-1)[:, tf.newaxis, :]
    return tf.transpose(tf.maximum(query_norms - 2.0 * products + code_norms, 0.0), [1, 0, 2])


def byte_tables(tables, bits=8):
    """`(B, P, 256)` distance contributions per code byte: the tables themselves for 8-bit codes; for 4-bit codes,
    entry `[b, j, high * 16 + low]` is `tables[b, 2j, low] + tables[b, 2j + 1, high]` (the two codes of byte `j`)."""
    if bits == 8:
        return tables
    low, high = tables[:, 0::2, :], tables[:, 1::2, :]
    pairs = high[:, :, :, tf.newaxis] + low[:, :, tf.newaxis, :]  # (B, M / 2, 16 high, 16 low)
    return tf.reshape(pairs, [-1, tables.shape[1] // 2, 256])


def adc_distances(tables, codes, bits=8, by_byte=False):
    """`(B, n)` approximate squared distances to the centers with packed `codes (n, P)` (see `pack_codes`).

    One lookup per code byte (a 4-bit pair counts once, through `byte_tables`),
    gathered per byte position with `batch_dims`, so no index arithmetic runs
    over the `n x P` codes: a cast and the gather. `by_byte=True` takes the codes
    transposed, `(P, n)`, as the gather reads them.
    """
    per_byte = tf.transpose(byte_tables(tables, bits), [1, 2, 0])  # (P, 256, B)
    positions = tf.cast(codes if by_byte else tf.transpose(codes), tf.int32)  # (P, n)
    gathered = tf.gather(per_byte, positions, axis=1, batch_dims=1)  # (P, n, B)
    return tf.transpose(tf.reduce_sum(gathered, axis=0))


def adc_search(queries, rotation, codebooks, codes, k, center_mask=None, chunk_size=exact.DEFAULT_CHUNK_SIZE,
               bits=8, by_byte=False, integer_ranking=False):
    """The `k` nearest compressed centers by ADC distance: `(distances, ids)` as `exact_search` returns them.

    `codes` are packed as `pack_codes(codes, bits)` stores them, `(n, P)`, or
    `(P, n)` with `by_byte=True`.
    """
    tables = adc_tables(queries, rotation, codebooks)
    centers_axis = 1 if by_byte else 0

    def distances(start, stop):
        chunk = codes[:, start:stop] if by_byte else codes[start:stop]
        return adc_distances(tables, chunk, bits, by_byte)

    return exact.chunked_top_k(distances, int(codes.shape[centers_axis]), k, tf.shape(queries)[0], center_mask,
                               chunk_size, queries.dtype, integer_ranking=integer_ranking)


def decode(codes, rotation, codebooks):
    """Reconstructed centers `(n, d)`: the selected codebook entries, concatenated, rotated back."""
    num_subquantizers = codebooks.shape[0]
    pieces = [tf.gather(codebooks[m], tf.cast(codes[:, m], tf.int32)) for m in range(num_subquantizers)]
    decoded = tf.concat(pieces, axis=1)
    return tf.matmul(decoded, rotation) if rotation is not None else decoded
