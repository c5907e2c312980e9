"""Bad input and hostile files: each gets one clear line (or the documented behaviour), never code execution or a crash.

The process-level faults (kills, Ctrl-C, the workdir lock, a full disk) are in test_faults.py.
"""

import json
import os
import shutil
import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import keras_nngk as kn
from keras_nngk.data import images as images_lib
from keras_nngk.training import run as run_lib
from keras_nngk.utils import files, model_files
from tests import processes, reference

run_entry = processes.run_module  # `python -m module args...` in a process of its own.


def last_line(result):
    return result.stderr.strip().splitlines()[-1]


def _tiny(**overrides):
    return kn.training.Config.for_dataset("digits", **{"epochs": 1, **overrides})


def _head(rng, num_centers=40, dimension=8, num_classes=4, **kwargs):
    centers = rng.normal(size=(num_centers, dimension)).astype(np.float32)
    labels = rng.integers(0, num_classes, num_centers)
    head = kn.layers.NNGKClassifier(num_classes, num_neighbours=5, **kwargs)
    head.assign_centers(centers, labels)
    return head, centers, labels


# -- 1. no code runs from a run folder ----------------------------------------------------------------------------
def _model_with_lambda(marker):
    code = eval(f"lambda x: x + 0.0 * float(open({marker!r}, 'w').write('ran'))")  # noqa: S307  (the payload)
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Lambda(code)(inputs))


@pytest.mark.parametrize("extension", [".keras", ".h5"])
def test_model_file_carrying_code_is_refused_without_running_it(tmp_path, extension):
    marker = str(tmp_path / "code_ran")
    model = _model_with_lambda(marker)
    os.remove(marker)  # Building the model ran the lambda once; the file must not run it again.
    path = str(tmp_path / f"model{extension}")
    model.save(path, **({"save_format": "h5"} if extension == ".h5" else {}))
    with pytest.raises(ValueError, match="Refusing to load .* holds a Lambda layer"):
        model_files.load_model(path)
    assert not os.path.exists(marker)


def test_model_file_naming_a_foreign_module_is_refused(tmp_path):
    inputs = keras.Input((3,))
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save(tmp_path / "model.keras")
    with zipfile_rewrite(tmp_path / "model.keras") as config:
        config["config"]["layers"][1]["module"] = "os"
    with pytest.raises(ValueError, match="reference to module 'os'"):
        model_files.load_model(str(tmp_path / "model.keras"))


class zipfile_rewrite:  # noqa: N801  (a context manager used like a function)
    """Edits the config.json inside a .keras file."""

    def __init__(self, path):
        self.path = str(path)

    def __enter__(self):
        import zipfile  # pylint: disable=g-import-not-at-top
        with zipfile.ZipFile(self.path) as archive:
            self.members = {name: archive.read(name) for name in archive.namelist()}
        self.config = json.loads(self.members["config.json"])
        return self.config

    def __exit__(self, *exc_info):
        import zipfile  # pylint: disable=g-import-not-at-top
        self.members["config.json"] = json.dumps(self.config).encode()
        with zipfile.ZipFile(self.path, "w") as archive:
            for name, content in self.members.items():
                archive.writestr(name, content)


@pytest.mark.slow
def test_evaluate_and_export_refuse_a_qat_run_folder_with_code(tmp_path):
    """A run whose config says qat (models saved as .h5, which tf_keras loads without safe mode)."""
    marker = str(tmp_path / "code_ran")
    model = _model_with_lambda(marker)
    os.remove(marker)
    run = tmp_path / "run"
    run.mkdir()
    for name in ("model.h5", "backbone.h5"):
        model.save(run / name, save_format="h5")
    files.write_json_atomically(str(run / "config.json"), _tiny(qat=True).to_dict())
    files.write_json_atomically(str(run / "metrics.json"), {"test_accuracy": 1.0})
    for module in ("trainers.evaluate", "trainers.export"):
        result = run_entry(module, f"--model={run}")
        assert result.returncode == 2 and "holds a Lambda layer" in last_line(result), result.stderr[-2000:]
        assert not os.path.exists(marker)


# -- 2. and 8. unfinished and truncated runs -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("finished") / "run")
    kn.training.fit(_tiny(epochs=2), workdir, verbose=0)
    return workdir


def _copy(run, tmp_path):
    copy = str(tmp_path / "copy")
    shutil.copytree(run, copy)
    return copy


@pytest.mark.slow
def test_truncated_model_file_gets_one_line(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    path = os.path.join(run, "model.keras")
    with open(path, "r+b") as handle:
        handle.truncate(10_000)
    with pytest.raises(ValueError, match=r"model.keras is truncated or corrupt \(BadZipFile"):
        run_lib.load_run(run)


@pytest.mark.slow
def test_unfinished_run_is_refused_with_how_to_complete_it(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    os.remove(os.path.join(run, "metrics.json"))
    with pytest.raises(ValueError, match="did not finish .* to complete it"):
        run_lib.load_run(run)


# -- 5. a garbage checkpoint index ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_garbage_checkpoint_index_resumes_from_the_newest_intact_checkpoint(finished_run, tmp_path, caplog):
    run = _copy(finished_run, tmp_path)
    checkpoints = os.path.join(run, "checkpoints")
    with open(os.path.join(checkpoints, "checkpoint"), "w") as handle:
        handle.write("\x00garbage{{{")
    results = kn.training.fit(_tiny(epochs=2), run, verbose=0)
    assert results["initial_epoch"] == 2  # Not 0: the intact ckpt-2 was found without the index.
    assert any("resuming from ckpt-2" in record.getMessage() for record in caplog.records)
    # The newest checkpoint's data corrupt as well: the older intact one is used.
    for name in os.listdir(checkpoints):
        if name.startswith("ckpt-2.data"):
            with open(os.path.join(checkpoints, name), "wb") as handle:
                handle.write(b"not a checkpoint")
    results = kn.training.fit(_tiny(epochs=2), run, verbose=0)
    assert results["initial_epoch"] == 1 and len(results["history"]["loss"]) == 2


# -- 6. and 8. queries the heads cannot answer ---------------------------------------------------------------------
def test_nan_query_raises_in_graph_mode_too(rng):
    head, _, _ = _head(rng)
    inputs = keras.Input((8,))
    model = keras.Model(inputs, head(inputs))
    queries = rng.normal(size=(4, 8)).astype(np.float32)
    queries[2, 3] = np.nan
    with pytest.raises(ValueError, match="contain NaN or Inf"):
        head(queries)
    with pytest.raises(tf.errors.InvalidArgumentError, match="contain NaN or Inf"):
        model.predict(queries, verbose=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="contain NaN or Inf"):
        tf.function(head)(tf.constant(queries))


def test_integer_queries_are_answered_as_floats(rng):
    head, _, _ = _head(rng)
    queries = rng.integers(-2, 3, size=(6, 8))
    np.testing.assert_allclose(head(queries.astype(np.int32)).numpy(), head(queries.astype(np.float32)).numpy())


def test_sample_ids_of_another_length_are_refused(rng):
    head, centers, _ = _head(rng)
    with pytest.raises(ValueError, match="one id per query. Received: 3 ids for 5 queries"):
        head([centers[:5], np.arange(3)])
    with pytest.raises(tf.errors.InvalidArgumentError, match="one id per query"):
        tf.function(lambda x, ids: head([x, ids]), input_signature=[
            tf.TensorSpec((None, 8)), tf.TensorSpec((None,), tf.int32)])(centers[:5], np.arange(3, dtype=np.int32))


def test_mixed_float16_policy_computes_the_head_in_float32(rng):
    head32, centers, labels = _head(rng)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        head = kn.layers.NNGKClassifier(4, num_neighbours=5)
        head.assign_centers(centers, labels)
        queries = tf.cast(rng.normal(size=(6, 8)), tf.float16)
        probabilities = head(queries)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert head.compute_dtype == "float32" and probabilities.dtype == tf.float32
    np.testing.assert_allclose(probabilities.numpy(), head32(tf.cast(queries, tf.float32)).numpy(), atol=1e-6)


# -- 9. a vanishing kernel width ----------------------------------------------------------------------------------
def test_tiny_sigma_gives_the_nearest_neighbour_not_empty_rows(rng):
    head, centers, labels = _head(rng, sigma=1e-30)
    queries = rng.normal(size=(10, 8)).astype(np.float32)
    probabilities = head(queries).numpy()
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-6)
    nearest = reference.nearest_neighbours(queries, centers, 1)[1][:, 0]
    np.testing.assert_array_equal(probabilities.argmax(1), labels[nearest])
    assert np.all(probabilities.max(1) == 1.0)  # The sigma -> 0 limit: all weight on the nearest center.


# -- 7. representative data for int8 -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_classifier():
    rng = np.random.default_rng(0)
    backbone = kn.backbones.get("small_conv", input_shape=(8, 8, 1), embedding_dim=8)
    built = kn.models.nngk_classifier(backbone, 3, head="nngk", capacity=30, num_neighbours=4)
    images = rng.random((30, 8, 8, 1)).astype(np.float32)
    built.center_head.assign_centers(backbone.predict(images, verbose=0), np.arange(30) % 3)
    return built.inference_model, images


REPRESENTATIVE_FORMS = ["array", "one image", "dataset", "labelled dataset", "list of [batch]"]


def _representative(form, images):
    return {"array": images, "one image": images[0], "dataset": tf.data.Dataset.from_tensor_slices(images).batch(10),
            "labelled dataset": tf.data.Dataset.from_tensor_slices((images, np.zeros(30))),
            "list of [batch]": [[images[:10]], [images[10:]]]}[form]


@pytest.mark.parametrize("form", REPRESENTATIVE_FORMS)
def test_every_usual_form_of_representative_data_gives_the_calibration_images(small_classifier, form):
    """What the converter's calibrator is fed: the images one by one, (1, 8, 8, 1) float32, whatever the form."""
    from keras_nngk.export import convert  # pylint: disable=g-import-not-at-top
    _, images = small_classifier
    samples = convert._calibration_images(_representative(form, images), (8, 8, 1), 300)  # pylint: disable=protected-access
    expected = images[:1] if form == "one image" else images
    assert len(samples) == len(expected) and all(sample.shape == (1, 8, 8, 1) for sample in samples)
    assert all(sample.dtype == np.float32 for sample in samples)
    np.testing.assert_array_equal(np.concatenate(samples), expected)
    assert len(convert._calibration_images(_representative(form, images), (8, 8, 1), 7)) == min(7, len(expected))  # pylint: disable=protected-access


@pytest.mark.slow
def test_int8_export_from_a_labelled_dataset(small_classifier):
    """One conversion end to end (each a few seconds; the forms differ only in the calibration images, above)."""
    model, images = small_classifier
    content = kn.export.convert_to_tflite(model, "int8", representative_data=_representative("labelled dataset",
                                                                                             images))
    probabilities = kn.export.TFLiteModel(content).predict(images[:5])
    assert np.all(np.isfinite(probabilities)) and np.allclose(probabilities.sum(1), 1.0, atol=5e-3)  # int8 output


@pytest.mark.parametrize("data, message", [
    (np.zeros((5, 28, 28, 1), np.float32), r"images of shape \(8, 8, 1\).*Received: an element of shape \(5, 28, 28"),
    (np.full((5, 8, 8, 1), np.nan, np.float32), "NaN or Inf"),
    ([], "empty"),
    (["not an image"], "not numeric"),
])
def test_bad_representative_data_is_refused_before_the_converter(small_classifier, data, message):
    model, _ = small_classifier
    with pytest.raises(ValueError, match=message):
        kn.export.convert_to_tflite(model, "int8", representative_data=data)


# -- 8. a decompression bomb given to predict ----------------------------------------------------------------------
def _png_header_claiming(path, width, height):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    with open(path, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 10))
                     + chunk(b"IEND", b""))


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = str(tmp_path / "bomb.png")
    for width, height in [(100_000, 100_000), (10_000, 10_000)]:  # Above PIL's own limit, and above ours.
        _png_header_claiming(path, width, height)
        with pytest.raises(ValueError, match="bomb.png' is too large to decode .*resize it first"):
            images_lib.load_image(path, (28, 28, 1))


# -- 10. unknown and mistyped config fields --------------------------------------------------------------------------
@pytest.mark.parametrize("change, message", [
    ({"learnig_rate": 0.1}, "Unknown field 'learnig_rate' \\(did you mean 'learning_rate'\\?\\)"),
    ({"sigma": "abc"}, "`sigma` must be a number. Received: sigma='abc'"),
    ({"epochs": 2.5}, "`epochs` must be an integer"),
    ({"qat": "yes"}, "`qat` must be true or false"),
    ({"train_classes": "0,1"}, "--train_classes and --test_classes go together, with --task=retrieval"),
    ({"task": "retrieval", "train_classes": "a,b", "test_classes": "1"}, "`train_classes` must be comma-separated"),
])
def test_config_files_with_unknown_or_mistyped_fields_are_refused(tmp_path, change, message):
    path = str(tmp_path / "config.json")
    files.write_json_atomically(path, {**_tiny().to_dict(), **change})
    with pytest.raises(ValueError, match=message) as raised:
        kn.training.Config.from_file(path)
    assert path in str(raised.value)


def test_config_files_from_before_a_field_read_the_value_they_were_trained_with(tmp_path):
    path = str(tmp_path / "config.json")
    saved = _tiny().to_dict()
    for field in kn.training.config.LEGACY_VALUES:
        del saved[field]
    files.write_json_atomically(path, saved)
    loaded = kn.training.Config.from_file(path)
    assert {field: getattr(loaded, field) for field in kn.training.config.LEGACY_VALUES} == \
        kn.training.config.LEGACY_VALUES
    files.write_json_atomically(path, {**saved, "threshold_split": 0.2})  # Present fields are read as written.
    assert kn.training.Config.from_file(path).threshold_split == 0.2


def test_a_run_from_before_a_field_resumes_with_the_value_it_was_trained_with(tmp_path):
    """Its config.json lacks the field, the command passes today's default: the saved run's value is kept (no
    "another config" refusal); a value given on purpose is still a change of config."""
    saved = _tiny(model="biased").to_dict()
    del saved["lookup_prototypes"]
    files.write_json_atomically(str(tmp_path / "config.json"), saved)
    resumed = kn.training.run._check_workdir(str(tmp_path), _tiny(model="biased"), allow_config_change=False)
    assert resumed.lookup_prototypes == kn.training.config.LEGACY_VALUES["lookup_prototypes"] == 0
    assert resumed.differences(_tiny(model="biased")) == {"lookup_prototypes": (0, 32)}
    with pytest.raises(ValueError, match=r"another config \(lookup_prototypes: 0 -> 8\)"):
        kn.training.run._check_workdir(str(tmp_path), _tiny(model="biased", lookup_prototypes=8),
                                       allow_config_change=False)


@pytest.mark.slow
def test_command_line_refuses_bad_files_and_flags_in_one_line(tmp_path):
    config = str(tmp_path / "config.json")
    files.write_json_atomically(config, {"dataset": "digits", "learnig_rate": 0.1})
    result = run_entry("trainers.fit", f"--config={config}", f"--workdir={tmp_path / 'run'}")
    assert result.returncode == 2 and "Unknown field 'learnig_rate'" in last_line(result)
    # 13: an unavailable data set leaves no empty workdir behind.
    result = run_entry("trainers.fit", "--dataset=cars196", f"--data_dir={tmp_path / 'tfds'}",
                       f"--workdir={tmp_path / 'cars'}")
    assert result.returncode == 2 and "tfds build" in last_line(result)
    assert not os.path.exists(tmp_path / "cars")
    # 11: --top must be positive.
    result = run_entry("trainers.predict", "--model=x.tflite", "--top=-3", "image.png")
    assert result.returncode != 0 and "--top" in result.stderr and "Traceback" not in result.stderr


# -- 13. what interrupted writers leave ------------------------------------------------------------------------------
@pytest.mark.slow
def test_temporaries_of_an_interrupted_run_are_removed_at_the_next_run(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    os.makedirs(os.path.join(run, "checkpoints", "ckpt-3_temp", "part"))
    with open(os.path.join(run, ".tmp-abcmodel.keras"), "wb") as handle:
        handle.write(b"half")
    kn.training.fit(_tiny(epochs=2), run, verbose=0)
    assert not os.path.exists(os.path.join(run, "checkpoints", "ckpt-3_temp"))
    assert not os.path.exists(os.path.join(run, ".tmp-abcmodel.keras"))


def test_lock_names_its_holder_and_is_free_after_release(tmp_path):
    with files.WorkdirLock(str(tmp_path), purpose="trainers.fit"):
        with pytest.raises(ValueError, match=f"is in use by trainers.fit of process {os.getpid()} on"):
            files.WorkdirLock(str(tmp_path)).acquire()
    with files.WorkdirLock(str(tmp_path)):
        pass


def test_every_config_field_has_a_flag_help_text():
    from trainers import common  # pylint: disable=g-import-not-at-top
    assert set(kn.training.Config.field_names()) == set(common._HELP)  # pylint: disable=protected-access
