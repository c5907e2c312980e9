"""Command-line entry points: thin absl programs over `keras_nngk`, installed as the `nngk-*` commands."""

import os


def _import_tensorflow_quietly():
    """Imports TensorFlow and initialises its devices with the C++ start-up lines (oneDNN, CUDA probes) silenced.

    Those lines are written to file descriptor 2 before any log level applies, so it is pointed at /dev/null for
    the import. Python errors are unaffected. TF_CPP_MIN_LOG_LEVEL=0 or 1 shows everything.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # As keras_nngk does, but before TensorFlow's import: without it TensorFlow also loads Keras 3 (1.3 s here).
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] in ("0", "1"):
        return
    saved = os.dup(2)
    silent = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(silent, 2)
        import tensorflow as tf  # pylint: disable=g-import-not-at-top

        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(silent)


_import_tensorflow_quietly()
