"""One contract for every search backend, against a NumPy argsort reference."""

import numpy as np
import pytest
import tensorflow as tf

import keras_nngk as kn
from keras_nngk import search
from tests import reference
from tests.conftest import clustered

# Settings that make the approximate indexes exact on these small sets, so ids can be compared one to one.
EXACT_SETTINGS = {
    "exact": "exact",
    "faiss-flat": "faiss-flat",
    "faiss-hnsw": {"class_name": "faiss", "config": {"factory": "HNSW32", "ef_search": 1000}},
    "faiss-ivf": {"class_name": "faiss", "config": {"factory": "IVF{nlist},Flat", "nprobe": 100000}},
    "faiss-opq-ivf-flat": {"class_name": "faiss", "config": {"factory": "OPQ8,IVF8,Flat", "nprobe": 8}},
}


@pytest.fixture(params=sorted(EXACT_SETTINGS))
def backend(request):
    return EXACT_SETTINGS[request.param]


@pytest.fixture
def data(rng):
    vectors, _ = clustered(rng, 1200, 16)
    queries, _ = clustered(np.random.default_rng(1), 40, 16)
    ids = rng.permutation(10_000)[:1200]
    return vectors, ids, queries


def check_against_reference(index, vectors, ids, queries, k):
    distances, found = index.search(queries, k)
    expected_distances, positions = reference.nearest_neighbours(queries, vectors, k)
    assert distances.shape == (len(queries), k) and found.shape == (len(queries), k)
    assert found.dtype == np.int64 and distances.dtype == np.float32
    np.testing.assert_array_equal(found, ids[positions])
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-4, atol=1e-3)


def test_search_matches_reference(backend, data):
    vectors, ids, queries = data
    index = search.get(backend)
    index.add(vectors, ids)
    check_against_reference(index, vectors, ids, queries, k=10)
    assert index.size == 1200 and index.dimension == 16


def test_add_after_search_and_remove(backend, data):
    vectors, ids, queries = data
    index = search.get(backend)
    index.add(vectors[:1000], ids[:1000])
    index.search(queries, 5)  # Builds the index; later changes must reach it.
    index.add(vectors[1000:], ids[1000:])
    check_against_reference(index, vectors, ids, queries, k=5)
    gone = ids[::3]
    assert index.remove(np.concatenate([gone, [10_000_001]])) == len(gone)
    keep = ~np.isin(ids, gone)
    check_against_reference(index, vectors[keep], ids[keep], queries, k=5)


def test_update_replaces_vectors_in_place(backend, data, rng):
    """`update` leaves what removing and re-adding the ids would: searched after a build, the index answers as
    the reference over the new vectors (an IVF index moves them between its lists)."""
    vectors, ids, queries = data
    index = search.get(backend)
    index.add(vectors, ids)
    index.search(queries, 5)  # Builds the index; the update must reach it.
    changed = rng.permutation(len(ids))[:200]
    moved = vectors.copy()
    moved[changed] = clustered(np.random.default_rng(2), 200, 16)[0]
    index.update(moved[changed], ids[changed])
    np.testing.assert_array_equal(index.vectors, moved)  # In place: the stored order is kept.
    np.testing.assert_array_equal(index.ids, ids)
    check_against_reference(index, moved, ids, queries, k=5)
    index.update(moved[:0], ids[:0])  # Nothing to replace.
    with pytest.raises(ValueError, match="replaces stored vectors only"):
        index.update(moved[:2], [ids[0], 10_000_001])
    with pytest.raises(ValueError, match="unique"):
        index.update(moved[:2], [ids[0], ids[0]])
    with pytest.raises(ValueError, match="same length"):
        index.update(moved[:2], ids[:3])
    index.remove(ids[:10])  # The id -> row map follows removals and additions.
    index.add(moved[:10], ids[:10])
    index.update(vectors[:10], ids[:10])
    expected = np.concatenate([moved[10:], vectors[:10]])
    check_against_reference(index, expected, np.concatenate([ids[10:], ids[:10]]), queries, k=5)


def test_ivf_updates_in_place_and_answers_as_a_rebuilt_index(rng):
    from keras_nngk.search.faiss_index import FaissIndex
    vectors, _ = clustered(rng, 3000, 16)
    queries, _ = clustered(np.random.default_rng(1), 50, 16)
    ids = np.arange(3000)
    index = FaissIndex("IVF{nlist},Flat", nprobe=4)
    assert index.updates_in_place and not FaissIndex("HNSW32").updates_in_place
    index.add(vectors, ids)
    index.search(queries, 10)
    built = index._index  # pylint: disable=protected-access
    changed = rng.permutation(3000)[:300]
    moved = vectors.copy()
    moved[changed] += 0.5 * rng.normal(size=(300, 16)).astype(np.float32)
    index.update(moved[changed], changed)
    updated = index.search(queries, 10)
    assert index._index is built and index.trainings == 1  # pylint: disable=protected-access
    index.reset()  # A rebuild over the same vectors with the same trained lists.
    index.add(moved, ids)
    rebuilt = index.search(queries, 10)
    np.testing.assert_array_equal(updated[1], rebuilt[1])
    np.testing.assert_array_equal(updated[0], rebuilt[0])


def test_save_and_load_round_trip(backend, data, tmp_path):
    vectors, ids, queries = data
    index = search.get(backend)
    index.add(vectors, ids)
    before = index.search(queries, 8)
    index.save(str(tmp_path / "index"))
    reloaded = search.load(str(tmp_path / "index"))
    assert type(reloaded) is type(index) and reloaded.get_config() == index.get_config()
    after = reloaded.search(queries, 8)
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_allclose(after[0], before[0], rtol=1e-6)
    check_against_reference(reloaded, vectors, ids, queries, k=8)
    # The reloaded object keeps working as an index.
    reloaded.remove(ids[:600])
    check_against_reference(reloaded, vectors[600:], ids[600:], queries, k=8)


def test_k_larger_than_size_pads(backend, rng):
    vectors = rng.normal(size=(300, 16)).astype(np.float32)  # OPQ trains 256 centroids: 256 points at least.
    index = search.get(backend)
    index.add(vectors, np.arange(100, 400))
    distances, ids = index.search(vectors[:2], 305)
    assert distances.shape == ids.shape == (2, 305)
    assert np.all(ids[:, 300:] == -1) and np.all(np.isinf(distances[:, 300:]))
    assert np.all(ids[:, :300] >= 100) and np.all(np.isfinite(distances[:, :300]))
    np.testing.assert_array_equal(ids[:, 0], [100, 101])


def test_index_too_small_to_train_is_a_one_line_error(rng):
    index = search.get(EXACT_SETTINGS["faiss-opq-ivf-flat"])
    index.add(rng.normal(size=(24, 16)).astype(np.float32), np.arange(24))
    with pytest.raises(ValueError, match="cannot be trained on 24 vectors .*256.*search='exact'"):
        index.search(rng.normal(size=(2, 16)).astype(np.float32), 3)


def test_duplicate_vectors_tie_and_every_backend_returns_a_valid_choice(backend, rng):
    """Exact duplicates give equal distances: any of them may be returned at the k-th place, but the distances,
    and every neighbour strictly nearer than the k-th, are fixed."""
    base = rng.normal(size=(300, 16)).astype(np.float32)
    vectors = np.concatenate([base, base[:150], base[:60]])  # Many points twice or three times.
    ids = np.arange(len(vectors)) + 7
    queries = base[rng.choice(300, 20, replace=False)] + 0.01 * rng.normal(size=(20, 16)).astype(np.float32)
    index = search.get(backend)
    index.add(vectors, ids)
    k = 9
    distances, found = index.search(queries, k)
    all_distances = reference.squared_distances(queries, vectors)
    expected = np.sort(all_distances, axis=1)[:, :k]
    np.testing.assert_allclose(distances, expected, rtol=1e-4, atol=1e-3)
    for row in range(len(queries)):
        positions = found[row] - 7
        assert len(set(positions.tolist())) == k
        np.testing.assert_allclose(all_distances[row, positions], expected[row], rtol=1e-4, atol=1e-3)
        nearer = np.flatnonzero(all_distances[row] < expected[row, -1] - 1e-3)
        assert set(nearer.tolist()) <= set(positions.tolist())


def test_bad_input_errors(backend, data):
    vectors, ids, queries = data
    index = search.get(backend)
    with pytest.raises(ValueError, match="empty"):
        index.search(queries, 3)
    with pytest.raises(ValueError, match="NaN"):
        index.add(np.full((2, 16), np.nan), [1, 2])
    index.add(vectors, ids)
    with pytest.raises(ValueError, match="dimension 16"):
        index.search(queries[:, :5], 3)
    with pytest.raises(ValueError, match="positive integer"):
        index.search(queries, 0)
    with pytest.raises(ValueError, match="unique"):
        index.add(vectors[:1], ids[:1])
    with pytest.raises(ValueError, match="NaN or Inf"):
        index.search(np.full((1, 16), np.inf), 3)


@pytest.mark.parametrize("name", ["faiss-hnsw", "faiss-ivf", "faiss:IVF16,PQ16np"])
def test_approximate_defaults_have_high_recall_on_clustered_data(name, rng):
    vectors, _ = clustered(rng, 4000, 32, num_clusters=40)
    queries, _ = clustered(np.random.default_rng(1), 100, 32, num_clusters=40)
    index = search.get(name)
    index.add(vectors)
    _, found = index.search(queries, 10)
    _, expected = reference.nearest_neighbours(queries, vectors, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, expected)])
    assert recall >= (0.5 if "PQ" in name else 0.9), recall  # PQ16np: no polysemous training (2 min on 2 cores)


def test_exact_search_chunks_and_mask_match_reference(rng):
    centers = rng.normal(size=(103, 6)).astype(np.float32)
    queries = rng.normal(size=(9, 6)).astype(np.float32)
    mask = rng.uniform(size=103) > 0.3
    for chunk_size in (7, 50, 103, 1000):
        distances, ids = search.exact_search(tf.constant(queries), tf.constant(centers), 12, tf.constant(mask),
                                             chunk_size=chunk_size)
        expected_distances, positions = reference.nearest_neighbours(queries, centers[mask], 12)
        np.testing.assert_array_equal(ids.numpy(), np.flatnonzero(mask)[positions])
        np.testing.assert_allclose(distances.numpy(), expected_distances, rtol=1e-5, atol=1e-5)


def test_exact_search_with_given_center_norms(rng):
    """Norms kept by the caller (a head's cache) give the search's own result bit for bit, in chunks and masked,
    and are what it ranks by (other norms, other neighbours)."""
    centers = rng.normal(size=(103, 6)).astype(np.float32)
    queries = rng.normal(size=(9, 6)).astype(np.float32)
    mask = tf.constant(rng.uniform(size=103) > 0.3)
    norms = tf.reduce_sum(tf.square(centers), axis=-1)
    for chunk_size in (7, 103):
        own = search.exact_search(tf.constant(queries), tf.constant(centers), 12, mask, chunk_size=chunk_size)
        given = search.exact_search(tf.constant(queries), tf.constant(centers), 12, mask, chunk_size=chunk_size,
                                    center_norms=norms)
        for got, expected in zip(given, own):
            np.testing.assert_array_equal(got.numpy(), expected.numpy())
    _, other_ids = search.exact_search(tf.constant(queries), tf.constant(centers), 12, mask,
                                       center_norms=tf.reverse(norms, [0]))
    assert not np.array_equal(other_ids.numpy(), own[1].numpy())


def test_exact_search_over_transposed_centers(rng):
    """A `(d, N)` copy kept by the caller (a head's training cache) gives the same neighbours, in chunks and masked,
    is what the product reads, and needs the norms with it."""
    centers = rng.normal(size=(103, 6)).astype(np.float32)
    queries = tf.constant(rng.normal(size=(9, 6)).astype(np.float32))
    mask = tf.constant(rng.uniform(size=103) > 0.3)
    norms = tf.reduce_sum(tf.square(centers), axis=-1)
    for chunk_size in (7, 103):
        own_distances, own_ids = search.exact_search(queries, tf.constant(centers), 12, mask, chunk_size=chunk_size)
        distances, ids = search.exact_search(queries, None, 12, mask, chunk_size=chunk_size, center_norms=norms,
                                             transposed_centers=tf.constant(centers.T))
        np.testing.assert_array_equal(ids.numpy(), own_ids.numpy())
        np.testing.assert_allclose(distances.numpy(), own_distances.numpy(), rtol=1e-6, atol=1e-6)
    shuffled = np.ascontiguousarray(centers.T[:, ::-1])  # Other vectors under the same norms: other neighbours.
    _, other_ids = search.exact_search(queries, None, 12, mask, center_norms=norms, transposed_centers=shuffled)
    assert not np.array_equal(other_ids.numpy(), own_ids.numpy())
    with pytest.raises(ValueError, match="center_norms"):
        search.exact_search(queries, None, 12, transposed_centers=tf.constant(centers.T))


def test_exact_index_traces_once_for_any_number_of_queries(rng):
    """One graph per center set and k: query batches of 7, 7, 6 and a later search of 3 reuse it, exactly."""
    from keras_nngk.search import exact  # pylint: disable=g-import-not-at-top
    centers = rng.normal(size=(50, 4)).astype(np.float32)
    queries = rng.normal(size=(20, 4)).astype(np.float32)
    index = search.ExactSearch(query_batch_size=7)
    index.add(centers, ids=np.arange(50) + 100)
    before = exact._compiled_exact_search.experimental_get_tracing_count()  # pylint: disable=protected-access
    distances, ids = index.search(queries, 5)
    _, fewer_ids = index.search(queries[:3], 5)
    assert exact._compiled_exact_search.experimental_get_tracing_count() == before + 1  # pylint: disable=protected-access
    expected_distances, positions = reference.nearest_neighbours(queries, centers, 5)
    np.testing.assert_array_equal(ids, positions + 100)
    np.testing.assert_array_equal(fewer_ids, ids[:3])
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-5, atol=1e-5)


def test_exact_search_more_neighbours_than_valid_centers(rng):
    centers = rng.normal(size=(5, 3)).astype(np.float32)
    mask = np.array([True, False, True, False, False])
    distances, ids = search.exact_search(tf.constant(centers[:2]), tf.constant(centers), 4, tf.constant(mask))
    np.testing.assert_array_equal(ids.numpy()[:, 2:], -1)
    assert np.all(np.isinf(distances.numpy()[:, 2:]))
    np.testing.assert_array_equal(ids.numpy()[0, 0], 0)


def test_registry_names_configs_and_errors():
    assert isinstance(search.get("exact"), search.ExactSearch)
    index = search.get("faiss-hnsw")
    clone = search.get(search.serialize(index))
    assert clone.get_config() == index.get_config() and clone is not index
    assert search.get(index) is index
    with pytest.raises(ValueError, match="faiss-flat"):
        search.get("annoy")
    with pytest.raises(ValueError, match="factory"):
        search.get("faiss:NotAnIndex99")
    with pytest.raises(ValueError, match="Unknown search class"):
        search.get({"class_name": "nope"})
    with pytest.raises(ValueError, match="No saved search index"):
        search.load("/nonexistent/index")


def test_corrupt_faiss_file_gets_clear_error(data, tmp_path):
    vectors, ids, _ = data
    index = search.get("faiss-flat")
    index.add(vectors, ids)
    index.save(str(tmp_path))
    (tmp_path / "faiss.index").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt"):
        search.load(str(tmp_path))


def assert_smallest_k(values, got_values, got_positions, k):
    """Tie-tolerant check of a k-smallest result, row by row (as faiss' own tests compare searches).

    The values must be the k smallest, ascending; the positions must be distinct and hold those values; every
    position whose value lies strictly below the row's k-th value must be returned (among equal values at the
    k-th place, any choice is right).
    """
    expected = np.sort(values, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(got_values, expected)
    for row in range(len(values)):
        positions = got_positions[row]
        assert len(set(positions.tolist())) == k, f"row {row}: repeated positions {positions}"
        np.testing.assert_array_equal(values[row, positions], got_values[row])
        below = np.flatnonzero(values[row] < expected[row, -1])
        assert set(below.tolist()) <= set(positions.tolist()), f"row {row}: misses {set(below) - set(positions)}"


@pytest.mark.parametrize("integer_ranking", [False, True], ids=["float-ranking", "integer-ranking"])
@pytest.mark.parametrize("width,k", [(100, 7), (8192, 33), (60000, 33), (20011, 5), (9000, 512)])
def test_block_pruned_smallest_k_is_exact(rng, width, k, integer_ranking):
    values = rng.normal(size=(16, width)).astype(np.float32)
    values[3, 50:] = np.inf  # A row with fewer finite entries than usual, and masked-out tails.
    values[4:8] = np.round(values[4:8], 1)  # Rows full of ties, also at the k-th place.
    values[8, :] = 1.0  # A row of equal values.
    got_values, got_positions = search.exact.smallest_k(tf.constant(values), k, integer_ranking=integer_ranking)
    assert_smallest_k(values, got_values.numpy(), got_positions.numpy(), k)


def test_assert_smallest_k_fails_on_a_wrong_answer():
    values = np.array([[3.0, 1.0, 2.0, 1.0]], np.float32)
    assert_smallest_k(values, np.array([[1.0, 1.0]]), np.array([[3, 1]]), 2)  # Either order of a tie is right.
    for wrong_positions in ([[1, 1]], [[1, 2]]):
        with pytest.raises(AssertionError):
            assert_smallest_k(values, np.array([[1.0, 1.0]]), np.array(wrong_positions), 2)


def test_block_size_divides_the_row_when_a_divisor_is_near():
    assert search.exact.block_size(60000, 33) == 40  # sqrt(60000 / 33) = 42.6; 40 and 48 divide 60,000.
    assert search.exact.block_size(60013, 33) == 43  # A prime: no divisor, the row gets padded.
    assert search.exact.block_size(8192, 512) == 8


def test_float_keys_reverse_the_order_of_floats():
    values = np.array([-np.inf, -3e38, -2.5, -1.0, -1e-30, -0.0, 0.0, 1e-45, 1e-30, 0.5, 1.0, 2.0, 3e38, np.inf],
                      np.float32)
    keys = search.exact.float_keys(tf.constant(values)).numpy()
    assert keys.dtype == np.int32
    assert np.all(np.diff(keys.astype(np.int64)) < 0)  # Strictly decreasing as the values increase.
    shuffled = np.random.default_rng(0).normal(size=1000).astype(np.float32) * 10.0 ** np.arange(-20, 20, 0.04)
    keys = search.exact.float_keys(tf.constant(shuffled)).numpy()
    np.testing.assert_array_equal(np.argsort(-keys.astype(np.int64), kind="stable"),
                                  np.argsort(shuffled, kind="stable"))


def test_exact_search_on_wide_center_sets_matches_reference(rng):
    centers = rng.normal(size=(30000, 8)).astype(np.float32)
    queries = rng.normal(size=(6, 8)).astype(np.float32)
    mask = rng.uniform(size=30000) > 0.2
    distances, ids = search.exact_search(tf.constant(queries), tf.constant(centers), 40, tf.constant(mask),
                                         chunk_size=20000)
    expected_distances, positions = reference.nearest_neighbours(queries, centers[mask], 40)
    np.testing.assert_array_equal(ids.numpy(), np.flatnonzero(mask)[positions])
    np.testing.assert_allclose(distances.numpy(), expected_distances, rtol=1e-4, atol=1e-4)


def test_auto_resolves_by_size_and_export_switches_to_exact(rng):
    assert kn.search.resolve("auto", 10_000, 64, faiss_available=True) == "exact"
    large = kn.search.AUTO_HNSW_MIN_SIZE // 64
    assert kn.search.resolve("auto", large, 64, faiss_available=True) == "faiss-hnsw"
    assert kn.search.resolve("auto", large, 64, faiss_available=False) == "exact"
    assert kn.search.resolve("faiss-flat", 10, 2) == "faiss-flat"
    layer = kn.layers.NNGKClassifier(3, num_neighbours=4, capacity=large)
    centers = rng.normal(size=(200, 64)).astype(np.float32)
    layer.assign_centers(centers, rng.integers(0, 3, 200))
    assert layer.search == "auto" and layer.active_search == "faiss-hnsw"
    queries = centers[:5] + 0.01
    probabilities = layer(queries).numpy()
    import tf_keras as keras
    model = keras.Sequential([keras.Input((64,)), layer])
    assert kn.export.use_exact_search(model) == [layer] and layer.active_search == "exact"
    np.testing.assert_allclose(layer(queries).numpy(), probabilities, atol=1e-5)  # HNSW is exact on 200 points.


@pytest.mark.parametrize("factory", ["IVF{nlist},Flat", "IVF16,PQ8np"])
def test_reused_quantizer_answers_as_a_freshly_trained_index_and_trains_once(factory, rng):
    """A center refresh resets the index and adds the new centers: the trained lists (and PQ codebooks) are kept,
    so the refreshed index returns what a freshly built one over the same vectors returns, without training."""
    from keras_nngk.search.faiss_index import FaissIndex
    vectors, _ = clustered(rng, 3000, 16)
    queries, _ = clustered(np.random.default_rng(1), 50, 16)
    ids = np.arange(3000)
    index = FaissIndex(factory, nprobe=4)
    index.add(vectors, ids)
    first = index.search(queries, 10)
    index.reset()
    index.add(vectors, ids)
    again = index.search(queries, 10)
    fresh = FaissIndex(factory, nprobe=4)
    fresh.add(vectors, ids)
    expected = fresh.search(queries, 10)
    assert index.trainings == 1 and fresh.trainings == 1
    for result in (first, again):
        np.testing.assert_array_equal(result[1], expected[1])
        np.testing.assert_array_equal(result[0], expected[0])
    # Moved centers (a refresh after training steps): the kept lists find the true neighbours as well as lists
    # trained on the moved centers.
    moved = vectors + 0.05 * rng.normal(size=vectors.shape).astype(np.float32)
    _, positions = reference.nearest_neighbours(queries, moved, 10)

    def recall(searched):
        return np.mean([len(set(row) & set(true)) / 10 for row, true in zip(searched.search(queries, 10)[1],
                                                                             positions)])

    index.reset()
    index.add(moved, ids)
    retrained = FaissIndex(factory, nprobe=4)
    retrained.add(moved, ids)
    assert recall(index) >= recall(retrained) - 0.03 and index.trainings == 1
    index.retrain()
    index.search(queries, 10)
    assert index.trainings == 2
    # Vectors that left the trained lists behind (a network early in training): the rebuild retrains by itself
    # (IVF), and answers as an index trained on them.
    shrunk = (0.1 * vectors + 3.0).astype(np.float32)
    index.reset()
    index.add(shrunk, ids)
    shrunk_result = index.search(queries, 10)
    trained_on_them = FaissIndex(factory, nprobe=4)
    trained_on_them.add(shrunk, ids)
    assert index.trainings == 3
    np.testing.assert_array_equal(shrunk_result[1], trained_on_them.search(queries, 10)[1])
    unkept = FaissIndex(factory, nprobe=4, reuse_training=False)
    unkept.add(vectors, ids)
    unkept.search(queries, 1)
    unkept.reset()
    unkept.add(vectors, ids)
    unkept.search(queries, 1)
    assert unkept.trainings == 2
