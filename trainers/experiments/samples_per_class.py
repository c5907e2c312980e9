r"""Accuracy against training images per class (section 3.1 of the review), every head on the same budget.

    python -m trainers.experiments.samples_per_class --dataset=fashion_mnist
    python -m trainers.experiments.samples_per_class --dataset=mnist5k --examples_per_class=1,6,30,0 --seeds=0,1
    python -m trainers.experiments.samples_per_class --pooling=avg --embedding_dim=64   # the settings before 2026-11-30
    # Few images of classes 5-9 for a network trained on classes 0-4 (its backbone.keras; the same backbone flags):
    python -m trainers.experiments.samples_per_class --classes=5,6,7,8,9 --weights=<run>/backbone.keras \
        --pooling=avg --embedding_dim=64

Writes samples_per_class.json (every run and the mean/spread table) and samples_per_class.png.
"""

import datetime
import os

from absl import flags

from trainers import common

flags.DEFINE_string("dataset", "fashion_mnist", "data set held in memory (fashion_mnist, mnist5k, digits, ...)")
flags.DEFINE_list("examples_per_class", ["1", "3", "6", "10", "30", "100", "0"], "n values (0: all images)")
flags.DEFINE_list("heads", ["dense", "knn", "nngk", "impostor"], "heads to compare")
flags.DEFINE_list("seeds", ["0", "1", "2"], "seeds")
flags.DEFINE_integer("steps", 600, "optimizer steps per run, the same at every n")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate of every head")
flags.DEFINE_float("weight_decay", 0.0, "decoupled weight decay (AdamW) of every head's backbone and classifier "
                   "weights per step; not the centers, kernel width or per-center weights")
flags.DEFINE_integer("eval_every", 50, "validation every this many steps; the best step is kept")
flags.DEFINE_integer("max_test", 0, "evaluate on the first this many test images (0: all)")
flags.DEFINE_string("augment", "none", "training-batch augmentation for every head: none, or e.g. shift,flip")
flags.DEFINE_integer("embedding_dim", 256, "embedding size")
flags.DEFINE_enum("pooling", "flatten", ["avg", "flatten"],
                  "small_conv's embedding: a linear map of the flattened last feature map, or of its global average")
flags.DEFINE_float("sigma", 0.5, "initial kernel width of the nngk and impostor heads")
flags.DEFINE_bool("learn_sigma", True, "train the kernel width")
flags.DEFINE_enum("sigma_rule", "none", ["none", "nearest", "neighbours"],
                  "nngk/impostor: set the kernel width at every refresh to --sigma_scale times the median distance "
                  "from a center to its nearest other center (nearest) or the mean distance to its k nearest "
                  "(neighbours); needs --nolearn_sigma")
flags.DEFINE_float("sigma_scale", 1.0, "factor of --sigma_rule")
flags.DEFINE_integer("num_neighbours", 32, "k of the nngk and impostor heads")
flags.DEFINE_bool("sample_weights", True, "nngk: learn one importance weight per center")
flags.DEFINE_float("auxiliary_softmax", 0.0, "nngk/impostor: weight of a softmax term trained beside the head")
flags.DEFINE_bool("self_positive", False, "an augmented image may match its own stored center (nngk)")
flags.DEFINE_integer("refresh_every", 0, "nngk: re-embed the centers every this many steps (0: every epoch of the "
                     "subset, at least every 10 steps)")
flags.DEFINE_list("classes", [], "only these classes of the data set, e.g. 5,6,7,8,9 (default: all)")
flags.DEFINE_string("weights", "", "local weights file every head's backbone starts from, e.g. a run's backbone.keras "
                    "(default: from scratch)")
flags.DEFINE_bool("eval_at_start", False, "also validate before the first step (step 0) as a candidate for the best "
                  "step, e.g. with --weights")
flags.DEFINE_string("workdir", None, "output folder (default saved_models/samples_per_class-<dataset>-<time>)")
flags.DEFINE_integer("verbose", 1, "1: progress bar, 0: quiet")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from keras_nngk import experiments  # pylint: disable=g-import-not-at-top
    config = experiments.FewShotConfig(
        dataset=FLAGS.dataset, examples_per_class=tuple(int(n) for n in FLAGS.examples_per_class),
        heads=tuple(FLAGS.heads), seeds=tuple(int(s) for s in FLAGS.seeds), steps=FLAGS.steps,
        learning_rate=FLAGS.learning_rate, weight_decay=FLAGS.weight_decay, eval_every=FLAGS.eval_every,
        max_test=FLAGS.max_test, augment=FLAGS.augment,
        pooling=FLAGS.pooling, embedding_dim=FLAGS.embedding_dim,
        sigma=FLAGS.sigma, learn_sigma=FLAGS.learn_sigma, sigma_rule=FLAGS.sigma_rule, sigma_scale=FLAGS.sigma_scale,
        num_neighbours=FLAGS.num_neighbours,
        sample_weights=FLAGS.sample_weights, self_positive=FLAGS.self_positive,
        auxiliary_softmax=FLAGS.auxiliary_softmax, refresh_every=FLAGS.refresh_every,
        classes=tuple(int(c) for c in FLAGS.classes), weights=FLAGS.weights, eval_at_start=FLAGS.eval_at_start)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    workdir = FLAGS.workdir or os.path.join("saved_models", f"samples_per_class-{FLAGS.dataset}-{stamp}")
    results = experiments.samples_per_class(config, workdir, verbose=FLAGS.verbose)
    print(experiments.format_samples_table(results["table"]))
    for part, where in (("train", "the training subset"), ("validation", "the validation images")):
        if results["class_spread"][part]:
            print(f"\nClass spread of {where} (within-class over between-class mean squared distance; 0: "
                  "collapsed):")
            print(experiments.format_samples_table(results["class_spread"][part], scale=1, digits=3))
    print(f"Written to {workdir}")


def run():
    """The console command (see pyproject.toml)."""
    common.run(main)


if __name__ == "__main__":
    run()
