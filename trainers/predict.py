r"""Classifies image files with a trained or exported model: top classes with probabilities.

    python -m trainers.predict --model=saved_models/<run>/model.tflite image.png
    python -m trainers.predict --model=saved_models/<run> images/ --json       # a run folder (its model.keras)
    python -m trainers.predict --model=saved_models/<run>/saved_model image.png
    python -m trainers.predict --model=saved_models/<biased run>/early_exit image.png   # f2 only when unsure

--model takes a .tflite file, a .keras / .h5 model, a SavedModel folder, an early-exit export folder
(trainers.export --format=early_exit_tflite) or a run folder written by trainers.fit;
class_names.json and preprocessing.json are read from the model's folder or the folder above it.
"""

import json
import os

from absl import flags

from trainers import common

flags.DEFINE_string("model", None, "a .tflite file (trainers.export), a .keras/.h5 model, a SavedModel folder or a "
                    "run folder (trainers.fit)", required=True)
flags.DEFINE_integer("top", 5, "how many classes to show per image (at least 1)", lower_bound=1)
flags.DEFINE_boolean("json", False, "print one JSON document instead of text")
FLAGS = flags.FLAGS


def load_classifier(path):
    """A function from images `(N, H, W, C)` to class probabilities, for any model form --model accepts."""
    import numpy as np  # pylint: disable=g-import-not-at-top

    from keras_nngk import export, utils  # pylint: disable=g-import-not-at-top
    if path.endswith(".tflite"):
        if export.enrolment.is_enrollable(path):  # With the table trainers.enrol saved beside it, if any.
            model = export.EnrollableTFLiteModel(path)
            if os.path.isfile(export.enrolment.table_path(path)):
                model.restore_table(export.enrolment.table_path(path))
            return model.classify
        return export.TFLiteModel(path).predict
    if export.early_exit.is_early_exit(path):
        model = export.EarlyExitTFLiteModel(path)
        return lambda images: model.predict(images)[0]
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "saved_model.pb")):
        import tensorflow as tf  # pylint: disable=g-import-not-at-top
        serve = tf.saved_model.load(path).signatures["serving_default"]
        return lambda images: list(serve(tf.constant(images, tf.float32)).values())[0].numpy()
    if os.path.isdir(path):
        from keras_nngk.training import run as run_lib  # pylint: disable=g-import-not-at-top
        _, model, _ = run_lib.load_run(path)
    elif path.endswith((".keras", ".h5")):
        model = utils.load_model(path)
    else:
        raise ValueError(f"Cannot classify with {path!r}: give a .tflite file, a .keras/.h5 model, a SavedModel "
                         "folder or a run folder.")
    return lambda images: utils.pipelines.predict(model, np.asarray(images, np.float32))


def main(argv):
    if len(argv) < 2:
        common.fail("give one or more image files or folders after the flags")
    import numpy as np  # pylint: disable=g-import-not-at-top

    from keras_nngk.data import images as images_lib  # pylint: disable=g-import-not-at-top
    preprocessing = common.sidecar(FLAGS.model, "preprocessing.json")
    class_names = common.sidecar(FLAGS.model, "class_names.json")
    classify = load_classifier(FLAGS.model)
    files = [path for argument in argv[1:] for path in images_lib.image_files(argument)]
    inputs = np.stack([images_lib.load_image(path, preprocessing["image_shape"], preprocessing["central_crop"])
                       for path in files])
    # Rounding can put a probability a few ulp above 1 (or below 0): show what it means.
    probabilities = np.clip(classify(inputs), 0.0, 1.0)
    results = []
    for path, row in zip(files, probabilities):
        top = np.argsort(-row, kind="stable")[:FLAGS.top]
        results.append({"file": path, "top": [{"class": int(index), "name": class_names[index] if index < len(
            class_names) else str(index), "probability": float(row[index])} for index in top]})
    if FLAGS.json:
        print(json.dumps(results, indent=2))
        return
    for result in results:
        print(result["file"])
        for entry in result["top"]:
            print(f"  {entry['probability']:7.2%}  {entry['name']} ({entry['class']})")


def run():
    """The console command (see pyproject.toml)."""
    common.run(main)


if __name__ == "__main__":
    run()
