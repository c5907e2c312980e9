r"""Recomputes a finished run's test metrics from its saved models.

    python -m trainers.evaluate --model=saved_models/<run>
"""

import json
import os

from absl import flags

from trainers import common

flags.DEFINE_string("model", None, "a run directory written by trainers.fit", required=True)
flags.DEFINE_integer("verbose", 1, "1: progress bars, 0: quiet")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from keras_nngk import training  # pylint: disable=g-import-not-at-top
    results = training.evaluate_run(FLAGS.model, verbose=FLAGS.verbose)
    saved_path = os.path.join(FLAGS.model, "metrics.json")
    try:
        with open(saved_path) as handle:
            saved = json.load(handle)
    except ValueError as error:
        raise ValueError(f"{saved_path} is not valid JSON ({error}); rerun python -m trainers.fit "
                         f"--workdir={FLAGS.model} to write it again.") from None
    for key, value in sorted(results.items()):
        before = saved.get(key)
        note = f"  (at training: {before:.4f})" if isinstance(before, float) else ""
        print(f"{key}: {value:.4f}{note}")


def run():
    """The console command (see pyproject.toml)."""
    common.run(main)


if __name__ == "__main__":
    run()
