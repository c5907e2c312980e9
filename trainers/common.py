"""Flags for every field of `keras_nngk.training.Config`, defined in one loop (no hand-written flag lists)."""

import contextlib
import dataclasses
import errno
import json
import logging
import os
import sys
import typing

from absl import app, flags
from absl import logging as absl_logging

from keras_nngk.training import config as config_lib
from keras_nngk.utils import interrupts


def _choices(values):
    return " | ".join(values)


# Every config field's help: "<group>: what it does (allowed values, units)". The default is appended.
_HELP = {
    "dataset": f"data: the data set ({_choices(config_lib.data.NAMES)}); mnist5k and digits ship with pip packages, "
               "fashion_mnist with Debian's dataset-fashion-mnist, the rest through tfds (prepare with tfds build)",
    "task": "data: classification (test accuracy) | retrieval (Recall@K on classes held out of training)",
    "image_size": "data: resize images to this many pixels square (default: the data set's own size)",
    "examples_per_class": "data: train on only this many images per class (few-shot)",
    "validation_split": "data: evaluate on this held-out fraction of the training set instead of the test set (0-1)",
    "data_dir": "data: tfds data folder of prepared data sets",
    "train_classes": "data: retrieval: comma-separated classes to train on, e.g. 5,6,7,8,9 (in-memory data sets)",
    "test_classes": "data: retrieval: comma-separated held-out classes to retrieve among, e.g. 0,1,2,3,4",
    "model": "model: classifier (backbone + head) | biased (the gated two-path network) | plain (it without lookup)",
    "backbone": f"model: the network ({_choices(config_lib.backbones.BACKBONES)})",
    "weights": "model: local weights file for the backbone (nothing is downloaded)",
    "embedding_dim": "model: embedding dimension d",
    "l2_normalize": "model: L2-normalise the embeddings",
    "retrieval_features": "evaluation: retrieval compares pooled (the L2-normalised features under the embedding "
                          "projection, which transfer better to unseen classes) | map (the feature map under that "
                          "pooling, flattened and L2-normalised: it keeps where features are) | embedding (the "
                          "head's own space)",
    "pooling": "model: small_conv's embedding: avg (global average pooling) | flatten (a linear map of the whole last "
               "feature map, which keeps where features are)",
    "augment": "data: training-batch augmentation: auto (the data set's default: crops and flips for colour and "
               "fine-grained sets, none for the small grayscale ones) | none | a comma-separated set of shift, flip",
    "projection_dim": "model: dimension of the biased network's lookup keys",
    "lookup_prototypes": "model: biased network: store this many k-means prototypes per class in the lookup instead "
                         "of every training image's key (0: every key, the review's lookup; other models ignore it)",
    "exit_loss_weight": "training: biased network: weight of the cross-entropy of the early-exit answer clf(z1), "
                        "added to that of the mixed output (0: the review's single loss; other models ignore it)",
    "threshold_split": "evaluation: biased/plain: stratified fraction of the training set held out (not trained on) "
                       "to choose the early-exit threshold (0: none; the threshold sweep is then reported alone)",
    "head": f"head: {_choices(config_lib.models.HEADS)} (nngk: Gaussian-kernel average of the k nearest "
            "centers; impostor: trainable centers; dense: softmax; knn: majority vote)",
    "num_neighbours": "head: k, the nearest centers the head averages over (not --knn_neighbours)",
    "sigma": "head: initial Gaussian kernel width (> 0)",
    "learn_sigma": "head: train the kernel width",
    "sample_weights": "head: learn one importance weight per center (nngk)",
    "auxiliary_softmax": "head: nngk/impostor: also train a dense softmax classifier on the embedding, this weight "
                         "on its cross-entropy (the saved classifier is the kernel head alone; 0: none)",
    "refresh_every": "head: recompute the centers from the network every this many epochs (refresh_mode=embed)",
    "refresh_mode": "head: auto (training where the head takes it: nngk, tied impostors; else embed) | embed (an "
                    "embedding pass over the training images every --refresh_every epochs) | training (each step "
                    "writes its batch's embeddings as their centers; full passes only at the start and end)",
    "candidates": "head: each training step ranks only its samples' CANDIDATES nearest centers, listed by an exact "
                  "search at the start, after every full refresh and every --candidates_every epochs (faster steps, "
                  "approximate neighbours: on Fashion-MNIST 1 point less accurate after 10 epochs, bench/README.md; "
                  "history.json logs the lists' recall); 0: search every center",
    "candidates_every": "head: rebuild the candidate lists every this many epochs",
    "search": "head: neighbour search: auto | exact | faiss-flat | faiss-hnsw | faiss-ivf | faiss:<factory string>",
    "tie": "head: impostor centers: tied (refreshed) | fixed (initial network) | loose (trained, tied by an L2 term)",
    "tie_weight": "head: weight of the L2 term tying loose impostor centers to their samples' embeddings",
    "knn_neighbours": "evaluation: k of the kNN-accuracy vote over the embeddings (not the head's --num_neighbours)",
    "epochs": "training: epochs",
    "batch_size": "training: images per step",
    "learning_rate": "training: Adam learning rate",
    "recalibrate_batchnorm": "training: re-estimate BatchNorm statistics before computing centers and at the end",
    "eval_every": "training: held-out loss and accuracy (Recall@1 for retrieval) every this many epochs, into "
                  "history.json and TensorBoard (0: never)",
    "strategy": "training: tf.distribute strategy: default | mirrored (local devices) | multi_worker (TF_CONFIG)",
    "loop": "training: fit (model.fit) | custom (explicit training loop, same results)",
    "seed": "training: random seed (data order and initial weights)",
    "pq_bytes": "compression: compress the trained centers with (O)PQ to this many bytes each (0: keep float)",
    "pq_bits": "compression: bits per PQ code: 8 (256-entry codebooks) | 4 (16 entries, two codes per byte)",
    "pq_rotation": "compression: learn an OPQ rotation (d x d floats) before product quantization",
    "qat": "compression: quantization-aware training of the backbone (tfmot; models saved as .h5)",
    "prune": "compression: magnitude-prune the backbone to this sparsity (0-1, tfmot)",
}


def define_config_flags():
    """One flag per config field; each defaults to None, meaning "the data set's preset".

    The flags are key flags of the calling entry point, so its `--help` lists them all.
    """
    hints = typing.get_type_hints(config_lib.Config)
    for field in dataclasses.fields(config_lib.Config):
        kind = hints[field.name]
        if typing.get_origin(kind) is typing.Union:
            kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
        help_text = _HELP[field.name] + f" (default {field.default!r} or the data set's preset)"
        define = {bool: flags.DEFINE_boolean, int: flags.DEFINE_integer, float: flags.DEFINE_float}.get(
            kind, flags.DEFINE_string)
        define(field.name, None, help_text)
    flags.DEFINE_string("config", None, "run: a JSON config file (e.g. best_config.json of trainers.tune); flags "
                                        "given with it override its fields")
    flags.adopt_module_key_flags(sys.modules[__name__])


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


class _OwnInfoOnly(logging.Filter):
    """Passes this project's INFO lines and everyone's warnings and errors (TensorFlow logs internals at INFO)."""

    def filter(self, record):
        if record.levelno < logging.WARNING:
            return any(part in record.pathname for part in _OWN_CODE)
        # Keras warns when the SavedModel export reloads an uncompiled copy of the model: nothing to act on.
        return not str(record.msg).startswith("Compiled the loaded model, but the compiled metrics")


_OWN_CODE = (os.sep + "keras_nngk" + os.sep, os.sep + "trainers" + os.sep)


def configure_logging():
    """What a person wants to read: this project's INFO lines and all warnings, each once. `--verbosity=1` shows
    TensorFlow's INFO lines too."""
    tensorflow_logger = logging.getLogger("tensorflow")
    for handler in list(tensorflow_logger.handlers):  # absl's handler prints TensorFlow's records; not twice.
        tensorflow_logger.removeHandler(handler)
    tensorflow_logger.propagate = True
    if flags.FLAGS["verbosity"].value < 1:
        absl_logging.get_absl_handler().addFilter(_OwnInfoOnly())


def entry(main):
    """`main` with the logging set up as `configure_logging` says and the user's errors as one line (`user_errors`),
    for `absl.app.run`."""
    def run_main(argv):
        configure_logging()
        with user_errors():
            return main(argv)
    return run_main


def run(main):
    """Runs an entry point's `main(argv)` as every command does: absl flags, quiet logging, one-line errors.

    Each `trainers` module ends with `def run(): common.run(main)` (its console command) and
    `if __name__ == "__main__": run()`.
    """
    app.run(entry(main))


def sidecar(model_path, name):
    """A JSON file written beside a model: in the model's folder (or the model folder itself), or the one above."""
    folder = os.path.abspath(model_path) if os.path.isdir(model_path) else os.path.dirname(os.path.abspath(model_path))
    for candidate in (folder, os.path.dirname(folder)):
        path = os.path.join(candidate, name)
        if os.path.isfile(path):
            with open(path) as handle:
                return json.load(handle)
    raise ValueError(f"{name} is missing beside {model_path}; trainers.fit and trainers.export write it into the run "
                     "or export folder.")


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
    def interrupted():
        hint = resume_hint() if resume_hint else None
        fail("interrupted" + (f"; {hint}" if hint else "."), status=130)

    try:
        with interrupts.remembered():
            yield
    except KeyboardInterrupt:
        interrupted()
    except Exception as error:  # pylint: disable=broad-except  (re-raised unless it is the user's)
        if interrupts.interrupted():  # TensorFlow turned the KeyboardInterrupt into another error.
            interrupted()
        message = user_error_message(error)
        if message is None:
            raise
        fail(message)
