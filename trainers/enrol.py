r"""Adds a class (or more examples of one) to an enrollable TFLite model from a folder of images, without training.

    python -m trainers.export --model=saved_models/<run> --format=enrollable_tflite --max_classes=20
    python -m trainers.enrol --model=saved_models/<run>/model_enrollable.tflite --class_name=sneaker_v2 photos/
    python -m trainers.predict --model=saved_models/<run>/model_enrollable.tflite new_photo.png
    python -m trainers.enrol --model=saved_models/<run>/model_enrollable.tflite --forget=sneaker_v2

The enrolled table is written beside the model (<model>.table.npz) and class_names.json gets the new name;
trainers.predict reads both. The model file itself never changes.
"""

import json
import os

from absl import flags

from trainers import common

flags.DEFINE_string("model", None, "an enrollable .tflite (trainers.export --format=enrollable_tflite)", required=True)
flags.DEFINE_string("class_name", None, "the class the images show: an existing name adds examples, a new one a class")
flags.DEFINE_string("forget", None, "a class name whose examples are all removed (instead of enrolling)")
FLAGS = flags.FLAGS


def main(argv):
    from keras_nngk.data import images as images_lib  # pylint: disable=g-import-not-at-top
    from keras_nngk.export import enrolment  # pylint: disable=g-import-not-at-top
    from keras_nngk.utils import files  # pylint: disable=g-import-not-at-top
    if (FLAGS.class_name is None) == (FLAGS.forget is None):
        raise ValueError("Give either --class_name=NAME with image files or folders, or --forget=NAME.")
    model = enrolment.EnrollableTFLiteModel(FLAGS.model)
    table = enrolment.table_path(FLAGS.model)
    if os.path.isfile(table):
        model.restore_table(table)
    class_names = list(common.sidecar(FLAGS.model, "class_names.json"))
    names_path = os.path.join(os.path.dirname(os.path.abspath(FLAGS.model)), "class_names.json")
    if FLAGS.forget is not None:
        if FLAGS.forget not in class_names:
            raise ValueError(f"No class named {FLAGS.forget!r}; known: {', '.join(class_names)}.")
        removed = model.forget(class_names.index(FLAGS.forget))
        model.save_table(table)
        print(f"Forgot {FLAGS.forget!r}: {removed} examples removed; {model.num_centers:,} of {model.capacity:,} "
              f"slots in use. Table: {table}")
        return
    if len(argv) < 2:
        raise ValueError("Give the image files or folders of the class after the flags.")
    if FLAGS.class_name not in class_names:
        if len(class_names) >= model.max_classes:
            raise ValueError(f"The model holds {model.max_classes} classes and all are named; export it again with "
                             "a larger --max_classes to add a new one.")
        class_names.append(FLAGS.class_name)
    class_id = class_names.index(FLAGS.class_name)
    preprocessing = common.sidecar(FLAGS.model, "preprocessing.json")
    paths = [path for argument in argv[1:] for path in images_lib.image_files(argument)]
    import numpy as np  # pylint: disable=g-import-not-at-top
    images = np.stack([images_lib.load_image(path, preprocessing["image_shape"], preprocessing["central_crop"])
                       for path in paths])
    model.enrol(images, class_id)
    model.save_table(table)
    files.write_atomically(names_path, json.dumps(class_names, indent=2).encode())
    print(f"Enrolled {len(paths)} images as {FLAGS.class_name!r} (class {class_id}); {model.num_centers:,} of "
          f"{model.capacity:,} slots in use. Table: {table}")


def run():
    """The console command (see pyproject.toml)."""
    common.run(main)


if __name__ == "__main__":
    run()
