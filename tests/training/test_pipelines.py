"""The input pipelines of a run: what they yield, and no tf.data autotuning thread (its deletion stalls a run)."""

import numpy as np

import keras_nngk as kn
from keras_nngk.training import run


def test_run_pipelines_run_without_the_autotune_thread_and_yield_every_sample_once_per_epoch():
    # With the thread, deleting an iterator waited for its sleep to end: `model.fit` returned up to 50 s after its
    # last callback (bench/README.md, "Whole training runs").
    data = kn.data.load("digits")
    dataset, steps = run.training_pipeline(data, 64, seed=0, initial_epoch=0, epochs=2)
    assert dataset.options().autotune.enabled is False
    batches = list(dataset.take(2 * steps).as_numpy_iterator())
    for epoch in (batches[:steps], batches[steps:]):
        ids = np.concatenate([inputs["sample_id"] for inputs, _ in epoch])
        np.testing.assert_array_equal(np.sort(ids), np.arange(data.num_train))
        labels = np.concatenate([labels for _, labels in epoch])
        np.testing.assert_array_equal(labels, data.train_labels[ids])
    images = run.image_batches(data.test)
    assert images.options().autotune.enabled is False
    assert sum(len(batch) for batch in images.as_numpy_iterator()) == data.num_test
