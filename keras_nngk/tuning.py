"""Hyperparameter search with keras-tuner over `trainers.fit` runs (sigma, k, refresh interval, tie weight, ...).

Each trial is a complete `keras_nngk.training.fit` run (center refresh,
BatchNorm recalibration, checkpoints) on the training set with a held-out
validation split; the tuner only proposes values and records the validation
accuracy. The best configuration is written as a `Config` JSON file (with the
validation split removed) that `python -m trainers.fit --config=...` runs as is.

keras-tuner 1.3.5 is required: 1.4 imports Keras 3 and rejects tf_keras models.
Nothing here replaces modules globally.
"""

import dataclasses
import math
import os

import keras_tuner as kt

from keras_nngk.training import run as run_lib
from keras_nngk.training.config import Config
from keras_nngk.utils import files

TUNERS = ("random", "hyperband", "bayesian")
OBJECTIVE = "val_accuracy"


def declare_search_space(hp, head):
    """The hyperparameters of a head, declared on `hp`; returns `{config field: value}`."""
    values = {
        "learning_rate": hp.Float("learning_rate", 1e-4, 3e-3, sampling="log"),
        "embedding_dim": hp.Choice("embedding_dim", [32, 64, 128]),
    }
    if head in ("nngk", "impostor"):
        values["sigma"] = hp.Float("sigma", 0.05, 2.0, sampling="log")
        values["num_neighbours"] = hp.Choice("num_neighbours", [8, 16, 32, 64])
    if head in ("nngk", "impostor", "knn"):
        values["refresh_every"] = hp.Choice("refresh_every", [1, 2, 3])  # For nngk only with refresh_mode "embed".
    if head == "nngk":
        values["refresh_mode"] = hp.Choice("refresh_mode", ["training", "embed"])
    if head == "knn":
        values["knn_neighbours"] = hp.Choice("knn_neighbours", [1, 3, 5, 10])
    if head == "impostor":
        values["tie_weight"] = hp.Float("tie_weight", 1e-4, 1e-1, sampling="log")
    return values


class _RunTrials:
    """Mixin: a trial is a `fit` run in the trial's folder; its metric is the validation accuracy."""

    def __init__(self, base_config, verbose=0, **kwargs):
        self.base_config = base_config
        self.run_verbose = verbose
        super().__init__(**kwargs)

    def trial_config(self, hp):
        values = dict(self.base_config.to_dict())
        values.update(declare_search_space(hp, self.base_config.head))
        if "tuner/epochs" in hp.values:  # Hyperband chooses the epochs of each bracket.
            values["epochs"] = int(hp.values["tuner/epochs"])
        return Config.from_dict(values)

    def run_trial(self, trial, *args, **kwargs):
        config = self.trial_config(trial.hyperparameters)
        workdir = os.path.join(self.project_dir, f"trial_{trial.trial_id}", "run")
        results = run_lib.fit(config, workdir, verbose=self.run_verbose)
        return {OBJECTIVE: results["test_accuracy"]}  # "test" is the held-out validation split here.


class _SearchSpace(kt.HyperModel):
    """Declares the space (keras-tuner asks the hypermodel for it); trials never build through it."""

    def __init__(self, head):
        super().__init__()
        self.head = head

    def build(self, hp):
        declare_search_space(hp, self.head)
        return None


def make_tuner(kind, base_config, directory, max_trials=20, seed=0, overwrite=False, verbose=0):
    """A keras-tuner tuner ("random", "hyperband", "bayesian") whose trials are `fit` runs of `base_config`."""
    if kind not in TUNERS:
        raise ValueError(f"Unknown tuner {kind!r}; valid: {', '.join(TUNERS)}. Received: tuner={kind!r}")
    if not base_config.validation_split:
        raise ValueError("Tuning needs a validation split (the test set is never used for choosing): set "
                         "validation_split, e.g. 0.1.")
    objective = kt.Objective(OBJECTIVE, direction="max")
    common = dict(hypermodel=_SearchSpace(base_config.head), objective=objective, seed=seed, directory=directory,
                  project_name="search", overwrite=overwrite)
    if kind == "random":
        return type("RandomSearch", (_RunTrials, kt.RandomSearch), {})(
            base_config, verbose=verbose, max_trials=max_trials, **common)
    if kind == "bayesian":
        return type("BayesianSearch", (_RunTrials, kt.BayesianOptimization), {})(
            base_config, verbose=verbose, max_trials=max_trials, **common)
    max_epochs = base_config.epochs
    return type("HyperbandSearch", (_RunTrials, kt.Hyperband), {})(
        base_config, verbose=verbose, max_epochs=max_epochs, factor=3,
        hyperband_iterations=max(1, math.ceil(max_trials / (max_epochs * 2))), **common)


def tune(base_config, workdir, kind="random", max_trials=20, seed=0, overwrite=False, verbose=0):
    """Runs the search; writes `best_config.json`, `trials.json` and `trials.png` to `workdir`. Returns a dict."""
    base_config.validate()
    tuner = make_tuner(kind, base_config, workdir, max_trials=max_trials, seed=seed, overwrite=overwrite,
                       verbose=verbose)
    tuner.search()
    trials = []
    for trial in tuner.oracle.trials.values():
        if trial.score is None:
            continue
        trials.append({"trial_id": trial.trial_id, "score": float(trial.score), "status": str(trial.status),
                       "values": {key: value for key, value in trial.hyperparameters.values.items()}})
    if not trials:
        raise ValueError(f"No trial of the search in {workdir} finished; see the log above.")
    trials.sort(key=lambda row: -row["score"])
    best = tuner.oracle.get_best_trials(1)[0]
    best_config = dataclasses.replace(tuner.trial_config(best.hyperparameters), validation_split=0.0)
    best_config.validate()
    files.write_json_atomically(os.path.join(workdir, "best_config.json"), best_config.to_dict())
    files.write_json_atomically(os.path.join(workdir, "trials.json"), trials)
    from keras_nngk import plots  # pylint: disable=g-import-not-at-top
    plots.plot_trials(trials, os.path.join(workdir, "trials.png"))
    return {"best_config": best_config.to_dict(), "best_score": float(best.score), "trials": trials,
            "best_config_path": os.path.join(workdir, "best_config.json")}


def format_trials(trials, limit=10):
    keys = sorted({key for row in trials for key in row["values"] if not key.startswith("tuner/")})
    lines = ["| trial | val accuracy | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
    for row in trials[:limit]:
        cells = []
        for key in keys:
            value = row["values"].get(key, "")
            cells.append(f"{value:.3g}" if isinstance(value, float) else str(value))
        lines.append(f"| {row['trial_id']} | {100 * row['score']:.2f}% | " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = ["tune", "make_tuner", "declare_search_space", "format_trials", "TUNERS"]
