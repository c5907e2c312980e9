r"""A black-box attack (SimBA or the Square Attack) on finished runs, with the same images and query budget for each.

    python -m trainers.fit --dataset=fashion_mnist --model=biased --epochs=5 --workdir=saved_models/biased
    python -m trainers.fit --dataset=fashion_mnist --model=plain --epochs=5 --workdir=saved_models/plain
    python -m trainers.experiments.robustness --runs=saved_models/biased,saved_models/plain
    python -m trainers.experiments.robustness --runs=saved_models/biased,saved_models/plain --attack=square

Writes robustness.json and attack.png (success rate against the queries spent) to --workdir.
"""

import os

from absl import flags

from trainers import common

flags.DEFINE_list("runs", None, "finished run folders to attack (trainers.fit --workdir)", required=True)
flags.DEFINE_integer("images", 100, "test images drawn per run (those misclassified from the start are left out)")
flags.DEFINE_integer("queries", 500, "query budget per image")
flags.DEFINE_integer("seed", None, "seed of the image draw and the attack (default: each run's seed)")
flags.DEFINE_enum("attack", "simba", ["simba", "square"], "simba: one pixel at a time (Guo et al. 2019); square: "
                  "random square patches at the L-infinity ball's corners (Andriushchenko et al. 2020)")
flags.DEFINE_string("workdir", None, "output folder (default saved_models/robustness)")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from keras_nngk import experiments  # pylint: disable=g-import-not-at-top
    workdir = FLAGS.workdir or os.path.join("saved_models", "robustness")
    results = experiments.robustness(FLAGS.runs, workdir, FLAGS.images, FLAGS.queries, FLAGS.seed,
                                     FLAGS.attack)
    print(experiments.format_robustness_table(results))
    print(f"Written to {workdir}")


def run():
    """The console command (see pyproject.toml)."""
    common.run(main)


if __name__ == "__main__":
    run()
