"""A custom training loop with the same callbacks (center refresh, checkpoints) and results as `model.fit`."""

import tensorflow as tf
import tf_keras as keras


class CustomLoop:
    """Trains a compiled-free `train_model` with an explicit `tf.function` step under a distribution strategy.

    It runs the same callbacks as `model.fit` (`CenterRefresh`, `EpochCheckpoint`,
    `BatchNormRecalibration`) through a `keras.callbacks.CallbackList`, computes the
    loss exactly as a compiled model does (mean over the global batch plus the
    layers' regularisation losses), and updates with the same optimizer, so on one
    device it reproduces `model.fit` step for step.

    Args:
        train_model: model from `{"image", "sample_id"}` to probabilities.
        optimizer: a `keras.optimizers.Optimizer`.
        strategy: a `tf.distribute.Strategy` (the model must have been built in its scope).
        verbose: 1 for a progress bar per epoch.
        log_dir: optional folder for TensorBoard scalars (epoch loss and accuracy, as `model.fit` writes).
    """

    def __init__(self, train_model, optimizer, strategy=None, verbose=1, log_dir=None):
        self.train_model = train_model
        self.optimizer = optimizer
        self.strategy = strategy or tf.distribute.get_strategy()
        self.verbose = verbose
        self._loss = keras.losses.SparseCategoricalCrossentropy(reduction=keras.losses.Reduction.NONE)
        self._step = None
        self.log_dir = log_dir

    def _replica_step(self, inputs, labels, global_batch_size):
        with tf.GradientTape() as tape:
            outputs = self.train_model(inputs, training=True)
            if hasattr(self.train_model, "per_example_loss"):  # A TrainModel: also any auxiliary output's term.
                probabilities, per_example = self.train_model.per_example_loss(labels, outputs)
            else:
                probabilities, per_example = outputs, self._loss(labels, outputs)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)
            if self.train_model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(self.train_model.losses))
        variables = self.train_model.trainable_variables
        gradients = tape.gradient(loss, variables)
        if hasattr(self.train_model, "apply_gradients"):  # Routes sparse center tables to their own optimizer.
            self.train_model.apply_gradients(self.optimizer, gradients, variables)
        else:
            self.optimizer.apply_gradients(zip(gradients, variables))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probabilities, -1, output_type=tf.int64),
                                                 tf.cast(tf.reshape(labels, [-1]), tf.int64)), tf.float32))
        return loss, correct

    def _build_step(self):
        @tf.function
        def step(inputs, labels):
            global_batch_size = tf.shape(labels)[0]
            if self.strategy.num_replicas_in_sync > 1:
                global_batch_size = self.strategy.reduce(
                    tf.distribute.ReduceOp.SUM,
                    self.strategy.run(lambda y: tf.shape(y)[0], args=(labels,)), axis=None)
            loss, correct = self.strategy.run(self._replica_step, args=(inputs, labels, global_batch_size))
            return (self.strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
                    self.strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None),
                    tf.cast(global_batch_size, tf.float32))

        return step

    def fit(self, dataset, epochs, steps_per_epoch, initial_epoch=0, callbacks=()):
        """Trains epochs `initial_epoch..epochs-1`, reading `steps_per_epoch` batches of one iterator per epoch.

        Returns `{"loss": [...], "accuracy": [...]}` per epoch, as `History.history`.
        """
        history = {"loss": [], "accuracy": []}
        callback_list = keras.callbacks.CallbackList(list(callbacks), model=self.train_model, epochs=epochs,
                                                     steps=steps_per_epoch, verbose=self.verbose)
        iterator = iter(self.strategy.experimental_distribute_dataset(dataset))
        writer = tf.summary.create_file_writer(self.log_dir + "/train") if self.log_dir else None
        validation_writer = tf.summary.create_file_writer(self.log_dir + "/validation") if self.log_dir else None
        callback_list.on_train_begin()
        self._step = self._build_step()  # After the callbacks' set-up, which may change what the step traces.
        for epoch in range(initial_epoch, epochs):
            callback_list.on_epoch_begin(epoch)
            progress = keras.utils.Progbar(steps_per_epoch, verbose=self.verbose, stateful_metrics=["loss", "accuracy"])
            total_loss = total_correct = total_seen = 0.0
            for step in range(steps_per_epoch):
                callback_list.on_train_batch_begin(step)
                inputs, labels = next(iterator)
                loss, correct, seen = self._step(inputs, labels)
                total_loss += float(loss) * float(seen)
                total_correct += float(correct)
                total_seen += float(seen)
                logs = {"loss": total_loss / total_seen, "accuracy": total_correct / total_seen}
                progress.update(step + 1, list(logs.items()))
                callback_list.on_train_batch_end(step, logs)
            callback_list.on_epoch_end(epoch, logs)  # Callbacks may add entries (sigma, held-out metrics).
            for key in history:
                history[key].append(logs[key])
            for key, value in logs.items():  # As Keras' TensorBoard callback: val_* into the validation run.
                target = validation_writer if key.startswith("val_") else writer
                if target is not None:
                    with target.as_default():
                        tf.summary.scalar(f"epoch_{key[4:] if key.startswith('val_') else key}", value, step=epoch)
        callback_list.on_train_end()
        return history
