"""What Keras' validation pass inside `model.fit` reads, with and without BatchNorm recalibration before it.

    python bench/validation_pass.py                 # Fashion-MNIST, 12,000 training images, small conv, dense head
    python bench/validation_pass.py --epochs 3 --images 6000

The same seeded run twice (the dense head on the small conv, Adam 1e-3, batch 128): once with
`BatchNormRecalibration(before_validation=False)`, where Keras' validation reads the running statistics that training
leaves, once with `before_validation=True` (the default). After every epoch a callback also scores a copy of the
network recalibrated from scratch over the same batches: the network as it is saved. Training never reads the
running statistics, so both runs train the same weights (the script checks it) and only the readings differ.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

import keras_nngk as kn  # noqa: E402


def run(x, y, x_val, y_val, epochs, before_validation):
    keras.utils.set_random_seed(0)
    backbone = kn.backbones.get("small_conv", x.shape[1:], 64)
    built = kn.models.nngk_classifier(backbone, 10, head="dense")
    model = built.inference_model
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    batches = tf.data.Dataset.from_tensor_slices(x).batch(128)
    recalibration = kn.callbacks.BatchNormRecalibration(backbone, batches, 50, before_validation=before_validation)
    saved = []

    class AsSaved(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            copy = keras.models.clone_model(model)
            copy.set_weights(model.get_weights())
            kn.training.center_sync.recalibrate_batchnorm(copy, batches, 50)
            saved.append(kn.metrics.accuracy(kn.utils.pipelines.predict(copy, x_val, 512), y_val))

    history = model.fit(x, y, epochs=epochs, batch_size=128, validation_data=(x_val, y_val),
                        callbacks=[recalibration, AsSaved()], verbose=0)
    return history.history["val_accuracy"], saved, model.get_weights()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--images", type=int, default=12000, help="training images (the first ones)")
    args = parser.parse_args()
    arrays = kn.data.load_arrays("fashion_mnist")
    x, y = arrays.x_train[:args.images], arrays.y_train[:args.images]
    x_val, y_val = arrays.x_train[50000:52000], arrays.y_train[50000:52000]
    running, saved, weights = run(x, y, x_val, y_val, args.epochs, before_validation=False)
    recalibrated, saved_again, weights_again = run(x, y, x_val, y_val, args.epochs, before_validation=True)
    same = all(np.array_equal(a, b) for a, b in zip(weights, weights_again))
    print(f"fashion_mnist, {args.images} training images, 2,000 validation images, small conv, dense head, "
          f"batch 128; the same weights in both runs: {same}")
    print("| epoch | Keras val_accuracy, running statistics | Keras val_accuracy, recalibrated first | "
          "the network as saved |")
    print("|---|---|---|---|")
    for epoch in range(args.epochs):
        print(f"| {epoch + 1} | {100 * running[epoch]:.1f}% | {100 * recalibrated[epoch]:.1f}% | "
              f"{100 * saved_again[epoch]:.1f}% |")


if __name__ == "__main__":
    main()
