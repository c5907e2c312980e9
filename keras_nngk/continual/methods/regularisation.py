"""Regularisation baselines: elastic weight consolidation and synaptic intelligence (softmax head)."""

import numpy as np
import tensorflow as tf

from keras_nngk.continual.methods import base, register


class Consolidation(base.Method):
    """A quadratic penalty `scale * sum_i omega_i (theta_i - theta*_i)^2` anchored at the parameters after the last
    task; subclasses define `accumulate(task)`: how the importance `omega` grows after each task."""

    scale = 1.0

    def setup(self):
        variables = self.trainer.variables
        self.anchors = [tf.Variable(v, trainable=False) for v in variables]
        self.importance = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
        self.penalty_weight = tf.Variable(0.0, trainable=False)

    def penalty(self):
        total = tf.add_n([tf.reduce_sum(omega * tf.square(v - anchor))
                          for v, anchor, omega in zip(self.trainer.variables, self.anchors, self.importance)])
        return self.penalty_weight * self.scale * total

    def end_task(self, index, task):
        """Adds the task's importance and moves the anchors to the current parameters."""
        self.accumulate(task)
        for anchor, v in zip(self.anchors, self.trainer.variables):
            anchor.assign(v)
        self.penalty_weight.assign(1.0)

    def stored_bytes(self, tasks_seen):
        return int(2 * 4 * sum(int(np.prod(v.shape)) for v in self.trainer.variables))


@register("ewc")
class EWC(Consolidation):
    """Elastic weight consolidation (Kirkpatrick et al. 2017), online, with the empirical Fisher of `ewc_samples`."""

    @property
    def scale(self):
        return self.config.ewc_lambda / 2.0

    def accumulate(self, task):
        variables, model = self.trainer.variables, self.trainer.train_model
        count = min(self.config.ewc_samples, len(task.x_train))
        chosen = self.rng.choice(len(task.x_train), size=count, replace=False)
        fisher = [tf.zeros_like(v) for v in variables]

        @tf.function
        def squared_gradients(image, label):
            with tf.GradientTape() as tape:
                probabilities = model({"image": image[tf.newaxis], "sample_id": tf.constant([-1])})[0]
                log_likelihood = tf.math.log(probabilities[0, label] + 1e-12)
            return [tf.square(g) for g in tape.gradient(log_likelihood, variables)]

        for index in chosen:
            grads = squared_gradients(tf.constant(task.x_train[index]), tf.constant(int(task.y_train[index])))
            fisher = [f + g for f, g in zip(fisher, grads)]
        for omega, f in zip(self.importance, fisher):
            omega.assign_add(f / count)


@register("si")
class SI(Consolidation):
    """Synaptic intelligence (Zenke et al. 2017): importance from the path integral of the loss."""

    keeps_before = True

    @property
    def scale(self):
        return self.config.si_c

    def setup(self):
        super().setup()
        self.path_integral = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.trainer.variables]

    def after_update(self, gradients, before):
        for w, g, v, old in zip(self.path_integral, gradients, self.trainer.variables, before):
            w.assign_add(-g * (v - old))

    def accumulate(self, task):
        for omega, w, v, anchor in zip(self.importance, self.path_integral, self.trainer.variables, self.anchors):
            omega.assign_add(tf.nn.relu(w) / (tf.square(v - anchor) + self.config.si_xi))
            w.assign(tf.zeros_like(w))
