r"""On-device enrolment measured: train on some classes, enrol n images of each new class into the TFLite model.

    python -m trainers.experiments.enrolment --dataset=fashion_mnist          # trains on 0-4, enrols 5-9
    python -m trainers.experiments.enrolment --run=saved_models/<retrieval run on 0-4> --shots=1,5,20

Writes enrolment.json and enrolment.png to --workdir (the base run, when trained here, to <workdir>/base).
"""

import os

from absl import flags

from trainers import common

flags.DEFINE_string("dataset", "fashion_mnist", "an in-memory data set (fashion_mnist, mnist5k, digits)")
flags.DEFINE_list("known", ["0", "1", "2", "3", "4"], "classes the network trains on")
flags.DEFINE_list("new", ["5", "6", "7", "8", "9"], "classes enrolled on the device")
flags.DEFINE_list("shots", ["1", "5", "20"], "images enrolled per new class")
flags.DEFINE_list("seeds", ["0", "1", "2"], "seeds (which images are enrolled)")
flags.DEFINE_list("variants", ["kernel", "kernel-k5", "kernel-k1", "class_mean"],
                  "exported classifiers: kernel (eq. 7, the head's k), kernel-k<N> (k = N), class_mean")
flags.DEFINE_integer("epochs", 5, "epochs of the base run, when --run is not given")
flags.DEFINE_integer("max_test", 0, "test images evaluated (0: all of the known and new classes)")
flags.DEFINE_string("run", None, "a finished retrieval run trained on --known (default: train one)")
flags.DEFINE_string("workdir", None, "output folder (default saved_models/enrolment-<dataset>)")
flags.DEFINE_integer("verbose", 1, "1: progress bars, 0: quiet")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from keras_nngk import experiments  # pylint: disable=g-import-not-at-top
    config = experiments.EnrolmentConfig(
        dataset=FLAGS.dataset, known=tuple(map(int, FLAGS.known)), new=tuple(map(int, FLAGS.new)),
        shots=tuple(map(int, FLAGS.shots)), seeds=tuple(map(int, FLAGS.seeds)),
        variants=tuple(FLAGS.variants), epochs=FLAGS.epochs,
        max_test=FLAGS.max_test)
    workdir = FLAGS.workdir or os.path.join("saved_models", f"enrolment-{FLAGS.dataset}")
    results = experiments.enrolment(config, workdir, run=FLAGS.run, verbose=FLAGS.verbose)
    print(experiments.format_enrolment_table(results))
    print(f"Written to {workdir}")


def run():
    """The console command (see pyproject.toml)."""
    common.run(main)


if __name__ == "__main__":
    run()
