"""The biased network's cheap path: prototypes against NumPy, the exit rules, the threshold chosen on held-out data,
and the two-model TFLite export against the Keras early-exit path."""

import json

import numpy as np
import pytest

import keras_nngk as kn
from keras_nngk.models import biased_eval
from tests import reference


def test_prototypes_of_separated_clusters_are_their_means(rng):
    # Two classes, each three tight blobs far apart: 3 prototypes per class must find the blobs exactly.
    blobs = np.array([[0, 0], [10, 0], [0, 10], [30, 30], [40, 30], [30, 40]], np.float32)
    members = rng.integers(0, 6, size=300)
    keys = blobs[members] + rng.normal(scale=0.1, size=(300, 2)).astype(np.float32)
    values = rng.normal(size=(300, 4)).astype(np.float32)
    labels = (members >= 3).astype(np.int64)
    proto_keys, proto_values, counts, proto_labels = kn.prototypes.class_prototypes(keys, values, labels, 3)
    assert len(proto_keys) == 6 and counts.sum() == 300
    expected = reference.class_means_by_assignment(keys, values, labels, members)
    for key, value, count, label in zip(proto_keys, proto_values, counts, proto_labels):
        blob = int(np.argmin(np.sum((blobs - key) ** 2, axis=1)))
        expected_key, expected_value, expected_count = expected[(label, blob)]
        np.testing.assert_allclose(key, expected_key, atol=1e-5)
        np.testing.assert_allclose(value, expected_value, atol=1e-5)
        assert count == expected_count and label == (blob >= 3)


def test_prototypes_of_small_classes_are_the_points_themselves(rng):
    keys, values = rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=(5, 2)).astype(np.float32)
    labels = np.array([0, 0, 1, 1, 1])
    proto_keys, proto_values, counts, proto_labels = kn.prototypes.class_prototypes(keys, values, labels, 4)
    np.testing.assert_array_equal(counts, np.ones(5))
    np.testing.assert_allclose(proto_keys, keys, atol=1e-7)
    np.testing.assert_allclose(proto_values, values, atol=1e-7)
    np.testing.assert_array_equal(proto_labels, labels)
    with pytest.raises(ValueError, match="int class ids"):
        kn.prototypes.class_prototypes(keys, values, np.eye(5)[:, :2], 2)
    with pytest.raises(ValueError, match="positive integer"):
        kn.prototypes.class_prototypes(keys, values, labels, 0)


def test_prototype_lookup_matches_reference(rng):
    keys = rng.normal(size=(200, 5)).astype(np.float32)
    values = rng.normal(size=(200, 7)).astype(np.float32)
    labels = rng.integers(0, 4, size=200)
    queries = rng.normal(size=(9, 5)).astype(np.float32)
    lookup = kn.layers.NeighbourLookup(7, num_neighbours=6, sigma=1.3, capacity=4 * 5, prototypes_per_class=5)
    lookup.refresh_centers((keys, values), labels)
    proto_keys, proto_values, counts, _ = kn.prototypes.class_prototypes(keys, values, labels, 5)
    assert int(lookup.center_mask.numpy().sum()) == len(proto_keys) == 20
    looked_up, gate = lookup(queries)
    expected_values, expected_gate = reference.neighbour_lookup(queries, proto_keys, proto_values, 6, 1.3, counts)
    np.testing.assert_allclose(looked_up.numpy(), expected_values, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gate.numpy(), expected_gate, rtol=1e-5, atol=1e-7)
    # Equal counts would give another answer: the count weighting is what is tested above.
    unweighted, _ = reference.neighbour_lookup(queries, proto_keys, proto_values, 6, 1.3)
    assert np.abs(unweighted - expected_values).max() > 1e-3
    assert kn.layers.NeighbourLookup.from_config(lookup.get_config()).prototypes_per_class == 5
    with pytest.raises(ValueError, match="needs the training labels"):
        lookup.refresh_centers((keys, values))


def test_choose_threshold_by_hand():
    # Scores ranked 0.9, 0.8, 0.8, 0.5, 0.1; the early answer is wrong on the second 0.8 and on 0.1.
    scores = np.array([0.5, 0.8, 0.9, 0.1, 0.8])
    early = np.array([True, False, True, False, True])
    full = np.array([True, True, True, True, False])
    # Full accuracy 4/5 (sample 4's full answer is wrong). Exiting the top j by score, the rest answered in full:
    # j=1 {0.9}: 1 + (1 + 0 + 1 + 1) = 4/5; j=2 would split the tied 0.8s; j=3 {0.9, 0.8, 0.8}: 1 + 0 + 1 + (1 + 1)
    # = 4/5; j=4 adds 0.5 (early right): 4/5; j=5 adds 0.1 (early wrong, full right): 3/5.
    threshold, skip, accuracy = biased_eval.choose_threshold(scores, early, full, max_cost=0.0, confidence=0.0)
    assert (threshold, skip, accuracy) == (0.5, 0.8, pytest.approx(0.8))
    # Allowing a cost of 0.2 lets every sample exit: 3/5.
    threshold, skip, accuracy = biased_eval.choose_threshold(scores, early, full, max_cost=0.2, confidence=0.0)
    assert (threshold, skip, accuracy) == (0.1, 1.0, pytest.approx(0.6))
    # With a confidence margin: exiting the top 3 has per-sample costs d = (0, 1, -1, 0, 0): mean 0, variance 2/5,
    # standard error sqrt(2/5 / 5) = 0.283; the top 1 has d = 0 everywhere. With max_cost 0.2, one standard error
    # rules out j = 3 and 4 (same d plus a zero) but not j = 1.
    threshold, skip, accuracy = biased_eval.choose_threshold(scores, early, full, max_cost=0.2, confidence=1.0)
    assert (threshold, skip, accuracy) == (0.9, 0.2, pytest.approx(0.8))
    # When every exit costs more than allowed, nothing exits.
    threshold, skip, accuracy = biased_eval.choose_threshold([0.9], [False], [True], max_cost=0.0, confidence=0.0)
    assert threshold == float("inf") and skip == 0.0 and accuracy == 1.0


@pytest.fixture(scope="module")
def biased():
    data = kn.data.load("digits")
    images = np.stack([image for image, _ in data.train.as_numpy_iterator()])
    models = kn.models.biased_network(input_shape=(8, 8, 1), lookup_prototypes=6, num_neighbours=8)
    keys, values = models.key_value_model.predict(images, verbose=0)
    models.lookup.refresh_centers((keys, values), data.train_labels)
    test_images = np.stack([image for image, _ in data.test.as_numpy_iterator()])
    return models, test_images


def test_margin_rule_skips_where_the_lookup_is_sure(biased):
    models, images = biased
    scores, early = models.exit_scores(images, "margin")
    top = np.sort(early, axis=1)
    np.testing.assert_allclose(scores, top[:, -1] - top[:, -2], atol=1e-6)
    threshold = float(np.median(scores))
    probabilities, skipped = models.predict_early_exit(images, threshold, batch_size=64, rule="margin")
    np.testing.assert_array_equal(skipped, scores >= threshold)
    np.testing.assert_allclose(probabilities[skipped], early[skipped], rtol=1e-5, atol=1e-6)
    full = models.inference_model.predict(images, verbose=0)
    np.testing.assert_allclose(probabilities[~skipped], full[~skipped], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="Unknown exit rule 'entropy'"):
        models.predict_early_exit(images, 0.5, rule="entropy")


def test_hold_out_is_stratified_and_disjoint():
    data = kn.data.load("digits")
    kept, (images, labels) = kn.data.hold_out(data, 0.1, seed=3)
    assert kept.num_train + len(labels) == data.num_train and len(images) == len(labels)
    np.testing.assert_allclose(np.bincount(labels) / len(labels), np.bincount(data.train_labels) / data.num_train,
                               atol=0.01)
    kept_images = np.stack([image for image, _ in kept.train.as_numpy_iterator()])
    flat = {image.tobytes() for image in kept_images}
    assert not any(image.tobytes() in flat for image in images)
    with pytest.raises(ValueError, match="must be in \\(0, 1\\)"):
        kn.data.hold_out(data, 1.0)


@pytest.mark.slow
def test_early_exit_tflite_answers_as_keras(biased, tmp_path):
    models, images = biased
    images = images[:60]
    scores, _ = models.exit_scores(images, "margin")
    threshold = float(np.median(scores))
    path = kn.export.to_early_exit_tflite(models, str(tmp_path / "early_exit"), threshold, rule="margin")
    device = kn.export.EarlyExitTFLiteModel(path)
    probabilities, skipped = device.predict(images)
    expected, expected_skipped = models.predict_early_exit(images, threshold, rule="margin")
    np.testing.assert_array_equal(skipped, expected_skipped)
    assert 0 < skipped.sum() < len(images)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    assert json.load(open(tmp_path / "early_exit" / "early_exit.json"))["rule"] == "margin"
    from trainers import predict  # The command line's loader runs the pair the same way.
    np.testing.assert_allclose(predict.load_classifier(path)(images), probabilities, atol=1e-6)
    with pytest.raises(ValueError, match="No early-exit export"):
        kn.export.EarlyExitTFLiteModel(str(tmp_path))


def test_squeezenet_trunk_splits_after_its_stem(rng):
    models = kn.models.biased_network((28, 28, 1), 10, trunk="squeezenet", lookup_prototypes=2, num_neighbours=4)
    assert models.f1.output_shape == (None, 15, 15, 64)  # 28 -> 64 (upsampled) -> conv1 /2 -> pool1 /2.
    assert models.f2.count_params() > 1000 * models.f1.count_params()
    images = rng.random((12, 28, 28, 1)).astype(np.float32)
    keys, values = models.key_value_model.predict(images, verbose=0)
    models.lookup.refresh_centers((keys, values), np.arange(12) % 3)
    full = models.inference_model.predict(images, verbose=0)
    nothing_skipped, skipped = models.predict_early_exit(images, threshold=2.0, rule="margin")
    assert not skipped.any()
    np.testing.assert_allclose(nothing_skipped, full, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="Unknown trunk 'vgg'"):
        kn.models.biased_network((28, 28, 1), 10, trunk="vgg")


def test_exit_loss_adds_the_weighted_cross_entropy_of_the_exit(rng):
    models = kn.models.biased_network((8, 8, 1), 10, lookup_prototypes=2, num_neighbours=4, exit_loss_weight=0.3)
    images = rng.random((20, 8, 8, 1)).astype(np.float32)
    labels = np.arange(20) % 10
    keys, values = models.key_value_model.predict(images, verbose=0)
    models.lookup.refresh_centers((keys, values), labels)
    inputs = {"image": images, "sample_id": np.arange(20, dtype=np.int32)}
    stacked = models.train_model(inputs).numpy()
    full, early = stacked[:, 0], stacked[:, 1]
    np.testing.assert_allclose(full, models.inference_model(images).numpy(), rtol=1e-5, atol=1e-6)
    looked_up, _ = models.lookup(models.projector(models.f1(images)))
    np.testing.assert_allclose(early, models.classifier(looked_up).numpy(), rtol=1e-5, atol=1e-6)
    expected = reference.cross_entropy(full, labels) + 0.3 * reference.cross_entropy(early, labels)
    _, per_example = models.train_model.per_example_loss(labels, stacked)
    np.testing.assert_allclose(np.mean(per_example.numpy()), expected, rtol=1e-5)
    models.train_model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    loss = models.train_model.compute_loss(inputs, labels, stacked)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    # Keras logs the total loss and the accuracy of the network's answer, under their usual names.
    logs = models.train_model.train_on_batch(inputs, labels, return_dict=True)
    assert set(logs) == {"loss", "accuracy"}
    # Without the weight the model has one plain output and one loss, as in the review.
    single = kn.models.biased_network((8, 8, 1), 10, lookup_prototypes=2, num_neighbours=4)
    assert single.train_model.output_shape == (None, 10) and models.train_model.output_shape == (None, 2, 10)
    with pytest.raises(ValueError, match="`exit_loss_weight` must be >= 0"):
        kn.training.Config.for_dataset("digits", model="biased", exit_loss_weight=-1.0)
