"""CenterRefresh inside plain model.fit, with leave-one-out through a sample-id input."""

import types

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import keras_nngk as kn
from tests.conftest import clustered


def _setup(rng, search="exact", num_points=240):
    x, clusters = clustered(rng, num_points, 10, num_clusters=6, spread=0.6)
    y = clusters % 3
    backbone = keras.Sequential([keras.Input((10,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(4)])
    head = kn.layers.NNGKClassifier(3, num_neighbours=8, sigma=1.0, capacity=num_points, search=search)
    image = keras.Input((10,), name="image")
    sample_id = keras.Input((), dtype="int32", name="sample_id")
    train_model = keras.Model([image, sample_id], head([backbone(image), sample_id]))
    train_model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", metrics=["accuracy"],
                        jit_compile=False)
    return x, y, backbone, head, train_model


@pytest.mark.parametrize("search", ["exact", "faiss-flat"])
def test_fit_refreshes_centers_and_learns(rng, search):
    x, y, backbone, head, train_model = _setup(rng, search)
    ids = np.arange(len(x))
    refresh = kn.callbacks.CenterRefresh(head, backbone, x, y, every_n_epochs=1, verbose=0)
    history = train_model.fit([x, ids], y, epochs=4, batch_size=32, callbacks=[refresh], verbose=0)
    assert refresh.refresh_count == 1 + 4  # At the start, then after every epoch (the end needs none).
    np.testing.assert_allclose(head.centers.numpy(), backbone.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    assert history.history["loss"][-1] < history.history["loss"][0]
    # Per-center weights learned during training survive the refreshes.
    assert np.abs(head.log_weights.numpy()).max() > 0
    inference = keras.Model(backbone.input, head(backbone.output))
    leave_one_out = head([backbone.predict(x, verbose=0), ids]).numpy().argmax(1)
    assert np.mean(leave_one_out == y) > 0.9
    assert inference.predict(x[:5], verbose=0).shape == (5, 3)


def test_refresh_interval_and_final_refresh(rng):
    x, y, backbone, head, train_model = _setup(rng)
    refresh = kn.callbacks.CenterRefresh(head, backbone, x, y, every_n_epochs=2, verbose=0)
    train_model.fit([x, np.arange(len(x))], y, epochs=3, batch_size=64, callbacks=[refresh], verbose=0)
    assert refresh.refresh_count == 3  # Start, after epoch 2, and at the end since epoch 3 did not refresh.
    np.testing.assert_allclose(head.centers.numpy(), backbone.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="every_n_epochs=0"):
        kn.callbacks.CenterRefresh(head, backbone, x, y, every_n_epochs=0)


def test_models_built_from_a_head_layer_train_with_leave_one_out_and_a_plain_model_is_warned(rng, caplog):
    x, y, backbone, _, _ = _setup(rng)
    head = kn.layers.NNGKClassifier(3, num_neighbours=8, capacity=len(x))
    built = kn.models.nngk_classifier(backbone, 3, head=head)
    assert built.center_head is head and set(built.train_model.input) == {"image", "sample_id"}
    built.train_model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", jit_compile=False)
    refresh = kn.callbacks.CenterRefresh(head, backbone, x, y, verbose=0)
    with caplog.at_level("WARNING"):
        built.train_model.fit({"image": x, "sample_id": np.arange(len(x))}, y, epochs=1, batch_size=64,
                              callbacks=[refresh], verbose=0)
    assert not any("no leave-one-out" in record.getMessage() for record in caplog.records)
    plain = keras.Sequential([backbone, head])  # No sample ids reach the head.
    plain.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", jit_compile=False)
    with caplog.at_level("WARNING"):
        plain.fit(x, y, epochs=1, batch_size=64, callbacks=[refresh], verbose=0)
    assert any("no leave-one-out" in record.getMessage() for record in caplog.records)


@pytest.mark.slow  # Two short runs per loop (about 15 s each).
@pytest.mark.parametrize("loop", ["fit", "custom"])
def test_held_out_metrics_per_epoch_in_history_and_tensorboard(tmp_path, loop):
    """The last epoch's held-out accuracy is the run's test accuracy (centers refreshed after it, nothing changes
    at the end); the loss is the cross-entropy of the saved model's probabilities; TensorBoard gets validation
    curves from both loops."""
    import glob
    import json
    import os

    from tests import reference
    config = kn.training.Config.for_dataset("digits", epochs=2, loop=loop)
    results = kn.training.fit(config, str(tmp_path), verbose=0)
    history = json.load(open(tmp_path / "history.json"))["epochs"]
    assert [entry["epoch"] for entry in history] == [0, 1]
    assert all({"val_accuracy", "val_loss"} <= set(entry) for entry in history)
    assert history[-1]["val_accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-12)
    data = kn.data.load("digits")
    images = np.stack([image for image, _ in data.test.as_numpy_iterator()])
    labels = np.array([label for _, label in data.test.as_numpy_iterator()])
    model = kn.utils.load_model(str(tmp_path / "model.keras"))
    probabilities = np.clip(model.predict(images, verbose=0), 1e-7, 1.0)
    assert history[-1]["val_loss"] == pytest.approx(reference.cross_entropy(probabilities, labels), rel=1e-4)
    assert glob.glob(os.path.join(tmp_path, "logs", "validation", "events.out.tfevents.*"))
    quiet = kn.training.Config.for_dataset("digits", epochs=1, eval_every=0)
    kn.training.fit(quiet, str(tmp_path / "quiet"), verbose=0)
    assert "val_accuracy" not in json.load(open(tmp_path / "quiet" / "history.json"))["epochs"][0]
    with pytest.raises(ValueError, match="`eval_every` must be 0"):
        kn.training.Config.for_dataset("digits", eval_every=-1).validate()


def _batchnorm_setup(rng, num_points=96):
    """A backbone with BatchNorm (training-mode outputs differ from inference-mode ones) under an NNGK head."""
    x, clusters = clustered(rng, num_points, 10, num_clusters=6, spread=0.6)
    y = clusters % 3
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential([keras.Input((10,)), keras.layers.Dense(16), keras.layers.BatchNormalization(),
                                 keras.layers.ReLU(), keras.layers.Dense(4)])
    head = kn.layers.NNGKClassifier(3, num_neighbours=8, capacity=num_points, search="exact")
    built = kn.models.nngk_classifier(backbone, 3, head=head)
    return x, y, backbone, head, built.train_model


def test_training_pass_writes_equal_a_fresh_embedding_of_the_batch_under_the_same_network(rng):
    x, y, backbone, head, train_model = _batchnorm_setup(rng)
    stale = rng.normal(size=(len(x), 4)).astype(np.float32)
    head.assign_centers(stale, y)
    batch = np.array([5, 17, 3, 60, 41])
    head.write_training_centers = True
    train_model({"image": x[batch], "sample_id": batch}, training=False)  # Inference calls write nothing.
    np.testing.assert_array_equal(head.centers.numpy(), stale)
    train_model({"image": x[batch], "sample_id": batch}, training=True)
    written = head.centers.numpy()
    # The same batch, same weights, training mode (batch statistics): bit for bit what the step computed.
    np.testing.assert_array_equal(written[batch], backbone(x[batch], training=True).numpy())
    untouched = np.setdiff1d(np.arange(len(x)), batch)
    np.testing.assert_array_equal(written[untouched], stale[untouched])
    assert not np.allclose(written[batch], backbone(x[batch], training=False).numpy(), atol=1e-3)

    # Slots that do not hold the batch's samples (centers stored in another order, ids -1, ids out of range) are
    # left alone, also when no row of the batch has a center of its own.
    head.assign_centers(stale, y, sample_ids=np.roll(np.arange(len(x)), 1))
    train_model({"image": x[batch], "sample_id": batch}, training=True)
    np.testing.assert_array_equal(head.centers.numpy(), stale)
    head.assign_centers(stale, y)
    mixed = np.array([7, -1, 500, 7])  # Sample 7 twice (both rows write the same value), two ids without a slot.
    train_model({"image": x[mixed % len(x)], "sample_id": mixed}, training=True)
    np.testing.assert_array_equal(head.centers.numpy()[7], backbone(x[mixed % len(x)], training=True).numpy()[0])
    np.testing.assert_array_equal(np.delete(head.centers.numpy(), 7, axis=0), np.delete(stale, 7, axis=0))
    before = head.centers.numpy()
    head.write_training_centers = False
    train_model({"image": x[batch], "sample_id": batch}, training=True)
    np.testing.assert_array_equal(head.centers.numpy(), before)


def test_training_writes_reach_an_ivf_index_before_its_next_search(rng):
    """A faiss IVF index follows the training writes: the next search finds it holding the written centers (the
    last row of a slot written twice), answering as an index rebuilt over them; one that cannot update in place
    (HNSW) is left to the epoch's end."""
    x, clusters = clustered(rng, 400, 10, num_clusters=6, spread=0.6)
    y = clusters % 3
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential([keras.Input((10,)), keras.layers.Dense(16), keras.layers.BatchNormalization(),
                                 keras.layers.ReLU(), keras.layers.Dense(4)])
    head = kn.layers.NNGKClassifier(3, num_neighbours=8, capacity=len(x), search="faiss-ivf")
    train_model = kn.models.nngk_classifier(backbone, 3, head=head).train_model
    head.assign_centers(backbone(x, training=False).numpy(), y)
    index = head._index  # pylint: disable=protected-access
    queries = backbone(x[:50], training=False).numpy()
    head.lookup(queries, k=3)  # Built: the writes must reach the built lists.
    head.write_training_centers = True
    step = tf.function(lambda inputs: train_model(inputs, training=True))
    before = index.vectors.copy()
    step({"image": x[[5, 17, 3, 399]], "sample_id": np.array([5, 17, 3, 399])})
    step({"image": 2 * x[[41, 17]], "sample_id": np.array([41, 17])})  # Slot 17 again, with another row.
    centers = head.centers.numpy()
    assert not np.array_equal(centers[[5, 17, 41]], before[[5, 17, 41]])
    found = head.lookup(queries, k=8)
    np.testing.assert_array_equal(index.vectors, centers)
    rebuilt = kn.search.get("faiss-ivf")
    rebuilt._trained = index._trained  # pylint: disable=protected-access  # The same lists, as a refresh keeps.
    rebuilt.add(centers, np.arange(len(x)))
    np.testing.assert_array_equal(found.sample_ids, rebuilt.search(queries, 8)[1])
    # Rows queued by two writes before a search (each step searches first, so this takes two direct writes): the
    # later row of a slot wins, as in the centers.
    rows = rng.normal(size=(2, 4)).astype(np.float32)
    for row in rows:
        head._write_index_rows(tf.constant(row[None]), tf.constant([9]), tf.constant([True]))  # pylint: disable=protected-access
    head.lookup(queries, k=3)
    np.testing.assert_array_equal(index.vectors[9], rows[1])
    step({"image": x[[8]], "sample_id": np.array([8])})
    head.rebuild_index()  # Reads the centers, the queued row included, and drops the queue.
    assert not head._pending_index_rows  # pylint: disable=protected-access
    np.testing.assert_array_equal(head._index.vectors, head.centers.numpy())  # pylint: disable=protected-access

    head.set_search("faiss-hnsw")
    head.write_training_centers = True
    before = head._index.vectors.copy()  # pylint: disable=protected-access
    retraced = tf.function(lambda inputs: train_model(inputs, training=True))  # Traced with the HNSW search.
    retraced({"image": x[[5, 17]], "sample_id": np.array([5, 17])})
    head.lookup(queries, k=3)
    np.testing.assert_array_equal(head._index.vectors, before)  # pylint: disable=protected-access


@pytest.mark.parametrize("loop", ["fit", "fit-xla", "custom"])
def test_training_refresh_mode_writes_every_center_from_the_steps(rng, loop):
    """One epoch at learning rate 0 without the start and end refreshes: every center must come from a step
    (stale random centers otherwise), and equal its sample's training-mode embedding; in `model.fit` (also
    XLA-compiled) and in the custom loop."""
    x, y, backbone, head, train_model = _batchnorm_setup(rng)
    head.assign_centers(rng.normal(size=(len(x), 4)).astype(np.float32), y)
    refresh = kn.callbacks.CenterRefresh(head, backbone, x, y, verbose=0, mode="training",
                                         refresh_on_train_begin=False, refresh_on_train_end=False)
    inputs = {"image": x, "sample_id": np.arange(len(x))}
    if loop == "custom":
        dataset = tf.data.Dataset.from_tensor_slices((inputs, y)).batch(32)
        kn.training.CustomLoop(train_model, keras.optimizers.SGD(0.0), verbose=0).fit(
            dataset.repeat(), epochs=1, steps_per_epoch=3, callbacks=[refresh])
    else:
        train_model.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy",
                            jit_compile=loop == "fit-xla")
        train_model.fit(inputs, y, epochs=1, batch_size=32, shuffle=False, callbacks=[refresh], verbose=0)
    assert refresh.refresh_count == 0
    expected = np.concatenate([backbone(x[start:start + 32], training=True).numpy() for start in range(0, 96, 32)])
    np.testing.assert_allclose(head.centers.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert not head.write_training_centers  # Off again after training: later steps of other fits write nothing.


class _CheckNormCache(keras.callbacks.Callback):
    """After every step: the cached norms and transposed centers are those of the centers, bit for bit."""

    def __init__(self, head):
        super().__init__()
        self.head, self.checked = head, 0

    def on_train_batch_end(self, batch, logs=None):
        expected = tf.reduce_sum(tf.square(self.head.centers), axis=-1).numpy()
        np.testing.assert_array_equal(self.head._norm_cache.numpy(), expected)  # pylint: disable=protected-access
        transposed = self.head._transposed_cache.numpy()  # pylint: disable=protected-access
        np.testing.assert_array_equal(transposed.reshape(self.head.embedding_dim, -1), self.head.centers.numpy().T)
        self.checked += 1


def test_training_writes_keep_the_centers_norms_and_change_no_result(tmp_path):
    """While the training pass writes the centers, the steps' search reads the centers' squared norms from a cache
    that the writes keep: it must hold the norms of the centers after every step, and training must be bit for bit
    what it is when each step computes them; the cache is no layer state (weights, checkpoints)."""
    results = []
    for cached in (True, False):
        keras.utils.set_random_seed(0)
        x, y, backbone, head, train_model = _setup(np.random.default_rng(0))
        train_model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", jit_compile=False)
        if not cached:
            head._norm_cache_in_use = lambda: False  # pylint: disable=protected-access
        refresh = kn.callbacks.CenterRefresh(head, backbone, x, y, verbose=0, mode="training",
                                             refresh_on_train_end=False)
        check = _CheckNormCache(head)
        train_model.fit([x, np.arange(len(x))], y, epochs=2, batch_size=32, shuffle=False,
                        callbacks=[refresh] + ([check] if cached else []), verbose=0)
        results.append([variable.numpy() for variable in train_model.weights])
        if cached:
            assert check.checked == 16
            assert head._transposed_cache is not None  # pylint: disable=protected-access
            caches = ("norm", "transposed")  # Variable names, and attribute names in checkpoint paths.
            assert not any(cache in variable.name for variable in train_model.weights for cache in caches)
            path = tf.train.Checkpoint(model=train_model).write(str(tmp_path / "checkpoint"))
            assert not any(cache in name for name, _ in tf.train.list_variables(path) for cache in caches)
    for cached, uncached in zip(*results):
        np.testing.assert_array_equal(cached, uncached)


class _StubRecalibration:
    def __init__(self):
        self.calls = 0

    def recalibrate(self):
        self.calls += 1


class _StubRefresh:
    def __init__(self, num_centers=10):
        self.head = types.SimpleNamespace(num_centers=num_centers)
        self.refreshed_after_last_epoch = True


def test_held_out_metrics_read_the_network_after_a_batchnorm_recalibration(rng):
    """The held-out pass runs on the network as it is saved, BatchNorm recalibrated over the recalibration batches
    (the running statistics training leaves lag the weights); not recalibrated again after a center refresh, which
    recalibrated already."""
    from tests import reference
    x, clusters = clustered(rng, 240, 10, num_clusters=6, spread=0.6)
    y = clusters % 3
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(16), keras.layers.BatchNormalization(),
                              keras.layers.ReLU(), keras.layers.Dense(3, activation="softmax")])
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    batches = tf.data.Dataset.from_tensor_slices(x).batch(32)
    recalibration = kn.callbacks.BatchNormRecalibration(model, batches, num_batches=4)
    held_out = kn.callbacks.HeldOutMetrics(model, batches, y, recalibration=recalibration)
    readings = []

    class Reference(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            statistics = [variable.numpy() for variable in model.non_trainable_weights]
            kn.training.center_sync.recalibrate_batchnorm(model, batches, 4)  # From scratch: the same statistics.
            for variable, value in zip(model.non_trainable_weights, statistics):
                np.testing.assert_array_equal(variable.numpy(), value)
            probabilities = np.clip(model.predict(x, verbose=0), 1e-7, 1.0)
            readings.append((logs["val_loss"], reference.cross_entropy(probabilities, y)))

    model.fit(x, y, epochs=2, batch_size=32, callbacks=[held_out, Reference()], verbose=0)
    for reported, expected in readings:
        assert reported == pytest.approx(expected, rel=1e-5)
    stub = _StubRecalibration()
    for center_refresh, calls in ((None, 1), (_StubRefresh(), 0), (_StubRefresh(num_centers=0), 0)):
        stub.calls, logs = 0, {}
        kn.callbacks.HeldOutMetrics(model, batches, y, recalibration=stub,
                                    center_refresh=center_refresh).on_epoch_end(0, logs)
        assert stub.calls == calls
        assert ("val_accuracy" in logs) == (center_refresh is None or center_refresh.head.num_centers > 0)
    logs = {}  # Retrieval reads the network's outputs, not the head's centers: read while the head is empty.
    kn.callbacks.HeldOutMetrics(model, batches, y, task="retrieval", center_refresh=_StubRefresh(num_centers=0)
                                ).on_epoch_end(0, logs)
    assert "val_recall@1" in logs


@pytest.mark.slow  # Six short runs (about 35 s).
def test_held_out_passes_leave_the_trained_model_unchanged(tmp_path):
    """The held-out pass after every epoch (BatchNorm recalibrated first) leaves training as it is without one: the
    same weights and test accuracy, bit for bit, for the NNGK head (centers written by the training steps) and the
    dense head; the last pass reads the model as saved (the dense head's read it before its final recalibration, the
    kNN baseline's an empty head: chance)."""
    import json
    for head in ("nngk", "dense", "knn"):
        weights = []
        for eval_every in (1, 0):
            config = kn.training.Config.for_dataset("digits", head=head, epochs=2, eval_every=eval_every)
            results = kn.training.fit(config, str(tmp_path / f"{head}-{eval_every}"), verbose=0)
            if eval_every:
                history = json.load(open(tmp_path / f"{head}-{eval_every}" / "history.json"))["epochs"]
                assert history[-1]["val_accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-12)
                # The kNN baseline has no centers before its final refresh: no chance-level reading before it.
                assert ("val_accuracy" in history[0]) == (head != "knn")
            model = kn.utils.load_model(str(tmp_path / f"{head}-{eval_every}" / "model.keras"))
            weights.append(model.get_weights())
        for with_passes, without in zip(*weights):
            np.testing.assert_array_equal(with_passes, without)


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt


class _CheckIndex(keras.callbacks.Callback):
    """At each epoch's first step: the faiss index holds the centers the variables hold."""

    def __init__(self, head):
        super().__init__()
        self.head, self.checked = head, 0

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            np.testing.assert_array_equal(self.head._index.vectors,  # pylint: disable=protected-access
                                          self.head.centers.numpy())
            self.checked += 1


@pytest.mark.parametrize("search", ["exact", "faiss-flat"])
def test_training_writes_follow_centers_restored_by_keras_backup_and_restore(tmp_path, search):
    """A run interrupted after 2 of 4 epochs resumes with Keras' BackupAndRestore placed after CenterRefresh: the
    restore replaces the centers after CenterRefresh turned the writes on (its on_train_begin), so what follows the
    centers (the exact search's norms and transposed copy, a faiss index) must be rebuilt before the first step;
    nothing is rebuilt in a run without a restore."""
    backup = str(tmp_path / "backup")

    def run(callbacks):
        keras.utils.set_random_seed(0)
        x, y, backbone, head, train_model = _setup(np.random.default_rng(0), search)
        refresh = kn.callbacks.CenterRefresh(head, backbone, x, y, verbose=0, mode="training",
                                             refresh_on_train_end=False)
        check = _CheckNormCache(head) if search == "exact" else _CheckIndex(head)
        train_model.fit([x, np.arange(len(x))], y, epochs=4, batch_size=32, shuffle=False, verbose=0,
                        callbacks=[refresh, keras.callbacks.BackupAndRestore(backup)] + callbacks(check))
        return head, check

    with pytest.raises(KeyboardInterrupt):
        run(lambda check: [_Interrupt()])
    head, check = run(lambda check: [check])  # Resumes at epoch 2.
    assert check.checked == (16 if search == "exact" else 2)
    assert not head.rebuild_index_if_replaced()  # Nothing replaced since the last epoch's rebuild.


def test_training_refresh_mode_refreshes_at_start_and_end_only_and_learns(rng):
    x, y, backbone, head, train_model = _setup(rng)
    train_model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", jit_compile=False)
    refresh = kn.callbacks.CenterRefresh(head, backbone, x, y, every_n_epochs=1, verbose=0, mode="training")
    history = train_model.fit([x, np.arange(len(x))], y, epochs=4, batch_size=32, callbacks=[refresh], verbose=0)
    # Start (empty head) and after the last epoch (inference-mode centers for its held-out metrics and evaluation).
    assert refresh.refresh_count == 2 and refresh.refreshed_after_last_epoch
    np.testing.assert_allclose(head.centers.numpy(), backbone.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert np.mean(head([backbone.predict(x, verbose=0), np.arange(len(x))]).numpy().argmax(1) == y) > 0.9


def test_training_refresh_mode_rejects_heads_that_cannot_write(rng):
    x, y, backbone, _, _ = _setup(rng)
    for head in (kn.layers.KNNClassifier(3, capacity=len(x)),
                 kn.layers.ImpostorClassifier(3, capacity=len(x), tie="loose")):
        with pytest.raises(ValueError, match="cannot take centers from the training pass"):
            kn.callbacks.CenterRefresh(head, backbone, x, y, mode="training")
    with pytest.raises(ValueError, match="Unknown refresh mode 'steps'"):
        kn.callbacks.CenterRefresh(kn.layers.NNGKClassifier(3, capacity=len(x)), backbone, x, y, mode="steps")
    with pytest.raises(ValueError, match="--refresh_mode=training writes the centers of an nngk head"):
        kn.training.Config.for_dataset("digits", head="dense", refresh_mode="training")
    with pytest.raises(ValueError, match="Unknown refresh_mode 'x'"):
        kn.training.Config.for_dataset("digits", refresh_mode="x")


def test_batchnorm_recalibration_averages_the_batch_statistics_in_one_compiled_pass(rng):
    """Against NumPy: the running mean becomes the mean of the batch means, the running variance the mean of the
    (Bessel-corrected, as Keras' BatchNorm keeps it) batch variances; momentum and the layer's weights are as before,
    and a second recalibration reuses the traced pass."""
    from keras_nngk.training import center_sync
    x = rng.normal(2.0, 3.0, size=(300, 5, 5, 3)).astype(np.float32)
    network = keras.Sequential([keras.Input((5, 5, 3)), keras.layers.BatchNormalization(),
                                keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization()])
    batches = tf.data.Dataset.from_tensor_slices(x).batch(64)
    names = [weight.name for weight in network.weights]
    assert center_sync.recalibrate_batchnorm(network, batches, num_batches=4) == 4
    first = network.layers[0]
    used = [x[start:start + 64] for start in range(0, 256, 64)]
    np.testing.assert_allclose(first.moving_mean.numpy(), np.mean([b.mean((0, 1, 2)) for b in used], 0), atol=1e-5)
    np.testing.assert_allclose(first.moving_variance.numpy(),
                               np.mean([b.var((0, 1, 2), ddof=1) for b in used], 0), rtol=1e-5)
    assert first.momentum == 0.99 and [weight.name for weight in network.weights] == names
    traced = center_sync._RECALIBRATION_PASSES[network][1]
    before = traced.experimental_get_tracing_count()
    assert center_sync.recalibrate_batchnorm(network, batches, num_batches=4) == 4
    assert traced.experimental_get_tracing_count() == before
    np.testing.assert_allclose(first.moving_mean.numpy(), np.mean([b.mean((0, 1, 2)) for b in used], 0), atol=1e-5)


def test_auto_refresh_mode_writes_training_centers_where_the_head_can():
    def mode(**overrides):
        return kn.training.Config.for_dataset("digits", **overrides).resolved_refresh_mode()

    assert mode() == "training" and mode(head="impostor", tie="tied") == "training"
    assert mode(head="dense") == mode(head="knn") == mode(head="impostor") == mode(model="biased") == "embed"
    assert mode(strategy="multi_worker") == "embed" and mode(refresh_mode="embed") == "embed"


@pytest.mark.slow  # Two short fits (about 8 s).
def test_candidate_lists_follow_their_schedule_and_listing_every_center_changes_nothing(rng):
    """Lists of every other center (m = N - 1) hold each step's exact neighbours: the same training as without
    lists. Lists are built at the start and every `candidates_every` epochs, their recall is logged, and they
    are dropped after training."""
    x, y, _, _, _ = _setup(rng)
    results = {}
    for candidates in (0, len(x) - 1):
        keras.utils.set_random_seed(1)
        _, _, backbone, head, train_model = _setup(np.random.default_rng(0))
        builds = []
        rebuild = head.rebuild_candidate_lists
        head.rebuild_candidate_lists = lambda epoch=-1, builds=builds, rebuild=rebuild: (
            builds.append(epoch), rebuild(epoch))
        refresh = kn.callbacks.CenterRefresh(head, backbone, x, y, verbose=0, mode="training",
                                             candidates=candidates, candidates_every=2)
        history = train_model.fit([x, np.arange(len(x))], y, epochs=3, batch_size=32, callbacks=[refresh],
                                  verbose=0, shuffle=False)
        results[candidates] = [weight.numpy() for weight in backbone.weights]
        if candidates:
            assert head._candidates is None  # Dropped after training.
            assert builds == [0, 2]  # After the first refresh, then every second epoch.
            assert history.history["candidate_recall"] == [1.0, 1.0, 1.0]
        else:
            assert "candidate_recall" not in history.history
    for without, listed in zip(results[0], results[len(x) - 1]):
        np.testing.assert_allclose(listed, without, rtol=1e-4, atol=1e-5)


def test_epoch_tensorboard_writes_epoch_curves_only_even_with_a_progress_bar(tmp_path):
    """A progress bar makes Keras run every callback's batch hooks; Keras' TensorBoard then wrote the graph at the
    first batch and called `tf.summary.scalar` per batch: `EpochTensorBoard` writes the epoch curves alone."""
    import glob
    import os

    from tensorflow.core.util import event_pb2

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)

    def tags_of(log_dir, callback):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
        model.compile("sgd", "sparse_categorical_crossentropy", jit_compile=False)
        model.fit(x, y, batch_size=16, epochs=2, verbose=1, callbacks=[callback(log_dir)])
        tags, graphs = set(), 0
        for path in glob.glob(os.path.join(log_dir, "train", "events.out.tfevents.*")):
            for record in tf.data.TFRecordDataset(path):
                event = event_pb2.Event.FromString(record.numpy())
                graphs += bool(event.graph_def)
                tags.update(value.tag for value in event.summary.value)
        return tags, graphs

    tags, graphs = tags_of(str(tmp_path / "ours"), kn.training.callbacks.EpochTensorBoard)
    assert {"epoch_loss"} <= tags and graphs == 0
    keras_tags, keras_graphs = tags_of(str(tmp_path / "keras"), keras.callbacks.TensorBoard)
    assert keras_graphs == 1 and tags == keras_tags - {"keras"}  # The same curves; "keras": the model's config text.


@pytest.mark.parametrize("mode", ["embed", "training"])
def test_weights_restored_by_an_early_stopping_listed_first_get_fresh_centers_and_statistics(rng, mode):
    x, y, backbone, head, train_model = _batchnorm_setup(rng)
    train_model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", jit_compile=False)
    images = tf.data.Dataset.from_tensor_slices(x).batch(32)
    recalibration = kn.callbacks.BatchNormRecalibration(backbone, images, num_batches=3)
    refresh = kn.callbacks.CenterRefresh(head, backbone, x, y, verbose=0, mode=mode, recalibration=recalibration)
    # Keeps the weights of every epoch's end as it sees them: before CenterRefresh's refresh of that epoch.
    stopping = keras.callbacks.EarlyStopping(monitor="loss", patience=10, restore_best_weights=True)
    train_model.fit({"image": x, "sample_id": np.arange(len(x))}, y, epochs=3, batch_size=32,
                    callbacks=[stopping, refresh], verbose=0)
    assert stopping.best_weights is not None
    # The end of training refreshed again after the restore: the centers are the restored network's embeddings,
    # with BatchNorm statistics recalibrated on its training images (without the check: the centers of the epoch
    # before, and the best epoch's running statistics).
    restored = keras.models.clone_model(backbone)
    restored.set_weights(backbone.get_weights())
    kn.training.center_sync.recalibrate_batchnorm(restored, images, 3)
    for trained, fresh in zip(backbone.layers[1].non_trainable_weights, restored.layers[1].non_trainable_weights):
        np.testing.assert_allclose(trained.numpy(), fresh.numpy(), rtol=1e-5, atol=1e-6)  # Moving mean, variance.
    np.testing.assert_allclose(head.centers.numpy(), backbone.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


def test_an_early_stopping_that_restores_after_the_end_of_training_refresh_is_warned(rng, caplog):
    x, y, backbone, head, train_model = _setup(rng)
    refresh = kn.callbacks.CenterRefresh(head, backbone, x, y, verbose=0)
    recalibration = kn.callbacks.BatchNormRecalibration(backbone, tf.data.Dataset.from_tensor_slices(x).batch(32), 2)

    def fit(callbacks):
        caplog.clear()
        with caplog.at_level("WARNING"):
            train_model.fit([x, np.arange(len(x))], y, epochs=1, batch_size=64, callbacks=callbacks, verbose=0)
        return [record.getMessage() for record in caplog.records if "restore_best_weights" in record.getMessage()]

    restoring = keras.callbacks.EarlyStopping(monitor="loss", restore_best_weights=True)
    assert fit([refresh, restoring]) == [
        "EarlyStopping(restore_best_weights=True) comes after CenterRefresh in `callbacks`: it restores weights after "
        "CenterRefresh has brought centers and BatchNorm statistics up to date, so the model would end with those of "
        "another epoch. List it before CenterRefresh."]
    assert len(fit([recalibration, restoring, refresh])) == 1  # BatchNormRecalibration's, not CenterRefresh's.
    assert fit([restoring, recalibration, refresh]) == []
    assert fit([refresh, keras.callbacks.EarlyStopping(monitor="loss")]) == []  # Restores nothing.


@pytest.mark.slow  # Three short fits (about 4 s).
def test_keras_validation_reads_a_recalibrated_dense_network_and_training_is_unchanged(rng):
    """`model.fit(validation_data=...)` reads the network as it is saved: BatchNormRecalibration recalibrates before
    each validation pass (val_loss equals NumPy's cross-entropy of a freshly recalibrated copy's outputs), and the
    trained weights are those of a run without validation, bit for bit."""
    from tests import reference
    x, clusters = clustered(rng, 240, 10, num_clusters=6, spread=0.6)
    y = clusters % 3
    x_val, y_val = x[:64] + 0.1, y[:64]
    batches = tf.data.Dataset.from_tensor_slices(x).batch(32)

    def run(validate, before_validation=True):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(16), keras.layers.BatchNormalization(),
                                  keras.layers.ReLU(), keras.layers.Dense(3, activation="softmax")])
        model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
        recalibration = kn.callbacks.BatchNormRecalibration(model, batches, 4, before_validation=before_validation)
        readings = []

        class Reference(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if validate:
                    copy = keras.models.clone_model(model)
                    copy.set_weights(model.get_weights())
                    kn.training.center_sync.recalibrate_batchnorm(copy, batches, 4)
                    probabilities = np.clip(copy.predict(x_val, verbose=0), 1e-7, 1.0)
                    readings.append((logs["val_loss"], reference.cross_entropy(probabilities, y_val)))

        model.fit(x, y, epochs=3, batch_size=32, validation_data=(x_val, y_val) if validate else None,
                  callbacks=[recalibration, Reference()], verbose=0)
        return model.get_weights(), readings

    weights, readings = run(validate=True)
    assert len(readings) == 3
    for reported, expected in readings:
        assert reported == pytest.approx(expected, rel=1e-5)
    for with_validation, without in zip(weights, run(validate=False)[0]):
        np.testing.assert_array_equal(with_validation, without)
    _, unrecalibrated = run(validate=True, before_validation=False)  # The running statistics: other readings.
    assert all(reported != pytest.approx(expected, rel=1e-3) for reported, expected in unrecalibrated)


@pytest.mark.slow  # Two short fits per mode (about 4 s).
@pytest.mark.parametrize("mode", ["embed", "training"])
def test_keras_validation_reads_the_epochs_centers_and_training_is_unchanged(rng, mode):
    """With `validation_data`, CenterRefresh does its end-of-epoch refresh before Keras' validation pass (not after
    it, in `on_epoch_end`), so the pass reads centers embedded by the epoch's network, and otherwise recalibrates
    BatchNorm first; the trained weights and centers are those of a run without validation, bit for bit."""
    from tests import reference
    x_val = None

    def run(validate):
        nonlocal x_val
        x, y, backbone, head, train_model = _batchnorm_setup(np.random.default_rng(0))
        x_val, y_val = x[:40] + 0.1, y[:40]
        train_model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", jit_compile=False)
        batches = tf.data.Dataset.from_tensor_slices(x).batch(32)
        recalibration = kn.callbacks.BatchNormRecalibration(backbone, batches, 3)
        refresh = kn.callbacks.CenterRefresh(head, backbone, x, y, every_n_epochs=2, verbose=0, mode=mode,
                                             recalibration=recalibration)
        readings = []

        class Reference(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if not validate:
                    return
                copy = keras.models.clone_model(backbone)
                copy.set_weights(backbone.get_weights())
                kn.training.center_sync.recalibrate_batchnorm(copy, batches, 3)
                due = epoch % 2 == 1 if mode == "embed" else epoch == 2
                centers = copy.predict(x, verbose=0) if due else head.centers.numpy()
                probabilities = reference.nngk_classifier(copy.predict(x_val, verbose=0), centers, np.eye(3)[y], 8,
                                                       float(head.sigma), np.exp(head.log_weights.numpy()))
                readings.append((epoch, logs["val_loss"],
                                 reference.cross_entropy(np.clip(probabilities, 1e-7, 1), y_val)))

        validation = ({"image": x_val, "sample_id": np.full(len(x_val), -1, np.int32)}, y_val)
        train_model.fit({"image": x, "sample_id": np.arange(len(x))}, y, epochs=3, batch_size=32,
                        validation_data=validation if validate else None, callbacks=[refresh, Reference()], verbose=0)
        return train_model.get_weights() + [head.centers.numpy()], readings, refresh

    weights, readings, refresh = run(validate=True)
    assert [epoch for epoch, *_ in readings] == [0, 1, 2]
    for _, reported, expected in readings:
        assert reported == pytest.approx(expected, rel=1e-4)
    # Embed: the start, after epoch 2, at the end (epoch 3 did not refresh); training: the start, after the last.
    assert refresh.refresh_count == (3 if mode == "embed" else 2)
    for with_validation, without in zip(weights, run(validate=False)[0]):
        np.testing.assert_array_equal(with_validation, without)


def test_weights_digest_changes_with_any_restored_variable_and_reads_large_ones_by_rows():
    from keras_nngk.training import callbacks as callbacks_lib
    rng = np.random.default_rng(0)
    large = tf.Variable(rng.normal(size=(callbacks_lib.DIGEST_WHOLE_MAX // 8 + 7, 8)).astype("float32"))
    small = tf.Variable(rng.normal(size=(3, 4)).astype("float32"))
    digest = callbacks_lib.weights_digest([large, small])
    assert callbacks_lib.weights_digest([large, small]) == digest  # The same values: the same digest.
    for variable in (large, small):
        saved = variable.numpy()
        variable.assign(saved + 1e-4)  # Another epoch's weights differ in every row.
        assert callbacks_lib.weights_digest([large, small]) != digest
        variable.assign(saved)
        assert callbacks_lib.weights_digest([large, small]) == digest
    # A large variable is read by DIGEST_ROWS rows spread over it: a change elsewhere is not seen.
    unread = large.numpy()
    unread[1] += 1.0
    large.assign(unread)
    assert callbacks_lib.weights_digest([large, small]) == digest


def test_center_refresh_recalibrates_a_batchnorm_network_by_default_over_a_random_draw_of_its_inputs(rng):
    x, y, backbone, head, train_model = _batchnorm_setup(rng)
    train_model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", jit_compile=False)
    order = np.argsort(y, kind="stable")  # Inputs sorted by class: the first batches hold one class.
    x, y = x[order], y[order]
    refresh = kn.callbacks.CenterRefresh(head, backbone, x, y, verbose=0)  # recalibration="auto"
    assert refresh.recalibration.network is backbone and refresh.recalibration.num_batches == 100
    first_batch = next(iter(refresh.recalibration.images)).numpy()
    assert len(first_batch) == len(x)  # Fewer than 128 inputs: one batch of all of them, in a random order.
    assert not np.array_equal(first_batch, x) and np.array_equal(np.sort(first_batch, 0), np.sort(x, 0))
    train_model.fit({"image": x, "sample_id": np.arange(len(x))}, y, epochs=2, batch_size=32, callbacks=[refresh],
                    verbose=0)
    # The end of training recalibrated before its refresh: the statistics are those of a fresh recalibration (the
    # running statistics without it), and the centers the network's embeddings with them.
    copy = keras.models.clone_model(backbone)
    copy.set_weights(backbone.get_weights())
    kn.training.center_sync.recalibrate_batchnorm(copy, tf.data.Dataset.from_tensor_slices(x).batch(128), 100)
    for trained, fresh in zip(backbone.layers[1].non_trainable_weights, copy.layers[1].non_trainable_weights):
        np.testing.assert_allclose(trained.numpy(), fresh.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(head.centers.numpy(), backbone.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    # No BatchNorm, or inputs it cannot batch: no recalibration; None turns it off; other strings are refused.
    plain_x, plain_y, plain_backbone, plain_head, _ = _setup(rng)
    assert kn.callbacks.CenterRefresh(plain_head, plain_backbone, plain_x, plain_y).recalibration is None
    assert kn.training.callbacks.auto_recalibration(backbone, {"image": x}) is None
    assert kn.callbacks.CenterRefresh(head, backbone, x, y, recalibration=None).recalibration is None
    with pytest.raises(ValueError, match="recalibration='always'"):
        kn.callbacks.CenterRefresh(head, backbone, x, y, recalibration="always")
