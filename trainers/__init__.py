"""Command-line entry points: thin absl programs over `keras_nngk`, installed as the `nngk-*` commands."""

import os
import signal
import sys
import threading

_stderr = 2  # Where the start-up handler writes: the real stderr, also while the import points fd 2 elsewhere.


def _interrupted_while_starting(signum, frame):
    """Ctrl-C before a command has begun its work (TensorFlow's import takes seconds): one line and exit status 130
    at once, instead of a traceback through the import machinery. Nothing has been written yet, so nothing is left
    half-written. Each command replaces it when its work begins (`keras_nngk.utils.interrupts.remembered`)."""
    del signum, frame
    os.write(_stderr, b"error: interrupted while starting; nothing was written.\n")
    os._exit(130)  # pylint: disable=protected-access  (nothing to flush or clean up yet)


_interrupted_while_starting.replaceable_at_start = True


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
    global _stderr  # pylint: disable=global-statement
    saved = os.dup(2)
    silent = os.open(os.devnull, os.O_WRONLY)
    try:
        _stderr = saved
        os.dup2(silent, 2)
        import tensorflow as tf  # pylint: disable=g-import-not-at-top

        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        _stderr = 2
        os.close(saved)
        os.close(silent)


def _starting_a_command():
    """Whether this process is a `trainers` command starting (`python -m trainers.<name>`, which imports this package
    while `sys.argv[0]` is still "-m", or an `nngk-*` console script), not a program importing `trainers`."""
    program = sys.argv[0] if sys.argv else ""
    return program == "-m" or os.path.basename(program).startswith("nngk-")


if (_starting_a_command() and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
    signal.signal(signal.SIGINT, _interrupted_while_starting)
_import_tensorflow_quietly()
