"""Quantization-aware training and magnitude pruning of a backbone with tensorflow-model-optimization (tfmot).

Only the backbone's Conv2D and Dense layers are annotated; the nearest-neighbour head
stays float (tfmot does not know it, and int8 distances hurt the neighbour ranking).
tfmot works on flat functional tf_keras models: `small_conv` and `squeezenet`.
"""

import contextlib

import tf_keras as keras

from keras_nngk.backbones import common

FLAT_BACKBONES = ("small_conv", "squeezenet")
CUSTOM_OBJECTS = {"L2Normalize": common.L2Normalize, "CaffePreprocessing": common.CaffePreprocessing}


def _tfmot():
    try:
        import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top
    except ImportError as error:
        raise ImportError("Quantization-aware training and pruning need tensorflow-model-optimization: "
                          "pip install tensorflow-model-optimization") from error
    return tfmot


def _check_flat(backbone):
    nested = [layer.name for layer in backbone.layers if isinstance(layer, keras.Model)]
    if nested:
        raise ValueError(f"QAT and pruning need a flat backbone ({', '.join(FLAT_BACKBONES)}); {backbone.name} nests "
                         f"{nested}. Received: backbone={backbone.name!r}")


def _is_prunable_or_quantizable(layer):
    return isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))


def _copy_weights(source, target, prefix):
    """Copies each source layer's kernel/bias/BN weights into the layer of the same name inside tfmot's wrappers."""
    by_name = {layer.name: layer for layer in target.layers}
    for layer in source.layers:
        if not layer.weights:
            continue
        wrapped = by_name.get(f"{prefix}{layer.name}") or by_name.get(layer.name)
        inner = getattr(wrapped, "layer", wrapped)
        if inner is not None and len(inner.weights) >= len(layer.weights):
            for weight, value in zip(inner.weights, layer.get_weights()):
                weight.assign(value)


def quantize_backbone(backbone):
    """The backbone with fake-quantization (8-bit) on its Conv2D and Dense layers, weights kept."""
    _check_flat(backbone)
    tfmot = _tfmot()
    annotate = tfmot.quantization.keras.quantize_annotate_layer
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import default_8bit_quantize_registry  # pylint: disable=g-import-not-at-top
    registry = default_8bit_quantize_registry.Default8BitQuantizeRegistry()

    def clone(layer):
        # Every layer tfmot knows (Conv2D, Dense, pooling, Concatenate, ReLU, ...), so the int8 converter finds
        # trained ranges along the whole backbone; layers it does not know (L2Normalize, Resizing) stay float.
        config_copy = layer.__class__.from_config(layer.get_config())
        return annotate(config_copy) if registry.supports(layer) else config_copy

    annotated = keras.models.clone_model(backbone, clone_function=clone)
    with tfmot.quantization.keras.quantize_scope(CUSTOM_OBJECTS):
        quantized = tfmot.quantization.keras.quantize_apply(annotated)
    _copy_weights(backbone, quantized, "quant_")
    return quantized


def prune_backbone(backbone, sparsity):
    """The backbone with magnitude pruning to `sparsity` on its Conv2D and Dense layers (needs `pruning_callbacks`)."""
    if not 0.0 < sparsity < 1.0:
        raise ValueError(f"`prune` must be a sparsity in (0, 1). Received: prune={sparsity!r}")
    _check_flat(backbone)
    tfmot = _tfmot()
    schedule = tfmot.sparsity.keras.ConstantSparsity(sparsity, begin_step=0, frequency=10)

    def clone(layer):
        copy = layer.__class__.from_config(layer.get_config())
        if _is_prunable_or_quantizable(layer):
            return tfmot.sparsity.keras.prune_low_magnitude(copy, pruning_schedule=schedule)
        return copy

    pruned = keras.models.clone_model(backbone, clone_function=clone)
    _copy_weights(backbone, pruned, "prune_low_magnitude_")
    return pruned


def pruning_callbacks():
    return [_tfmot().sparsity.keras.UpdatePruningStep()]


def strip_pruning(model):
    """The model with the pruning wrappers removed (pruned weights kept), ready to save and export."""
    return _tfmot().sparsity.keras.strip_pruning(model)


def sparsity(model):
    """Fraction of zero entries over the kernels of the Conv2D and Dense layers."""
    zeros = total = 0
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if _is_prunable_or_quantizable(inner):
            kernel = inner.kernel.numpy()
            zeros += int((kernel == 0).sum())
            total += kernel.size
    return zeros / max(total, 1)


@contextlib.contextmanager
def loading_scope(config):
    """The custom-object scope needed to load models of a run trained with `qat`."""
    if getattr(config, "qat", False):
        with _tfmot().quantization.keras.quantize_scope(CUSTOM_OBJECTS):
            yield
    else:
        yield
