"""Continual learning (section 4 of the review): Algorithm 1, its repairs, statistics heads and the baselines.

- `benchmarks`: Split-X task sequences (`load_benchmark`, `Task`, `check_tasks`)
- `config`: `ContinualConfig`, one set of fields for every method
- `trainer`: `ContinualTrainer`, the shared loop (backbone, training step, evaluation)
- `methods/`: one module per method family behind a registry (`methods.register`)
- `selection`: Algorithm 1's drop and add rules, the review's and the repaired ones (NumPy)
- `metrics`: average accuracy, forgetting, the comparison table
- `run`: one method on a benchmark with its files; the comparison of several
"""

from keras_nngk import data as data_lib
from keras_nngk.continual import methods, selection
from keras_nngk.continual.benchmarks import BENCHMARKS, SCENARIOS, Benchmark, Task, check_tasks, load_benchmark
from keras_nngk.continual.config import ContinualConfig
from keras_nngk.continual.metrics import accuracy_matrix_summary, format_table
from keras_nngk.continual.run import compare, run, run_methods
from keras_nngk.continual.trainer import ContinualTrainer

METHODS = methods.METHODS
CENTER_METHODS = tuple(name for name in METHODS if getattr(methods.get(name), "keeps_store", False))

__all__ = ["ContinualConfig", "ContinualTrainer", "Task", "Benchmark", "load_benchmark", "check_tasks",
           "accuracy_matrix_summary", "run", "run_methods", "compare", "format_table", "METHODS", "CENTER_METHODS",
           "BENCHMARKS", "SCENARIOS", "methods", "selection", "data_lib"]
