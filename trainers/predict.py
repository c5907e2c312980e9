r"""Classifies image files with an exported TFLite model: top classes with probabilities.

    python -m trainers.predict --model=saved_models/<run>/model.tflite image.png
    python -m trainers.predict --model=saved_models/<run>/model.tflite images/ --json
"""

import json
import os

from absl import app, flags

from trainers import common

flags.DEFINE_string("model", None, "a .tflite file written by trainers.export", required=True)
flags.DEFINE_integer("top", 5, "how many classes to show per image (at least 1)", lower_bound=1)
flags.DEFINE_boolean("json", False, "print one JSON document instead of text")
FLAGS = flags.FLAGS


def _sidecar(model_path, name):
    path = os.path.join(os.path.dirname(os.path.abspath(model_path)), name)
    if not os.path.exists(path):
        raise ValueError(f"{name} is missing beside {model_path}; export with python -m trainers.export, which "
                         "writes it.")
    with open(path) as handle:
        return json.load(handle)


def main(argv):
    if len(argv) < 2:
        common.fail("give one or more image files or folders after the flags")
    import numpy as np  # pylint: disable=g-import-not-at-top

    from keras_nngk import export  # pylint: disable=g-import-not-at-top
    from keras_nngk.data import images as images_lib  # pylint: disable=g-import-not-at-top
    with common.user_errors():
        preprocessing = _sidecar(FLAGS.model, "preprocessing.json")
        class_names = _sidecar(FLAGS.model, "class_names.json")
        model = export.TFLiteModel(FLAGS.model)
        files = [path for argument in argv[1:] for path in images_lib.image_files(argument)]
        inputs = np.stack([images_lib.load_image(path, preprocessing["image_shape"], preprocessing["central_crop"])
                           for path in files])
    probabilities = model.predict(inputs)
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


if __name__ == "__main__":
    app.run(main)
