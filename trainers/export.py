r"""Exports a trained run for serving or on-device use, and writes a model card beside it.

    python -m trainers.export --model=saved_models/<run> --format=tflite --quantization=int8
    python -m trainers.export --model=saved_models/<run> --format=saved_model --output=/tmp/serving
    python -m trainers.export --model=saved_models/<run> --format=enrollable_tflite --max_classes=20
    python -m trainers.export --model=saved_models/<biased run> --format=early_exit_tflite   # front + back models
        # a TFLite model whose center table grows on the device (trainers.enrol, EnrollableTFLiteModel)
"""

from absl import flags

from trainers import common

flags.DEFINE_string("model", None, "a run directory written by trainers.fit", required=True)
flags.DEFINE_enum("format", "tflite", ["tflite", "saved_model", "enrollable_tflite", "early_exit_tflite"],
                  "export format (enrollable_tflite: the center table is state an app can enrol into; "
                  "early_exit_tflite: a biased run as two models, f2's only when the exit score is low)")
flags.DEFINE_string("quantization", "none",
                    "TFLite quantization: none | dynamic | int8 (backbone int8, heads float) | int8-full")
flags.DEFINE_string("output", None, "output folder (default: the run directory)")
flags.DEFINE_integer("num_eval", 1000, "test images on which Keras and the export are compared")
flags.DEFINE_integer("capacity", None, "enrollable_tflite: centers the table holds (default: the trained ones + 1,024)")
flags.DEFINE_integer("max_classes", None, "enrollable_tflite: class ids the table can hold (default: the trained "
                     "classes; more leaves room for new classes)")
flags.DEFINE_enum("enrol_rule", "class_mean", ["class_mean", "kernel"],
                  "enrollable_tflite: class_mean (distance to each class's mean center; the better rule for a few "
                  "images per new class) or kernel (eq. 7, the trained head exactly)")
flags.DEFINE_integer("enrol_neighbours", None, "enrollable_tflite with --enrol_rule=kernel: k (default: the head's)")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from keras_nngk.export import run as export_run  # pylint: disable=g-import-not-at-top
    report = export_run.export_run(FLAGS.model, FLAGS.format, FLAGS.quantization, FLAGS.output, FLAGS.num_eval,
                                   capacity=FLAGS.capacity, max_classes=FLAGS.max_classes, rule=FLAGS.enrol_rule,
                                   num_neighbours=FLAGS.enrol_neighbours)
    print(export_run.model_card(report))


def run():
    """The console command (see pyproject.toml)."""
    common.run(main)


if __name__ == "__main__":
    run()
