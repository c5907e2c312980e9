r"""Recall@K on unseen classes (section 3.1): train on half of the classes, retrieve among the other half.

    python -m trainers.experiments.retrieval --dataset=fashion_mnist
    python -m trainers.experiments.retrieval --dataset=cars196 --backbone=resnet50 --weights=/path/notop.h5 \
        --data_dir=/path/tfds          # 98/98 classes; caltech_birds2011: 100/100

Each trained run is a trainers.fit run under <workdir>/<head>-seed<seed> (rerun to resume). Writes retrieval.json
and retrieval.png, with the untrained network and raw pixels beside the trained embeddings.
"""

import datetime
import os

from absl import app, flags

from trainers import common

flags.DEFINE_string("dataset", "fashion_mnist", "data set")
flags.DEFINE_list("heads", ["nngk", "dense"], "trained embeddings to compare (nngk, impostor, dense)")
flags.DEFINE_list("seeds", ["0", "1", "2"], "seeds")
flags.DEFINE_integer("epochs", None, "training epochs (default: the data set's preset)")
flags.DEFINE_string("backbone", None, "backbone (default: the data set's preset)")
flags.DEFINE_string("weights", None, "local ImageNet weights file for resnet50/vgg16")
flags.DEFINE_string("data_dir", None, "tfds data dir")
flags.DEFINE_string("workdir", None, "output folder (default saved_models/retrieval-<dataset>-<time>)")
flags.DEFINE_integer("verbose", 1, "1: progress bars, 0: quiet")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from keras_nngk.training import experiments  # pylint: disable=g-import-not-at-top
    with common.user_errors():
        overrides = {name: FLAGS[name].value for name in ("backbone", "weights", "data_dir")
                     if FLAGS[name].value is not None}
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        workdir = FLAGS.workdir or os.path.join("saved_models", f"retrieval-{FLAGS.dataset}-{stamp}")
        results = experiments.retrieval(FLAGS.dataset, FLAGS.heads, [int(s) for s in FLAGS.seeds], workdir,
                                        epochs=FLAGS.epochs, overrides=overrides, verbose=FLAGS.verbose)
    print(experiments.format_retrieval_table(results["table"]))
    print(f"Written to {workdir}")


def run():
    """The console command (see pyproject.toml)."""
    app.run(common.entry(main))


if __name__ == "__main__":
    run()
