"""Helper run in a subprocess by test_distributed.py: needs its own process to configure logical devices."""

import json
import sys

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import tf_keras as keras  # noqa: E402

import keras_nngk as kn  # noqa: E402
from keras_nngk.training import run  # noqa: E402


def one_step(strategy_name, training_writes=False):
    config = kn.training.Config.for_dataset("digits", recalibrate_batchnorm=False, batch_size=64)
    data = kn.data.load("digits")
    keras.utils.set_random_seed(0)
    strategy = run.make_strategy(strategy_name)
    with strategy.scope():
        built = run.build_models(config, data)
        built.train_model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", jit_compile=False)
    built.center_head.assign_centers(built.backbone.predict(run.image_batches(data.train), verbose=0),
                                     data.train_labels)
    dataset, _ = run.training_pipeline(data, 64, 0, 0, 1)
    before = built.center_head.centers.numpy()
    built.center_head.write_training_centers = training_writes
    history = built.train_model.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0).history
    if training_writes:  # The rows the step wrote, and whether every replica holds the same centers.
        copies = [value.numpy() for value in getattr(built.center_head.centers, "values", [built.center_head.centers])]
        changed = np.flatnonzero(np.any(copies[0] != before, axis=1)).tolist()
        return changed, all(np.array_equal(copies[0], copy) for copy in copies), len(copies)
    return history["loss"][0], [weight.numpy() for weight in built.backbone.trainable_weights], \
        strategy.num_replicas_in_sync


if __name__ == "__main__":
    single_loss, single_weights, _ = one_step("default")
    mirrored_loss, mirrored_weights, replicas = one_step("mirrored")
    single_rows, _, _ = one_step("default", training_writes=True)
    mirrored_rows, replicas_agree, copies = one_step("mirrored", training_writes=True)
    print(json.dumps({
        "single_written_rows": single_rows, "mirrored_written_rows": mirrored_rows,
        "replicas_agree_on_written_centers": replicas_agree, "center_copies": copies,
        "replicas": replicas, "single_loss": single_loss, "mirrored_loss": mirrored_loss,
        "max_weight_difference": float(max(np.abs(a - b).max() for a, b in zip(single_weights, mirrored_weights))),
    }))
    sys.exit(0)
