"""What every keras_nngk layer shares with tf_keras."""

import tf_keras as keras


class Layer(keras.layers.Layer):
    """A `keras.layers.Layer` whose `call` is traced as written, without autograph.

    tf_keras runs every subclassed layer's `call` through autograph when it
    traces it, which transpiles the call and every function it reaches in this
    package (1.7 of the 2.0 s it took to build an NNGK classifier, once per
    process). These layers' calls branch only on Python values (shapes,
    settings, `training`), never on tensors, so they need no conversion.
    `_should_use_autograph` is the tf_keras hook that decides it (tf_keras 2.21).
    """

    def _should_use_autograph(self):
        return False
