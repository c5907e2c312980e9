"""The experiments: samples per class (tiny), retrieval (tiny), their tables, and the pixel floor."""

import dataclasses
import importlib
import json
import os

import numpy as np
import pytest

from keras_nngk import experiments
from tests import reference
from tests.trainers.test_fit import run_entry


def test_pixel_floor_is_exact_1nn(rng):
    x_train = rng.normal(size=(50, 4, 4, 1)).astype(np.float32)
    y_train = rng.integers(0, 3, 50)
    x_test = rng.normal(size=(20, 4, 4, 1)).astype(np.float32)
    y_test = rng.integers(0, 3, 20)
    distances = ((x_test.reshape(20, 1, -1) - x_train.reshape(1, 50, -1)) ** 2).sum(-1)
    expected = np.mean(y_train[distances.argmin(1)] == y_test)
    assert experiments.pixel_knn_accuracy(x_train, y_train, x_test, y_test, 1) == pytest.approx(expected)


def test_summarise_mean_and_spread():
    rows = [{"head": "nngk", "n": 6, "test_accuracy": 0.5}, {"head": "nngk", "n": 6, "test_accuracy": 0.7},
            {"head": "dense", "n": "all", "test_accuracy": 0.9}]
    table = experiments.summarise(rows)
    assert table["nngk"]["6"] == [pytest.approx(0.6), pytest.approx(0.1), 2]
    assert table["dense"]["all"] == [pytest.approx(0.9), 0.0, 1]
    assert "| nngk | 60.0 ± 10.0 |" in experiments.format_samples_table({"nngk": table["nngk"]})


@pytest.mark.slow
def test_samples_per_class_tiny(tmp_path):
    config = experiments.FewShotConfig(dataset="digits", examples_per_class=(3, 20), seeds=(0,), steps=40,
                                       eval_every=20, batch_size=32, validation_per_class=5)
    results = experiments.samples_per_class(config, str(tmp_path), verbose=0)
    heads = {row["head"] for row in results["runs"]}
    assert heads == {"pixels_1nn", "dense", "knn", "nngk", "impostor"}
    for row in results["runs"]:
        assert 0.0 <= row["test_accuracy"] <= 1.0
        if row["head"] != "pixels_1nn":
            assert row["best_step"] in (20, 40)
    # More images per class: the pixel floor (deterministic) rises on digits.
    assert results["table"]["pixels_1nn"]["20"][0] > results["table"]["pixels_1nn"]["3"][0]
    assert results["table"]["nngk"]["20"][0] > 0.5
    saved = json.load(open(os.path.join(str(tmp_path), "samples_per_class.json")))
    assert saved["table"] == results["table"]
    # The class spread of every run, and over seeds; raw pixels' spread of the subset is exact.
    assert set(saved["class_spread"]["train"]) == heads and set(saved["class_spread"]["validation"]) == heads
    for row in results["runs"]:
        assert row["train_class_spread"] > 0 and row["validation_class_spread"] > 0
    first = results["runs"][0]
    assert first["head"] == "pixels_1nn" and first["n"] == 3
    from keras_nngk import data as data_lib  # pylint: disable=g-import-not-at-top
    arrays = data_lib.load_arrays("digits")
    validation = data_lib.splits.few_shot_indices(arrays.y_train, 5, seed=1000)
    rest = np.setdiff1d(np.arange(len(arrays.y_train)), validation)
    chosen = rest[data_lib.splits.few_shot_indices(arrays.y_train[rest], 3, 0)]
    expected = reference.class_spread(arrays.x_train[chosen].reshape(len(chosen), -1), arrays.y_train[chosen])
    assert first["train_class_spread"] == pytest.approx(expected, abs=1e-5)
    assert os.path.exists(os.path.join(str(tmp_path), "samples_per_class.png"))


def test_bad_input():
    with pytest.raises(ValueError, match="Unknown head 'svm'"):
        experiments.FewShotConfig(heads=("svm",)).validate()
    with pytest.raises(ValueError, match="non-negative integers"):
        experiments.FewShotConfig(examples_per_class=(-1,)).validate()


@pytest.mark.slow
def test_retrieval_entry_point(tmp_path):
    workdir = str(tmp_path / "retrieval")
    split = ["--train_classes=5,6,7,8,9", "--test_classes=0,1,2,3,4"]  # The reverse of the default split.
    result = run_entry("trainers.experiments.retrieval", "--dataset=digits", "--heads=nngk", "--seeds=0",
                       "--epochs=1", "--sigma=0.5", *split, f"--workdir={workdir}", "--verbose=0")
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.load(open(os.path.join(workdir, "retrieval.json")))
    assert saved["class_split"] == [[5, 6, 7, 8, 9], [0, 1, 2, 3, 4]]
    run_config = json.load(open(os.path.join(workdir, "nngk-seed0", "config.json")))
    assert run_config["sigma"] == 0.5 and run_config["test_classes"] == "0,1,2,3,4"  # Any fit flag passes through.
    assert set(saved["table"]) == {"raw pixels", "untrained network", "nngk"}
    for values in saved["table"].values():
        recalls = [values[f"recall@{k}"][0] for k in (1, 2, 4, 8)]
        assert recalls == sorted(recalls) and 0 < recalls[0] <= 1
    assert os.path.exists(os.path.join(workdir, "retrieval.png"))
    assert "| raw pixels |" in result.stdout
    assert os.path.exists(os.path.join(workdir, "nngk-seed0", "metrics.json"))
    # One head at a time on the same workdir: the summary gains the new head and keeps the earlier one.
    result = run_entry("trainers.experiments.retrieval", "--dataset=digits", "--heads=dense", "--seeds=0",
                       "--epochs=1", *split, f"--workdir={workdir}", "--verbose=0")
    assert result.returncode == 0, result.stderr[-3000:]
    merged = json.load(open(os.path.join(workdir, "retrieval.json")))
    assert set(merged["table"]) == {"raw pixels", "untrained network", "nngk", "dense"}
    assert merged["table"]["nngk"] == saved["table"]["nngk"]
    assert sorted((row["method"], row["seed"] or 0) for row in merged["runs"]) == [
        ("dense", 0), ("nngk", 0), ("raw pixels", 0), ("untrained network", 0)]


@pytest.mark.slow
def test_samples_per_class_entry_point_bad_dataset(tmp_path):
    result = run_entry("trainers.experiments.samples_per_class", "--dataset=imagenet", f"--workdir={tmp_path}")
    assert result.returncode == 2 and "error:" in result.stderr.strip().splitlines()[-1]


@pytest.mark.slow  # A short run on digits and two TFLite exports (about 30 s).
def test_enrolment_experiment_tiny(tmp_path):
    config = experiments.EnrolmentConfig(dataset="digits", shots=(1, 3), seeds=(0,), epochs=1, max_test=300,
                                         variants=("kernel-k1", "class_mean"), softmax_steps=20)
    results = experiments.enrolment(config, str(tmp_path), verbose=0)
    assert len(results["runs"]) == 4 and results["num_test"] == 300
    assert all(row["keras_agreement"] == 1.0 for row in results["runs"])  # TFLite = Keras / NumPy, image by image.
    for row in results["runs"]:  # The accuracies split the test set into its known and new classes.
        assert min(row["accuracy_new"], row["accuracy_known"]) <= row["accuracy"] <= max(row["accuracy_new"],
                                                                                          row["accuracy_known"])
    assert results["bytes_per_enrolled_example"] == 4 * (64 + 10 + 2)
    assert os.path.exists(tmp_path / "enrolment.json") and os.path.exists(tmp_path / "enrolment.png")
    table = experiments.format_enrolment_table(results)
    assert "| class_mean | 3 |" in table and "| kernel-k1 | 1 |" in table


@pytest.mark.slow  # Two short trainings (about 15 s).
def test_self_positive_gives_one_image_per_class_a_gradient():
    """n = 1: leave-one-out leaves a sample no center of its class, so the NNGK loss is flat and the network does
    not move; with `self_positive` an (augmented) image may match its own center and the network learns."""
    import tf_keras as keras  # pylint: disable=g-import-not-at-top

    from keras_nngk import data as data_lib  # pylint: disable=g-import-not-at-top
    module = importlib.import_module("keras_nngk.experiments.samples_per_class")  # The package exports the function.
    arrays = data_lib.load_arrays("digits")
    chosen = data_lib.splits.few_shot_indices(arrays.y_train, 1, seed=0)
    x, y = arrays.x_train[chosen], arrays.y_train[chosen]
    moved = {}
    for self_positive in (False, True):
        config = experiments.FewShotConfig(dataset="digits", steps=5, eval_every=5, batch_size=10, augment="shift",
                                           self_positive=self_positive).validate()
        keras.utils.set_random_seed(0)
        initial = module.backbones.get("small_conv", input_shape=x.shape[1:], embedding_dim=64).get_weights()
        model, _, _ = module._train_head("nngk", x, y, x, y, config, seed=0, num_classes=10)  # pylint: disable=protected-access
        kernel = model.get_layer("small_conv").get_layer("conv1").get_weights()[0]
        moved[self_positive] = float(np.abs(kernel - initial[0]).max())
    assert moved[False] < 1e-4  # Rounding-level gradients only (Adam scales them up to ~1e-5).
    assert moved[True] > 30 * moved[False]


def test_few_shot_options_are_checked():
    with pytest.raises(ValueError, match="'auto' is a data set's default"):
        experiments.FewShotConfig(augment="auto").validate()
    with pytest.raises(ValueError, match="Unknown or repeated augmentation"):
        experiments.FewShotConfig(augment="rotate").validate()
    with pytest.raises(ValueError, match="Unknown pooling 'max'"):
        experiments.FewShotConfig(pooling="max").validate()


@pytest.mark.slow  # Two short trainings (about 3 s).
def test_refresh_every_sets_how_often_nngk_re_embeds_its_centers(monkeypatch):
    """Centers are embedded once before training, every `refresh_every` steps and before each validation; 0 keeps
    the automatic interval (one pass over the subset, at least 10 steps)."""
    from keras_nngk import data as data_lib  # pylint: disable=g-import-not-at-top
    module = importlib.import_module("keras_nngk.experiments.samples_per_class")
    arrays = data_lib.load_arrays("digits")
    chosen = data_lib.splits.few_shot_indices(arrays.y_train, 2, seed=0)
    x, y = arrays.x_train[chosen], arrays.y_train[chosen]
    calls = []
    original = module.center_sync.CenterSync.assign
    monkeypatch.setattr(module.center_sync.CenterSync, "assign",
                        lambda self, *args, **kwargs: calls.append(1) or original(self, *args, **kwargs))
    counts = {}
    for refresh_every in (0, 2):
        config = experiments.FewShotConfig(dataset="digits", steps=6, eval_every=6, batch_size=16, embedding_dim=16,
                                           refresh_every=refresh_every).validate()
        calls.clear()
        module._train_head("nngk", x, y, x, y, config, seed=0, num_classes=10)  # pylint: disable=protected-access
        counts[refresh_every] = len(calls)
    assert counts == {0: 2, 2: 5}  # Before training and before the validation; plus after steps 2, 4 and 6.
    with pytest.raises(ValueError, match="`refresh_every` must be a non-negative integer"):
        experiments.FewShotConfig(refresh_every=-1).validate()


@pytest.mark.slow  # A short training (about 2 s).
def test_sigma_rule_sets_the_kernel_width_at_every_refresh():
    """With a sigma rule, each refresh sets the NNGK width to the rule's value on the new centers (not learned),
    and the learning rate option reaches the optimizer; both are checked."""
    from keras_nngk import data as data_lib  # pylint: disable=g-import-not-at-top
    module = importlib.import_module("keras_nngk.experiments.samples_per_class")
    arrays = data_lib.load_arrays("digits")
    chosen = data_lib.splits.few_shot_indices(arrays.y_train, 3, seed=0)
    x, y = arrays.x_train[chosen], arrays.y_train[chosen]
    config = experiments.FewShotConfig(dataset="digits", steps=4, eval_every=4, batch_size=16, embedding_dim=16,
                                       sigma_rule="neighbours", sigma_scale=0.5, learn_sigma=False,
                                       learning_rate=0.02).validate()
    model, _, _ = module._train_head("nngk", x, y, x, y, config, seed=0, num_classes=10)  # pylint: disable=protected-access
    head = model.layers[-1]
    expected = head.sigma_from_centers("neighbours", 0.5)  # The centers of the last refresh (before validation).
    np.testing.assert_allclose(float(head.sigma.numpy()), expected, rtol=1e-6)
    assert abs(expected - 0.5) > 0.01  # Not the initial width.
    with pytest.raises(ValueError, match="turn off learning it"):
        experiments.FewShotConfig(sigma_rule="nearest").validate()
    with pytest.raises(ValueError, match="Unknown sigma rule 'median'"):
        experiments.FewShotConfig(sigma_rule="median", learn_sigma=False).validate()
    with pytest.raises(ValueError, match="`learning_rate` must be a non-negative number"):
        experiments.FewShotConfig(learning_rate=-1e-3).validate()


def test_only_classes_keeps_and_relabels_in_the_order_given():
    from keras_nngk.data import datasets  # pylint: disable=g-import-not-at-top
    module = importlib.import_module("keras_nngk.experiments.samples_per_class")
    images = np.arange(6, dtype=np.float32).reshape(6, 1, 1, 1)
    arrays = datasets.ArrayData(images, np.array([0, 1, 2, 3, 2, 1]), images[:3], np.array([3, 0, 2]),
                                ("a", "b", "c", "d"))
    kept = module.only_classes(arrays, (2, 0))
    assert kept.x_train.ravel().tolist() == [0.0, 2.0, 4.0] and kept.y_train.tolist() == [1, 0, 0]
    assert kept.x_test.ravel().tolist() == [1.0, 2.0] and kept.y_test.tolist() == [1, 0]
    assert kept.class_names == ("c", "a")
    with pytest.raises(ValueError, match="Class 7 has no training image; this data set has classes 0-3"):
        module.only_classes(arrays, (0, 7))
    with pytest.raises(ValueError, match="at least two distinct non-negative integers"):
        experiments.FewShotConfig(classes=(1, 1)).validate()
    with pytest.raises(ValueError, match="Weights file not found"):
        experiments.FewShotConfig(weights="/no/such/backbone.keras").validate()


@pytest.mark.slow  # Two short trainings (about 3 s).
def test_every_head_starts_from_the_given_weights(tmp_path):
    """With `weights`, the backbone starts from that file (here trained for no step: learning rate 0)."""
    import tf_keras as keras  # pylint: disable=g-import-not-at-top

    from keras_nngk import data as data_lib  # pylint: disable=g-import-not-at-top
    module = importlib.import_module("keras_nngk.experiments.samples_per_class")
    arrays = data_lib.load_arrays("digits")
    chosen = data_lib.splits.few_shot_indices(arrays.y_train, 2, seed=0)
    x, y = arrays.x_train[chosen], arrays.y_train[chosen]
    keras.utils.set_random_seed(1)
    pretrained = module.backbones.get("small_conv", input_shape=x.shape[1:], embedding_dim=16)
    pretrained.save(str(tmp_path / "backbone.keras"))
    config = experiments.FewShotConfig(dataset="digits", steps=1, eval_every=1, batch_size=16, embedding_dim=16,
                                       pooling="avg", learning_rate=0.0, weights=str(tmp_path / "backbone.keras"))
    for head in ("dense", "nngk"):
        model, best_step, _ = module._train_head(head, x, y, x, y, config.validate(), seed=0, num_classes=10)  # pylint: disable=protected-access
        for name in ("conv1", "conv3", "embedding"):
            np.testing.assert_array_equal(model.get_layer("small_conv").get_layer(name).get_weights()[0],
                                          pretrained.get_layer(name).get_weights()[0])
        assert best_step == 1
    # `eval_at_start`: the network before any step is a candidate too (here as good as after it: the first kept).
    config = dataclasses.replace(config, eval_at_start=True)
    _, best_step, _ = module._train_head("nngk", x, y, x, y, config, seed=0, num_classes=10)  # pylint: disable=protected-access
    assert best_step == 0


@pytest.mark.slow  # Six short trainings (about 3 s per head).
@pytest.mark.parametrize("head", ["dense", "nngk", "impostor"])
def test_compiled_train_step_updates_as_train_on_batch_does(head):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tf_keras as keras  # pylint: disable=g-import-not-at-top

    from keras_nngk import backbones, models  # pylint: disable=g-import-not-at-top
    from keras_nngk.experiments.samples_per_class import compiled_train_step  # pylint: disable=g-import-not-at-top
    from keras_nngk.training import sparse_adam  # pylint: disable=g-import-not-at-top

    rng = np.random.default_rng(0)
    images = rng.uniform(size=(12, 8, 8, 1)).astype(np.float32)
    labels = np.repeat(np.arange(3), 4)

    def build():
        keras.utils.set_random_seed(0)
        backbone = backbones.get("small_conv", (8, 8, 1), 8, pooling="flatten")
        built = models.nngk_classifier(backbone, 3, head=head, capacity=12, num_neighbours=4, tie="loose")
        built.train_model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", jit_compile=False)
        if head == "impostor":
            built.train_model.set_center_optimizer(sparse_adam.SparseAdam(1e-2), [built.center_head.centers])
        if built.center_head is not None:
            built.center_head.assign_centers(backbone.predict(images, verbose=0), labels)
        return built.train_model

    keras_model, compiled_model = build(), build()
    step = compiled_train_step(compiled_model)
    before = [w.copy() for w in compiled_model.get_weights()]
    for _ in range(3):
        batch = rng.permutation(12)[:8]
        ids = batch.astype(np.int32)
        keras_model.train_on_batch({"image": images[batch], "sample_id": ids}, labels[batch])
        step(tf.constant(images[batch]), tf.constant(ids), tf.constant(labels[batch]))
    after = compiled_model.get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))  # It trained.
    for expected, got in zip(keras_model.get_weights(), after):
        np.testing.assert_array_equal(got, expected)


def test_weight_decay_shrinks_the_network_weights_and_not_the_heads_own():
    """With zero gradients Adam moves nothing, so one step shows the decay alone: w * (1 - lr * decay), by hand."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from keras_nngk import backbones, models  # pylint: disable=import-outside-toplevel
    make_optimizer = importlib.import_module("keras_nngk.experiments.samples_per_class").make_optimizer
    config = experiments.FewShotConfig(learning_rate=0.01, weight_decay=0.5)
    backbone = backbones.get("small_conv", (8, 8, 1), 4, pooling="flatten")
    built = models.nngk_classifier(backbone, 3, head="nngk", capacity=6, num_neighbours=3, sigma=0.5)
    optimizer = make_optimizer(config, built.center_head)
    variables = backbone.trainable_variables + built.center_head.trainable_variables
    before = [v.numpy().copy() for v in variables]
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in variables])
    decayed = len(backbone.trainable_variables)
    for value, old in zip(variables[:decayed], before[:decayed]):
        np.testing.assert_allclose(value.numpy(), old * (1 - 0.01 * 0.5), rtol=1e-6)
    for value, old in zip(variables[decayed:], before[decayed:]):  # Kernel width, per-center weights.
        np.testing.assert_array_equal(value.numpy(), old)
    assert len(variables) > decayed
    plain = make_optimizer(experiments.FewShotConfig(learning_rate=0.01))
    assert plain.weight_decay is None  # 0: Keras' Adam as before, bit for bit.
    with pytest.raises(ValueError, match="`weight_decay` must be a non-negative number"):
        experiments.FewShotConfig(weight_decay=-0.1).validate()


def test_class_spreads_embed_with_the_backbone_inside_the_inference_model(rng):
    """`class_spreads` reads the backbone of an inference model (image -> backbone -> head), leaves out a set
    whose classes have one image each, and on raw pixels flattens them."""
    import tf_keras as keras  # pylint: disable=g-import-not-at-top

    from keras_nngk import models  # pylint: disable=g-import-not-at-top
    module = importlib.import_module("keras_nngk.experiments.samples_per_class")
    keras.utils.set_random_seed(0)
    images = keras.Input((4, 4, 1))
    backbone = keras.Model(images, keras.layers.Dense(3)(keras.layers.Flatten()(images)), name="tiny")
    built = models.nngk_classifier(backbone, 3, head="dense")
    assert module.embedding_model(built.inference_model) is backbone
    x, y = rng.normal(size=(12, 4, 4, 1)).astype(np.float32), np.repeat(np.arange(3), 4)
    spreads = module.class_spreads(backbone, x, y, x[::4], y[::4])
    embedded = backbone.predict(x, verbose=0)
    assert spreads["train_class_spread"] == pytest.approx(reference.class_spread(embedded, y), abs=1e-5)
    assert spreads["validation_class_spread"] is None  # One image per class.
    pixels = module.class_spreads(None, x, y, x, y)
    assert pixels["validation_class_spread"] == pytest.approx(reference.class_spread(x.reshape(12, -1), y), abs=1e-5)


def test_samples_per_class_plot_with_every_image_alone(tmp_path):
    """`--examples_per_class=0` alone (every image, no n to put on the log axis) still writes its plot."""
    from keras_nngk import plots  # pylint: disable=g-import-not-at-top
    for name, table in (("all", {"nngk": {"all": [0.9, 0.01, 3]}, "dense": {"all": [0.91, 0.0, 3]}}),
                        ("mixed", {"nngk": {"6": [0.6, 0.02, 3], "all": [0.9, 0.01, 3]}})):
        path = plots.plot_samples_per_class(table, str(tmp_path / f"{name}.png"), "digits")
        with open(path, "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
