"""The one mechanism that keeps a head's stored centers, and the network's BatchNorm statistics, in step with it.

Every trainer refreshes through `CenterSync`: `fit` (through the `CenterRefresh`
callback, in `model.fit` and in the custom loop alike), the samples-per-class
experiment and the continual trainer. A refresh is always the same three steps:

1. recalibrate BatchNorm (optional): re-estimate the running statistics as exact
   averages over training batches (`recalibrate_batchnorm`), so that centers,
   computed in inference mode, match the training-mode queries they meet;
2. embed the training images with the network in inference mode;
3. store the result in the head (`CenterLayer.refresh_centers`: the embeddings
   as centers, or the keys and values of a `NeighbourLookup`), keeping learned
   per-center state such as the importance weights.
"""

import weakref

import numpy as np
import tensorflow as tf
import tf_keras as keras
from absl import logging

from keras_nngk.utils import pipelines
from keras_nngk.utils.checks import check_positive_int

# When the centers of each kind of head follow the network (see `CenterLayer.center_schedule`).
SCHEDULES = ("periodic", "initial", "final")


def all_layers(model):
    """Every layer of a model, nested models' layers included."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from all_layers(layer)


# One compiled training-mode pass per network (and its momentum variable), reused by every recalibration.
_RECALIBRATION_PASSES = weakref.WeakKeyDictionary()


def _recalibration_pass(network):
    """`(momentum variable, compiled training-mode call of network)`, cached per network."""
    cached = _RECALIBRATION_PASSES.get(network)
    if cached is None:
        momentum = tf.Variable(0.0, trainable=False, dtype=tf.float32, name="recalibration_momentum")
        cached = (momentum, tf.function(lambda batch: network(batch, training=True), reduce_retracing=True))
        _RECALIBRATION_PASSES[network] = cached
    return cached


def batchnorm_layers(network):
    """The BatchNormalization layers of `network`, nested models included."""
    return [layer for layer in all_layers(network) if isinstance(layer, keras.layers.BatchNormalization)]


def recalibrate_batchnorm(network, images, num_batches=50):
    """Re-estimates the BatchNorm statistics of `network` as exact averages over `num_batches` batches of `images`.

    BatchNorm's running statistics lag the weights (momentum 0.99 remembers about
    100 steps). This runs the batches through `network` in training mode with each
    BatchNormalization layer's momentum set so that the running statistics become
    the plain mean over those batches, then restores the momentum. Only BatchNorm
    statistics change.

    The batches run through one compiled function per network (traced once, reused
    by later recalibrations), whose layers read their momentum from a variable set
    to `count / (count + 1)` before batch `count`: measured 4x faster than calling
    the network eagerly batch by batch.

    Args:
        network: a Keras model (nested models are searched).
        images: a `tf.data.Dataset` of image batches (no labels).
        num_batches: how many batches to average over.

    Returns:
        The number of batches averaged (0 when the network has no BatchNorm layer).
    """
    bn_layers = batchnorm_layers(network)
    if not bn_layers:
        return 0
    momenta = [layer.momentum for layer in bn_layers]
    momentum, training_pass = _recalibration_pass(network)
    count = 0
    try:
        for layer in bn_layers:
            # Not `layer.momentum = ...`: Keras would track the variable as one of the layer's weights.
            object.__setattr__(layer, "momentum", momentum)
        for count, batch in enumerate(pipelines.without_autotune_thread(images.take(num_batches))):
            momentum.assign(count / (count + 1.0))
            if count == 0:
                # Keras updates `s -= (s - batch) * (1 - momentum)`: from s = 0 the first batch's statistics are
                # stored exactly, so the result does not depend on the statistics before (a resumed run
                # recalibrates to the same bits as the uninterrupted one).
                for layer in bn_layers:
                    layer.moving_mean.assign(tf.zeros_like(layer.moving_mean))
                    layer.moving_variance.assign(tf.zeros_like(layer.moving_variance))
            training_pass(batch)
        count += 1
    finally:
        for layer, value in zip(bn_layers, momenta):
            object.__setattr__(layer, "momentum", value)
    logging.info("Recalibrated %d BatchNorm layers over %d batches.", len(bn_layers), count)
    return count


class CenterSync:
    """Refreshes a head's centers from the network that computes them, with BatchNorm recalibration first.

    Args:
        head: a `keras_nngk.layers.CenterLayer`.
        network: the model whose outputs the head stores: the backbone (image ->
            embedding), or for a `NeighbourLookup` the model image -> `(keys, values)`.
        recalibration_images: a dataset of image batches to recalibrate BatchNorm over before every embedding pass;
            None: no recalibration.
        recalibration_batches: how many of those batches.
        recalibration_network: the model whose BatchNorm layers are recalibrated (default: `network`).
        batch_size: batch size of the embedding pass for arrays (datasets keep theirs).
        verbose: 1 shows a progress bar for each embedding pass.

    Example:

    >>> sync = CenterSync(head, backbone, recalibration_images=train_batches)
    >>> sync.assign(train_images, train_labels)      # recalibrate, embed, store: the "weak update"
    """

    def __init__(self, head, network, recalibration_images=None, recalibration_batches=50, batch_size=256,
                 verbose=0, recalibration_network=None):
        self.head = head
        self.network = network
        self.recalibration_network = network if recalibration_network is None else recalibration_network
        self.recalibration_images = recalibration_images
        self.recalibration_batches = check_positive_int("recalibration_batches", recalibration_batches)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.verbose = verbose
        self.refresh_count = 0

    def recalibrate(self, images=None):
        """Recalibrates BatchNorm over `images` (a dataset of batches; default `recalibration_images`)."""
        images = self.recalibration_images if images is None else images
        if images is None:
            return 0
        return recalibrate_batchnorm(self.recalibration_network, images, self.recalibration_batches)

    def embed(self, images, recalibrate=False):
        """The network's outputs for `images` (array or dataset of batches), in inference mode."""
        if recalibrate:
            self.recalibrate()
        return pipelines.predict(self.network, images, batch_size=self.batch_size, verbose=self.verbose)

    def assign(self, images, labels, sample_ids=None, recalibrate=True):
        """Replaces the head's centers by the embeddings of `images` (keeping the learned per-center state).

        Args:
            images: the training images, in the order of `labels` and `sample_ids`.
            labels: class ids `(N,)` or soft labels `(N, num_classes)`.
            sample_ids: ids of the samples (default `0..N-1`).
            recalibrate: recalibrate BatchNorm first (when `recalibration_images` is set).
        """
        if self.verbose:
            logging.info("Refreshing the centers of %s: embedding %d training images.", self.head.name,
                         len(np.asarray(labels)))
        self.head.refresh_centers(self.embed(images, recalibrate), labels, sample_ids)
        self.refresh_count += 1

    def move(self, images, sample_ids, recalibrate=True):
        """Re-embeds the stored centers of these samples (their images) and moves them there."""
        if len(images):
            self.head.move_centers(sample_ids, self.embed(images, recalibrate))
