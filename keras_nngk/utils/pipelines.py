"""Input pipelines without tf.data's autotuning thread, and `predict` on arrays through one.

tf.data re-tunes a pipeline from a thread whose sleep doubles up to a minute,
and deleting the pipeline's iterator waits for that sleep to end (TensorFlow
2.21, seen in native stacks: `~RootDataset::Iterator` waiting on
`Model::OptimizeLoop`). Every Keras `fit`, `predict` or `evaluate` ends by
deleting its iterator, so each one may return late: a minute after a long
`fit`, about 0.3 s after a `predict` of a second (`bench/fit_exit.py`,
`bench/predict_exit.py`). The pipelines here run without that thread.
"""

import numpy as np
import tensorflow as tf


def without_autotune_thread(dataset):
    """`dataset` without tf.data's autotuning thread, which the iterator's deletion waits for.

    Without the thread, `AUTOTUNE` parallelism falls back to the number of cores
    and `prefetch(AUTOTUNE)` still grows its buffer on its own: no throughput lost
    on the in-memory data sets (bench/README.md, `bench/fit_exit.py`); tfds data
    sets decode with one parallel call per core.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def _is_array_structure(inputs):
    if isinstance(inputs, dict):
        return bool(inputs) and all(isinstance(value, (np.ndarray, tf.Tensor)) for value in inputs.values())
    return isinstance(inputs, (np.ndarray, tf.Tensor))


def predict(model, inputs, batch_size=32, verbose=0):
    """`model.predict(inputs, batch_size=batch_size, verbose=verbose)`, without the stall at its end.

    `inputs` as `model.predict` takes them: an array (or a dict of arrays, for
    models with named inputs) is batched in order by a pipeline without the
    autotuning thread, a `tf.data.Dataset` of batches is read without it; other
    inputs (lists of arrays, generators) go to `model.predict` unchanged. The
    same batches in the same order as `model.predict`'s, so the same outputs.
    """
    if isinstance(inputs, tf.data.Dataset):
        return model.predict(without_autotune_thread(inputs), verbose=verbose)
    if not _is_array_structure(inputs):
        return model.predict(inputs, batch_size=batch_size, verbose=verbose)
    # A 1-tuple: Keras reads a dataset element `(x,)` as inputs only (a bare dict could be taken for (x, y, w)).
    batches = tf.data.Dataset.from_tensor_slices((inputs,)).batch(batch_size)
    return model.predict(without_autotune_thread(batches), verbose=verbose)
