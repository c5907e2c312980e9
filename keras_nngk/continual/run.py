"""Running continual methods on a benchmark: results.json, plots and the saved model of each, and their comparison."""

import dataclasses
import json
import os

import numpy as np
from absl import logging

from keras_nngk import plots
from keras_nngk.continual.benchmarks import load_benchmark
from keras_nngk.continual.trainer import ContinualTrainer
from keras_nngk.utils import files
from keras_nngk.utils.files import write_json_atomically


def run(config, workdir, verbose=1):
    """Runs one method on its benchmark and writes `results.json`, plots and `model.keras` into `workdir`.

    A workdir that already holds the finished results of the same config is kept as it is (a rerun of
    `--method=all` after an interruption continues with the methods not yet done).
    """
    config = config.resolved()
    path = os.path.join(workdir, "results.json")
    if os.path.exists(path):
        try:
            with open(path) as handle:
                saved = json.load(handle)
        except (OSError, json.JSONDecodeError):
            saved = {}
        if saved.get("config") == config.to_dict() and os.path.exists(os.path.join(workdir, "model.keras")):
            logging.info("%s already holds the results of this config; kept.", workdir)
            return saved
    benchmark = load_benchmark(config.benchmark, data_dir=config.data_dir or None,
                               max_train_per_task=config.max_train_per_task or None, seed=config.seed)
    with files.WorkdirLock(workdir, purpose="trainers.continual"):
        trainer = ContinualTrainer(config, benchmark.num_classes, benchmark.image_shape, verbose=verbose)
        results = trainer.fit(benchmark.tasks)
        files.save_model(trainer.algorithm.inference_model(), os.path.join(workdir, "model.keras"))
        plots.plot_accuracy_matrix(results, os.path.join(workdir, "accuracy_matrix.png"))
        write_json_atomically(path, results)  # Last: results.json marks a finished method.
    return results


def compare(results_by_method, workdir):
    """Writes `summary.json` and `average_accuracy.png` comparing methods run on the same benchmark.

    `results_by_method` maps a method to its results, or to a list of results (one per seed): the summary then
    holds one value per seed, the table shows mean +- std and the plot the mean curve.
    """
    runs = {method: r if isinstance(r, list) else [r] for method, r in results_by_method.items()}
    keys = ("average_accuracy", "forgetting", "stored_bytes")
    summary = {method: {key: [r[key] for r in results] if len(results) > 1 else results[0][key] for key in keys}
               for method, results in runs.items()}
    if any(len(results) > 1 for results in runs.values()):
        for method, results in runs.items():
            summary[method]["seeds"] = [r["config"]["seed"] for r in results]
    write_json_atomically(os.path.join(workdir, "summary.json"), summary)
    curves = {method: dict(results[0], average_accuracy_per_task=np.mean(
        [r["average_accuracy_per_task"] for r in results], axis=0).tolist()) for method, results in runs.items()}
    plots.plot_average_accuracy(curves, os.path.join(workdir, "average_accuracy.png"))
    return summary


def run_methods(configs, workdir, seeds=None, verbose=1):
    """Runs every config (one per method) into `<workdir>/<method>`, or with `seeds` once per seed into
    `<workdir>/seed_<s>/<method>`; returns `{method: results}` (with seeds: `{method: [results per seed]}`)."""
    if not seeds:
        return {config.method: run(config, os.path.join(workdir, config.method), verbose=verbose)
                for config in configs}
    return {config.method: [run(dataclasses.replace(config, seed=seed),
                                os.path.join(workdir, f"seed_{seed}", config.method), verbose=verbose)
                            for seed in seeds] for config in configs}
