"""The biased network of section 5 (eq. 14): a gated mix of a nearest-neighbour lookup and a convolutional path.

Reading implemented (the review's text swaps z1/z2 and writes p(x), f2(x) where its
Figure 1 feeds h; we follow the figure and the prose):

    h   = f1(x)                                   low-level features (conv block 1)
    phi = p(h)                                    weak projector to `projection_dim` dimensions
    z1  = sum_i z_i k(phi, phi_i) / sum_i k(phi, phi_i)   over N_k(phi): the lookup path
    z2  = f2(h)                                   the full convolutional path (conv blocks 2-3)
    g   = mean_{i in N_k(phi)} k(phi, phi_i)      the gate, in (0, 1]
    z   = g z1 + (1 - g) z2
    y   = clf(z)                                  dense softmax

The stored keys `phi_i = p(f1(x_i))` and values `z_i = f2(f1(x_i))` are those of the
training images under the current network (refreshed like NNGK centers), so z1
imitates z2 near the training data; with `lookup_prototypes` they are summarised by
class-balanced k-means prototypes, so that the lookup costs far less than f2.

At inference, samples whose exit score passes a threshold skip f2 entirely
(`predict_early_exit`) and are answered with clf(z1). Exit scores (`EXIT_RULES`):
"gate" is eq. 14's gate g itself; "margin" is the difference between the two
largest class probabilities of clf(z1), how sure the lookup's own answer is.
"""

import dataclasses

import numpy as np
import tensorflow as tf
import tf_keras as keras

from keras_nngk import layers
from keras_nngk.backbones.squeezenet import features as squeezenet_features
from keras_nngk.backbones.squeezenet import stem as squeezenet_stem
from keras_nngk.models import classifier
from keras_nngk.utils import layers as utils_layers

EXIT_RULES = ("gate", "margin")
TRUNKS = ("small_conv", "squeezenet")


def check_exit_rule(rule):
    if rule not in EXIT_RULES:
        raise ValueError(f"Unknown exit rule {rule!r}; valid: {', '.join(EXIT_RULES)}. Received: rule={rule!r}")
    return rule


@keras.saving.register_keras_serializable(package="keras_nngk")
class GatedMix(utils_layers.Layer):
    """`g * z1 + (1 - g) * z2` for `[z1, z2, g]`."""

    def call(self, inputs):
        looked_up, convolutional, gate = inputs
        return gate * looked_up + (1.0 - gate) * convolutional


def _conv_block(x, filters, index, pool):
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{index}")(x)
    x = keras.layers.BatchNormalization(synchronized=True, name=f"bn{index}")(x)
    x = keras.layers.ReLU(name=f"relu{index}")(x)
    return keras.layers.MaxPooling2D(name=f"pool{index}")(x) if pool else x


@dataclasses.dataclass
class BiasedModels:
    """The parts and models of a biased network (or of its plain counterpart when `lookup` is None)."""

    train_model: keras.Model
    inference_model: keras.Model
    f1: keras.Model
    f2: keras.Model
    classifier: keras.layers.Layer
    projector: keras.Model = None
    lookup: layers.NeighbourLookup = None
    key_value_model: keras.Model = None
    embedding_model: keras.Model = None
    gate_model: keras.Model = None
    _early_exit: object = None
    _exit_scores: object = None

    def predict_early_exit(self, images, threshold, batch_size=256, rule="gate"):
        """Probabilities, and which samples skipped f2 (exit score >= threshold); f2 runs only on the others."""
        if self.lookup is None:
            raise ValueError("The plain network has no lookup path to exit early from.")
        check_exit_rule(rule)
        if self._early_exit is None:
            self._early_exit = {}
        if rule not in self._early_exit:
            self._early_exit[rule] = tf.function(lambda x, t: self._early_exit_step(x, t, rule),
                                                 reduce_retracing=True)
        outputs, skipped = [], []
        for start in range(0, len(images), batch_size):
            probabilities, skip = self._early_exit[rule](tf.constant(images[start:start + batch_size]),
                                                         tf.constant(threshold, tf.float32))
            outputs.append(probabilities.numpy())
            skipped.append(skip.numpy())
        return np.concatenate(outputs), np.concatenate(skipped)

    def front(self, images, rule="gate"):
        """The cheap path on a batch: `(features h, z1, gate g, clf(z1), exit score)`, f2 not run."""
        features = self.f1(images, training=False)
        looked_up, gate = self.lookup(self.projector(features, training=False))
        early = self.classifier(looked_up)
        if check_exit_rule(rule) == "gate":
            score = gate[:, 0]
        else:
            top = tf.math.top_k(early, k=2).values
            score = top[:, 0] - top[:, 1]
        return features, looked_up, gate, early, score

    def back(self, features, looked_up, gate):
        """The expensive path: clf(g z1 + (1 - g) f2(h)), what samples that do not exit get."""
        return self.classifier(gate * looked_up + (1.0 - gate) * self.f2(features, training=False))

    def exit_scores(self, images, rule="gate", batch_size=1024):
        """`(exit scores, clf(z1) probabilities)` of the images, without running f2."""
        if self._exit_scores is None:
            self._exit_scores = {}
        if rule not in self._exit_scores:
            self._exit_scores[rule] = tf.function(lambda x: self.front(x, rule)[3:], reduce_retracing=True)
        step = self._exit_scores[rule]
        parts = [step(tf.constant(images[start:start + batch_size])) for start in range(0, len(images), batch_size)]
        return (np.concatenate([score.numpy() for _, score in parts]),
                np.concatenate([early.numpy() for early, _ in parts]))

    def _early_exit_step(self, images, threshold, rule):
        features, looked_up, gate, early, score = self.front(images, rule)
        skip = score >= threshold
        rest = tf.where(tf.logical_not(skip))[:, 0]

        def run_the_rest():
            late = self.back(tf.gather(features, rest), tf.gather(looked_up, rest), tf.gather(gate, rest))
            return tf.tensor_scatter_nd_update(early, rest[:, tf.newaxis], late)  # Skipped samples: clf(z1).

        # When every sample skips, f2 does not run at all (an empty batch would also trip some kernels).
        probabilities = tf.cond(tf.size(rest) > 0, run_the_rest, lambda: early)
        return probabilities, skip


def biased_network(input_shape=(28, 28, 1), num_classes=10, projection_dim=16, num_neighbours=32,
                   embedding_dim=64, capacity=None, sigma=1.0, search="auto", plain=False, lookup_prototypes=None,
                   trunk="small_conv", exit_loss_weight=0.0):
    """Builds the biased network of eq. 14 (or, with `plain=True`, the same network without the lookup path).

    The convolutional trunk is split after its first stage. "small_conv": `f1` =
    conv 32 + BN + ReLU + pool, `f2` = conv 64 + pool, conv 128, global average
    pooling and a linear embedding. "squeezenet" (SqueezeNet 1.1, a bigger f2):
    `f1` = upsampling to 64x64, conv1 and pool1, `f2` = fire2-fire9, global
    average pooling and a linear embedding. The projector `p` is a 2x2 average
    pool and a linear map to `projection_dim`.

    Args:
        input_shape: image shape.
        num_classes: classes of the softmax classifier `clf`.
        projection_dim: dimension of the projected keys `phi`.
        num_neighbours: `k` of the lookup.
        embedding_dim: dimension of `z`.
        capacity: number of stored keys (the training set size).
        sigma: initial kernel width of the lookup.
        search: search backend of the lookup.
        plain: build the baseline without lookup and gate.
        trunk: "small_conv" or "squeezenet" (see above).
        exit_loss_weight: weight of a second training loss, the cross-entropy of
            clf(z1) (the early-exit answer), next to that of the mixed output; 0:
            train the mixed output only (eq. 14 as in the review).
        lookup_prototypes: None (the lookup stores every training image's key) or
            the number of k-means prototypes per class it stores instead
            (capacity `num_classes * lookup_prototypes`).

    Returns:
        `BiasedModels`.
    """
    image = keras.Input(input_shape, name="image")
    if trunk == "squeezenet":
        f1 = keras.Model(image, squeezenet_stem(image, input_shape), name="f1")
        features = keras.Input(f1.output_shape[1:], name="features")
        x = squeezenet_features(features)
    elif trunk == "small_conv":
        f1 = keras.Model(image, _conv_block(image, 32, 1, pool=True), name="f1")
        features = keras.Input(f1.output_shape[1:], name="features")
        x = _conv_block(features, 64, 2, pool=True)
        x = _conv_block(x, 128, 3, pool=False)
        x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    else:
        raise ValueError(f"Unknown trunk {trunk!r}; valid: {', '.join(TRUNKS)}. Received: trunk={trunk!r}")
    f2 = keras.Model(features, keras.layers.Dense(embedding_dim, name="embedding")(x), name="f2")
    clf = keras.layers.Dense(num_classes, activation="softmax", name="clf")
    sample_id = keras.Input((), dtype="int32", name="sample_id")
    if plain:
        embeddings = f2(f1(image))
        inference = keras.Model(image, clf(embeddings), name="plain_network")
        train = classifier.TrainModel({"image": image, "sample_id": sample_id}, inference(image), name="train_model")
        return BiasedModels(train, inference, f1, f2, clf, embedding_model=keras.Model(image, embeddings))
    pooled = keras.layers.AveragePooling2D(2, name="projector_pool")(features)
    projector = keras.Model(features, keras.layers.Dense(projection_dim, name="projector_dense")(
        keras.layers.Flatten(name="projector_flatten")(pooled)), name="projector")
    if lookup_prototypes:
        capacity = num_classes * lookup_prototypes
    lookup = layers.NeighbourLookup(embedding_dim, num_neighbours=num_neighbours, sigma=sigma, capacity=capacity,
                                    search=search, prototypes_per_class=lookup_prototypes, name="lookup")
    mix = GatedMix(name="gated_mix")

    def forward(sample_ids):
        h = f1(image)
        looked_up, gate = lookup(projector(h) if sample_ids is None else [projector(h), sample_ids])
        return mix([looked_up, f2(h), gate]), gate, looked_up

    train_embeddings, _, train_looked_up = forward(sample_id)
    outputs = clf(train_embeddings)
    if exit_loss_weight:  # Deep supervision of the exit: clf(z1) is also trained to answer.
        outputs = tf.stack([outputs, clf(train_looked_up)], axis=1)
    train = classifier.TrainModel({"image": image, "sample_id": sample_id}, outputs, name="train_model")
    if exit_loss_weight:
        train.set_auxiliary_weight(exit_loss_weight)
    embeddings, gate, _ = forward(None)
    h = f1(image)
    return BiasedModels(
        train_model=train, inference_model=keras.Model(image, clf(embeddings), name="biased_network"),
        f1=f1, f2=f2, classifier=clf, projector=projector, lookup=lookup,
        key_value_model=keras.Model(image, [projector(h), f2(h)], name="key_value"),
        embedding_model=keras.Model(image, embeddings, name="biased_embedding"),
        gate_model=keras.Model(image, gate, name="gate"))
