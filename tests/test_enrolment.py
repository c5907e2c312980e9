"""On-device enrolment: the enrollable TFLite export against the NumPy reference of eq. 7, forget, saved tables,
limits."""

import numpy as np
import pytest
import tensorflow as tf

import keras_nngk as kn
from tests import reference

CAPACITY, MAX_CLASSES, SHAPE = 140, 5, (8, 8, 1)


def digits(count, offset):
    """Real images (scikit-learn's digits): their embeddings are distinct, so neighbour ranks have no near-ties."""
    return kn.data.load_arrays("digits").x_train[offset:offset + count].astype(np.float32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    rng = np.random.default_rng(0)
    backbone = kn.backbones.get("small_conv", input_shape=SHAPE, embedding_dim=16)
    images = digits(120, 0)
    head = kn.layers.NNGKClassifier(3, num_neighbours=6, sigma=0.3)
    head.assign_centers(backbone.predict(images, verbose=0), rng.integers(0, 3, 120))
    head.log_weights.assign(rng.uniform(-0.3, 0.3, 120).astype(np.float32))
    path = str(tmp_path_factory.mktemp("enrol") / "model_enrollable.tflite")
    kn.export.to_enrollable_tflite(backbone, head, path, capacity=CAPACITY, max_classes=MAX_CLASSES, rule="kernel")
    return backbone, head, path


def expected(backbone, table, images):
    """Eq. 7 in NumPy over the table's active centers, with the embeddings of the Keras backbone."""
    active = table["mask"] > 0.5
    return reference.nngk_classifier(backbone.predict(images, verbose=0), table["centers"][active],
                                     table["label_rows"][active], 6, 0.3, np.exp(table["log_weights"][active]))


def test_enrol_then_classify_matches_the_reference_and_keras(exported, rng):
    backbone, head, path = exported
    model = kn.export.EnrollableTFLiteModel(path)
    assert (model.capacity, model.max_classes, model.num_centers) == (CAPACITY, MAX_CLASSES, 120)
    queries = digits(9, 240)
    np.testing.assert_allclose(model.classify(queries)[:, :3], head(backbone(queries)).numpy(), atol=1e-5)
    new = digits(6, 280)
    slots = model.enrol(new, [3, 3, 4, 4, 4, 3])
    np.testing.assert_array_equal(slots, np.arange(120, 126))
    table = model.table()
    np.testing.assert_allclose(table["centers"][120:126], backbone.predict(new, verbose=0), atol=1e-6)
    np.testing.assert_array_equal(table["label_rows"][120:126].argmax(1), [3, 3, 4, 4, 4, 3])
    np.testing.assert_array_equal(table["log_weights"][120:126], 0.0)  # New centers start at w = 1.
    probabilities = model.classify(np.concatenate([queries, new]))
    np.testing.assert_allclose(probabilities, expected(backbone, table, np.concatenate([queries, new])), atol=1e-5)
    # The same enrolment in Keras: the head with room for the new classes, `add_centers`.
    keras_head = kn.layers.NNGKClassifier(MAX_CLASSES, num_neighbours=6, sigma=0.3, capacity=CAPACITY)
    keras_head.assign_centers(table["centers"][:120], table["label_rows"][:120])
    keras_head.log_weights[:120].assign(table["log_weights"][:120])
    keras_head.add_centers(backbone.predict(new, verbose=0), [3, 3, 4, 4, 4, 3], sample_ids=np.arange(500, 506))
    np.testing.assert_allclose(keras_head(backbone(np.concatenate([queries, new]))).numpy(), probabilities,
                               atol=1e-5)


def test_forget_frees_exactly_that_class(exported, rng):
    backbone, _, path = exported
    model = kn.export.EnrollableTFLiteModel(path)
    model.enrol(digits(4, 320), 4)
    before = model.table()
    classes = before["label_rows"].argmax(1)
    removed = model.forget(4)
    after = model.table()
    assert removed == 4
    np.testing.assert_array_equal(after["mask"], before["mask"] * (classes != 4))
    assert model.forget(4) == 0
    queries = digits(20, 360)
    probabilities = model.classify(queries)
    assert np.all(probabilities[:, 4] == 0.0)
    np.testing.assert_allclose(probabilities, expected(backbone, after, queries), atol=1e-5)
    slots = model.enrol(queries[:2], 2)  # Freed slots are used again, lowest first.
    np.testing.assert_array_equal(slots, np.flatnonzero(after["mask"] < 0.5)[:2])


def test_saved_table_restores_into_a_fresh_interpreter(exported, rng, tmp_path):
    _, _, path = exported
    model = kn.export.EnrollableTFLiteModel(path)
    model.enrol(digits(5, 400), [4, 4, 3, 3, 4])
    model.forget(1)
    queries = digits(12, 440)
    saved = model.save_table(str(tmp_path / "table.npz"))
    fresh = kn.export.EnrollableTFLiteModel(path)
    assert fresh.num_centers == 120  # The file's own table: the trained centers only.
    fresh.restore_table(saved)
    np.testing.assert_array_equal(fresh.classify(queries), model.classify(queries))
    for key, value in model.table().items():
        np.testing.assert_array_equal(fresh.table()[key], value)


def test_limits_and_foreign_input_get_one_line(exported, rng, tmp_path):
    backbone, head, path = exported
    model = kn.export.EnrollableTFLiteModel(path)
    images = digits(CAPACITY - 120 + 1, 480)
    with pytest.raises(ValueError, match=r"table is full: 21 images to enrol, 20 free slots of 140"):
        model.enrol(images, 3)
    assert model.num_centers == 120  # Nothing was stored.
    with pytest.raises(ValueError, match=r"Class id 5 is outside this model's 0..4"):
        model.enrol(images[:1], 5)
    with pytest.raises(ValueError, match=r"Class id -1 is outside"):
        model.forget(-1)
    with pytest.raises(ValueError, match=r"Images must have shape \(N, 8, 8, 1\)"):
        model.classify(np.zeros((2, 9, 8, 1), np.float32))
    other = str(tmp_path / "other.tflite")
    kn.export.to_enrollable_tflite(backbone, head, other, capacity=CAPACITY + 1, max_classes=MAX_CLASSES,
                                   rule="kernel")
    foreign = kn.export.EnrollableTFLiteModel(other).save_table(str(tmp_path / "foreign.npz"))
    with pytest.raises(ValueError, match="belongs to another model"):
        model.restore_table(foreign)
    (tmp_path / "garbage.npz").write_bytes(b"not a table")
    with pytest.raises(ValueError, match="is not a saved enrolment table"):
        model.restore_table(str(tmp_path / "garbage.npz"))
    plain = kn.export.to_tflite(tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(2)]),
                                str(tmp_path / "plain.tflite"))
    with pytest.raises(ValueError, match="not an enrollable export"):
        kn.export.EnrollableTFLiteModel(plain)
    with pytest.raises(ValueError, match="capacity=100 cannot hold the head's 120 centers"):
        kn.export.to_enrollable_tflite(backbone, head, str(tmp_path / "x.tflite"), capacity=100)
    with pytest.raises(ValueError, match="needs an NNGK or impostor head"):
        kn.export.to_enrollable_tflite(backbone, kn.layers.KNNClassifier(3), str(tmp_path / "x.tflite"))


def test_class_mean_rule_matches_numpy_class_means(exported, tmp_path):
    """The default rule: softmax over classes of -|z - mean_c|^2 / (2 sigma^2), means over the table's active
    centers of each class (classes without centers get 0)."""
    backbone, head, _ = exported
    path = kn.export.to_enrollable_tflite(backbone, head, str(tmp_path / "mean.tflite"), capacity=CAPACITY,
                                          max_classes=MAX_CLASSES)
    model = kn.export.EnrollableTFLiteModel(path)
    model.enrol(digits(3, 600), 4)
    table, queries = model.table(), digits(15, 640)
    active = table["mask"] > 0.5
    centers, classes = table["centers"][active].astype(np.float64), table["label_rows"][active].argmax(1)
    means = np.stack([centers[classes == c].mean(0) for c in (0, 1, 2, 4)])
    logits = -reference.squared_distances(backbone.predict(queries, verbose=0), means) / (2 * 0.3 ** 2)
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    probabilities = model.classify(queries)
    np.testing.assert_allclose(probabilities[:, [0, 1, 2, 4]], expected, atol=1e-5)
    np.testing.assert_array_equal(probabilities[:, 3], 0.0)  # No center of class 3.


def test_builtin_ops_only(exported):
    content = open(exported[2], "rb").read()
    assert not [name for name in kn.export.op_names(content) if name.startswith("Flex") or name == "CUSTOM"]


@pytest.mark.slow  # A SavedModel write and reload (about 10 s).
def test_saved_model_signatures_enrol_like_the_tflite_model(exported, rng, tmp_path):
    backbone, head, path = exported
    saved = kn.export.to_enrollable_saved_model(backbone, head, str(tmp_path / "enrollable"), capacity=CAPACITY,
                                                max_classes=MAX_CLASSES, rule="kernel")
    loaded = tf.saved_model.load(saved)
    new = digits(3, 520)
    slots = loaded.signatures["enrol"](images=tf.constant(new), class_ids=tf.constant([4, 4, 3], tf.int32))["slots"]
    np.testing.assert_array_equal(slots.numpy(), [120, 121, 122])
    lite = kn.export.EnrollableTFLiteModel(path)
    lite.enrol(new, [4, 4, 3])
    queries = digits(6, 560)
    np.testing.assert_allclose(loaded.signatures["classify"](images=tf.constant(queries))["probabilities"].numpy(),
                               lite.classify(queries), atol=1e-5)
