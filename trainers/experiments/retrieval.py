r"""Recall@K on unseen classes (section 3.1): train on half of the classes, retrieve among the other half.

    python -m trainers.experiments.retrieval --dataset=fashion_mnist
    python -m trainers.experiments.retrieval --dataset=cars196 --backbone=resnet50 --weights=/path/notop.h5 \
        --data_dir=/path/tfds          # 98/98 classes; caltech_birds2011: 100/100
    python -m trainers.experiments.retrieval --train_classes=5,6,7,8,9 --test_classes=0,1,2,3,4 --sigma=0.5

Each trained run is a trainers.fit run under <workdir>/<head>-seed<seed> (rerun to resume). Writes retrieval.json
and retrieval.png, with the untrained network and raw pixels beside the trained embeddings.
"""

import datetime
import os

from absl import flags

from keras_nngk.training import config as config_lib
from trainers import common

common.define_config_flags()  # Any trainers.fit flag applies to every trained run (and the untrained network).
flags.adopt_module_key_flags(common)
flags.DEFINE_list("heads", ["nngk", "dense"], "trained embeddings to compare (nngk, impostor, dense)")
flags.DEFINE_list("seeds", ["0", "1", "2"], "seeds")
flags.DEFINE_string("workdir", None, "output folder (default saved_models/retrieval-<dataset>-<time>)")
flags.DEFINE_integer("verbose", 1, "1: progress bars, 0: quiet")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from keras_nngk import experiments  # pylint: disable=g-import-not-at-top
    overrides = {name: FLAGS[name].value for name in config_lib.Config.field_names() if FLAGS[name].present}
    for name in ("task", "head", "seed"):
        if overrides.pop(name, None) is not None:
            raise ValueError(f"--{name} is set by the experiment (use --heads and --seeds).")
    dataset = overrides.pop("dataset", "fashion_mnist")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    workdir = FLAGS.workdir or os.path.join("saved_models", f"retrieval-{dataset}-{stamp}")
    results = experiments.retrieval(dataset, FLAGS.heads, [int(s) for s in FLAGS.seeds], workdir,
                                    overrides=overrides, verbose=FLAGS.verbose)
    print(experiments.format_retrieval_table(results["table"]))
    print(f"Written to {workdir}")


def run():
    """The console command (see pyproject.toml)."""
    common.run(main)


if __name__ == "__main__":
    run()
