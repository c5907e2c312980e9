"""Export to SavedModel and TFLite (builtin ops only), with any faiss search replaced by the in-graph exact search.

    kn.export.to_saved_model(model, "out/saved_model")
    kn.export.to_tflite(model, "out/model.tflite", quantization="dynamic")
    probabilities = kn.export.TFLiteModel("out/model.tflite").predict(images)
    report = kn.export.export_run("saved_models/run", "tflite")   # a finished run, checked and with a model card

`convert` holds the conversions and the TFLite runner; `run` exports a finished
`trainers.fit` run (parity against Keras on test images, storage report, model card);
`enrolment` exports a classifier whose center table an app can grow (on-device enrolment);
`early_exit` exports the biased network as two TFLite models, the second run only when the first is unsure.
"""

from keras_nngk.export import convert, early_exit, enrolment
from keras_nngk.export.convert import (
    QUANTIZATIONS,
    TFLiteModel,
    center_layers,
    convert_to_tflite,
    op_names,
    quantized_rankings,
    save_model,
    to_saved_model,
    to_tflite,
    use_exact_search,
    write_atomically,
)
from keras_nngk.export.early_exit import EarlyExitTFLiteModel, to_early_exit_tflite
from keras_nngk.export.enrolment import EnrollableTFLiteModel, to_enrollable_saved_model, to_enrollable_tflite


def export_run(*args, **kwargs):
    """`keras_nngk.export.run.export_run`: exports a finished run (loaded on first use: it needs the training code)."""
    from keras_nngk.export import run  # pylint: disable=g-import-not-at-top
    return run.export_run(*args, **kwargs)


def __getattr__(name):
    """The converter's private helpers stay reachable as before the split (`kn.export._interpreter_class`)."""
    if name.startswith("_") and hasattr(convert, name):
        return getattr(convert, name)
    raise AttributeError(f"module 'keras_nngk.export' has no attribute {name!r}")


__all__ = ["QUANTIZATIONS", "TFLiteModel", "center_layers", "convert", "convert_to_tflite", "export_run", "op_names",
           "quantized_rankings", "save_model", "to_saved_model", "to_tflite", "use_exact_search", "write_atomically",
           "enrolment", "EnrollableTFLiteModel", "to_enrollable_tflite", "to_enrollable_saved_model", "early_exit",
           "EarlyExitTFLiteModel", "to_early_exit_tflite"]
