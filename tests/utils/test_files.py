"""Atomic writes: the target is the old content or the new one, never a part, and nothing is left beside it."""

import os
import stat

import numpy as np
import pytest
import tf_keras as keras

from keras_nngk.utils import files


def _names(folder):
    return sorted(os.listdir(folder))


def test_write_atomically_replaces_with_usual_permissions(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")
    files.write_json_atomically(str(path), {"b": 1, "a": np.float32(0.5)})
    assert path.read_text() == '{\n  "a": 0.5,\n  "b": 1\n}'
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert _names(tmp_path) == ["a.json"]


def test_failed_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "model.keras"
    path.write_bytes(b"old")

    def write(staging):
        with open(staging, "wb") as stream:
            stream.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        files.write_file_atomically(str(path), write)
    assert path.read_bytes() == b"old" and _names(tmp_path) == ["model.keras"]


def test_folder_is_replaced_whole_or_not_at_all(tmp_path):
    target = tmp_path / "saved_model"
    target.mkdir()
    (target / "stale.pb").write_text("old")

    def write(staging):
        with open(os.path.join(staging, "saved_model.pb"), "w") as stream:
            stream.write("new")

    files.write_folder_atomically(str(target), write)
    assert _names(target) == ["saved_model.pb"] and _names(tmp_path) == ["saved_model"]

    def fail(staging):
        write(staging)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        files.write_folder_atomically(str(target), fail)
    assert (target / "saved_model.pb").read_text() == "new" and _names(tmp_path) == ["saved_model"]


def test_save_model_round_trips_keras_files(tmp_path):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    path = files.save_model(model, str(tmp_path / "model.keras"))
    reloaded = keras.models.load_model(path)
    np.testing.assert_array_equal(reloaded.get_weights()[0], model.get_weights()[0])
    assert _names(tmp_path) == ["model.keras"]


def test_remove_temporaries_removes_only_what_writers_leave(tmp_path):
    for name in (".tmp-abcmodel.keras", "ckpt-3_temp", "ckpt-3.index", "notes_temp.txt"):
        (tmp_path / name).mkdir() if name.endswith("_temp") else (tmp_path / name).write_text("x")
    assert files.remove_temporaries(str(tmp_path)) == [".tmp-abcmodel.keras", "ckpt-3_temp"]
    assert _names(tmp_path) == ["ckpt-3.index", "notes_temp.txt"]
