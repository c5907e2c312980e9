"""Continual learning: Algorithm 1's selection rules, budgets, metrics, every method end to end, bad input."""

import json
import os

import numpy as np
import pytest

from keras_nngk import continual
from tests import reference
from tests.trainers.test_fit import run_entry

TINY = dict(benchmark="split_digits", epochs=1, finetune_epochs=1, batch_size=32, budget=40, drop_per_task=5,
            num_neighbours=8, ewc_samples=16, add_rounds=2)


@pytest.fixture(scope="module")
def digits_tasks():
    benchmark = continual.load_benchmark("split_digits", max_train_per_task=120)
    return benchmark.tasks[:2], benchmark.num_classes, benchmark.image_shape


def test_benchmark_tasks_are_class_disjoint_and_complete():
    benchmark = continual.load_benchmark("split_digits")
    assert len(benchmark.tasks) == 5 and benchmark.num_classes == 10
    classes = np.concatenate([task.classes for task in benchmark.tasks])
    assert sorted(classes.tolist()) == list(range(10))
    for task in benchmark.tasks:
        assert set(np.unique(task.y_train)) == set(task.classes) == set(np.unique(task.y_test))
    arrays = continual.data_lib.load_arrays("digits")
    assert sum(len(task.y_train) for task in benchmark.tasks) == len(arrays.y_train)
    assert sum(len(task.y_test) for task in benchmark.tasks) == len(arrays.y_test)


def test_accuracy_matrix_summary_by_hand():
    matrix = [[0.9, 0.0, 0.0],
              [0.6, 0.8, 0.0],
              [0.5, 0.7, 0.95]]
    average, forgetting = continual.accuracy_matrix_summary(matrix)
    assert average == pytest.approx((0.5 + 0.7 + 0.95) / 3)
    assert forgetting == pytest.approx(((0.9 - 0.5) + (0.8 - 0.7)) / 2)
    assert continual.accuracy_matrix_summary([[0.7]]) == (pytest.approx(0.7), 0.0)


@pytest.mark.slow
@pytest.mark.parametrize("method", continual.METHODS)
def test_every_method_runs_two_tasks(method, digits_tasks, tmp_path):
    tasks, num_classes, image_shape = digits_tasks
    # Nearest-neighbour heads learn a new task from its centers within a few steps; a softmax head needs more.
    nearest_neighbour = issubclass(continual.methods.get(method), continual.methods.centers.CenterMethod)
    epochs = 1 if nearest_neighbour else 5
    # Statistics of 128 pooled features (65 KB) need a larger byte budget than 40 centers (11,840 bytes).
    budget = 1000 if method.startswith("slda") else TINY["budget"]
    config = continual.ContinualConfig(method=method, **{**TINY, "epochs": epochs, "budget": budget})
    trainer = continual.ContinualTrainer(config, num_classes, image_shape, verbose=0)
    results = trainer.fit(tasks)
    matrix = np.array(results["accuracy_matrix"])
    assert matrix.shape == (2, 2) and np.all((matrix >= 0) & (matrix <= 1))
    assert results["average_accuracy"] == pytest.approx(matrix[1].mean())
    assert matrix[0, 0] > 0.6, matrix  # The first task (two classes) is learned,
    assert matrix[1, 1] > 0.6, matrix  # and so is the second.
    budget_bytes = trainer.center_bytes(config.budget)
    if method in continual.CENTER_METHODS:
        assert 0 < results["num_centers"] <= config.budget
        assert results["stored_bytes"] == trainer.center_bytes(results["num_centers"]) <= budget_bytes
    if method == "replay":
        assert 0 < results["stored_bytes"] <= budget_bytes
        assert set(np.unique(trainer.algorithm.memory[1])) == {0, 1, 2, 3}
    if method == "finetune":
        assert results["stored_bytes"] == 0
    if method.startswith("slda"):  # Statistics of the features within the same byte budget, no center.
        assert 0 < results["stored_bytes"] == trainer.algorithm.statistics.stored_bytes <= budget_bytes


def test_training_step_is_traced_once_per_batch_shape(digits_tasks):
    """The optimizer's variables exist before the first step (a tf.function creating variables traces twice)."""
    tasks, num_classes, image_shape = digits_tasks
    trainer = continual.ContinualTrainer(continual.ContinualConfig(method="nngk", **TINY), num_classes, image_shape,
                                         verbose=0)
    trainer.prepare(tasks[:1])
    slots = len(trainer.optimizer.variables)
    assert slots == 1 + 2 * len(trainer.variables)  # Adam: the step count, m and v of each variable.
    count = 96  # Three whole batches of 32: one batch shape.
    trainer.run_epochs(1, tasks[0].x_train[:count], tasks[0].y_train[:count].astype(np.int64), np.arange(count),
                       "task 1")
    assert trainer._train_step.experimental_get_tracing_count() == 1  # pylint: disable=protected-access
    assert len(trainer.optimizer.variables) == slots


def test_a_swallowed_ctrl_c_stops_the_epoch_after_its_step(digits_tasks, monkeypatch):
    """`interrupts.raise_if_interrupted` after each step: a Ctrl-C that TensorFlow swallowed during the first step
    stops the epoch there."""
    from keras_nngk.utils import interrupts  # pylint: disable=import-outside-toplevel
    tasks, num_classes, image_shape = digits_tasks
    trainer = continual.ContinualTrainer(continual.ContinualConfig(method="finetune", **TINY), num_classes,
                                         image_shape, verbose=0)
    trainer.prepare(tasks[:1])
    steps = []
    original = trainer._train_step  # pylint: disable=protected-access

    def step_pressing_ctrl_c(*args):
        steps.append(1)
        interrupts._interrupted.set()  # pylint: disable=protected-access  (what the handler notes)
        return original(*args)

    monkeypatch.setattr(trainer, "_train_step", step_pressing_ctrl_c)
    count = 96
    try:
        with pytest.raises(KeyboardInterrupt):
            trainer.run_epochs(1, tasks[0].x_train[:count], tasks[0].y_train[:count].astype(np.int64),
                               np.arange(count), "task 1")
    finally:
        interrupts._interrupted.clear()  # pylint: disable=protected-access
    assert steps == [1]


@pytest.mark.slow
def test_add_drop_keeps_budget_and_reports_surgery(digits_tasks):
    tasks, num_classes, image_shape = digits_tasks
    config = continual.ContinualConfig(method="nngk_add_drop", **{**TINY, "budget": 30, "drop_per_task": 4})
    trainer = continual.ContinualTrainer(config, num_classes, image_shape, verbose=0)
    results = trainer.fit(tasks)
    log = results["center_log"]
    # Task 1: C empty, 30 // 2 + 4 = 19 added. Task 2: 4 dropped (19 + 19 - 30 = 8 > 4: 8 dropped), 19 added.
    assert log[0] == {"dropped": 0, "added": 19, "num_centers": 19}
    assert log[1] == {"dropped": 8, "added": 19, "num_centers": 30}
    stored_ids = trainer.algorithm.center_ids()
    assert np.sum(stored_ids < len(tasks[0].y_train)) == 11  # Centers of task 1 left after the drops.
    labels = trainer.head.center_labels.numpy()[trainer.head.center_mask.numpy()]
    np.testing.assert_allclose(labels.sum(1), 1.0, rtol=1e-5)
    assert np.any((labels > 1e-6) & (labels < 1 - 1e-6))  # Eq. 13 made some labels soft.


@pytest.mark.slow
def test_drops_are_the_best_predicted_centers(digits_tasks):
    tasks, num_classes, image_shape = digits_tasks
    config = continual.ContinualConfig(method="nngk_add_drop", **TINY)
    trainer = continual.ContinualTrainer(config, num_classes, image_shape, verbose=0)
    trainer.fit(tasks)
    head = trainer.head
    mask = head.center_mask.numpy()
    centers, labels = head.centers.numpy()[mask], head.center_labels.numpy()[mask]
    ids = head.center_sample_ids.numpy()[mask]
    # Leave-one-out NNGK prediction of every center (NumPy eq. 7, no weights), score = probability of its label.
    predictions = reference.nngk_classifier(centers, centers, labels, config.num_neighbours,
                                            float(head.sigma.numpy()), query_sample_ids=ids, center_sample_ids=ids)
    scores = np.sum(predictions * labels, axis=1)
    threshold = np.sort(scores)[::-1][4]  # Ties are common (many centers are predicted perfectly).
    chosen = trainer.algorithm.select_drops(5)
    assert len(set(chosen.tolist())) == 5
    score_of = dict(zip(ids.tolist(), scores))
    chosen_scores = np.array([score_of[i] for i in chosen.tolist()])
    assert np.all(chosen_scores >= threshold - 1e-5), (chosen_scores, threshold)
    assert scores.min() < threshold - 0.05  # Some centers were predicted worse and are kept.


@pytest.mark.slow
def test_worst_predicted_samples_are_added_first(digits_tasks):
    tasks, num_classes, image_shape = digits_tasks
    config = continual.ContinualConfig(method="nngk_add", **{**TINY, "add_rounds": 1})
    trainer = continual.ContinualTrainer(config, num_classes, image_shape, verbose=0)
    trainer.fit(tasks[:1])
    embeddings = trainer.embed(tasks[1].x_train)
    labels = tasks[1].y_train
    before = trainer.head_predict(embeddings)
    loss = -np.log(before[np.arange(len(labels)), labels] + 1e-12)
    ids = np.arange(10_000, 10_000 + len(labels))
    trainer.algorithm.add_samples(embeddings, labels, ids, 6)
    added = np.setdiff1d(trainer.algorithm.center_ids(), np.arange(len(tasks[0].y_train)))
    worst = ids[np.argsort(-loss, kind="stable")]
    threshold = np.sort(loss)[::-1][5]
    assert np.all(loss[added - 10_000] >= threshold - 1e-9), (added, worst[:6])


def test_table_shows_mean_and_spread_over_seeds():
    summary = {"slda": {"average_accuracy": [0.8, 0.9], "forgetting": [0.1, 0.3], "stored_bytes": [100, 100]},
               "balanced": {"average_accuracy": [0.5, 0.5], "forgetting": [0.2, 0.2], "stored_bytes": [1000, 3000]},
               "replay": {"average_accuracy": 0.5, "forgetting": 0.25, "stored_bytes": 1234}}
    lines = continual.format_table(summary).splitlines()
    assert lines[2] == "| slda | 85.0% ± 5.0 | 20.0 ± 10.0 | 100 |"
    assert lines[3] == "| balanced | 50.0% ± 0.0 | 20.0 ± 0.0 | 2,000 ± 1,000 |"
    assert lines[4] == "| replay | 50.0% | 25.0 | 1,234 |"


def test_bad_input(digits_tasks):
    tasks, num_classes, image_shape = digits_tasks
    with pytest.raises(ValueError, match="Unknown method 'gem'"):
        continual.ContinualConfig(method="gem").validate()
    with pytest.raises(ValueError, match="Unknown benchmark 'split_imagenet'"):
        continual.load_benchmark("split_imagenet")
    overlapping = [tasks[0], continual.Task(np.array([1, 2]), tasks[1].x_train, np.where(
        tasks[1].y_train == 3, 1, tasks[1].y_train), tasks[1].x_test, np.where(tasks[1].y_test == 3, 1,
                                                                               tasks[1].y_test))]
    trainer = continual.ContinualTrainer(continual.ContinualConfig(method="finetune", **TINY), num_classes,
                                         image_shape, verbose=0)
    with pytest.raises(ValueError, match="share class 1: a class-incremental run needs tasks with disjoint classes"):
        trainer.fit(overlapping)
    with pytest.raises(ValueError, match="features with 'pixels' need a random expansion"):
        continual.ContinualConfig(method="slda", features="pooled+pixels").validate()
    with pytest.raises(ValueError, match="`features` must join distinct names"):
        continual.ContinualConfig(method="slda", features="pooled+edges").validate()
    with pytest.raises(ValueError, match="Unknown drop_rule 'worst'"):
        continual.ContinualConfig(drop_rule="worst").validate()
    preset = continual.ContinualConfig(method="nngk_balanced", add_rule="random").resolved()
    assert (preset.add_rule, preset.drop_rule, preset.class_quota) == ("random", "redundant", True)  # Flags win.
    with pytest.raises(ValueError, match="nearest-neighbour methods only"):
        continual.ContinualConfig(method="ewc", freeze_backbone_after=1).validate()


@pytest.mark.slow
def test_entry_point_writes_results_and_plots(tmp_path):
    workdir = str(tmp_path / "cl")
    result = run_entry("trainers.continual", "--benchmark=split_digits", "--method=nngk_add_drop,finetune",
                       "--max_train_per_task=100", "--budget=40", "--batch_size=32", "--num_neighbours=8",
                       f"--workdir={workdir}", "--verbose=0")
    assert result.returncode == 0, result.stderr[-3000:]
    for method in ("nngk_add_drop", "finetune"):
        saved = json.load(open(os.path.join(workdir, method, "results.json")))
        assert 0 <= saved["average_accuracy"] <= 1 and len(saved["accuracy_matrix"]) == 5
        for name in ("accuracy_matrix.png", "model.keras"):
            assert os.path.exists(os.path.join(workdir, method, name)), name
    assert os.path.exists(os.path.join(workdir, "average_accuracy.png"))
    assert "| nngk_add_drop |" in result.stdout
    first = os.path.getmtime(os.path.join(workdir, "finetune", "results.json"))
    again = run_entry("trainers.continual", "--benchmark=split_digits", "--method=nngk_add_drop,finetune",
                      "--max_train_per_task=100", "--budget=40", "--batch_size=32", "--num_neighbours=8",
                      f"--workdir={workdir}", "--verbose=0")
    assert again.returncode == 0 and "already holds the results" in again.stderr
    assert os.path.getmtime(os.path.join(workdir, "finetune", "results.json")) == first
    seeds = run_entry("trainers.continual", "--benchmark=split_digits", "--method=slda", "--seeds=0,1",
                      "--max_train_per_task=100", "--batch_size=32", "--num_neighbours=8", "--budget=1000",
                      f"--workdir={workdir}/seeds", "--verbose=0")
    assert seeds.returncode == 0, seeds.stderr[-3000:]
    summary = json.load(open(os.path.join(workdir, "seeds", "summary.json")))
    accuracies = [json.load(open(os.path.join(workdir, "seeds", f"seed_{seed}", "slda", "results.json")))[
        "average_accuracy"] for seed in (0, 1)]
    assert summary["slda"]["average_accuracy"] == accuracies and summary["slda"]["seeds"] == [0, 1]
    assert "| slda | " in seeds.stdout and " ± " in seeds.stdout
    bad = run_entry("trainers.continual", "--benchmark=split_digits", "--method=icarl", f"--workdir={workdir}")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: Unknown method 'icarl'")


@pytest.mark.slow
@pytest.mark.parametrize("name,num_tasks,classes_per_task", [("split_cifar10", 5, 2), ("split_cifar100", 10, 10)])
def test_cifar_benchmarks_load_through_tfds(name, num_tasks, classes_per_task):
    import tensorflow_datasets as tfds
    with tfds.testing.mock_data(num_examples=1500, policy=tfds.testing.MockPolicy.USE_CODE):
        benchmark = continual.load_benchmark(name)
    assert len(benchmark.tasks) == num_tasks and benchmark.image_shape == (32, 32, 3)
    for index, task in enumerate(benchmark.tasks):
        assert list(task.classes) == list(range(index * classes_per_task, (index + 1) * classes_per_task))
        assert set(np.unique(task.y_train)) == set(task.classes)
        assert task.x_train.dtype == np.float32 and 0.0 <= task.x_train.min() and task.x_train.max() <= 1.0


def test_benchmark_not_prepared_says_how(tmp_path):
    with pytest.raises(continual.data_lib.DatasetNotAvailableError, match="not prepared in .*tfds build cifar10"):
        continual.load_benchmark("split_cifar10", data_dir=str(tmp_path))


@pytest.mark.parametrize("method", ["ewc", "si"])
def test_regularisation_penalty_matches_numpy(method, digits_tasks):
    """After a task, the penalty is (lambda/2) sum F (theta - theta*)^2 for EWC and c sum Omega (theta - theta*)^2 for
    SI, with Omega = max(w, 0) / ((theta_end - theta_start)^2 + xi) from the path integral w."""
    tasks, num_classes, image_shape = digits_tasks
    config = continual.ContinualConfig(method=method, **{**TINY, "ewc_samples": 10_000})  # EWC: every sample.
    trainer = continual.ContinualTrainer(config, num_classes, image_shape, verbose=0)
    trainer.prepare(tasks[:1])
    start = [v.numpy().copy() for v in trainer.variables]
    trainer.run_epochs(1, tasks[0].x_train, tasks[0].y_train.astype(np.int64), np.arange(len(tasks[0].y_train)),
                        "task 1")
    path = [w.numpy().copy() for w in trainer.algorithm.path_integral] if method == "si" else None
    end = [v.numpy().copy() for v in trainer.variables]
    trainer.algorithm.end_task(0, tasks[0])
    importance = [omega.numpy() for omega in trainer.algorithm.importance]
    if method == "si":
        for omega, w, a, b in zip(importance, path, start, end):
            np.testing.assert_allclose(omega, np.maximum(w, 0) / ((b - a) ** 2 + config.si_xi), rtol=1e-4,
                                       atol=1e-6)
        assert any(np.any(w > 0) for w in path)  # Training did accumulate a path integral.
    else:  # Closed form for the softmax bias: d log p_y / d b = onehot(y) - p, so F_b = mean (onehot(y) - p)^2.
        probabilities = trainer.predict(tasks[0].x_train)
        onehot = np.eye(num_classes)[tasks[0].y_train]
        bias = next(i for i, v in enumerate(trainer.variables) if "dense_head" in v.name and "bias" in v.name)
        np.testing.assert_allclose(importance[bias], np.mean((onehot - probabilities) ** 2, axis=0), rtol=1e-3,
                                   atol=1e-7)
    rng = np.random.default_rng(0)
    moved = [a + 0.01 * rng.normal(size=a.shape).astype(np.float32) for a in end]
    for variable, value in zip(trainer.variables, moved):
        variable.assign(value)
    scale = config.ewc_lambda / 2 if method == "ewc" else config.si_c
    expected = scale * sum(float(np.sum(omega * (m - a) ** 2)) for omega, m, a in zip(importance, moved, end))
    assert float(trainer.algorithm.penalty()) == pytest.approx(expected, rel=1e-4)
    assert expected > 0


def test_a_task_left_at_chance_is_warned(caplog):
    trainer = continual.ContinualTrainer.__new__(continual.ContinualTrainer)  # Only the warning is under test.
    trainer.config = continual.ContinualConfig(epochs=1, batch_size=256)
    trainer.method = "nngk"
    task = continual.Task(classes=np.array([0, 1]), x_train=np.zeros((300, 8, 8, 1)),
                          y_train=np.zeros(300), x_test=None, y_test=None)
    with caplog.at_level("WARNING"):
        trainer._warn_if_not_learned(0, task, 0.0)
        trainer._warn_if_not_learned(1, task, 0.9)  # Learned: no warning.
    warnings = [record.getMessage() for record in caplog.records if "learned nothing" in record.getMessage()]
    assert warnings == ["nngk learned nothing on task 1 (accuracy 0.0%, chance 50.0%) in 2 training steps; raise "
                        "--epochs or lower --batch_size, or use a larger benchmark, before reading its results."]


@pytest.mark.slow
def test_balanced_selection_keeps_quotas_and_floor(digits_tasks):
    tasks, num_classes, image_shape = digits_tasks
    config = continual.ContinualConfig(method="nngk_balanced", **{**TINY, "budget": 24})
    trainer = continual.ContinualTrainer(config, num_classes, image_shape, verbose=0)
    assert (trainer.config.class_quota, trainer.config.drop_rule, trainer.config.add_rule) == (
        True, "redundant", "own_mean")  # The preset, recorded in the results' config.
    trainer.fit(tasks)
    counts = np.bincount(trainer.algorithm.center_classes(), minlength=num_classes)
    # Four classes seen, 24 centers: 6 each (each class has far more than 6 training samples, and the floor of 10
    # never blocks a quota drop).
    assert counts[:4].tolist() == [6, 6, 6, 6], counts


@pytest.mark.slow
def test_statistics_method_stores_only_statistics_and_exports(digits_tasks, tmp_path):
    import keras_nngk as kn
    tasks, num_classes, image_shape = digits_tasks
    config = continual.ContinualConfig(method="slda_pixels", **{**TINY, "budget": 1000})
    trainer = continual.ContinualTrainer(config, num_classes, image_shape, verbose=0)
    results = trainer.fit(tasks)
    head = trainer.algorithm.statistics
    # The widest expansion whose statistics fit 1000 centers' bytes (1000 * (64 + 10) * 4 = 296,000): d = 128 + m.
    dim = head.dimension
    assert dim > 128 and 4 * (dim * dim + 10 * (dim + 1)) <= 296_000 < 4 * ((dim + 1) ** 2 + 10 * (dim + 2))
    with pytest.raises(ValueError, match="more than the budget of 11,840"):
        continual.ContinualTrainer(continual.ContinualConfig(method="slda", **TINY), num_classes, image_shape,
                                   verbose=0).fit(tasks)
    assert results["stored_bytes"] == head.stored_bytes
    # The statistics are those of the frozen features of both tasks' training images (NumPy batch formula).
    features = np.concatenate([trainer.algorithm.feature_model.predict(t.x_train, verbose=0) for t in tasks])
    labels = np.concatenate([t.y_train for t in tasks])
    counts, means, scatter = reference.class_statistics(features, labels, num_classes)
    np.testing.assert_allclose(head.class_counts.numpy(), counts)
    np.testing.assert_allclose(head.class_means.numpy(), means, atol=1e-4)
    np.testing.assert_allclose(head.scatter.numpy(), scatter, rtol=1e-3, atol=1e-2)
    model = trainer.algorithm.inference_model()
    images = tasks[1].x_test[:16]
    path = kn.export.to_tflite(model, str(tmp_path / "slda.tflite"))
    np.testing.assert_allclose(kn.export.TFLiteModel(path).predict(images), model.predict(images, verbose=0),
                               atol=1e-4)


@pytest.mark.slow
def test_feature_replay_keeps_no_sample_and_draws_from_the_statistics(digits_tasks):
    tasks, num_classes, image_shape = digits_tasks
    config = continual.ContinualConfig(method="feature_replay", **{**TINY, "pseudo_per_class": 20})
    trainer = continual.ContinualTrainer(config, num_classes, image_shape, verbose=0)
    results = trainer.fit(tasks)
    method = trainer.algorithm
    # Centers are pseudo-features only (ids from PSEUDO_IDS), 20 for each of the 4 classes seen.
    ids = method.center_ids()
    assert len(ids) == 80 and ids.min() >= continual.methods.feature_replay.PSEUDO_IDS
    np.testing.assert_array_equal(np.bincount(method.center_classes(), minlength=num_classes)[:5], [20] * 4 + [0])
    # The statistics are those of the frozen trunk's features of both tasks (the trunk is frozen after task 1, so
    # the features of task 1 taken now are those it had then).
    features = np.concatenate([method.trunk.predict(t.x_train, verbose=0) for t in tasks])
    labels = np.concatenate([t.y_train for t in tasks])
    for got, want in zip(method.state, reference.class_statistics(features, labels, num_classes)):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
    statistics_bytes = 4 * (num_classes + num_classes * 128 + 128 * 128)
    assert results["stored_bytes"] == statistics_bytes + trainer.center_bytes(80)
    # Pseudo-features follow the class Gaussians: the mean of many draws is the class mean.
    method.config = continual.ContinualConfig(method="feature_replay", **{**TINY, "pseudo_per_class": 4000})
    draws, draw_labels = method.pseudo_features([2])
    assert set(draw_labels.tolist()) == {2}
    spread = np.sqrt(np.diag(continual.methods.feature_replay.gaussian.covariance(method.state, config.shrinkage)))
    np.testing.assert_allclose(draws.mean(0), method.state[1][2], atol=float(5 * spread.max() / np.sqrt(4000)))
