r"""Trains a network with an NNGK (or baseline) head and writes the run to a workdir.

    python -m trainers.fit                                   # embedded MNIST-5k, no download, ~1 minute
    python -m trainers.fit --dataset=fashion_mnist --head=nngk --epochs=10
    python -m trainers.fit --dataset=cars196 --backbone=resnet50 --task=retrieval --weights=/path/to/notop.h5

Rerunning on the same --workdir resumes from its last checkpoint.
"""

import datetime
import json
import os

from absl import app, flags

from trainers import common

common.define_config_flags()
flags.DEFINE_string("workdir", None, "output folder (default saved_models/<dataset>-<head>-<time>)")
flags.DEFINE_boolean("allow_config_change", False, "resume a workdir whose config differs from this one")
flags.DEFINE_integer("verbose", 1, "1: progress bars, 0: quiet")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from keras_nngk import training  # pylint: disable=g-import-not-at-top  (TensorFlow loads after flag parsing)
    workdir = FLAGS.workdir

    def resume_hint():
        return (f"rerun with --workdir={workdir} to resume from its last checkpoint." if workdir
                else "nothing was written.")

    with common.user_errors(resume_hint):
        config = common.config_from_flags()
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        workdir = workdir or os.path.join("saved_models", f"{config.dataset}-{config.head}-{stamp}")
        results = training.fit(config, workdir, allow_config_change=FLAGS.allow_config_change, verbose=FLAGS.verbose)
    summary = {key: value for key, value in results.items() if key != "history"}
    print(json.dumps(summary, indent=2, sort_keys=True))
    print(f"Run written to {workdir}")


if __name__ == "__main__":
    app.run(main)
