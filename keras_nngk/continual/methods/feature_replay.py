"""Feature replay: pseudo-features drawn from stored class Gaussians keep old classes in training, without images.

"feature_replay" (PASS, Zhu et al., CVPR 2021; FeTrIL, Petit et al., WACV 2023, with
Gaussian pseudo-features): the first task trains like "nngk". Then the convolutional trunk
(everything before the embedding layer) is frozen and only the embedding layer and the NNGK
head keep training. The pooled trunk features of each task update streaming class
statistics (`keras_nngk.gaussian`: means and one shared covariance). With
`replay_freeze="all"` the embedding layer stops too, and only the centers follow the statistics. In every epoch of a
later task, `pseudo_per_class` pseudo-features of each old class, drawn from its Gaussian,
join the task's real features as training samples and as the head's leave-one-out centers,
so the embedding layer keeps separating all classes. After each task the head's centers are
fresh pseudo-features of every class seen, embedded. Stored: the statistics (the centers are
redrawn from them, but counted too, as the saved model holds them).
"""

import numpy as np
import tensorflow as tf
import tf_keras as keras

from keras_nngk import gaussian
from keras_nngk.continual.methods import centers, register
from keras_nngk.utils import pipelines

PSEUDO_IDS = 1 << 30  # Sample ids of pseudo-features start here (real samples count from 0).


@register("feature_replay")
class FeatureReplay(centers.CurrentTask):
    """Pseudo-feature replay from class Gaussians of the frozen trunk's features (see the module docstring)."""

    def capacity(self, task_sizes):
        return max(task_sizes) + self.config.pseudo_per_class * self.trainer.num_classes

    def setup(self):
        super().setup()
        self.trainer.teacher = None  # Old classes are kept by their pseudo-features, not by distillation.
        backbone = self.trainer.backbone
        self.trunk = keras.Model(backbone.input, backbone.get_layer("embedding").input, name="trunk")
        features = keras.Input(self.trunk.output_shape[1:], name="pooled")
        embedded = backbone.get_layer("embedding")(features)
        if self.config.embedding_normalized:
            embedded = backbone.get_layer("l2_normalize")(embedded)
        self.upper = keras.Model(features, embedded, name="upper")  # Shares its layers with the backbone.
        self.state = gaussian.empty_state(self.trainer.num_classes, int(self.trunk.output_shape[-1]))
        self.feature_step = None

    def begin_task(self, index, tasks):
        if index == 1:  # Freeze the trunk; the embedding layer and the head go on training on features.
            for layer in self.trunk.layers:
                layer.trainable = False
            self.trainer.frozen = True  # No BatchNorm recalibration from now on.
            self.feature_step = self.make_feature_step()

    def make_feature_step(self):
        upper, head, optimizer = self.upper, self.head, self.trainer.optimizer
        variables = upper.trainable_variables + head.trainable_variables

        @tf.function
        def step(features, sample_ids, labels):
            with tf.GradientTape() as tape:
                probabilities = head([upper(features, training=True), sample_ids], training=True)
                loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, probabilities))
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return loss

        return step

    def pseudo_features(self, classes):
        """`pseudo_per_class` draws from each class's Gaussian (its mean, the shared shrunk covariance)."""
        counts, means, _ = self.state
        factor = np.linalg.cholesky(gaussian.covariance(self.state, self.config.shrinkage))
        draws = [means[c] + self.rng.standard_normal((self.config.pseudo_per_class, len(factor))) @ factor.T
                 for c in classes if counts[c] > 0]
        labels = [np.full(self.config.pseudo_per_class, c) for c in classes if counts[c] > 0]
        if not draws:
            return np.zeros((0, len(factor)), np.float32), np.zeros((0,), np.int64)
        return np.concatenate(draws).astype(np.float32), np.concatenate(labels).astype(np.int64)

    def embed_features(self, features):
        return pipelines.predict(self.upper, features, batch_size=1024)

    def train_task(self, index, task, ids, tasks, description):
        features = None
        if index == 0:
            super().train_task(index, task, ids, tasks, description)
        else:
            features = pipelines.predict(self.trunk, task.x_train, batch_size=512)
            if self.config.replay_freeze == "trunk":
                old = np.flatnonzero(self.state[0] > 0)
                self.train_on_features(features, task.y_train.astype(np.int64), ids, old, description)
        if features is None:
            features = pipelines.predict(self.trunk, task.x_train, batch_size=512)
        self.state = gaussian.update(self.state, features, task.y_train)
        seen = np.flatnonzero(self.state[0] > 0)
        pseudo, labels = self.pseudo_features(seen)
        self.head.assign_centers(self.embed_features(pseudo), labels, PSEUDO_IDS + np.arange(len(labels)))

    def train_on_features(self, features, labels, ids, old_classes, description):
        config = self.config
        for epoch in range(config.epochs):
            pseudo, pseudo_labels = self.pseudo_features(old_classes)  # Fresh draws every epoch.
            x = np.concatenate([features, pseudo])
            y = np.concatenate([labels, pseudo_labels])
            sample_ids = np.concatenate([ids, PSEUDO_IDS + np.arange(len(pseudo))]).astype(np.int32)
            self.head.assign_centers(self.embed_features(x), y, sample_ids)
            order = self.rng.permutation(len(x))
            steps = -(-len(order) // config.batch_size)
            progress = keras.utils.Progbar(steps, verbose=self.trainer.verbose, stateful_metrics=["loss"])
            if self.trainer.verbose:
                print(f"{description}, epoch {epoch + 1}/{config.epochs} (with {len(pseudo)} pseudo-features)")
            for step in range(steps):
                batch = order[step * config.batch_size:(step + 1) * config.batch_size]
                loss = self.feature_step(tf.constant(x[batch]), tf.constant(sample_ids[batch]),
                                         tf.constant(y[batch]))
                progress.update(step + 1, [("loss", float(loss))])

    def stored_bytes(self, tasks_seen):
        counts, means, scatter = self.state
        statistics = 4 * (counts.size + means.size + scatter.size)
        return statistics + self.trainer.center_bytes(self.head.num_centers)

    def results(self):
        return {**super().results(), "pseudo_per_class": self.config.pseudo_per_class}
