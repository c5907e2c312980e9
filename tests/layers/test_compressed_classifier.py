"""OPQ-compressed centers: ADC against a NumPy decode-then-distance reference, faiss parity, exports, errors."""

import os
import textwrap

import faiss
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import keras_nngk as kn
from keras_nngk.search import faiss_index, pq
from tests import reference
from tests.conftest import clustered
from tests.processes import run_code


@pytest.mark.parametrize("bits,num_subquantizers", [(8, 4), (4, 8)])
def test_adc_distances_match_decode_then_distance(rng, bits, num_subquantizers):
    dimension = 3 * num_subquantizers
    rotation, _ = np.linalg.qr(rng.normal(size=(dimension, dimension)))
    codebooks = rng.normal(size=(num_subquantizers, 2 ** bits, 3)).astype(np.float32)
    codes = rng.integers(0, 2 ** bits, size=(40, num_subquantizers)).astype(np.uint8)
    packed = pq.pack_codes(codes, bits)
    queries = rng.normal(size=(7, dimension)).astype(np.float32)
    tables = pq.adc_tables(tf.constant(queries), tf.constant(rotation, tf.float32), tf.constant(codebooks))
    expected = reference.adc_distances(queries, codes, rotation, codebooks)
    got = pq.adc_distances(tables, tf.constant(packed), bits).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    got_by_byte = pq.adc_distances(tables, tf.constant(packed.T), bits, by_byte=True).numpy()
    np.testing.assert_allclose(got_by_byte, expected, rtol=1e-4, atol=1e-4)
    expected_distances, expected_ids = reference.nearest_neighbours(
        queries, reference.pq_decode(codes, rotation, codebooks), 5)
    for layout, by_byte in ((packed, False), (packed.T, True)):
        distances, ids = pq.adc_search(tf.constant(queries), tf.constant(rotation, tf.float32),
                                       tf.constant(codebooks), tf.constant(layout), 5, chunk_size=16, bits=bits,
                                       by_byte=by_byte)
        np.testing.assert_array_equal(ids.numpy(), expected_ids)
        np.testing.assert_allclose(distances.numpy(), expected_distances, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(pq.decode(pq.unpack_codes(packed, bits), rotation.astype(np.float32), codebooks).numpy(),
                               reference.pq_decode(codes, rotation, codebooks), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_opq_codes_and_error_against_faiss_product_quantizer(rng):
    vectors, _ = clustered(rng, 3000, 32, num_clusters=30)
    rotation, codebooks, codes = faiss_index.train_opq(vectors, 8)
    assert codes.shape == (3000, 8) and codes.dtype == np.uint8
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(32), atol=1e-4)
    ours = np.mean(((vectors - reference.pq_decode(codes, rotation, codebooks)) ** 2).sum(1))
    plain = faiss.ProductQuantizer(32, 8, 8)
    plain.train(vectors)
    faiss_error = np.mean(((vectors - plain.decode(plain.compute_codes(vectors))) ** 2).sum(1))
    assert ours <= 1.05 * faiss_error, (ours, faiss_error)  # The rotation can only help (up to k-means noise).
    # Our codes are faiss's: re-encoding the rotated vectors with the learned codebooks gives the nearest entries.
    rotated = (vectors @ rotation.T).reshape(3000, 8, 4)
    nearest = np.argmin(((rotated[:, :, None, :] - codebooks[None]) ** 2).sum(-1), axis=-1)
    assert np.mean(nearest == codes) > 0.999


@pytest.fixture
def trained_head(rng):
    centers, clusters = clustered(rng, 600, 16, num_clusters=12, spread=0.4)
    head = kn.layers.NNGKClassifier(4, num_neighbours=8, sigma=0.8)
    head.assign_centers(centers, clusters % 4)
    head.log_weights.assign(rng.uniform(-0.5, 0.5, 600).astype(np.float32))
    return head, centers, clusters % 4


def test_compressed_head_matches_reference_on_decoded_centers(trained_head, rng):
    head, centers, labels = trained_head
    compressed = kn.layers.compress(head, pq_bytes=8)
    queries, _ = clustered(np.random.default_rng(3), 30, 16, num_clusters=12, spread=0.4)
    decoded = compressed.reconstructed_centers().numpy()
    expected = reference.nngk_classifier(queries, decoded, reference.one_hot(labels, 4), 8, 0.8,
                                         np.exp(head.log_weights.numpy()))
    np.testing.assert_allclose(compressed(queries).numpy(), expected, rtol=1e-3, atol=1e-4)
    agreement = np.mean(compressed(queries).numpy().argmax(1) == head(queries).numpy().argmax(1))
    assert agreement >= 0.9
    report = compressed.memory_report()
    assert report["codes_bytes"] == 600 * 8 and report["float_centers_bytes"] == 600 * 16 * 4
    assert report["codebooks_bytes"] == 8 * 256 * 2 * 4 and report["rotation_bytes"] == 16 * 16 * 4


def test_memory_report_at_the_papers_reference_point():
    # Review, section 3.3: 5,994 CUB training centers of dimension 512 at 16 bytes each: 95,904 bytes of codes.
    layer = kn.layers.CompressedClassifier(200, 32, embedding_dim=512, pq_bytes=16, capacity=5994)
    layer.build(tf.TensorShape((None, 512)))
    layer.center_mask.assign(np.ones(5994, dtype=bool))
    report = layer.memory_report()
    assert report["codes_bytes"] == 95_904 and report["pq_codes_weight_bytes"] == 95_904
    assert report["float_centers_bytes"] == 5994 * 512 * 4
    assert report["codebooks_bytes"] == 16 * 256 * 32 * 4 and report["rotation_bytes"] == 512 * 512 * 4


def test_four_bit_codes_pack_two_per_byte_and_unpack(rng):
    codes = rng.integers(0, 16, size=(50, 8)).astype(np.uint8)
    packed = pq.pack_codes(codes, 4)
    assert packed.shape == (50, 4) and packed.dtype == np.uint8
    np.testing.assert_array_equal(packed[:, 1], codes[:, 2] | (codes[:, 3] << 4))
    np.testing.assert_array_equal(pq.unpack_codes(tf.constant(packed), 4).numpy(), codes)
    np.testing.assert_array_equal(pq.unpack_codes(tf.constant(codes), 8).numpy(), codes)
    with pytest.raises(ValueError, match="4-bit packing"):
        pq.pack_codes(codes + 16, 4)


def test_four_bit_plain_pq_head_matches_reference_and_stores_class_ids(trained_head, rng):
    head, centers, labels = trained_head
    compressed = kn.layers.compress(head, pq_bytes=4, bits=4, rotation=False)
    assert compressed.rotation is None and compressed.pq_codebooks.shape == (8, 16, 2)
    assert compressed.pq_codes.shape == (600, 4) and compressed.center_labels.dtype == tf.uint8
    np.testing.assert_array_equal(compressed.center_labels.numpy(), labels)
    codes = compressed.codes().numpy()
    codebooks = compressed.pq_codebooks.numpy()
    decoded = reference.pq_decode(codes, np.eye(16), codebooks)
    np.testing.assert_allclose(compressed.reconstructed_centers().numpy(), decoded, atol=1e-6)
    # Each code is the nearest of its codebook's 16 entries to the center's sub-vector.
    pieces = centers.reshape(600, 8, 2)
    nearest = np.argmin(((pieces[:, :, None, :] - codebooks[None]) ** 2).sum(-1), axis=-1)
    assert np.mean(nearest == codes) > 0.999
    queries, _ = clustered(np.random.default_rng(3), 30, 16, num_clusters=12, spread=0.4)
    expected = reference.nngk_classifier(queries, decoded, reference.one_hot(labels, 4), 8, 0.8,
                                         np.exp(head.log_weights.numpy()))
    np.testing.assert_allclose(compressed(queries).numpy(), expected, rtol=1e-3, atol=1e-4)
    report = compressed.memory_report()
    assert report["rotation_bytes"] == 0 and report["labels_bytes"] == 600 and report["codes_bytes"] == 600 * 4


def test_tflite_file_keeps_the_codes_at_their_stored_size(rng, tmp_path):
    # The converter folds ops on constants: casting or unpacking the uint8 codes at conversion time would store
    # them as int32 (6,000 x 32 x 4 bytes here, 8 times the packed codes).
    centers = rng.normal(size=(6000, 64)).astype(np.float32)
    head = kn.layers.NNGKClassifier(10, num_neighbours=8, capacity=6000)
    head.assign_centers(centers, rng.integers(0, 10, 6000))
    compressed = kn.layers.compress(head, pq_bytes=16, bits=4, rotation=False)
    inputs = keras.Input((64,))
    path = kn.export.to_tflite(keras.Model(inputs, compressed(inputs)), str(tmp_path / "pq.tflite"))
    report = compressed.memory_report()
    stored = (report["codes_bytes"] + report["codebooks_bytes"] + report["labels_bytes"]
              + 6000 * 4 + 6000)  # log-weights and mask
    assert stored < os.path.getsize(path) < stored + 20_000, (os.path.getsize(path), stored)
    queries = rng.normal(size=(20, 64)).astype(np.float32)
    np.testing.assert_allclose(kn.export.TFLiteModel(path).predict(queries), compressed(queries).numpy(), atol=1e-5)


@pytest.mark.slow
def test_compressed_round_trips_keras_saved_model_tflite(trained_head, tmp_path, rng):
    head, _, _ = trained_head
    compressed = kn.layers.compress(head, pq_bytes=4)
    inputs = keras.Input((16,), batch_size=5)
    model = keras.Model(inputs, compressed(inputs))
    queries = rng.normal(size=(5, 16)).astype(np.float32)
    expected = model.predict(queries, verbose=0)
    model.save(str(tmp_path / "pq.keras"))
    reloaded = keras.models.load_model(str(tmp_path / "pq.keras"))
    np.testing.assert_array_equal(reloaded.predict(queries, verbose=0), expected)
    assert reloaded.layers[-1].pq_codes.dtype == tf.uint8
    path = kn.export.to_tflite(model, str(tmp_path / "pq.tflite"))
    np.testing.assert_allclose(kn.export.TFLiteModel(path).predict(queries), expected, atol=1e-5)
    kn.export.to_saved_model(model, str(tmp_path / "saved"))
    np.save(tmp_path / "q.npy", queries)
    np.save(tmp_path / "e.npy", expected)
    script = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf
        serve = tf.saved_model.load({str(tmp_path / "saved")!r}).signatures["serving_default"]
        out = list(serve(tf.constant(np.load({str(tmp_path / "q.npy")!r}))).values())[0].numpy()
        print(float(np.abs(out - np.load({str(tmp_path / "e.npy")!r})).max()))
    """)
    result = run_code(script, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert float(result.stdout.strip().splitlines()[-1]) < 1e-5


def test_bad_input(trained_head, rng):
    head, centers, labels = trained_head
    with pytest.raises(ValueError, match=r"must divide the embedding dimension 16; valid: \[1, 2, 4, 8, 16\]"):
        kn.layers.compress(head, pq_bytes=6)
    small = kn.layers.NNGKClassifier(4)
    small.assign_centers(centers[:100], labels[:100])
    with pytest.raises(ValueError, match="at least 256 centers; got 100"):
        kn.layers.compress(small, pq_bytes=8)
    with pytest.raises(ValueError, match="needs a built NNGK or impostor head"):
        kn.layers.compress(kn.layers.NNGKClassifier(4), pq_bytes=8)
    with pytest.raises(ValueError, match=r"must divide embedding_dim=16 into sub-vectors \(bits=8\); valid: \[1, 2,"):
        kn.layers.CompressedClassifier(4, 8, embedding_dim=16, pq_bytes=5, capacity=10)
    with pytest.raises(ValueError, match="`bits` must be 4 or 8"):
        kn.layers.compress(head, pq_bytes=8, bits=2)
