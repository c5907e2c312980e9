"""A whole training run: data, model, training with center refresh and checkpoints, evaluation, saved outputs.

`fit(config, workdir)` is what `python -m trainers.fit` calls; `evaluate_run(workdir)`
recomputes the metrics of a finished run from its saved models.
"""

import dataclasses
import json
import os
import re
import shutil
import tempfile
import time

import numpy as np
import tensorflow as tf
import tf_keras as keras
from absl import logging

from keras_nngk import backbones, export, layers, metrics, models
from keras_nngk import data as data_lib
from keras_nngk.training import callbacks as callbacks_lib
from keras_nngk.training import compression, sparse_adam
from keras_nngk.training import loop as loop_lib
from keras_nngk.training.config import LEGACY_VALUES, Config
from keras_nngk.utils import files, interrupts, model_files
from keras_nngk.utils.pipelines import without_autotune_thread  # A name of this module: bench/fit_exit.py patches it.

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.json"
EVAL_BATCH_SIZE = 512


def model_path(workdir, name, config):
    """`<name>.keras`, or `<name>.h5` for QAT runs (tfmot's quantizer variables do not round-trip through .keras)."""
    return os.path.join(workdir, name + (".h5" if config.qat else ".keras"))


def make_strategy(name):
    """The `tf.distribute` strategy for a config's `strategy` field."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def _is_chief(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in (None, "chief") or (resolver.task_type == "worker" and resolver.task_id == 0
                                                      and "chief" not in resolver.cluster_spec().as_dict())


def _plain(function):
    """A dataset function without Python control flow: autograph need not (and for lambdas cannot) convert it."""
    return tf.autograph.experimental.do_not_convert(function)


def training_pipeline(data, batch_size, seed, initial_epoch, epochs):
    """`({"image", "sample_id"}, label)` batches for epochs `initial_epoch..epochs-1`, and the steps per epoch.

    Sample ids are positions in `data.train`. The pipeline is one endless,
    seeded sequence of shuffled epochs read through a single iterator, so both
    loops see the same batches, and a resumed run skips the epochs already done
    and continues with exactly the batches the interrupted run would have seen.
    """
    examples = data.train.enumerate().map(
        _plain(lambda index, example: ({"image": example[0], "sample_id": tf.cast(index, tf.int32)}, example[1])),
        num_parallel_calls=tf.data.AUTOTUNE)
    if data.num_train <= 100_000:
        examples = examples.cache()
    steps_per_epoch = -(-data.num_train // batch_size)
    dataset = examples.shuffle(min(data.num_train, 20_000), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size).repeat().skip(initial_epoch * steps_per_epoch)
    if data.augment is not None:
        augment = data.augment
        dataset = dataset.map(_plain(lambda inputs, labels: ({**inputs, "image": augment(inputs["image"])}, labels)),
                              num_parallel_calls=tf.data.AUTOTUNE)
    del epochs  # The sequence is endless; the loops stop after their number of epochs.
    return without_autotune_thread(dataset.prefetch(tf.data.AUTOTUNE)), steps_per_epoch


def image_batches(dataset, batch_size=EVAL_BATCH_SIZE):
    """Images only, in order, batched: for embedding passes and prediction."""
    return without_autotune_thread(
        dataset.map(_plain(lambda image, label: image)).batch(batch_size).prefetch(tf.data.AUTOTUNE))


def labels_of(dataset):
    labels = dataset.map(_plain(lambda image, label: label)).batch(4096)
    return np.concatenate(list(labels.as_numpy_iterator()))


def build_models(config, data):
    if config.model != "classifier":
        built = models.biased_network(data.image_shape, data.num_classes, projection_dim=config.projection_dim,
                                      num_neighbours=config.num_neighbours, embedding_dim=config.embedding_dim,
                                      capacity=data.num_train, sigma=config.sigma, search=config.search,
                                      plain=config.model == "plain", lookup_prototypes=config.lookup_prototypes or None,
                                      trunk=config.backbone,
                                      exit_loss_weight=config.exit_loss_weight if config.model == "biased" else 0.0)
        return models.ClassifierModels(built.train_model, built.inference_model, built.embedding_model,
                                       built.classifier, center_head=built.lookup, biased=built,
                                       center_network=built.key_value_model if built.lookup is not None else None)
    backbone = backbones.get(config.backbone, input_shape=data.image_shape, embedding_dim=config.embedding_dim,
                             l2_normalize=config.l2_normalize, weights=config.weights, pooling=config.pooling)
    if config.qat:
        backbone = compression.quantize_backbone(backbone)
    elif config.prune:
        backbone = compression.prune_backbone(backbone, config.prune)
    return models.nngk_classifier(backbone, data.num_classes, head=config.head, capacity=data.num_train,
                                  num_neighbours=config.num_neighbours, sigma=config.sigma,
                                  learn_sigma=config.learn_sigma, sample_weights=config.sample_weights,
                                  search=config.search, knn_neighbours=config.knn_neighbours, tie=config.tie,
                                  tie_weight=config.tie_weight, auxiliary_softmax=config.auxiliary_softmax)


# More epochs extend a run; which features retrieval compares is a choice of evaluation only.
_RESUMABLE_CHANGES = ("epochs", "retrieval_features")


def _check_workdir(workdir, config, allow_config_change):
    """The config to train `workdir` with, or a one-line ValueError when it holds a run of another config.

    A run saved before a field existed trains on with the value it had (`LEGACY_VALUES`) where `config` holds
    that field's default: a new default does not stop an old run from resuming as it was trained.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return config
    saved = Config.from_file(path)
    with open(path) as handle:
        written = json.load(handle)
    defaults = Config()
    config = dataclasses.replace(config, **{
        key: getattr(saved, key) for key in LEGACY_VALUES
        if key not in written and key not in _RESUMABLE_CHANGES and getattr(config, key) == getattr(defaults, key)})
    changed = {key: values for key, values in saved.differences(config).items() if key not in _RESUMABLE_CHANGES}
    if changed and not allow_config_change:
        summary = ", ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in sorted(changed.items()))
        raise ValueError(f"Workdir {workdir} holds a run with another config ({summary}); choose a new --workdir, "
                         "or pass --allow_config_change to resume it with the new config.")
    return config


def _checkpoint_paths(directory):
    """The checkpoints in `directory` whose files are there (`ckpt-N`), newest first."""
    if not os.path.isdir(directory):
        return []
    numbers = [int(match.group(1)) for match in map(re.compile(r"ckpt-(\d+)\.index").fullmatch, os.listdir(directory))
               if match]
    return [os.path.join(directory, f"ckpt-{number}") for number in sorted(numbers, reverse=True)]


def _restore(checkpoint, manager):
    """Restores the newest intact checkpoint; returns the epochs it holds (0: none, train from scratch).

    The `checkpoint` index file names the latest checkpoint; when it is unreadable
    or names a checkpoint that does not restore, older intact ones are tried, newest
    first. If checkpoints exist and none restores, the run refuses (one line)
    rather than silently training from scratch.
    """
    directory = manager.directory
    latest = manager.latest_checkpoint
    candidates = _checkpoint_paths(directory)
    if latest in candidates:
        candidates.remove(latest)
    if latest:
        candidates.insert(0, latest)
    first_error = None
    for path in candidates:
        try:
            checkpoint.restore(path).expect_partial()
        except Exception as error:  # pylint: disable=broad-except  (any failure to read means the same to the user)
            first_error = first_error or (path, error)
            logging.warning("Checkpoint %s does not restore (%s); trying an older one.", path, type(error).__name__)
            continue
        if path != latest:
            logging.warning("The checkpoint index of %s %s; resuming from %s, the newest checkpoint that restores.",
                            directory, f"names {latest}, which does not restore" if latest else "is unreadable",
                            os.path.basename(path))
        return int(checkpoint.epoch.numpy())
    if first_error is not None:
        path, error = first_error
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise ValueError(f"Checkpoint {path} is corrupt or does not match the model ({type(error).__name__}: "
                         f"{reason}); delete {directory} to train from scratch.")
    return 0


def fit(config, workdir, allow_config_change=False, verbose=1):
    """Trains and evaluates one run, writing everything into `workdir`; returns the metrics dict.

    Writes `config.json`, `checkpoints/` (every epoch; a rerun on the same
    workdir resumes from the last one), `logs/` (TensorBoard), `model.keras`
    (image -> class probabilities), `backbone.keras` (image -> embedding),
    `saved_model/` (the classifier with in-graph exact search), `metrics.json`
    and plots.
    """
    config.validate()
    keras.utils.set_random_seed(config.seed)
    strategy = make_strategy(config.strategy)
    chief = _is_chief(strategy)
    output_dir = workdir if chief else tempfile.mkdtemp(prefix="keras_nngk_worker_")
    config = _check_workdir(output_dir, config, allow_config_change)
    # The data first: a data set that is not available leaves no empty run folder behind.
    data = data_lib.load(config.dataset, **config.data_options())
    threshold_data = None
    if config.model != "classifier" and config.threshold_split:  # Never trained on: chooses the exit threshold.
        data, threshold_data = data_lib.hold_out(data, config.threshold_split, config.seed)
    with files.WorkdirLock(output_dir, purpose="trainers.fit"):
        config = _check_workdir(output_dir, config, allow_config_change)  # Again: another run may have written it.
        for directory in (output_dir, os.path.join(output_dir, "checkpoints")):
            removed = files.remove_temporaries(directory)
            if removed:
                logging.info("Removed what an interrupted run left in %s: %s", directory, ", ".join(removed))
        results = _fit(config, output_dir, data, strategy, verbose, threshold_data)
    if not chief:
        shutil.rmtree(output_dir, ignore_errors=True)
    return results


def _fit(config, output_dir, data, strategy, verbose, threshold_data=None):
    """`fit` once the data is loaded and the run folder is locked."""
    with strategy.scope():
        built = build_models(config, data)
        optimizer = keras.optimizers.Adam(config.learning_rate)
        built.train_model.compile(optimizer, "sparse_categorical_crossentropy", metrics=["accuracy"],
                                  jit_compile=False)
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        trackables = {}
        if config.head == "impostor" and config.tie == "loose":
            center_optimizer = sparse_adam.SparseAdam(config.learning_rate)
            built.train_model.set_center_optimizer(center_optimizer, [built.center_head.centers])
            trackables["center_optimizer"] = center_optimizer
        candidates = config.candidates if built.center_head is not None else 0
        if candidates:  # Checkpointed, so that a resumed run ranks the candidates the uninterrupted one did.
            trackables.update(built.center_head.reserve_candidate_lists(candidates))
        checkpoint = tf.train.Checkpoint(model=built.train_model, optimizer=optimizer, epoch=epoch, **trackables)
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(output_dir, "checkpoints"), max_to_keep=2)
    initial_epoch = _restore(checkpoint, manager)
    with strategy.scope():  # After the restore, which then fills them as it would in the first step (deferred).
        built.train_model.create_training_variables()  # One trace of the training step instead of two.
    if initial_epoch:
        logging.info("Resuming %s from the checkpoint of epoch %d.", output_dir, initial_epoch)
    files.write_json_atomically(os.path.join(output_dir, CONFIG_FILE), config.to_dict())

    embed_images = image_batches(data.train)
    run_callbacks = []
    recalibration = None
    if config.recalibrate_batchnorm:
        if config.prune:
            logging.info("BatchNorm recalibration is skipped for pruned backbones (tfmot's wrappers only run in "
                         "training mode inside model.fit).")
        elif config.strategy == "default":
            recalibration = callbacks_lib.BatchNormRecalibration(built.center_network, image_batches(data.train, 128),
                                                                 num_batches=50)
        else:
            logging.info("BatchNorm recalibration runs only with strategy=default; skipped.")
    refresh = None
    if built.center_head is not None:  # One path for every head with centers; when it refreshes is the head's.
        refresh = callbacks_lib.CenterRefresh(built.center_head, built.center_network, embed_images,
                                              data.train_labels, every_n_epochs=config.refresh_every,
                                              verbose=verbose, recalibration=recalibration,
                                              mode=config.resolved_refresh_mode(), candidates=candidates,
                                              candidates_every=config.candidates_every)
        run_callbacks += [refresh, callbacks_lib.HeadLogs(built.center_head, refresh)]  # Sigma into the history.
    elif recalibration is not None:
        run_callbacks.append(recalibration)  # The dense head and the plain network: once, at the end of training.
    if config.eval_every:  # Held-out curves beside the training ones.
        held_out_model = (backbones.retrieval_network(built.backbone, config.retrieval_features)
                          if config.task == "retrieval" else built.inference_model)
        run_callbacks.append(callbacks_lib.HeldOutMetrics(held_out_model, image_batches(data.test),
                                                          labels_of(data.test), config.eval_every, config.task,
                                                          recalibration, refresh))
    history_log = callbacks_lib.HistoryLog(os.path.join(output_dir, HISTORY_FILE), initial_epoch)
    run_callbacks.append(history_log)  # Before the checkpoint: an epoch's history is on disk before its checkpoint.
    run_callbacks.append(callbacks_lib.EpochCheckpoint(manager, epoch))
    run_callbacks.append(callbacks_lib.Interruptible())  # After the checkpoint: an epoch that ended is kept.
    if config.prune:
        run_callbacks.extend(compression.pruning_callbacks())

    dataset, steps_per_epoch = training_pipeline(data, config.batch_size, config.seed, initial_epoch, config.epochs)
    start = time.time()
    if config.loop == "custom":
        loop_lib.CustomLoop(built.train_model, optimizer, strategy, verbose=verbose,
                            log_dir=os.path.join(output_dir, "logs")).fit(
            dataset, config.epochs, steps_per_epoch, initial_epoch=initial_epoch, callbacks=run_callbacks)
    else:
        run_callbacks.append(callbacks_lib.EpochTensorBoard(os.path.join(output_dir, "logs")))
        built.train_model.fit(dataset, epochs=config.epochs, initial_epoch=initial_epoch,
                              steps_per_epoch=steps_per_epoch, callbacks=run_callbacks, verbose=verbose)
    train_seconds = time.time() - start
    interrupts.raise_if_interrupted()  # Pressed during the last batch (after its check): not a finished run.

    if config.prune:  # Export the pruned weights without tfmot's wrappers.
        stripped = compression.strip_pruning(built.backbone)
        image = keras.Input(data.image_shape, name="image")
        head = built.inference_model.layers[-1]
        built = dataclasses.replace(built, backbone=stripped,
                                    inference_model=keras.Model(image, head(stripped(image)), name="classifier"))
    results = evaluate(config, data, built.backbone, built.inference_model, verbose=verbose)
    results.update({
        "dataset": config.dataset, "task": config.task, "head": config.head, "backbone": config.backbone,
        "epochs": config.epochs, "initial_epoch": initial_epoch,
        "evaluated_on": "validation" if config.validation_split else "test", "train_seconds": round(train_seconds, 2),
        "num_train": data.num_train, "num_test": data.num_test, "num_classes": data.num_classes,
        "history": history_log.history,
        "history_first_epoch": history_log.first_epoch if history_log.entries else initial_epoch,
    })
    if config.model == "classifier" and config.head in ("nngk", "impostor"):
        results["sigma"] = float(built.center_head.sigma.numpy())
    if config.model != "classifier":
        from keras_nngk.models import biased_eval  # pylint: disable=g-import-not-at-top
        results.update(biased_eval.evaluate_biased(built.biased, data, output_dir, threshold_data))
    if config.pq_bytes:
        results.update(_compressed_results(config, data, built, output_dir, verbose))
    if config.prune:
        results["backbone_sparsity"] = compression.sparsity(built.backbone)
    _save_outputs(output_dir, built, results, data, config)
    return results


def _compressed_results(config, data, built, output_dir, verbose):
    """Compresses the head's centers to `pq_bytes` (PQ, OPQ with `pq_rotation`), evaluates that model too, saves it
    as model_pq."""
    compressed = layers.compress(built.center_head, pq_bytes=config.pq_bytes, bits=config.pq_bits,
                                 rotation=config.pq_rotation)
    image = keras.Input(data.image_shape, name="image")
    model = keras.Model(image, compressed(built.backbone(image)), name="classifier_pq")
    metrics_pq = evaluate(config, data, built.backbone, model, verbose=verbose)
    files.save_model(model, model_path(output_dir, "model_pq", config))
    report = compressed.memory_report()
    logging.info("Compressed centers: %s", report)
    return {"test_accuracy_pq": metrics_pq.get("test_accuracy"), "memory": report}


def evaluate(config, data, backbone, inference_model, verbose=1):
    """Test metrics: accuracy and kNN accuracy (classification), or Recall@K, MAP@R and R-precision on unseen
    classes (retrieval)."""
    test_images = image_batches(data.test)
    test_labels = labels_of(data.test)
    if verbose:  # A label for each progress bar below.
        logging.info("Evaluating: embedding the %d %s images.", data.num_test, "held-out-class" if
                     config.task == "retrieval" else "test")
    test_embeddings = backbone.predict(test_images, verbose=verbose)
    if config.task == "retrieval":
        features = test_embeddings
        if config.retrieval_features != "embedding":
            features = backbones.retrieval_network(backbone, config.retrieval_features).predict(test_images,
                                                                                              verbose=verbose)
        recalls = metrics.recall_at_k(features, test_labels, ks=(1, 2, 4, 8))
        results = {f"recall@{k}": value for k, value in recalls.items()}
        if np.unique(test_labels, return_counts=True)[1].max() > 1:  # MAP@R needs a class seen twice.
            results.update(metrics.map_at_r(features, test_labels))
        results["retrieval_features"] = config.retrieval_features
        if config.retrieval_features != "embedding":  # The embedding's own figure beside it.
            results["embedding_recall@1"] = metrics.recall_at_k(test_embeddings, test_labels, ks=(1,))[1]
        return results
    if verbose:
        logging.info("Evaluating: embedding the %d training images for the kNN accuracy.", data.num_train)
    train_embeddings = backbone.predict(image_batches(data.train), verbose=verbose)
    if verbose:
        logging.info("Evaluating: classifying the %d test images.", data.num_test)
    probabilities = inference_model.predict(test_images, verbose=verbose)
    return {"test_accuracy": metrics.accuracy(probabilities, test_labels),
            "knn_accuracy": metrics.knn_accuracy(train_embeddings, data.train_labels, test_embeddings, test_labels,
                                                 config.knn_neighbours)}


def _save_outputs(output_dir, built, results, data, config):
    """Every file of a finished run, each written atomically; metrics.json last, as the mark of a finished run."""
    files.save_model(built.inference_model, model_path(output_dir, "model", config))
    files.save_model(built.backbone, model_path(output_dir, "backbone", config))
    export.to_saved_model(built.inference_model, os.path.join(output_dir, "saved_model"))
    files.write_json_atomically(os.path.join(output_dir, "class_names.json"), list(data.class_names))
    files.write_json_atomically(os.path.join(output_dir, "preprocessing.json"), data.preprocessing)
    from keras_nngk import plots  # pylint: disable=g-import-not-at-top
    plots.plot_run(results, output_dir)
    files.write_json_atomically(os.path.join(output_dir, METRICS_FILE), results)


def load_run(workdir):
    """The config and saved models of a finished run: `(config, inference_model, backbone)`.

    Models are loaded with `keras_nngk.utils.load_model`, which refuses files that
    carry code. Raises a one-line ValueError for a folder that is not a finished run
    (no metrics.json: training was interrupted; rerunning trainers.fit completes it).
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise ValueError(f"{workdir!r} holds no trained model (no config.json); train one with "
                         "python -m trainers.fit --workdir=...")
    config = Config.from_file(path)
    if not os.path.isfile(os.path.join(workdir, METRICS_FILE)):
        raise ValueError(f"The run in {workdir} did not finish (no metrics.json); rerun python -m trainers.fit "
                         f"--workdir={workdir} to complete it from its last checkpoint.")
    with compression.loading_scope(config):
        inference_model = model_files.load_model(model_path(workdir, "model", config))
        backbone = model_files.load_model(model_path(workdir, "backbone", config))
    return config, inference_model, backbone


def evaluate_run(workdir, verbose=1):
    """Reloads a finished run's saved models and data and recomputes its metrics."""
    config, inference_model, backbone = load_run(workdir)
    data = data_lib.load(config.dataset, **config.data_options())
    return evaluate(config, data, backbone, inference_model, verbose=verbose)
