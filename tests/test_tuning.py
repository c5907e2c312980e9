"""keras-tuner search over fit runs: trials, the written best config, and its reuse by trainers.fit."""

import json
import os

import pytest

from keras_nngk import tuning
from keras_nngk.training.config import Config
from tests.trainers.test_fit import run_entry


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["random", "bayesian"])
def test_tune_writes_the_best_trial_as_a_config(kind, tmp_path):
    base = Config.for_dataset("digits", epochs=1, head="nngk", validation_split=0.2)
    results = tuning.tune(base, str(tmp_path), kind=kind, max_trials=2, seed=3)
    assert len(results["trials"]) == 2
    best_trial = max(results["trials"], key=lambda row: row["score"])
    assert results["best_score"] == pytest.approx(best_trial["score"])
    written = Config.from_file(os.path.join(str(tmp_path), "best_config.json"))
    for key, value in best_trial["values"].items():
        assert getattr(written, key) == pytest.approx(value), key
    assert written.validation_split == 0.0 and written.head == "nngk" and written.dataset == "digits"
    # The trial's own run used exactly these settings (and the validation split).
    trial_config = Config.from_file(os.path.join(str(tmp_path), "search", f"trial_{best_trial['trial_id']}", "run",
                                                 "config.json"))
    assert trial_config.differences(written) == {"validation_split": (0.2, 0.0)}
    metrics = json.load(open(os.path.join(str(tmp_path), "search", f"trial_{best_trial['trial_id']}", "run",
                                          "metrics.json")))
    assert metrics["evaluated_on"] == "validation" and metrics["test_accuracy"] == pytest.approx(best_trial["score"])
    assert os.path.exists(os.path.join(str(tmp_path), "trials.png"))


def test_search_space_per_head():
    import keras_tuner as kt
    for head, expected in (("dense", {"learning_rate", "embedding_dim"}),
                           ("nngk", {"learning_rate", "embedding_dim", "sigma", "num_neighbours", "refresh_every",
                                     "refresh_mode"}),
                           ("impostor", {"learning_rate", "embedding_dim", "sigma", "num_neighbours",
                                         "refresh_every", "tie_weight"})):
        hp = kt.HyperParameters()
        assert set(tuning.declare_search_space(hp, head)) == expected


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="needs a validation split"):
        tuning.make_tuner("random", Config.for_dataset("digits"), str(tmp_path))
    with pytest.raises(ValueError, match="Unknown tuner 'grid'"):
        tuning.make_tuner("grid", Config.for_dataset("digits", validation_split=0.1), str(tmp_path))


@pytest.mark.slow
def test_entry_points_tune_then_fit_with_the_config(tmp_path):
    workdir = str(tmp_path / "tune")
    result = run_entry("trainers.tune", "--dataset=digits", "--head=dense", "--max_trials=1", "--epochs=1",
                       f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-3000:]
    config_path = os.path.join(workdir, "best_config.json")
    assert f"--config={config_path}" in result.stdout
    fit = run_entry("trainers.fit", f"--config={config_path}", f"--workdir={tmp_path / 'fit'}", "--verbose=0")
    assert fit.returncode == 0, fit.stderr[-3000:]
    used = Config.from_file(str(tmp_path / "fit" / "config.json"))
    assert used == Config.from_file(config_path)
    assert json.load(open(tmp_path / "fit" / "metrics.json"))["evaluated_on"] == "test"
