"""Loading the Keras model files of a run folder without running any code they might carry.

tf_keras refuses a Python `lambda` in a `.keras` file by default, but loads
`.h5` files without that check, and both formats can name modules to import.
`load_model` reads the architecture as plain JSON first and refuses, in one
line, any Lambda layer, serialised Python function or module outside Keras,
keras_nngk and tfmot, then loads in Keras' safe mode whatever the format.
"""

import json
import os
import zipfile

import tf_keras as keras

SAFE_MODULE_PREFIXES = ("keras", "tf_keras", "keras_nngk", "tensorflow_model_optimization")
FORMATS = (".keras", ".h5")


def _first_line(error):
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]


def architecture(path):
    """The model config stored in a `.keras` or `.h5` file, read as JSON (nothing is deserialised)."""
    extension = os.path.splitext(path)[1]
    if extension not in FORMATS:
        raise ValueError(f"Cannot load {path}: not a .keras or .h5 model file. Received: {extension or 'no extension'}")
    if not os.path.isfile(path):
        raise ValueError(f"No model file at {path}; train the run with python -m trainers.fit --workdir=...")
    try:
        if extension == ".keras":
            with zipfile.ZipFile(path) as archive:
                return json.loads(archive.read("config.json"))
        import h5py  # pylint: disable=g-import-not-at-top  (a tf_keras dependency)
        with h5py.File(path, "r") as handle:
            text = handle.attrs.get("model_config")
            if text is None:
                raise KeyError("no model_config attribute (a weights-only file?)")
            return json.loads(text.decode() if isinstance(text, bytes) else text)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path} is truncated or corrupt ({type(error).__name__}: {_first_line(error)}); rerun "
                         "python -m trainers.fit on its workdir to write it again.") from None


def unsafe_parts(config):
    """What in a model config would run or import code on loading: a list of short descriptions (empty: safe)."""
    found = []

    def walk(value, where):
        if isinstance(value, dict):
            class_name = value.get("class_name")
            if class_name in ("Lambda", "__lambda__"):
                found.append(f"a Lambda layer ({value.get('config', {}).get('name', where)})"
                             if isinstance(value.get("config"), dict) else f"a Python lambda ({where})")
            if value.get("function_type") == "lambda" or value.get("output_shape_type") == "lambda":
                found.append(f"a serialised Python function ({value.get('name', where)})")
            module = value.get("module")
            if isinstance(module, str) and module.split(".")[0] not in SAFE_MODULE_PREFIXES:
                found.append(f"a reference to module {module!r} ({class_name})")
            for key, item in value.items():
                walk(item, key)
        elif isinstance(value, list):
            for item in value:
                walk(item, where)

    walk(config, "model")
    return found


def load_model(path, custom_objects=None, compile=False):  # pylint: disable=redefined-builtin
    """Loads a `.keras` or `.h5` model written by keras_nngk, refusing any that carries code.

    Raises:
        ValueError (one line): the file is missing, truncated or corrupt, carries a
            Lambda layer, a serialised function or a foreign module, or does not load.
    """
    problems = unsafe_parts(architecture(path))
    if problems:
        raise ValueError(f"Refusing to load {path}: it holds {problems[0]}, which runs Python code when loaded, and "
                         "keras_nngk never writes one. If you trust the file, load it yourself with "
                         "tf_keras.models.load_model(path, safe_mode=False).")
    from tf_keras.src.saving import serialization_lib  # pylint: disable=g-import-not-at-top
    try:
        with serialization_lib.SafeModeScope(True):  # Also applies to the legacy .h5 loader.
            return keras.models.load_model(path, custom_objects=custom_objects, compile=compile)
    except Exception as error:  # pylint: disable=broad-except  (any failure to load means the same to the user)
        raise ValueError(f"Cannot load {path} ({type(error).__name__}: {_first_line(error)}); rerun "
                         "python -m trainers.fit on its workdir to write it again.") from None
