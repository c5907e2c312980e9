"""Builders that put a head on a backbone: the training model (with sample ids) and the inference model."""

import dataclasses

import tensorflow as tf
import tf_keras as keras

from keras_nngk import layers

HEADS = ("nngk", "impostor", "dense", "knn")


class TrainModel(keras.Model):
    """A functional training model whose trainable center tables (loose impostors) get sparse updates.

    Variables listed in `sparse_variables` are updated by `center_optimizer` (a
    `SparseAdam`) from their `IndexedSlices` gradients, touching only the gathered
    rows; every other variable goes to the compiled optimizer, as in `Model.fit`.
    """

    center_optimizer = None
    sparse_variables = ()
    auxiliary_weight = 0.0  # > 0: the output stacks `[probabilities, auxiliary]` (B, 2, C); see `per_example_loss`.

    def set_auxiliary_weight(self, weight):
        """Trains a stacked second output too: loss = CE(probabilities) + weight * CE(auxiliary).

        The biased network's auxiliary output is clf(z1), its early-exit answer
        (deep supervision of the exit, as early-exit networks train each exit).
        The two outputs travel stacked as one `(B, 2, C)` tensor, so that Keras
        logs `loss` (the total) and `accuracy` (of the first output) as for one.
        """
        self.auxiliary_weight = float(weight)
        self.total_loss_tracker = keras.metrics.Mean(name="loss")

    def per_example_loss(self, labels, outputs):
        """`(probabilities, per-example loss)` of the model's output (and of its auxiliary one, weighted)."""
        if not self.auxiliary_weight:
            return outputs, keras.losses.sparse_categorical_crossentropy(labels, outputs)
        probabilities, auxiliary = outputs[:, 0], outputs[:, 1]
        loss = keras.losses.sparse_categorical_crossentropy(labels, probabilities)
        return probabilities, loss + self.auxiliary_weight * keras.losses.sparse_categorical_crossentropy(
            labels, auxiliary)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None):
        if not self.auxiliary_weight:
            return super().compute_loss(x, y, y_pred, sample_weight)
        _, per_example = self.per_example_loss(y, y_pred)
        loss = tf.reduce_mean(per_example)
        if self.losses:
            loss += tf.add_n(self.losses)
        self.total_loss_tracker.update_state(loss)
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight):
        if self.auxiliary_weight:  # Metrics are those of the network's answer, the first output.
            y_pred = y_pred[:, 0]
        return super().compute_metrics(x, y, y_pred, sample_weight)

    def set_center_optimizer(self, optimizer, variables):
        self.center_optimizer = optimizer
        self.sparse_variables = tuple(variables)
        optimizer.build(self.sparse_variables)

    def apply_gradients(self, optimizer, gradients, variables):
        """Routes each gradient to the compiled optimizer or, for sparse center tables, to `center_optimizer`."""
        sparse_refs = {variable.ref() for variable in self.sparse_variables}
        dense = [(g, v) for g, v in zip(gradients, variables) if v.ref() not in sparse_refs and g is not None]
        sparse = [(g, v) for g, v in zip(gradients, variables) if v.ref() in sparse_refs]
        optimizer.apply_gradients(dense)
        if sparse:
            self.center_optimizer.apply_gradients(sparse)

    def create_training_variables(self):
        """Creates the compiled optimizer's and metrics' variables now instead of in the first training step.

        A `tf.function` whose first call creates variables is traced twice (once creating them, once without);
        the training step's trace is the costliest (about 1 s for the small networks, once per run). Call after
        `compile` (and `set_center_optimizer`), before `fit`; the values are those the first step would create.
        """
        probabilities = tf.zeros([1, *self.output_shape[1:]])
        if self.auxiliary_weight:
            probabilities = probabilities[:, 0]
        if self.compiled_metrics is not None:
            self.compiled_metrics.build(probabilities, tf.zeros([1], tf.int64))
        sparse_refs = {variable.ref() for variable in self.sparse_variables}
        self.optimizer.build([variable for variable in self.trainable_variables if variable.ref() not in sparse_refs])

    def train_step(self, data):
        if not self.sparse_variables:
            return super().train_step(data)
        inputs, labels = data[0], data[1]
        with tf.GradientTape() as tape:
            predictions = self(inputs, training=True)
            loss = self.compute_loss(inputs, labels, predictions)
        variables = self.trainable_variables
        self.apply_gradients(self.optimizer, tape.gradient(loss, variables), variables)
        return self.compute_metrics(inputs, labels, predictions, None)


@dataclasses.dataclass
class ClassifierModels:
    """The models of one classifier, sharing their layers.

    Attributes:
        train_model: `{"image", "sample_id"} -> probabilities`, for `fit` (the ids give leave-one-out).
        inference_model: `image -> probabilities`, what is evaluated, saved and exported.
        backbone: `image -> embedding`.
        head: the head used for training (for "knn", the dense head that trains the backbone).
        center_head: the head holding centers that need refreshing (None for "dense").
        center_network: the model whose outputs `center_head` stores (default: `backbone`; the biased network's
            image -> `(keys, values)` model), whose BatchNorm statistics are recalibrated before a refresh.
    """

    train_model: keras.Model
    inference_model: keras.Model
    backbone: keras.Model
    head: keras.layers.Layer
    center_head: object = None
    biased: object = None  # The `BiasedModels` of a biased/plain network.
    center_network: object = None

    def __post_init__(self):
        if self.center_network is None:
            self.center_network = self.backbone


def nngk_classifier(backbone, num_classes, head="nngk", capacity=None, num_neighbours=32, sigma=1.0,
                    learn_sigma=True, sample_weights=True, search="auto", knn_neighbours=5, tie="loose",
                    tie_weight=1e-3, auxiliary_softmax=0.0):
    """Puts a classification head on `backbone`.

    Args:
        backbone: model from images to embeddings.
        num_classes: number of classes.
        head: "nngk" (eq. 7), "impostor" (eq. 8-9, see `tie`), "dense" (eq. 2, softmax), or "knn" (eq. 3: the
            backbone is trained with a dense softmax head, and the inference model
            votes among the `knn_neighbours` nearest training embeddings); or a head layer
            (e.g. `kn.layers.NNGKClassifier(...)`), used by both models (the other settings are ignored).
        capacity: number of centers (the training set size) for "nngk" and "knn".
        num_neighbours, sigma, learn_sigma, sample_weights, search: NNGK settings.
        tie, tie_weight: impostor settings ("tied", "fixed", "loose"; lambda of eq. 8).
        auxiliary_softmax: > 0 trains a dense softmax classifier on the embedding beside an nngk or impostor head,
            adding this weight times its cross-entropy to the loss (a proxy-style term next to the kernel's; the
            inference model is the kernel head alone). 0: the head's own loss only.

    Returns:
        `ClassifierModels`.
    """
    if not isinstance(head, keras.layers.Layer) and head not in HEADS:
        raise ValueError(f"Unknown head {head!r}; valid: {', '.join(HEADS)} or a head layer. Received: head={head!r}")
    image = keras.Input(backbone.input_shape[1:], name="image")
    sample_id = keras.Input((), dtype="int32", name="sample_id")
    embedding = backbone(image)
    center_head = None
    if isinstance(head, keras.layers.Layer):  # A head built by the user: trains and infers, ids for leave-one-out.
        train_head = inference_head = head
        center_head = head if isinstance(head, layers.CenterLayer) else None
    elif head == "nngk":
        train_head = layers.NNGKClassifier(num_classes, num_neighbours=num_neighbours, sigma=sigma,
                                           learn_sigma=learn_sigma, sample_weights=sample_weights, capacity=capacity,
                                           search=search, name="nngk_head")
        center_head = inference_head = train_head
    elif head == "impostor":
        train_head = layers.ImpostorClassifier(num_classes, num_neighbours=num_neighbours, sigma=sigma,
                                               learn_sigma=learn_sigma, tie=tie, tie_weight=tie_weight,
                                               capacity=capacity, search=search, name="impostor_head")
        center_head = inference_head = train_head
    else:
        train_head = inference_head = layers.DenseClassifier(num_classes, name="dense_head")
        if head == "knn":
            inference_head = center_head = layers.KNNClassifier(num_classes, num_neighbours=knn_neighbours,
                                                                capacity=capacity, search=search, name="knn_head")
    outputs = train_head([embedding, sample_id])
    if not auxiliary_softmax >= 0.0:
        raise ValueError(f"`auxiliary_softmax` must be >= 0. Received: auxiliary_softmax={auxiliary_softmax!r}")
    if auxiliary_softmax and head not in ("nngk", "impostor"):
        raise ValueError(f"`auxiliary_softmax` adds a softmax term beside an nngk or impostor head. Received: "
                         f"head={head!r}")
    if auxiliary_softmax:  # Stacked (B, 2, C): TrainModel adds the second output's weighted cross-entropy.
        outputs = tf.stack([outputs, layers.DenseClassifier(num_classes, name="auxiliary_head")(embedding)], axis=1)
    train_model = TrainModel({"image": image, "sample_id": sample_id}, outputs, name="train_model")
    if auxiliary_softmax:
        train_model.set_auxiliary_weight(auxiliary_softmax)
    inference_model = keras.Model(image, inference_head(embedding), name="classifier")
    return ClassifierModels(train_model, inference_model, backbone, train_head, center_head)
