"""End to end: the real entry points on tiny configs, resume after a kill, bad input, loops and heads."""

import glob
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tf_keras as keras

import keras_nngk as kn
from tests import processes

ROOT, ENV = processes.ROOT, processes.ENV


def run_entry(module, *args, timeout=600):
    """`python -m module args...` in the repository (a process forked after TensorFlow's import: tests/processes.py)."""
    return processes.run_module(module, *args, timeout=timeout)


BAD_RUNS = [({"dataset": "imagenet"}, "Unknown dataset 'imagenet'; valid: digits"),
            ({"head": "svm"}, "Unknown head 'svm'; valid: nngk, impostor, dense, knn"),
            ({"model": "transformer"}, "Unknown model 'transformer'; valid: classifier, biased, plain"),
            ({"backbone": "alexnet"}, "Unknown backbone 'alexnet'"),
            ({"dataset": "cifar100", "data_dir": "{tmp_path}"}, "tfds build cifar100"),
            ({"weights": "/no/such/file.h5"}, "Weights file not found"),
            ({"epochs": 0}, "`epochs` must be a positive integer")]


@pytest.mark.slow
def test_bad_input_gets_one_clear_line(tmp_path):
    """Each bad flag is a ValueError naming the problem, raised before anything is written; the command prints it
    as one line with exit status 2 (checked through the command for a flag, a data set and a file)."""
    for values, message in BAD_RUNS:
        values = {key: value.format(tmp_path=tmp_path) if isinstance(value, str) else value
                  for key, value in values.items()}
        with pytest.raises(ValueError, match=re.escape(message)):
            config = kn.training.Config.for_dataset(values.pop("dataset", kn.data.DEFAULT), **values)
            kn.training.fit(config, str(tmp_path / "w"), verbose=0)
        assert not os.path.exists(tmp_path / "w" / "config.json")
    for args, message in [(["--head=svm"], BAD_RUNS[1][1]),
                          (["--dataset=cifar100", f"--data_dir={tmp_path}"], BAD_RUNS[4][1]),
                          (["--weights=/no/such/file.h5"], BAD_RUNS[5][1])]:
        result = run_entry("trainers.fit", *args, f"--workdir={tmp_path / 'w'}", timeout=120)
        assert result.returncode == 2, (args, result.stderr[-2000:])
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and message in last, (args, last)
        assert "Traceback" not in result.stderr


def _tiny(**overrides):
    return kn.training.Config.for_dataset("digits", **{"epochs": 1, **overrides})


class _Killed(Exception):
    pass


@pytest.mark.slow
def test_resumed_run_ranks_the_candidates_of_the_uninterrupted_run(tmp_path, monkeypatch):
    """Lists built at epoch 0 serve epochs 0-2 (--candidates_every=3): a run stopped after epoch 1 resumes with
    the checkpointed lists, not lists built from the centers of epoch 2, and ends bit for bit as the whole run."""
    config = _tiny(epochs=3, candidates=40, candidates_every=3)
    whole = kn.training.fit(config, str(tmp_path / "whole"), verbose=0)
    assert len(whole["history"]["candidate_recall"]) == 3  # After each epoch: how many neighbours the lists hold.
    assert all(0.0 < recall <= 1.0 for recall in whole["history"]["candidate_recall"])
    original = kn.training.callbacks.HistoryLog.on_epoch_begin

    def stop_at_epoch_2(self, epoch, logs=None):
        if epoch == 2:
            raise _Killed()
        return original(self, epoch, logs)

    monkeypatch.setattr(kn.training.callbacks.HistoryLog, "on_epoch_begin", stop_at_epoch_2)
    with pytest.raises(_Killed):
        kn.training.fit(config, str(tmp_path / "resumed"), verbose=0)
    monkeypatch.setattr(kn.training.callbacks.HistoryLog, "on_epoch_begin", original)
    resumed = kn.training.fit(config, str(tmp_path / "resumed"), verbose=0)
    assert resumed.pop("initial_epoch") == 2 and whole.pop("initial_epoch") == 0
    for metrics in (whole, resumed):
        metrics.pop("train_seconds")
    assert resumed == whole


@pytest.mark.slow
def test_workdir_with_other_config_is_refused(tmp_path):
    kn.training.fit(_tiny(), str(tmp_path), verbose=0)
    with pytest.raises(ValueError, match=r"another config \(head: 'nngk' -> 'dense'\)"):
        kn.training.fit(_tiny(head="dense"), str(tmp_path), verbose=0)
    results = kn.training.fit(_tiny(head="dense"), str(tmp_path), allow_config_change=True, verbose=0)
    assert results["head"] == "dense"


@pytest.mark.slow
def test_corrupt_checkpoint_gets_clear_error(tmp_path):
    kn.training.fit(_tiny(epochs=1), str(tmp_path), verbose=0)
    checkpoints = tmp_path / "checkpoints"
    for path in checkpoints.iterdir():
        if path.name.endswith(".data-00000-of-00001"):
            path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="is corrupt or does not match the model.*delete"):
        kn.training.fit(_tiny(epochs=2), str(tmp_path), verbose=0)


@pytest.mark.parametrize("head", ["nngk", "impostor-loose"])
def test_training_step_is_traced_once(head):
    """The optimizer's and metrics' variables exist before the first step (`create_training_variables`): a
    tf.function whose first call creates variables is traced twice. The loose impostors' sparse center table keeps
    its own optimizer (no dense slots in the compiled one)."""
    config = _tiny(head="impostor", tie="loose") if head == "impostor-loose" else _tiny()
    data = kn.data.load(config.dataset, **config.data_options())
    built = kn.training.run.build_models(config, data)
    model = built.train_model
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    dense = model.trainable_variables
    if head == "impostor-loose":
        model.set_center_optimizer(kn.training.SparseAdam(1e-3), [built.center_head.centers])
        dense = [variable for variable in dense if variable is not built.center_head.centers]
    model.create_training_variables()
    assert len(model.optimizer.variables) == 1 + 2 * len(dense)  # Adam: the step count, m and v of each.
    images = np.stack([image for image, _ in data.train.take(16).as_numpy_iterator()]).astype(np.float32)
    inputs = {"image": images, "sample_id": np.arange(16, dtype=np.int32)}
    model.fit(inputs, data.train_labels[:16], batch_size=8, epochs=2, verbose=0)
    assert model.train_function.experimental_get_tracing_count() == 1
    assert len(model.optimizer.variables) == 1 + 2 * len(dense)


@pytest.mark.slow
@pytest.mark.parametrize("head", ["dense", "knn"])
def test_baseline_heads(tmp_path, head):
    results = kn.training.fit(_tiny(head=head, epochs=3), str(tmp_path), verbose=0)
    assert results["head"] == head and results["test_accuracy"] > 0.5
    if head == "knn":  # The inference model is the eq. 3 vote over the training embeddings.
        assert results["test_accuracy"] == pytest.approx(results["knn_accuracy"])


@pytest.mark.slow
def test_retrieval_task_reports_recall(tmp_path):
    results = kn.training.fit(_tiny(task="retrieval", epochs=2), str(tmp_path), verbose=0)
    recalls = [results[f"recall@{k}"] for k in (1, 2, 4, 8)]
    assert recalls == sorted(recalls) and 0.5 < recalls[0] <= 1.0
    assert 0.0 < results["map@r"] <= results["r_precision"] <= 1.0
    assert os.path.exists(tmp_path / "recall_at_k.png")


def test_aligned_sets_retrieve_on_the_feature_map_and_the_others_on_pooled_features():
    """The small grayscale sets' preset reads the feature map (README "Embedding quality"); a flag overrides it."""
    for dataset in ("fashion_mnist", "mnist", "mnist5k", "digits"):
        assert kn.training.Config.for_dataset(dataset).retrieval_features == "map"
    for dataset in ("cifar10", "cifar100", "cars196", "caltech_birds2011"):
        assert kn.training.Config.for_dataset(dataset).retrieval_features == "pooled"
    assert kn.training.Config.for_dataset("fashion_mnist", retrieval_features="pooled").retrieval_features == "pooled"


@pytest.mark.slow
def test_retrieval_on_pooled_features(tmp_path):
    """--retrieval_features=pooled: Recall@K of the normalised features under the projection, recomputed here from
    the saved backbone with a NumPy nearest-neighbour search; the embedding's R@1 is reported beside it."""
    results = kn.training.fit(_tiny(task="retrieval", retrieval_features="pooled"), str(tmp_path), verbose=0)
    data = kn.data.load("digits", task="retrieval")
    images = np.concatenate(list(data.test.map(lambda image, label: image).batch(512).as_numpy_iterator()))
    labels = np.concatenate(list(data.test.map(lambda image, label: label).batch(512).as_numpy_iterator()))
    backbone = keras.models.load_model(str(tmp_path / "backbone.keras"), compile=False)
    for name, network in (("pooled", keras.Model(backbone.input, backbone.get_layer("embedding").input)),
                          ("embedding", backbone)):
        features = network.predict(images, verbose=0).astype(np.float64)
        features /= np.linalg.norm(features, axis=1, keepdims=True)
        distances = ((features[:, None] - features[None]) ** 2).sum(-1)
        np.fill_diagonal(distances, np.inf)  # Leave-one-out.
        recall = np.mean(labels[distances.argmin(1)] == labels)
        key = "recall@1" if name == "pooled" else "embedding_recall@1"
        assert results[key] == pytest.approx(recall, abs=1.5 / len(labels))  # One tie may fall either way.
    assert results["retrieval_features"] == "pooled"
    assert json.load(open(tmp_path / "config.json"))["retrieval_features"] == "pooled"
    # An evaluation choice: the finished run re-evaluates on its workdir without training again.
    again = kn.training.fit(_tiny(task="retrieval", retrieval_features="embedding"), str(tmp_path), verbose=0)
    assert again["initial_epoch"] == 1 and again["retrieval_features"] == "embedding"
    assert again["recall@1"] == results["embedding_recall@1"]
    # "map": the last feature map under the pooling, flattened and normalised.
    mapped = kn.training.fit(_tiny(task="retrieval", retrieval_features="map"), str(tmp_path), verbose=0)
    features = keras.Model(backbone.input, backbone.get_layer("relu3").output).predict(images, verbose=0)
    features = features.reshape(len(features), -1).astype(np.float64)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    distances = ((features[:, None] - features[None]) ** 2).sum(-1)
    np.fill_diagonal(distances, np.inf)
    assert mapped["retrieval_features"] == "map" and mapped["initial_epoch"] == 1
    assert mapped["recall@1"] == pytest.approx(np.mean(labels[distances.argmin(1)] == labels), abs=1.5 / len(labels))


@pytest.mark.slow
def test_custom_loop_matches_model_fit(tmp_path):
    config = dict(epochs=2, recalibrate_batchnorm=False)
    fitted = kn.training.fit(_tiny(**config), str(tmp_path / "fit"), verbose=0)
    custom = kn.training.fit(_tiny(loop="custom", **config), str(tmp_path / "custom"), verbose=0)
    # Same batches, same initial weights: the first epoch agrees to float precision. Afterwards summation order in
    # the two traced steps differs at ~1e-7, and a changed neighbour choice can amplify that to ~1e-3.
    np.testing.assert_allclose(custom["history"]["loss"][0], fitted["history"]["loss"][0], rtol=1e-5)
    np.testing.assert_allclose(custom["history"]["loss"], fitted["history"]["loss"], rtol=5e-3)
    assert custom["test_accuracy"] == pytest.approx(fitted["test_accuracy"], abs=2e-3)
    assert custom["sigma"] == pytest.approx(fitted["sigma"], rel=1e-4)
    assert os.listdir(tmp_path / "custom" / "logs" / "train")  # TensorBoard scalars from the custom loop too.


@pytest.mark.slow
def test_cars196_retrieval_run_on_mock_tfds(tmp_path):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    from tests.data.test_datasets import fake_as_dataset  # pylint: disable=g-import-not-at-top
    config = kn.training.Config.for_dataset("cars196", backbone="small_conv", image_size=32, embedding_dim=8,
                                            batch_size=4, epochs=1, num_neighbours=4)
    assert config.task == "retrieval" and config.learning_rate == 1e-4  # The fine-grained preset.
    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, as_dataset_fn=fake_as_dataset):
        results = kn.training.fit(config, str(tmp_path), verbose=0)
    assert set(results) >= {"recall@1", "recall@2", "recall@4", "recall@8"}
    assert results["num_classes"] == 98 and results["num_train"] + results["num_test"] == 24


@pytest.mark.slow
def test_readme_main_command_writes_everything_and_evaluate_reproduces(tmp_path):
    """`python -m trainers.fit` exactly as README states it (default data, default workdir under saved_models/):
    what it prints and writes, and `trainers.evaluate` on the run reproduces its metrics."""
    result = subprocess.run([sys.executable, "-m", "trainers.fit", "--verbose=0"], cwd=str(tmp_path),
                            capture_output=True, text=True, timeout=600, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = os.listdir(tmp_path / "saved_models")
    assert len(runs) == 1 and runs[0].startswith("mnist5k-nngk-")
    workdir = str(tmp_path / "saved_models" / runs[0])
    # What a person reads: a short summary, this project's log lines, no TensorFlow internals.
    assert result.stdout.splitlines()[0].startswith("mnist5k / small_conv / nngk head: 5 epochs in")
    assert f"Run written to saved_models/{runs[0]}" in result.stdout and "accuracy" in result.stdout
    assert len(result.stdout.splitlines()) + len(result.stderr.splitlines()) < 20, result.stdout + result.stderr
    assert "Sharding callback" not in result.stderr and "oneDNN" not in result.stderr
    for name in ("config.json", "metrics.json", "model.keras", "backbone.keras", "saved_model/saved_model.pb",
                 "training.png", "class_names.json", "checkpoints/checkpoint"):
        assert os.path.exists(os.path.join(workdir, name)), name
    assert os.listdir(os.path.join(workdir, "logs"))
    saved = json.load(open(os.path.join(workdir, "metrics.json")))
    assert saved["dataset"] == "mnist5k" and saved["head"] == "nngk"
    assert saved["epochs"] == 5 and saved["test_accuracy"] > 0.95  # Its time is measured, not asserted: README.
    # The head's kernel width and refreshes are logged per epoch, in the history and in TensorBoard: centers come
    # from the training steps, so the only full refresh after the start follows the last epoch.
    assert len(saved["history"]["sigma"]) == 5 and saved["history"]["sigma"][-1] == pytest.approx(saved["sigma"])
    assert saved["history"]["centers_refreshed"] == [0, 0, 0, 0, 1]
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tags = {value.tag for path in glob.glob(os.path.join(workdir, "logs", "train", "events.*"))
            for event in tf.compat.v1.train.summary_iterator(path) for value in event.summary.value}
    assert {"epoch_loss", "epoch_sigma", "epoch_centers_refreshed"} <= tags, tags
    evaluation = run_entry("trainers.evaluate", f"--model={workdir}", "--verbose=0")
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    reported = dict(line.split(": ")[:2] for line in evaluation.stdout.splitlines() if ": " in line)
    assert float(reported["test_accuracy"].split()[0]) == pytest.approx(saved["test_accuracy"], abs=1e-4)
    assert float(reported["knn_accuracy"].split()[0]) == pytest.approx(saved["knn_accuracy"], abs=1e-4)
