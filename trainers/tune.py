r"""Hyperparameter search with keras-tuner (RandomSearch, Hyperband, BayesianOptimization) over trainers.fit runs.

    python -m trainers.tune --dataset=fashion_mnist --head=nngk --max_trials=20
    python -m trainers.tune --dataset=mnist5k --head=impostor --tuner=bayesian --max_trials=10 --epochs=3
    python -m trainers.fit --config=<workdir>/best_config.json        # the best configuration, unchanged

Trials train on the training set minus a validation split (--validation_split, default 0.1) and are scored on it;
the test set is not used. Any trainers.fit flag fixes that field for every trial.
"""

import datetime
import json
import os

from absl import flags

from trainers import common

common.define_config_flags()
flags.adopt_module_key_flags(common)  # --help lists the config flags too.
flags.DEFINE_enum("tuner", "random", ["random", "hyperband", "bayesian"], "search algorithm")
flags.DEFINE_integer("max_trials", 20, "number of trials (hyperband: the budget is derived from it)")
flags.DEFINE_string("workdir", None, "output folder (default saved_models/tune-<dataset>-<head>-<time>)")
flags.DEFINE_boolean("overwrite", False, "start a new search instead of resuming the one in --workdir")
flags.DEFINE_integer("verbose", 0, "1: progress bars of every trial")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from keras_nngk import tuning  # pylint: disable=g-import-not-at-top
    config = common.config_from_flags()
    if not config.validation_split:
        config = config.from_dict({**config.to_dict(), "validation_split": 0.1})
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    workdir = FLAGS.workdir or os.path.join("saved_models", f"tune-{config.dataset}-{config.head}-{stamp}")
    results = tuning.tune(config, workdir, kind=FLAGS.tuner, max_trials=FLAGS.max_trials, seed=config.seed,
                          overwrite=FLAGS.overwrite, verbose=FLAGS.verbose)
    print(tuning.format_trials(results["trials"]))
    print(json.dumps({"best_validation_accuracy": results["best_score"]}))
    path = results["best_config_path"]
    print(f"Best config: {path}  (python -m trainers.fit --config={path})")


def run():
    """The console command (see pyproject.toml)."""
    common.run(main)


if __name__ == "__main__":
    run()
