"""Flags for every field of `keras_nngk.training.Config`, defined in one loop (no hand-written flag lists)."""

import contextlib
import dataclasses
import errno
import os
import sys
import typing

from absl import flags

from keras_nngk.training import config as config_lib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_HELP = {
    "dataset": "data set (" + ", ".join(config_lib.data.NAMES) + ")",
    "task": "classification | retrieval (Recall@K on unseen classes)",
    "head": "nngk | impostor | dense | knn",
    "tie": "impostor centers: tied | fixed | loose",
    "tie_weight": "lambda of eq. 8 (loose impostors)",
    "pq_bytes": "compress the centers with OPQ to this many bytes each (0: keep float)",
    "pq_bits": "bits per PQ code: 8 (256-entry codebooks) or 4 (16 entries, codes packed two per byte)",
    "pq_rotation": "learn an OPQ rotation (d x d floats) before product quantization",
    "qat": "quantization-aware training of the backbone (tfmot)",
    "prune": "magnitude-prune the backbone to this sparsity (tfmot)",
    "backbone": "small_conv | squeezenet | vgg16 | resnet50",
    "weights": "local weights file for the backbone (nothing is downloaded)",
    "strategy": "tf.distribute strategy: default | mirrored | multi_worker (TF_CONFIG)",
    "loop": "fit (model.fit) | custom (explicit training loop)",
}


def define_config_flags():
    """One flag per config field; each defaults to None, meaning "the data set's preset"."""
    hints = typing.get_type_hints(config_lib.Config)
    for field in dataclasses.fields(config_lib.Config):
        kind = hints[field.name]
        if typing.get_origin(kind) is typing.Union:
            kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
        help_text = _HELP.get(field.name, field.name.replace("_", " ")) + f" (default {field.default!r} or preset)"
        define = {bool: flags.DEFINE_boolean, int: flags.DEFINE_integer, float: flags.DEFINE_float}.get(
            kind, flags.DEFINE_string)
        define(field.name, None, help_text)
    flags.DEFINE_string("config", None, "JSON config file (e.g. written by trainers.tune); flags override it")


def config_from_flags():
    """The run's config: a --config file or the data set's preset, then every flag given on the command line."""
    values = flags.FLAGS
    given = {name: values[name].value for name in config_lib.Config.field_names() if values[name].present}
    if values.config:
        base = config_lib.Config.from_file(values.config).to_dict()
        base.update(given)
        return config_lib.Config.from_dict(base)
    dataset = given.pop("dataset", config_lib.data.DEFAULT)
    return config_lib.Config.for_dataset(dataset, **given)


def fail(error, status=2):
    """One clear line on stderr and exit status 2, instead of a traceback, for errors of the user's input."""
    print(f"error: {error}", file=sys.stderr)
    sys.exit(status)


_FILE_SYSTEM_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only",
                       errno.EACCES: "permission denied", errno.EPERM: "permission denied",
                       errno.EDQUOT: "the disk quota is exceeded", errno.ENOENT: "no such file or folder",
                       errno.EIO: "an input/output error"}
_FILE_SYSTEM_MESSAGES = {"No space left": "the disk is full", "Read-only file system": "the file system is read-only",
                         "Permission denied": "permission denied", "Disk quota exceeded": "the disk quota is exceeded"}


def user_error_message(error):
    """The one line to print for an error caused by the user's input or machine, or None for anything else.

    Covers ValueError (bad input, with its own message) and file-system failures (a
    full disk, a read-only or unwritable folder), whether Python (OSError) or
    TensorFlow's file layer (`tf.errors.OpError`) raised them.
    """
    if isinstance(error, ValueError) and not type(error).__module__.startswith("tensorflow"):
        return str(error)
    if isinstance(error, OSError) and error.errno in _FILE_SYSTEM_ERRNOS:
        where = f" writing {error.filename}" if getattr(error, "filename", None) else ""
        return (f"{_FILE_SYSTEM_ERRNOS[error.errno]}{where} ({error.strerror}); free space or fix the permissions, or "
                "choose another --workdir, then rerun the same command to resume.")
    message = str(getattr(error, "message", "") or error)
    for marker, meaning in _FILE_SYSTEM_MESSAGES.items():
        if marker in message and (isinstance(error, OSError) or type(error).__module__.startswith("tensorflow")):
            return (f"{meaning} ({message.strip().splitlines()[0][:200]}); free space or fix the permissions, or "
                    "choose another --workdir, then rerun the same command to resume.")
    return None


@contextlib.contextmanager
def user_errors(resume_hint=None):
    """Turns errors of the user's input or machine into one line (exit 2), and Ctrl-C into one line (exit 130).

    Args:
        resume_hint: optional callable returning what to say after "interrupted" (e.g. how to resume).
    """
    try:
        yield
    except KeyboardInterrupt:
        hint = resume_hint() if resume_hint else None
        fail("interrupted" + (f"; {hint}" if hint else "."), status=130)
    except Exception as error:  # pylint: disable=broad-except  (re-raised unless it is the user's)
        message = user_error_message(error)
        if message is None:
            raise
        fail(message)
