"""NNGKClassifier against the NumPy reference of eq. 7, plus leave-one-out, gradients, serialization and errors."""

import logging
import os
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import keras_nngk as kn
from tests import reference
from tests.processes import run_code

NUM_CLASSES = 4


@pytest.fixture
def problem(rng):
    centers = rng.normal(size=(60, 8)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, 60)
    queries = rng.normal(size=(15, 8)).astype(np.float32)
    return centers, labels, queries


@pytest.mark.parametrize("sigma", [3.0, 1.0, 0.3, 1e-2, 1e-4])
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_reference(problem, rng, sigma, weighted):
    centers, labels, queries = problem
    head = kn.layers.NNGKClassifier(NUM_CLASSES, num_neighbours=7, sigma=sigma, sample_weights=weighted)
    head.assign_centers(centers, labels)
    weights = None
    if weighted:
        weights = rng.uniform(0.2, 5.0, size=60)
        head.log_weights.assign(np.log(weights).astype(np.float32))
    got = head(queries).numpy()
    expected = reference.nngk_classifier(queries, centers, reference.one_hot(labels, NUM_CLASSES), 7, sigma, weights)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.sum(1), 1.0, rtol=1e-6)


def test_soft_labels_and_capacity_with_mask(problem, rng):
    centers, _, queries = problem
    soft = rng.dirichlet(np.ones(NUM_CLASSES), size=60).astype(np.float32)
    head = kn.layers.NNGKClassifier(NUM_CLASSES, num_neighbours=5, sigma=0.8, capacity=100)
    head.assign_centers(centers, soft)
    assert head.num_centers == 60 and head.centers.shape == (100, 8)
    expected = reference.nngk_classifier(queries, centers, soft, 5, 0.8)
    np.testing.assert_allclose(head(queries).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_leave_one_out(problem):
    centers, labels, _ = problem
    head = kn.layers.NNGKClassifier(NUM_CLASSES, num_neighbours=6, sigma=0.5)
    sample_ids = np.arange(100, 160)
    head.assign_centers(centers, labels, sample_ids=sample_ids)
    got = head([centers, sample_ids]).numpy()
    expected = reference.nngk_classifier(centers, centers, reference.one_hot(labels, NUM_CLASSES), 6, 0.5,
                                         query_sample_ids=sample_ids, center_sample_ids=sample_ids)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # Without ids, each center is its own nearest neighbour at distance 0; with id -1 nothing is left out.
    with_self = reference.nngk_classifier(centers, centers, reference.one_hot(labels, NUM_CLASSES), 6, 0.5)
    np.testing.assert_allclose(head(centers).numpy(), with_self, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(head([centers, -np.ones(60)]).numpy(), with_self, rtol=1e-5, atol=1e-6)
    assert not np.allclose(with_self, expected)


@pytest.mark.parametrize("writes", [False, True], ids=["embed-refresh", "training-writes"])
def test_a_call_reads_the_centers_once(problem, writes):
    # A variable touched by a sparse op (gather, scatter) is copied on every dense read ("copy-on-read mode"):
    # a call must read the centers once (search, norms and gather share the read), whatever refresh mode runs.
    centers, labels, queries = problem
    head = kn.layers.NNGKClassifier(NUM_CLASSES, num_neighbours=5)
    head.assign_centers(centers, labels)
    head.write_training_centers = writes
    head(queries[:2])
    head.centers.scatter_update(tf.IndexedSlices(centers[:1], [0]))  # Copy-on-read mode, as after training writes.

    def graph_of(training, jit_compile=False):
        call = tf.function(lambda embeddings, ids: head([embeddings, ids], training=training), jit_compile=jit_compile)
        return call.get_concrete_function(tf.TensorSpec([None, 8]), tf.TensorSpec([None], tf.int32)).graph

    for training in (True, False):
        graph = graph_of(training)
        captures = dict((id(outer), inner) for outer, inner in graph.captures)
        handle = captures[id(head.centers.handle)]
        dense_reads = [op for op in handle.consumers() if op.type == "ReadVariableOp"]
        # Training steps that write the centers search their transposed copy and gather rows of the centers: no
        # whole read of them at all; the copy is read once, its copy-on-read mode turned off first.
        cached = writes and training
        assert len(dense_reads) == (0 if cached else 1), [op.name for op in handle.consumers()]
        # The centers' norms and transposed copy come from the head's caches in those steps, only there.
        for cache in (head._norm_cache, head._transposed_cache):  # pylint: disable=protected-access
            assert (cache is not None and id(cache.handle) in captures) == cached
        if cached:
            consumers = captures[id(head._transposed_cache.handle)].consumers()  # pylint: disable=protected-access
            reads = [op for op in consumers if op.type == "ReadVariableOp"]
            assert len(reads) == 1 and "DisableCopyOnRead" in [op.type for op in consumers]
            assert any(op.type == "DisableCopyOnRead" for op in reads[0].control_inputs)
    # Nor in an XLA-compiled step: XLA's reductions differ from TensorFlow's kernels in the last bits.
    graph = graph_of(True, jit_compile=True)
    assert id(head._norm_cache.handle) not in {id(outer) for outer, _ in graph.captures}  # pylint: disable=protected-access
    # And the training pass still answers eq. 7 with the sample left out (the reference, sample ids 0..14).
    head.write_training_centers = False
    head.assign_centers(centers, labels)
    probabilities = head([queries, np.arange(15)], training=True).numpy()
    expected = reference.nngk_classifier(queries, centers, reference.one_hot(labels, NUM_CLASSES), 5,
                                         float(head.sigma.numpy()), query_sample_ids=np.arange(15),
                                         center_sample_ids=np.arange(60))
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)


def test_cached_norms_follow_every_change_of_the_centers(problem, rng):
    """While training writes are on, the norms the training search reads are the centers' after each change made
    outside the step (assignment, surgery, set_weights), also when the writes were turned on before the build."""
    centers, labels, queries = problem
    head = kn.layers.NNGKClassifier(NUM_CLASSES, num_neighbours=5, capacity=70)
    head.write_training_centers = True

    def check():
        expected = tf.reduce_sum(tf.square(head.centers), axis=-1).numpy()
        np.testing.assert_array_equal(head._norm_cache.numpy(), expected)  # pylint: disable=protected-access
        assert np.any(expected[:60] > 0)
        transposed = head._transposed_cache.numpy().reshape(8, 70)  # pylint: disable=protected-access
        np.testing.assert_array_equal(transposed, head.centers.numpy().T)

    head.assign_centers(centers, labels)
    check()
    head.move_centers([3, 4], rng.normal(size=(2, 8)))
    check()
    head.add_centers(rng.normal(size=(2, 8)), [0, 1], sample_ids=[100, 101])
    check()
    head.drop_centers([100, 5])
    check()
    weights = head.get_weights()
    weights[0] = rng.normal(size=weights[0].shape).astype(np.float32)
    head.set_weights(weights)
    check()
    head.centers.assign(rng.normal(size=(70, 8)))  # Outside the layer: the next rebuild_index catches up.
    head.rebuild_index()
    check()
    # A training call ranking by the cached norms answers as one that computes them.
    stored = head.centers.numpy()
    head.write_training_centers = False
    probabilities = head([stored[:15], np.arange(15)], training=True).numpy()
    head.write_training_centers = True
    np.testing.assert_array_equal(head([stored[:15], np.arange(15)], training=True).numpy(), probabilities)


def test_saved_model_while_training_writes_are_on(problem, tmp_path):
    """A SavedModel written mid-training (e.g. by a Keras ModelCheckpoint) traces the training call too: it must not
    capture the untracked norms cache (TensorFlow refuses to save such a function)."""
    centers, labels, queries = problem
    head = kn.layers.NNGKClassifier(NUM_CLASSES, num_neighbours=5, capacity=60)
    embeddings = keras.Input((8,), name="embeddings")
    sample_ids = keras.Input((), dtype="int32", name="sample_ids")
    model = keras.Model([embeddings, sample_ids], head([embeddings, sample_ids]))
    head.assign_centers(centers, labels)
    head.write_training_centers = True
    ids = np.arange(15, dtype=np.int32)
    expected = model([queries, ids], training=False).numpy()
    model.save(str(tmp_path / "saved"), save_format="tf")
    reloaded = tf.saved_model.load(str(tmp_path / "saved"))
    np.testing.assert_allclose(reloaded([queries, ids], training=False).numpy(), expected, atol=1e-6)


def test_sigma_rules_give_the_hand_computed_widths():
    """Points 0, 1, 3, 7 on a line: nearest other point at 1, 1, 2, 4 (median 1.5); the two nearest at (1, 3),
    (1, 2), (2, 3), (4, 6) (mean 2.75). A duplicate point is not its own neighbour (leave-one-out by sample id)."""
    head = kn.layers.NNGKClassifier(2, num_neighbours=2)
    head.assign_centers(np.array([[0, 0], [1, 0], [3, 0], [7, 0]], np.float32), [0, 1, 0, 1])
    assert head.sigma_from_centers("nearest") == pytest.approx(1.5, rel=1e-6)
    assert head.sigma_from_centers("nearest", scale=2.0) == pytest.approx(3.0, rel=1e-6)
    assert head.sigma_from_centers("neighbours") == pytest.approx(2.75, rel=1e-6)
    head.assign_centers(np.array([[0, 0], [0, 0], [2, 0]], np.float32), [0, 1, 0])
    with pytest.raises(ValueError, match="gives a kernel width of 0"):  # The median of 0, 0 and 2.
        head.sigma_from_centers("nearest")
    assert head.sigma_from_centers("neighbours") == pytest.approx((0 + 2 + 0 + 2 + 2 + 2) / 6, rel=1e-6)
    with pytest.raises(ValueError, match="Unknown sigma rule 'median'"):
        head.sigma_from_centers("median")
    head.assign_centers(np.zeros((1, 2), np.float32), [0])
    with pytest.raises(ValueError, match="needs at least two stored centers"):
        head.sigma_from_centers("nearest")


def test_leave_one_out_when_k_equals_capacity(rng):
    centers = rng.normal(size=(5, 3)).astype(np.float32)
    labels = np.array([0, 1, 1, 0, 1])
    head = kn.layers.NNGKClassifier(2, num_neighbours=5, sigma=1.0)
    head.assign_centers(centers, labels)
    expected = reference.nngk_classifier(centers, centers, reference.one_hot(labels, 2), 5, 1.0,
                                         query_sample_ids=np.arange(5), center_sample_ids=np.arange(5))
    np.testing.assert_allclose(head([centers, np.arange(5)]).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_more_neighbours_than_centers_uses_all_and_logs_once(problem, caplog):
    centers, labels, queries = problem
    head = kn.layers.NNGKClassifier(NUM_CLASSES, num_neighbours=500, sigma=2.0)
    with caplog.at_level(logging.WARNING):
        head.assign_centers(centers[:20], labels[:20])
        head.assign_centers(centers[:20], labels[:20])  # A refresh: no second message.
    assert sum("exceeds the 20 centers" in record.getMessage() for record in caplog.records) == 1
    expected = reference.nngk_classifier(queries, centers[:20], reference.one_hot(labels[:20], NUM_CLASSES), 20, 2.0)
    np.testing.assert_allclose(head(queries).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_gradients_match_finite_differences(problem, rng):
    centers, labels, queries = problem
    sigma = 0.9
    weights = rng.uniform(0.5, 2.0, size=60)
    head = kn.layers.NNGKClassifier(NUM_CLASSES, num_neighbours=6, sigma=sigma)
    head.assign_centers(centers, labels)
    head.log_weights.assign(np.log(weights).astype(np.float32))
    # Each query's true class is that of its second-nearest center: present among its neighbours, not always the
    # most likely, so the loss has a real gradient everywhere.
    query_labels = labels[reference.nearest_neighbours(queries, centers, 2)[1][:, 1]]
    one_hot = reference.one_hot(labels, NUM_CLASSES)
    z = tf.Variable(queries)
    with tf.GradientTape() as tape:
        probs = head(z)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(query_labels, probs))
    grad_z, grad_sigma, grad_w, grad_centers = tape.gradient(loss, [z, head.log_sigma, head.log_weights, head.centers])
    assert grad_centers is None  # Centers are stale copies: no gradient reaches them.

    def loss_of(q=queries, s=sigma, w=weights):
        return reference.cross_entropy(reference.nngk_classifier(q, centers, one_hot, 6, s, w), query_labels)

    eps = 1e-4
    numeric_z = np.zeros_like(queries, dtype=np.float64)
    for index in np.ndindex(*queries.shape):
        step = np.zeros(queries.shape)
        step[index] = eps
        numeric_z[index] = (loss_of(q=queries + step) - loss_of(q=queries - step)) / (2 * eps)
    np.testing.assert_allclose(grad_z.numpy(), numeric_z, rtol=2e-3, atol=2e-5)
    numeric_log_sigma = (loss_of(s=sigma * np.exp(eps)) - loss_of(s=sigma * np.exp(-eps))) / (2 * eps)
    np.testing.assert_allclose(float(grad_sigma), numeric_log_sigma, rtol=2e-3, atol=1e-6)
    dense_w = tf.convert_to_tensor(grad_w).numpy()
    for i in rng.choice(60, 6, replace=False):
        step = np.zeros(60)
        step[i] = eps
        numeric = (loss_of(w=weights * np.exp(step)) - loss_of(w=weights * np.exp(-step))) / (2 * eps)
        np.testing.assert_allclose(dense_w[i], numeric, rtol=2e-3, atol=1e-6)


def test_weight_counts():
    def counts(**kwargs):
        head = kn.layers.NNGKClassifier(3, capacity=10, **kwargs)
        head.build((None, 4))
        return len(head.trainable_weights), len(head.non_trainable_weights)

    assert counts() == (2, 4)
    assert counts(sample_weights=False) == (1, 4)
    assert counts(sample_weights=False, learn_sigma=False) == (0, 5)


def test_config_round_trip():
    head = kn.layers.NNGKClassifier(5, num_neighbours=9, sigma=0.7, learn_sigma=False, sample_weights=False,
                                    capacity=33, search="faiss-hnsw", chunk_size=128, name="head")
    clone = kn.layers.NNGKClassifier.from_config(head.get_config())
    assert clone.get_config() == head.get_config()
    index = kn.search.get("faiss:IVF4,Flat")
    with_instance = kn.layers.NNGKClassifier(5, search=index)
    assert with_instance.get_config()["search"] == {"class_name": "faiss", "config": index.get_config()}


def _model(head, dimension):
    inputs = keras.Input((dimension,))
    return keras.Model(inputs, head(inputs))


def test_keras_file_round_trip(problem, tmp_path):
    centers, labels, queries = problem
    head = kn.layers.NNGKClassifier(NUM_CLASSES, num_neighbours=7, sigma=0.6)
    head.assign_centers(centers, labels)
    head.log_weights.assign(np.linspace(-1, 1, 60).astype(np.float32))
    model = _model(head, 8)
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_array_equal(reloaded.predict(queries, verbose=0), model.predict(queries, verbose=0))
    np.testing.assert_array_equal(reloaded.layers[-1].centers.numpy(), head.centers.numpy())
    assert reloaded.layers[-1].num_centers == 60


@pytest.mark.slow
def test_saved_model_reloads_in_fresh_process(problem, tmp_path):
    centers, labels, queries = problem
    head = kn.layers.NNGKClassifier(NUM_CLASSES, num_neighbours=7, sigma=0.6)
    head.assign_centers(centers, labels)
    model = _model(head, 8)
    model.save(str(tmp_path / "saved"), save_format="tf")
    np.save(tmp_path / "queries.npy", queries)
    np.save(tmp_path / "expected.npy", model.predict(queries, verbose=0))
    script = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf
        loaded = tf.saved_model.load({str(tmp_path / "saved")!r})
        serve = loaded.signatures["serving_default"]
        queries = np.load({str(tmp_path / "queries.npy")!r})
        out = list(serve(tf.constant(queries)).values())[0].numpy()
        np.testing.assert_allclose(out, np.load({str(tmp_path / "expected.npy")!r}), rtol=0, atol=1e-6)
        print("PARITY-OK")
    """)
    # No keras_nngk import in the child: the SavedModel must stand alone.
    result = run_code(script, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert "PARITY-OK" in result.stdout, result.stderr[-3000:]


@pytest.mark.slow
def test_tflite_parity_with_builtin_ops(problem):
    centers, labels, queries = problem
    head = kn.layers.NNGKClassifier(NUM_CLASSES, num_neighbours=7, sigma=0.6)
    head.assign_centers(centers, labels)
    inputs = keras.Input((8,), batch_size=15)
    model = keras.Model(inputs, head(inputs))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    from ai_edge_litert import interpreter as litert  # pylint: disable=g-import-not-at-top
    interpreter = litert.Interpreter(model_content=converter.convert())
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], queries)
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(out, model.predict(queries, verbose=0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["faiss-flat", "faiss-hnsw"])
def test_faiss_search_in_layer_matches_exact(problem, name):
    centers, labels, queries = problem
    exact = kn.layers.NNGKClassifier(NUM_CLASSES, num_neighbours=7, sigma=0.6, capacity=70)
    through_faiss = kn.layers.NNGKClassifier(NUM_CLASSES, num_neighbours=7, sigma=0.6, capacity=70, search=name)
    for head in (exact, through_faiss):
        head.assign_centers(centers, labels, sample_ids=np.arange(60))
    np.testing.assert_allclose(through_faiss(queries).numpy(), exact(queries).numpy(), rtol=1e-6)
    # Graph mode (model.predict) and leave-one-out go through tf.py_function too.
    ids = keras.Input((), dtype="int32")
    inputs = keras.Input((8,))
    graph_model = keras.Model([inputs, ids], through_faiss([inputs, ids]))
    np.testing.assert_allclose(graph_model.predict([centers, np.arange(60)], verbose=0),
                               exact([centers, np.arange(60)]).numpy(), rtol=1e-5, atol=1e-6)
    # Switching to the exportable search gives the same answers.
    through_faiss.set_search("exact")
    np.testing.assert_allclose(through_faiss(queries).numpy(), exact(queries).numpy(), rtol=1e-6)


def test_faiss_index_follows_centers_replaced_by_set_weights_load_weights_and_restore(problem, rng, tmp_path):
    """`model.set_weights`, `model.load_weights` and a checkpoint's restore replace the centers without the layer
    knowing; the next faiss search notices and answers from the restored centers, as the exact search does."""
    centers, labels, queries = problem
    head = kn.layers.NNGKClassifier(NUM_CLASSES, num_neighbours=7, sigma=0.6, capacity=70, search="faiss-flat")
    inputs = keras.Input((8,))
    model = keras.Model(inputs, head(inputs))
    head.assign_centers(centers, labels)
    saved = model.get_weights()
    checkpoint = tf.train.Checkpoint(model=model)
    path = checkpoint.save(str(tmp_path / "ckpt"))
    model.save_weights(str(tmp_path / "weights"))
    expected = reference.nngk_classifier(queries, centers, reference.one_hot(labels, NUM_CLASSES), 7, 0.6)
    np.testing.assert_allclose(model.predict(queries, verbose=0), expected, rtol=1e-5, atol=1e-6)
    for restore in (lambda: model.set_weights(saved), lambda: checkpoint.restore(path).assert_consumed(),
                    lambda: model.load_weights(str(tmp_path / "weights"))):
        other = rng.normal(size=centers.shape).astype(np.float32)
        head.assign_centers(other, labels[::-1])  # The index now holds these...
        restore()  # ...and the variables the first centers again.
        np.testing.assert_allclose(model.predict(queries, verbose=0), expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(head(queries).numpy(), expected, rtol=1e-5, atol=1e-6)
    # Centers moved between slots (the same rows, another mask) are noticed too.
    head.assign_centers(centers, labels)
    moved = model.get_weights()
    order = rng.permutation(70)
    per_slot = ("centers", "center_labels", "center_mask", "center_sample_ids", "log_weights")
    for index, weight in enumerate(model.weights):
        if weight.name.split("/")[-1].split(":")[0] in per_slot:
            moved[index] = moved[index][order]
    model.set_weights(moved)
    np.testing.assert_allclose(head(queries).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_bad_input_errors(problem):
    centers, labels, queries = problem
    with pytest.raises(ValueError, match="num_neighbours=0"):
        kn.layers.NNGKClassifier(3, num_neighbours=0)
    with pytest.raises(ValueError, match="sigma=-1"):
        kn.layers.NNGKClassifier(3, sigma=-1.0)
    with pytest.raises(ValueError, match="Unknown search 'kdtree'"):
        kn.layers.NNGKClassifier(3, search="kdtree")
    with pytest.raises(ValueError, match="assign_centers"):
        kn.layers.NNGKClassifier(3)(queries)
    with pytest.raises(ValueError, match="no centers"):
        kn.layers.NNGKClassifier(3, capacity=10)(queries)
    head = kn.layers.NNGKClassifier(NUM_CLASSES)
    with pytest.raises(ValueError, match="same length"):
        head.assign_centers(centers, labels[:10])
    with pytest.raises(ValueError, match=r"\[0, num_classes=4\)"):
        head.assign_centers(centers, labels + 1)
    with pytest.raises(ValueError, match="NaN or Inf"):
        head.assign_centers(np.where(centers > 2, np.nan, centers), labels)
    with pytest.raises(ValueError, match="sum to 1"):
        head.assign_centers(centers, np.full((60, NUM_CLASSES), 0.5))
    head.assign_centers(centers, labels)
    with pytest.raises(ValueError, match=r"shape \(batch, 8\)"):
        head(queries[:, :5])
    with pytest.raises(ValueError, match="NaN or Inf"):
        head(np.where(queries > 1, np.inf, queries).astype(np.float32))
    with pytest.raises(ValueError, match="capacity 60"):
        head.assign_centers(np.concatenate([centers, centers]), np.concatenate([labels, labels]))


def test_lookup_returns_the_nearest_centers_with_their_labels(problem):
    centers, labels, queries = problem
    head = kn.layers.NNGKClassifier(NUM_CLASSES, num_neighbours=7)
    sample_ids = np.arange(500, 560)
    head.assign_centers(centers, labels, sample_ids=sample_ids)
    found = head.lookup(queries)  # k defaults to num_neighbours.
    distances, order = reference.nearest_neighbours(queries, centers, 7)
    np.testing.assert_array_equal(found.sample_ids, sample_ids[order])
    np.testing.assert_array_equal(found.labels, labels[order])
    np.testing.assert_allclose(found.distances, distances, rtol=1e-5, atol=1e-5)
    padded = head.lookup(queries[:2], k=65)  # More than the 60 centers: padded like faiss.
    assert padded.sample_ids.shape == (2, 65) and np.all(padded.sample_ids[:, 60:] == -1)
    assert np.all(padded.labels[:, 60:] == -1) and np.all(np.isinf(padded.distances[:, 60:]))
    with pytest.raises(ValueError, match="`k` must be a positive integer"):
        head.lookup(queries, k=0)


def test_auxiliary_softmax_adds_the_weighted_cross_entropy_of_a_dense_classifier(rng):
    """loss = CE(kernel head) + w * CE(softmax(W z + b)) against NumPy; the inference model is the kernel alone."""
    backbone = kn.backbones.get("small_conv", input_shape=(8, 8, 1), embedding_dim=8)
    built = kn.models.nngk_classifier(backbone, 4, capacity=12, num_neighbours=11, sigma=5.0, auxiliary_softmax=0.5)
    images = rng.random((12, 8, 8, 1)).astype(np.float32)
    labels = np.arange(12) % 4
    embeddings = backbone.predict(images, verbose=0)
    built.center_head.assign_centers(embeddings, labels)
    inputs = {"image": images, "sample_id": np.arange(12, dtype=np.int32)}
    stacked = built.train_model(inputs).numpy()
    assert stacked.shape == (12, 2, 4) and built.inference_model.output_shape == (None, 4)
    np.testing.assert_allclose(stacked[:, 0], built.center_head([embeddings, inputs["sample_id"]]).numpy(),
                               rtol=1e-5, atol=1e-6)
    kernel, bias = built.train_model.get_layer("auxiliary_head").get_weights()
    logits = embeddings.astype(np.float64) @ kernel + bias
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    softmax /= softmax.sum(1, keepdims=True)
    np.testing.assert_allclose(stacked[:, 1], softmax, rtol=1e-4, atol=1e-6)
    expected = reference.cross_entropy(stacked[:, 0], labels) + 0.5 * reference.cross_entropy(softmax, labels)
    built.train_model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    np.testing.assert_allclose(float(built.train_model.compute_loss(inputs, labels, stacked)), expected, rtol=1e-4)
    assert set(built.train_model.train_on_batch(inputs, labels, return_dict=True)) == {"loss", "accuracy"}
    assert "auxiliary_head" not in [layer.name for layer in built.inference_model.layers]
    with pytest.raises(ValueError, match="beside an nngk or impostor head"):
        kn.models.nngk_classifier(backbone, 4, head="dense", auxiliary_softmax=0.5)
    with pytest.raises(ValueError, match="--auxiliary_softmax trains a softmax term beside an nngk or impostor"):
        kn.training.Config.for_dataset("digits", head="dense", auxiliary_softmax=1.0)
