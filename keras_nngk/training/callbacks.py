"""Keras callbacks that keep nearest-neighbour heads' centers in step with the network."""

import hashlib
import json
import os
import sys

import numpy as np
import tensorflow as tf
import tf_keras as keras
from absl import logging

from keras_nngk.training import center_sync
from keras_nngk.utils import files, interrupts, pipelines
from keras_nngk.utils.checks import check_non_negative_int, check_positive_int

# How periodic centers follow the network: separate embedding passes, or writes from the training steps.
MODES = ("embed", "training")


class CenterRefresh(keras.callbacks.Callback):
    """Keeps a head's centers in step with the network during `model.fit` (the "weak update").

    Centers are the embeddings of the training samples. Recomputing them after
    every step would cost a full pass over the data each time; section 3 of the
    review reports that refreshing every few epochs suffices with k = 32
    neighbours. Each refresh is a `CenterSync.assign`: BatchNorm recalibration
    (with `recalibration`), an embedding pass over `x` with `embedding_model` (a
    Keras progress bar shows it), and `head.refresh_centers(...)`, which keeps the
    learned per-center weights. When it refreshes follows the head's
    `center_schedule`:

    - "periodic" (NNGK, tied impostors, the biased network's lookup): at the start
      of training (unless `refresh_on_train_begin=False`), after every
      `every_n_epochs` epochs, and at the end of training when the last epoch did
      not refresh or the weights changed since the last refresh (a callback listed
      before this one restored them, e.g. Keras' `EarlyStopping` with
      `restore_best_weights=True`; listed after it, that restore would come last,
      and a warning says so), so the model is evaluated and exported with current
      centers;
    - "initial" (fixed and loose impostors): once, from the initial network, when
      the head holds no centers yet (a resumed run keeps its own); at the end of
      training BatchNorm is recalibrated, the centers stay;
    - "final" (the kNN baseline, which trains nothing): once, after the last epoch (at the end of training when
      the number of epochs is not known or training stopped early).

    `mode` chooses how periodic centers follow the network between those points:

    - "embed" (default): the refreshes above, each a separate embedding pass over `x`;
    - "training": every training step writes its batch's embeddings over the
      batch's own centers (`CenterLayer.write_training_embeddings`, in the
      compiled step: no separate pass), so each center is at most one epoch old
      and carries the batch's BatchNorm statistics, like the training queries it
      meets. The full refresh (recalibration + embedding pass) then runs only at
      the start (when the head is empty, or with `refresh_on_train_begin` at the
      start of epoch 0: a resumed run keeps the centers of its checkpoint) and
      after the last epoch (or at the end of training when the number of epochs
      is not known), so that evaluation and export see inference-mode centers;
      `every_n_epochs` is ignored. Held-out metrics of earlier epochs compare
      inference-mode queries with these training-mode centers. Needs centers in
      data order (sample ids `0..N-1`, what a refresh stores) and a head that
      writes them: NNGK and tied impostors. A faiss index is rebuilt from the
      written centers after every epoch.

    Args:
        head: a `keras_nngk.layers.CenterLayer` (NNGK, kNN, ...).
        embedding_model: model mapping `x` to what the head stores: embeddings (the backbone), or `(keys, values)`
            for a `NeighbourLookup`.
        x: training inputs in the order of `sample_ids` (array or dataset of batches without labels).
        labels: class ids `(N,)` or soft labels `(N, num_classes)`.
        sample_ids: ids of the samples (default `0..N-1`), the same the model is fed for leave-one-out.
        every_n_epochs: refresh interval in epochs; None never refreshes after the
            start (centers fixed at the initial network, or trained as impostors).
        batch_size: batch size of the embedding pass (ignored for datasets).
        verbose: 1 shows a progress bar for the embedding pass, 0 is silent.
        recalibration: a `BatchNormRecalibration` (its network and batches are used
            before every embedding pass), so that centers (computed in inference
            mode) see BatchNorm statistics of the network as it is, not running
            statistics that lag its weights; "auto" (default): one over 100
            batches of 128 of `x` (`auto_recalibration`) when `embedding_model`
            has BatchNorm layers, none otherwise; None: no recalibration.
        schedule: "periodic", "initial" or "final"; default: the head's `center_schedule`.
        mode: "embed" or "training" (see above; "training" needs the "periodic" schedule).
        candidates: > 0: training steps rank only each sample's `candidates` nearest centers, listed
            (`CenterLayer.reserve_candidate_lists`, exact search over all centers) at the start of the first epoch,
            after every full refresh and every `candidates_every` epochs; 0 (default): every step searches all
            centers. The lists' recall of the exact neighbours (1,000 stored centers as queries) goes into each
            epoch's logs as `candidate_recall`. Lists reserved before (a checkpoint restored into them) are kept
            until their schedule says otherwise, so a resumed run ranks what the uninterrupted one did.
        candidates_every: rebuild the lists at the start of every this many epochs since they were built.

    Example:

    >>> refresh = CenterRefresh(head, backbone, x_train, y_train, every_n_epochs=2)
    >>> model.fit({"image": x_train, "sample_id": ids}, y_train, epochs=10, callbacks=[refresh])
    """

    def __init__(self, head, embedding_model, x, labels, sample_ids=None, every_n_epochs=1, batch_size=256,
                 verbose=1, refresh_on_train_begin=True, refresh_on_train_end=True, recalibration="auto",
                 schedule=None, mode="embed", candidates=0, candidates_every=1):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"Unknown refresh mode {mode!r}; valid: {', '.join(MODES)}. Received: mode={mode!r}")
        if every_n_epochs is not None and (
                isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int) or every_n_epochs < 1):
            raise ValueError("`every_n_epochs` must be a positive integer or None. "
                             f"Received: every_n_epochs={every_n_epochs!r}")
        schedule = head.center_schedule if schedule is None else schedule
        if schedule not in center_sync.SCHEDULES:
            raise ValueError(f"Unknown schedule {schedule!r}; valid: {', '.join(center_sync.SCHEDULES)}.")
        self.head = head
        self.embedding_model = embedding_model
        self.x = x
        self.labels = np.asarray(labels)
        self.sample_ids = None if sample_ids is None else np.asarray(sample_ids)
        self.every_n_epochs = every_n_epochs if schedule == "periodic" else None
        self.schedule = schedule
        if mode == "training" and (schedule != "periodic" or not getattr(head, "supports_training_writes", False)):
            raise ValueError(f"{type(head).__name__} cannot take centers from the training pass (only NNGK heads "
                             "and tied impostors, whose centers follow the network, can); use mode='embed'.")
        self.mode = mode
        self.verbose = verbose
        self.refresh_on_train_begin = refresh_on_train_begin
        self.refresh_on_train_end = refresh_on_train_end
        if isinstance(recalibration, str):
            if recalibration != "auto":
                raise ValueError(f"`recalibration` must be a BatchNormRecalibration, 'auto' or None. Received: "
                                 f"recalibration={recalibration!r}")
            recalibration = auto_recalibration(embedding_model, x)
        self.recalibration = recalibration
        self.sync = center_sync.CenterSync(
            head, embedding_model, batch_size=batch_size, verbose=verbose,
            recalibration_images=None if recalibration is None else recalibration.images,
            recalibration_batches=100 if recalibration is None else recalibration.num_batches,
            recalibration_network=None if recalibration is None else recalibration.network)
        self._refreshed_after_last_epoch = False
        self._state_at_refresh = None  # `_network_state()` after the last refresh.
        self._fitting = False  # Between `on_train_begin` and `on_train_end`.
        self._epoch = -1  # The epoch running, from `on_epoch_begin`.
        self._prepared_epoch = -1  # The epoch whose end-of-epoch work ran before Keras' validation pass.
        self._sample_ids_checked = False
        self._start_refresh_pending = False
        self.candidates = check_non_negative_int("candidates", candidates)
        self.candidates_every = check_positive_int("candidates_every", candidates_every)
        if self.candidates and schedule != "periodic":
            raise ValueError(f"Candidate lists serve heads whose centers follow the network (schedule 'periodic'); "
                             f"use candidates=0. Received: candidates={candidates}, schedule={schedule!r}")
        self._lists_stale = False  # The centers were replaced since the lists were built.

    @property
    def batch_size(self):
        return self.sync.batch_size

    @property
    def refresh_count(self):
        """How many times the centers were refreshed."""
        return self.sync.refresh_count

    def refresh(self):
        """Recalibrates BatchNorm, embeds the training inputs with the current network and stores them as centers."""
        self.sync.assign(self.x, self.labels, self.sample_ids)
        self._lists_stale = True
        self._state_at_refresh = self._network_state()

    def _network_state(self):
        """A digest of the network's and the head's weights (BatchNorm statistics and centers included).

        What the last refresh made consistent: a callback that restores weights afterwards (Keras' `EarlyStopping`
        with `restore_best_weights=True` does so in its `on_train_end`) changes it, and the end of training then
        refreshes again instead of leaving the restored network with centers and statistics of another epoch.
        """
        return weights_digest(list(self.embedding_model.weights) + list(self.head.weights))

    def _check_sample_ids(self):
        """Warns (once per training) when the trained model cannot feed the head sample ids; True once checked."""
        inputs = getattr(self.model, "inputs", None)
        if inputs is None:  # A Sequential model builds on its first batch.
            return False
        if len(inputs) < 2 and self.schedule != "final":
            logging.warning("%s is trained by a model with one input, so it gets no sample ids: every training "
                            "sample finds its own center at distance 0 (no leave-one-out) and learns little. Build "
                            "the models with kn.models.nngk_classifier(backbone, num_classes, head=...) and feed "
                            "{'image': x, 'sample_id': ids}.", self.head.name)
        return True

    def on_train_begin(self, logs=None):
        self._sample_ids_checked = self._check_sample_ids()
        warn_about_later_restores(self)
        self._fitting, self._prepared_epoch = True, -1
        if self.schedule == "final":
            return
        empty = not self.head.built or self.head.num_centers == 0
        self._start_refresh_pending = False
        if self.mode == "training" and not empty:
            # At the first epoch's start: a run resumed from a checkpoint starts at a later epoch and keeps the
            # centers its checkpoint holds, those the steps wrote (as the uninterrupted run keeps them).
            self._start_refresh_pending = self.refresh_on_train_begin
        elif empty or (self.schedule == "periodic" and self.refresh_on_train_begin):
            self.refresh()
        if self.candidates:  # Before the step is traced (and before `_set_training_writes` traces it again).
            self.head.reserve_candidate_lists(self.candidates)
        if self.mode == "training":
            self._set_training_writes(True)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if self._start_refresh_pending:
            self._start_refresh_pending = False
            if epoch == 0:
                self.refresh()
        if self.mode == "training":  # After every callback's on_train_begin, where Keras' BackupAndRestore restores.
            self.head.rebuild_index_if_replaced()
        built_at = self.head.candidate_lists_epoch
        if self.candidates and (self._lists_stale or built_at < 0 or epoch - built_at >= self.candidates_every):
            self.head.rebuild_candidate_lists(epoch)
            self._lists_stale = False

    def _set_training_writes(self, on):
        """Turns the head's writes from the training pass on or off, and has the model trace its step again."""
        if self.head.write_training_centers == on:
            return
        self.head.write_training_centers = on
        if self.model is not None and hasattr(self.model, "make_train_function"):
            # `model.fit` reads `train_function` at every step: the new trace is used from the next step on.
            self.model.train_function = None
            if on:
                self.model.make_train_function(force=True)

    def _refresh_due_after(self, epoch):
        """Whether the centers are refreshed at the end of `epoch`."""
        if self.mode == "training" or self.schedule == "final":
            # The final centers after the last epoch rather than at the end of training, so that this epoch's
            # held-out metrics are those of the saved model (with the number of epochs unknown, at the end of
            # training).
            return self.refresh_on_train_end and (self.params or {}).get("epochs") == epoch + 1
        return self.every_n_epochs is not None and (epoch + 1) % self.every_n_epochs == 0

    def _end_epoch(self, epoch):
        """The end-of-epoch work on the centers: the due refresh, or a faiss index brought up to the written ones."""
        if self._refresh_due_after(epoch):
            self.refresh()
        elif self.mode == "training":
            self.head.rebuild_index()  # A faiss index follows the written centers (nothing to do for "exact").

    def on_test_begin(self, logs=None):
        """Before Keras' validation pass inside `model.fit` (`validation_data`), which comes after the epoch's last
        step and before `on_epoch_end`: does the end-of-epoch work then, so that the pass and every callback's
        `on_epoch_end` (EarlyStopping, ModelCheckpoint) see this epoch's centers, and otherwise recalibrates
        BatchNorm (with `recalibration`, unless `before_validation=False`): the running statistics lag the weights
        and the pass would read a network other than the one saved."""
        if not self._fitting or self._prepared_epoch == self._epoch:
            return
        self._prepared_epoch = self._epoch
        self._end_epoch(self._epoch)
        if (not self._refresh_due_after(self._epoch) and self.recalibration is not None
                and getattr(self.recalibration, "before_validation", True)):  # Older or duck-typed ones: True.
            self.sync.recalibrate()

    def on_epoch_end(self, epoch, logs=None):
        if not self._sample_ids_checked:
            self._sample_ids_checked = self._check_sample_ids()
        if self.candidates and logs is not None:
            logs["candidate_recall"] = self.head.candidate_recall()
        self._refreshed_after_last_epoch = self._refresh_due_after(epoch)
        if self._prepared_epoch != epoch:
            self._end_epoch(epoch)

    @property
    def refreshed_after_last_epoch(self):
        """Whether the last `on_epoch_end` refreshed the centers."""
        return self._refreshed_after_last_epoch

    def mark_stale(self):
        """Makes the end-of-training refresh happen even if the last epoch refreshed (the network changed)."""
        self._refreshed_after_last_epoch = False

    def on_train_end(self, logs=None):
        self._fitting = False
        if self.candidates:
            self.head.reserve_candidate_lists(0)
            if self.model is not None:
                self.model.train_function = None
        if self.mode == "training":
            self._set_training_writes(False)
        if self.schedule == "initial" or not self.refresh_on_train_end:
            if self.refresh_on_train_end:
                self.sync.recalibrate()  # The centers stay; the network's statistics are brought up to date.
            return
        if not self._refreshed_after_last_epoch or self._state_at_refresh != self._network_state():
            self.refresh()


class BatchNormRecalibration(keras.callbacks.Callback):
    """At the end of training (and before `model.fit`'s validation passes), re-estimates BatchNorm statistics as
    exact averages over training batches.

    For networks without stored centers (the dense head, the plain network); heads
    with centers get the same recalibration before each refresh from
    `CenterRefresh(recalibration=...)`. See `center_sync.recalibrate_batchnorm`.

    Args:
        model: the network containing BatchNormalization layers (the backbone).
        images: a dataset of image batches (no labels), e.g. the training images.
        num_batches: how many batches to average over.
        center_refresh: an optional `CenterRefresh` (placed after this callback) whose
            end-of-training refresh must then run on the recalibrated network.
        before_validation: also recalibrate before each validation pass of `model.fit` (`validation_data`), whose
            metrics otherwise read running statistics that lag the weights (with the small conv, tens of points
            below what the network scores once recalibrated). Training never reads the running statistics, so it
            is unchanged. With `center_refresh`, that callback does it
            (it refreshes instead when its refresh is due), and for a `CenterRefresh` given this callback as its
            `recalibration`, the flag decides whether it recalibrates before validation.
    """

    def __init__(self, model, images, num_batches=100, center_refresh=None, before_validation=True):
        super().__init__()
        self.network = model
        self.images = images
        self.num_batches = num_batches
        self.center_refresh = center_refresh
        self.before_validation = before_validation
        self._fitting = False

    def recalibrate(self):
        return center_sync.recalibrate_batchnorm(self.network, self.images, self.num_batches)

    def on_train_begin(self, logs=None):
        warn_about_later_restores(self)
        self._fitting = True

    def on_test_begin(self, logs=None):
        if self._fitting and self.before_validation and self.center_refresh is None:
            self.recalibrate()

    def on_train_end(self, logs=None):
        self._fitting = False
        if self.recalibrate() and self.center_refresh is not None:
            self.center_refresh.mark_stale()


def auto_recalibration(network, x, batch_size=128, num_batches=100):
    """A `BatchNormRecalibration` of `network` over `num_batches` batches of the training inputs `x`, or None when
    the network has no BatchNorm layer or `x` is neither an array nor a `tf.data.Dataset` of batches.

    Array inputs are drawn in a seeded random order (inputs sorted by class would otherwise give statistics of a few
    classes); a dataset gives its first `num_batches` batches.
    """
    if not center_sync.batchnorm_layers(network):
        return None
    if isinstance(x, tf.data.Dataset):
        batches = x
    elif isinstance(x, (np.ndarray, tf.Tensor)):
        chosen = np.random.default_rng(0).permutation(len(x))[:batch_size * num_batches]
        batches = tf.data.Dataset.from_tensor_slices(np.asarray(x)[chosen]).batch(batch_size)
    else:
        return None
    return BatchNormRecalibration(network, batches, num_batches)


# Variables larger than this many elements are read by a few rows, not whole (see `weights_digest`).
DIGEST_WHOLE_MAX = 1 << 20
DIGEST_ROWS = 16


def weights_digest(variables):
    """A digest of `variables`' values that tells whether they were replaced (e.g. restored from another epoch).

    Small variables are read whole; large ones (centers, their labels, wide kernels) by `DIGEST_ROWS` rows spread
    over their first axis, gathered from one dense read: no copy of the whole table to the host, and no sparse read,
    which would put the variable in copy-on-read mode (see `CenterLayer`). A restore of another epoch's weights
    changes every row.
    """
    digest = hashlib.blake2b(digest_size=16)
    for variable in variables:
        if variable.shape.num_elements() <= DIGEST_WHOLE_MAX or not variable.shape.rank:
            value = variable.numpy()
        else:
            rows = np.unique(np.linspace(0, variable.shape[0] - 1, DIGEST_ROWS).astype(np.int64))
            value = tf.gather(variable.value(), rows).numpy()  # A gather from the read value, not the variable.
        digest.update(np.ascontiguousarray(value).data)
    return digest.digest()


def _callbacks_after(callback):
    """The callbacks that `model.fit` runs after `callback`, or () when the caller is not a Keras `CallbackList`.

    Keras gives a callback no reference to the others; the `CallbackList` calling one of its hooks is the caller's
    `self`, found on the stack (a few frames up at most).
    """
    frame = sys._getframe(1)  # pylint: disable=protected-access
    for _ in range(4):
        frame = frame.f_back
        if frame is None:
            return ()
        owner = frame.f_locals.get("self")
        if isinstance(owner, keras.callbacks.CallbackList):
            callbacks = list(owner.callbacks)
            return tuple(callbacks[callbacks.index(callback) + 1:]) if callback in callbacks else ()
    return ()


def warn_about_later_restores(callback):
    """Warns when an `EarlyStopping(restore_best_weights=True)` follows `callback` in `model.fit`'s callbacks.

    It restores the best epoch's weights in its `on_train_end`, after this callback's end-of-training refresh or
    recalibration, so the model would keep that epoch's running BatchNorm statistics and (with a head) the centers it
    held then, which do not match its network. Listed before, its restore comes first and this callback brings the
    restored network up to date.
    """
    for later in _callbacks_after(callback):
        if isinstance(later, keras.callbacks.EarlyStopping) and later.restore_best_weights:
            logging.warning("EarlyStopping(restore_best_weights=True) comes after %s in `callbacks`: it restores "
                            "weights after %s has brought centers and BatchNorm statistics up to date, so the model "
                            "would end with those of another epoch. List it before %s.", type(callback).__name__,
                            type(callback).__name__, type(callback).__name__)
            return True
    return False


all_layers = center_sync.all_layers


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves a `tf.train.CheckpointManager` checkpoint after every epoch (numbered by epochs done).

    TensorFlow writes the checkpoint files first and then swaps the small
    `checkpoint` index file in one rename, so a run killed mid-save still resumes
    from the previous checkpoint.
    """

    def __init__(self, manager, epoch_variable):
        super().__init__()
        self.manager = manager
        self.epoch_variable = epoch_variable

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_variable.assign(epoch + 1)
        self.manager.save(checkpoint_number=epoch + 1)


class KeyValueRefresh(CenterRefresh):
    """`CenterRefresh` for a `NeighbourLookup` (kept for old code: `CenterRefresh` handles it by itself)."""


class HistoryLog(keras.callbacks.Callback):
    """Keeps every epoch's logs in a JSON file, so that a resumed run reports the history of all its epochs.

    Place it before `EpochCheckpoint`: the history of an epoch is then on disk
    before its checkpoint, and a resume from epoch `initial_epoch` drops the
    entries of later epochs (those of an epoch whose checkpoint was not written).

    Args:
        path: the JSON file (`history.json` of a run folder); read if it exists.
        initial_epoch: the epoch training (re)starts at.
    """

    def __init__(self, path, initial_epoch=0):
        super().__init__()
        self.path = path
        self.entries = [entry for entry in self._read(path) if entry["epoch"] < initial_epoch]

    @staticmethod
    def _read(path):
        if not os.path.exists(path):
            return []
        try:
            with open(path) as handle:
                entries = json.load(handle)["epochs"]
            return [dict(entry, epoch=int(entry["epoch"])) for entry in entries]
        except (OSError, ValueError, KeyError, TypeError) as error:
            logging.warning("Ignoring the unreadable training history %s (%s); it restarts at this epoch.", path,
                            error)
            return []

    def on_epoch_end(self, epoch, logs=None):
        entry = {"epoch": int(epoch)}
        entry.update({key: float(value) for key, value in (logs or {}).items()})
        self.entries = [old for old in self.entries if old["epoch"] < epoch] + [entry]
        files.write_json_atomically(self.path, {"epochs": self.entries})

    @property
    def first_epoch(self):
        """The epoch of the first entry (0 for a run whose history is whole)."""
        return self.entries[0]["epoch"] if self.entries else None

    @property
    def history(self):
        """`{metric: [value per epoch]}` over every epoch recorded, as `History.history`."""
        keys = sorted({key for entry in self.entries for key in entry if key != "epoch"})
        return {key: [entry[key] for entry in self.entries if key in entry] for key in keys}


class HeldOutMetrics(keras.callbacks.Callback):
    """Adds held-out metrics to the logs every `every` epochs, as `val_*` entries (Keras' naming, so TensorBoard
    writes them as validation curves and `HistoryLog` keeps them).

    Classification: `val_loss` (cross-entropy) and `val_accuracy` of `model` on
    `images`; retrieval (`task="retrieval"`, classes unseen in training):
    `val_recall@1` of `model`'s embeddings. Place it after `CenterRefresh` (so the
    centers are the epoch's) and before `HistoryLog` and `TensorBoard`.

    With `recalibration`, BatchNorm is recalibrated before each pass, as it is before the model is saved: the
    running statistics that training leaves lag the weights, and read with them the held-out accuracy swings far
    below what the network would score (README, "Training runs"). Training does not read those statistics
    (BatchNorm normalises by the batch's in training mode) and the final recalibration starts from scratch, so the
    trained model is the same bit for bit (tested on the small conv; checked once on SqueezeNet, whose dropout masks
    in the training steps come from random ops of their own).

    Args:
        model: the inference model (images -> probabilities) or, for retrieval, the backbone.
        images: a dataset of image batches, in the order of `labels`.
        labels: class ids.
        every: epochs between passes.
        task: "classification" or "retrieval".
        recalibration: a `BatchNormRecalibration` to run before each pass, or None.
        center_refresh: the run's `CenterRefresh`, if any: an epoch whose centers it refreshed (which recalibrates
            first) is not recalibrated again, and (classification) an epoch after which its head holds no centers
            yet is not read.
    """

    def __init__(self, model, images, labels, every=1, task="classification", recalibration=None,
                 center_refresh=None):
        super().__init__()
        self.network = model
        self.images = images
        self.labels = np.asarray(labels)
        self.every = every
        self.task = task
        self.recalibration = recalibration
        self.center_refresh = center_refresh

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or not self.every or (epoch + 1) % self.every:
            return
        empty = self.center_refresh is not None and not self.center_refresh.head.num_centers
        if empty and self.task == "classification":
            return  # Nothing to read yet (the kNN baseline's centers come after the last epoch): no chance-level row.
        refreshed = self.center_refresh is not None and self.center_refresh.refreshed_after_last_epoch
        if self.recalibration is not None and not refreshed:
            self.recalibration.recalibrate()
        from keras_nngk import metrics  # pylint: disable=g-import-not-at-top
        outputs = pipelines.predict(self.network, self.images)
        if self.task == "retrieval":
            logs["val_recall@1"] = float(metrics.recall_at_k(outputs, self.labels, ks=(1,))[1])
            return
        probabilities = np.clip(outputs[np.arange(len(self.labels)), self.labels], 1e-7, 1.0)
        logs["val_loss"] = float(-np.mean(np.log(probabilities)))
        logs["val_accuracy"] = float(metrics.accuracy(outputs, self.labels))


class HeadLogs(keras.callbacks.Callback):
    """Adds the head's state to each epoch's logs: its kernel width `sigma`, and whether its centers were refreshed
    after the epoch (1 or 0).

    Place it after the `CenterRefresh` and before `HistoryLog` and
    `keras.callbacks.TensorBoard`, which then record them with the loss
    (`epoch_sigma`, `epoch_centers_refreshed` in TensorBoard).
    """

    def __init__(self, head, center_refresh=None):
        super().__init__()
        self.head = head
        self.center_refresh = center_refresh

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        if hasattr(self.head, "sigma"):
            logs["sigma"] = float(self.head.sigma.numpy())
        if self.center_refresh is not None and self.center_refresh.schedule != "final":
            logs["centers_refreshed"] = float(self.center_refresh.refreshed_after_last_epoch)


class Interruptible(keras.callbacks.Callback):
    """Raises a Ctrl-C that TensorFlow swallowed at the next training batch or epoch end
    (`keras_nngk.utils.interrupts`).

    A no-op unless the entry point runs within `interrupts.remembered()`, as every `trainers` command does.
    """

    def __init__(self):
        super().__init__()
        self._supports_tf_logs = True  # Keras then passes the batch logs as they are, without a sync to NumPy.

    def on_train_batch_end(self, batch, logs=None):
        interrupts.raise_if_interrupted()

    def on_epoch_end(self, epoch, logs=None):
        interrupts.raise_if_interrupted()


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """Keras' TensorBoard callback for per-epoch curves (`update_freq="epoch"`), without its batch-end work.

    Keras runs every callback's batch hooks as soon as one callback has them (the
    progress bar does), and TensorBoard's batch end then writes the model's graph
    at the first batch (130 ms, which Keras reports as a slow callback) and calls
    `tf.summary.scalar` for every log entry at each batch, which `update_freq="epoch"`
    never records (0.8 ms a batch, measured on digits). Epoch curves, held-out curves
    and everything else are Keras' own.

    Args:
        log_dir: the folder of the event files (`train/`, `validation/`).
    """

    def __init__(self, log_dir):
        super().__init__(log_dir, write_graph=False)

    def on_train_batch_end(self, batch, logs=None):
        del batch, logs
