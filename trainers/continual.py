r"""Continual learning on Split-X benchmarks: Algorithm 1 of the review and the baselines, same harness and budget.

    python -m trainers.continual --benchmark=split_fashion_mnist --scenario=class_incremental --method=nngk_add_drop
    python -m trainers.continual --benchmark=split_mnist5k --method=all            # every method, compared
    python -m trainers.continual --method=slda_pixels,replay --seeds=0,1,2         # mean +- std over seeds
    python -m trainers.continual --benchmark=split_cifar100 --method=ewc --data_dir=...  # when the data is prepared

Writes `<workdir>/<method>/results.json` (key `average_accuracy`), `accuracy_matrix.png` and `model.keras`; with
several methods also `summary.json` and `average_accuracy.png`.
"""

import dataclasses
import datetime
import json
import os
import typing

from absl import flags

from trainers import common

flags.DEFINE_string("workdir", None, "output folder (default saved_models/continual-<benchmark>-<time>)")
flags.DEFINE_integer("verbose", 1, "1: progress bars, 0: quiet")
flags.DEFINE_string("seeds", "", "comma list of seeds: each method once per seed (into <workdir>/seed_<s>/), "
                    "the table as mean +- std; empty: --seed once")
FLAGS = flags.FLAGS


def _define_flags():
    from keras_nngk import continual  # Light: no TensorFlow work happens at import.
    choices = {"method": f"a name, a comma list, or all ({' | '.join(continual.METHODS)})",
               "benchmark": " | ".join(continual.BENCHMARKS), "scenario": " | ".join(continual.SCENARIOS)}
    hints = typing.get_type_hints(continual.ContinualConfig)
    for field in dataclasses.fields(continual.ContinualConfig):
        define = {bool: flags.DEFINE_boolean, int: flags.DEFINE_integer, float: flags.DEFINE_float}.get(
            hints[field.name], flags.DEFINE_string)
        help_text = field.name.replace("_", " ")
        if field.name in choices:
            help_text += f": {choices[field.name]}"
        define(field.name, field.default, help_text)


_define_flags()


def main(argv):
    del argv
    from keras_nngk import continual  # pylint: disable=g-import-not-at-top
    values = {name: FLAGS[name].value for name in continual.ContinualConfig.field_names()}
    methods = continual.METHODS if values["method"] == "all" else values.pop("method").split(",")
    values.pop("method", None)
    configs = [continual.ContinualConfig(method=method.strip(), **values).validate() for method in methods]
    try:
        seeds = [int(part) for part in FLAGS.seeds.split(",")] if FLAGS.seeds else None
    except ValueError:
        raise ValueError(f"--seeds must be a comma list of integers. Received: seeds={FLAGS.seeds!r}") from None
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    workdir = FLAGS.workdir or os.path.join("saved_models", f"continual-{values['benchmark']}-{stamp}")
    results = continual.run_methods(configs, workdir, seeds=seeds, verbose=FLAGS.verbose)
    summary = continual.compare(results, workdir) if len(results) > 1 or seeds else {
        method: {key: r[key] for key in ("average_accuracy", "forgetting", "stored_bytes")}
        for method, r in results.items()}
    print(json.dumps(summary, indent=2))
    print(continual.format_table(summary))
    print(f"Run written to {workdir}")


def run():
    """The console command (see pyproject.toml)."""
    common.run(main)


if __name__ == "__main__":
    run()
