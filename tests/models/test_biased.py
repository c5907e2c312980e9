"""The biased network of eq. 14: lookup and gate against NumPy, gate extremes, early exit, exports, a whole run."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import keras_nngk as kn
from tests import reference


def test_lookup_and_gate_match_reference(rng):
    keys = rng.normal(size=(40, 5)).astype(np.float32)
    values = rng.normal(size=(40, 7)).astype(np.float32)
    queries = rng.normal(size=(9, 5)).astype(np.float32)
    lookup = kn.layers.NeighbourLookup(7, num_neighbours=6, sigma=1.3)
    lookup.assign_keys_values(keys, values)
    looked_up, gate = lookup(queries)
    expected_values, expected_gate = reference.neighbour_lookup(queries, keys, values, 6, 1.3)
    np.testing.assert_allclose(looked_up.numpy(), expected_values, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gate.numpy(), expected_gate, rtol=1e-5, atol=1e-7)
    assert np.all((gate.numpy() > 0) & (gate.numpy() <= 1))
    with pytest.raises(ValueError, match=r"`values` must have shape \(40, 7\)"):
        lookup.assign_keys_values(keys, values[:, :3])


@pytest.fixture(scope="module")
def biased():
    data = kn.data.load("digits")
    images = np.stack([image for image, _ in data.train.as_numpy_iterator()])
    models = kn.models.biased_network(input_shape=(8, 8, 1), capacity=len(images), num_neighbours=8)
    keys, values = models.key_value_model.predict(images, verbose=0)
    models.lookup.assign_keys_values(keys, values)
    test_images = np.stack([image for image, _ in data.test.as_numpy_iterator()])
    return models, test_images


def test_gate_extremes_give_each_path(biased):
    models, images = biased
    features = models.f1(images)
    looked_up, _ = models.lookup(models.projector(features))
    convolutional = models.f2(features)
    mix = kn.models.GatedMix()
    zero, one = tf.zeros([len(images), 1]), tf.ones([len(images), 1])
    np.testing.assert_allclose(models.classifier(mix([looked_up, convolutional, zero])).numpy(),
                               models.classifier(convolutional).numpy(), rtol=1e-6)
    np.testing.assert_allclose(models.classifier(mix([looked_up, convolutional, one])).numpy(),
                               models.classifier(looked_up).numpy(), rtol=1e-6)


def test_early_exit_skips_exactly_the_confident_samples(biased):
    models, images = biased
    full = models.inference_model.predict(images, verbose=0)
    nothing_skipped, skipped = models.predict_early_exit(images, threshold=1.01)
    assert not skipped.any()
    np.testing.assert_allclose(nothing_skipped, full, rtol=1e-5, atol=1e-6)
    gates = models.gate_model.predict(images, verbose=0).ravel()
    threshold = float(np.median(gates))
    probabilities, skipped = models.predict_early_exit(images, threshold=threshold, batch_size=64)
    np.testing.assert_array_equal(skipped, gates >= threshold)
    assert 0 < skipped.sum() < len(images)
    np.testing.assert_allclose(probabilities[~skipped], full[~skipped], rtol=1e-5, atol=1e-6)
    looked_up, _ = models.lookup(models.projector(models.f1(images[skipped])))
    np.testing.assert_allclose(probabilities[skipped], models.classifier(looked_up).numpy(), rtol=1e-5, atol=1e-6)
    everything, all_skipped = models.predict_early_exit(images, threshold=0.0)  # f2 never runs.
    assert all_skipped.all()
    looked_up, _ = models.lookup(models.projector(models.f1(images)))
    np.testing.assert_allclose(everything, models.classifier(looked_up).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_biased_network_exports(biased, tmp_path):
    models, images = biased
    expected = models.inference_model.predict(images[:20], verbose=0)
    path = kn.export.to_tflite(models.inference_model, str(tmp_path / "biased.tflite"))
    np.testing.assert_allclose(kn.export.TFLiteModel(path).predict(images[:20]), expected, atol=1e-5)
    saved = kn.export.to_saved_model(models.inference_model, str(tmp_path / "saved"))
    serve = tf.saved_model.load(saved).signatures["serving_default"]
    np.testing.assert_allclose(list(serve(tf.constant(images[:20])).values())[0].numpy(), expected, atol=1e-5)


@pytest.mark.slow
def test_biased_run_reports_the_gate_sweep_and_the_attack_runs_on_it(tmp_path):
    run = tmp_path / "biased"
    results = kn.training.fit(kn.training.Config.for_dataset("digits", model="biased", epochs=2), str(run),
                              verbose=0)
    # The threshold comes from the held-out tenth of the training set: re-derive it from those images by hand.
    data = kn.data.load("digits")
    _, (held_images, held_labels) = kn.data.hold_out(data, 0.1, seed=0)
    parts = kn.export.early_exit.biased_parts(kn.utils.load_model(str(run / "model.keras")))
    rule = results["exit_rule"]
    scores, early = parts.exit_scores(held_images, rule)
    full = parts.inference_model.predict(held_images, verbose=0).argmax(1) == held_labels
    threshold, skip, _ = kn.models.biased_eval.choose_threshold(scores, early.argmax(1) == held_labels, full)
    expected = None if threshold == float("inf") else threshold  # (choose_threshold itself is tested by hand.)
    assert results["chosen_threshold"] == pytest.approx(expected, rel=1e-5)
    assert results["exit_rules"][rule]["validation_skip_rate"] == pytest.approx(skip)
    assert results["num_train"] == data.num_train - len(held_labels)  # Held-out images are not trained on.
    for row in results["exit_rules"].values():
        skip_rates = [point["skip_rate"] for point in row["sweep"]]
        assert skip_rates[0] == 0.0 and skip_rates[-1] == 1.0 and skip_rates == sorted(skip_rates)
        assert row["sweep"][0]["accuracy"] == pytest.approx(results["test_accuracy_full"], abs=1e-9)
    assert "attack" not in results  # Robustness is an experiment of its own.
    for name in ("early_exit.png", "training.png", "metrics.json"):
        assert os.path.exists(run / name)
    assert json.load(open(run / "metrics.json"))["skip_rate"] == results["skip_rate"]

    robustness = kn.experiments.robustness([str(run)], str(tmp_path / "attack"), num_images=20, max_queries=50)
    attack = robustness["runs"]["biased"]
    assert 0 < attack["num_attacked"] <= 20 and 0.0 <= attack["success_rate"] <= 1.0
    assert attack == kn.experiments.attack_run(str(run), num_images=20, max_queries=50)  # Same images, same seed.
    assert os.path.exists(tmp_path / "attack" / "attack.png")
    assert json.load(open(tmp_path / "attack" / "robustness.json"))["runs"]["biased"] == json.loads(json.dumps(attack))
    with pytest.raises(ValueError, match="small conv or the SqueezeNet trunk"):
        kn.training.Config.for_dataset("digits", model="biased", backbone="resnet50")
    with pytest.raises(ValueError, match="at least one finished run"):
        kn.experiments.robustness([], str(tmp_path / "attack"))
    square = kn.experiments.robustness([str(run)], str(tmp_path / "square"), num_images=20, max_queries=50,
                                       attack="square")
    assert square["attack"] == "square" and square["runs"]["biased"]["num_attacked"] == attack["num_attacked"]
    assert "Square Attack success (50 queries)" in kn.experiments.format_robustness_table(square)
    with pytest.raises(ValueError, match="Unknown attack 'boundary'"):
        kn.experiments.robustness([str(run)], str(tmp_path / "attack"), attack="boundary")
