"""Every layer through the shared helper (tests/layer_test.py): reference, config, .keras, SavedModel in a fresh
process, TFLite, a training step and bad input."""

import numpy as np
import pytest
import tf_keras as keras

import keras_nngk as kn
from tests import layer_test, reference
from tests.conftest import clustered

DIMENSION = 8
NUM_CLASSES = 3


def _state(layer):
    active = layer.center_mask.numpy()
    return layer.centers.numpy()[active], layer.center_labels.numpy()[active]


def make_nngk(rng, **options):
    layer = kn.layers.NNGKClassifier(NUM_CLASSES, num_neighbours=5, sigma=0.8, capacity=50, **options)
    centers, clusters = clustered(rng, 40, DIMENSION, num_clusters=6)
    layer.assign_centers(centers, clusters % NUM_CLASSES)
    if layer.log_weights is not None:
        layer.log_weights[:40].assign(rng.uniform(-0.5, 0.5, 40).astype(np.float32))
    return layer


def nngk_reference(layer, queries):
    centers, labels = _state(layer)
    log_weights = getattr(layer, "log_weights", None)  # Impostor heads have none.
    weights = None if log_weights is None else np.exp(log_weights.numpy()[layer.center_mask.numpy()])
    return reference.nngk_classifier(queries, centers, labels, layer.num_neighbours, float(layer.sigma.numpy()),
                                     weights)


def make_impostor(rng, tie):
    layer = kn.layers.ImpostorClassifier(NUM_CLASSES, num_neighbours=4, sigma=0.6, tie=tie, tie_weight=0.1,
                                         capacity=40)
    centers, clusters = clustered(rng, 40, DIMENSION, num_clusters=6)
    layer.assign_centers(centers, clusters % NUM_CLASSES)
    return layer


def make_knn(rng):
    layer = kn.layers.KNNClassifier(NUM_CLASSES, num_neighbours=5, capacity=40)
    centers, clusters = clustered(rng, 40, DIMENSION, num_clusters=6)
    layer.assign_centers(centers, clusters % NUM_CLASSES)
    return layer


def knn_reference(layer, queries):
    centers, labels = _state(layer)
    return reference.one_hot(reference.knn_classifier(queries, centers, labels.argmax(1), layer.num_neighbours,
                                                      NUM_CLASSES), NUM_CLASSES)


def make_dense(rng):
    layer = kn.layers.DenseClassifier(NUM_CLASSES)
    layer.build((None, DIMENSION))
    layer.set_weights([rng.normal(size=(DIMENSION, NUM_CLASSES)).astype(np.float32),
                       rng.normal(size=NUM_CLASSES).astype(np.float32)])
    return layer


def make_compressed(rng):
    head = make_nngk(rng)
    centers, clusters = clustered(rng, 300, DIMENSION, num_clusters=6)  # OPQ trains 256 centroids.
    head = kn.layers.NNGKClassifier(NUM_CLASSES, num_neighbours=5, sigma=0.8)
    head.assign_centers(centers, clusters % NUM_CLASSES)
    head.log_weights.assign(rng.uniform(-0.5, 0.5, 300).astype(np.float32))
    return kn.layers.compress(head, pq_bytes=4)


def compressed_reference(layer, queries):
    active = layer.center_mask.numpy()
    decoded = reference.pq_decode(layer.codes().numpy()[active], layer.rotation.numpy(), layer.pq_codebooks.numpy())
    labels = reference.one_hot(layer.center_labels.numpy()[active], NUM_CLASSES)
    return reference.nngk_classifier(queries, decoded, labels, layer.num_neighbours, layer.sigma_value,
                                     np.exp(layer.log_weights.numpy()[active]))


def make_lookup(rng):
    layer = kn.layers.NeighbourLookup(value_dim=5, num_neighbours=4, sigma=1.5, capacity=40)
    keys, _ = clustered(rng, 40, DIMENSION, num_clusters=6)
    layer.assign_keys_values(keys, rng.normal(size=(40, 5)).astype(np.float32))
    return layer


def lookup_reference(layer, queries):
    active = layer.center_mask.numpy()
    looked_up, gate = reference.neighbour_lookup(queries, layer.centers.numpy()[active],
                                                 layer.center_values.numpy()[active], layer.num_neighbours,
                                                 float(layer.sigma.numpy()))
    return np.concatenate([looked_up, gate], axis=1)


def gaussian_data():
    """Features of 3 of 4 classes (class 3 never seen) for the Gaussian-statistics head."""
    features, clusters = clustered(np.random.default_rng(7), 90, DIMENSION, num_clusters=6)
    return features, clusters % 3


def make_gaussian(rng):
    del rng
    layer = kn.layers.GaussianClassifier(4, shrinkage=0.1, sigma=0.9, priors=True)
    features, labels = gaussian_data()
    layer.update(features[:50], labels[:50])  # Two updates: the head streams.
    layer.update(features[50:], labels[50:])
    return layer


def gaussian_reference(layer, queries):
    features, labels = gaussian_data()
    return reference.gaussian_classifier(queries, features, labels, 4, layer.shrinkage, layer.sigma, layer.priors)


def make_random_features(rng):
    del rng
    layer = kn.layers.RandomFeatures(6, seed=3)
    layer.build((None, DIMENSION))
    return layer


def random_features_reference(layer, queries):
    matrix = np.random.default_rng(3).standard_normal((DIMENSION, 6)) / np.sqrt(DIMENSION)
    return np.maximum(queries @ matrix, 0.0)


CASES = [
    layer_test.LayerCase("nngk", make_nngk, nngk_reference, DIMENSION, NUM_CLASSES),
    layer_test.LayerCase("nngk_unweighted", lambda rng: make_nngk(rng, sample_weights=False, learn_sigma=False),
                         nngk_reference, DIMENSION, NUM_CLASSES),
    layer_test.LayerCase("impostor_tied", lambda rng: make_impostor(rng, "tied"), nngk_reference, DIMENSION,
                         NUM_CLASSES),
    layer_test.LayerCase("impostor_loose", lambda rng: make_impostor(rng, "loose"), nngk_reference, DIMENSION,
                         NUM_CLASSES),
    layer_test.LayerCase("knn", make_knn, knn_reference, DIMENSION, NUM_CLASSES, differentiable=False),
    layer_test.LayerCase("dense", make_dense,
                         lambda layer, queries: reference.dense_classifier(queries, *layer.get_weights()), DIMENSION,
                         NUM_CLASSES, sample_ids=False, checks_nan=False),
    layer_test.LayerCase("compressed", make_compressed, compressed_reference, DIMENSION, NUM_CLASSES,
                         sample_ids=False, atol=1e-4),
    layer_test.LayerCase("neighbour_lookup", make_lookup, lookup_reference, DIMENSION),
    layer_test.LayerCase("gaussian", make_gaussian, gaussian_reference, DIMENSION, 4, sample_ids=False, atol=1e-4),
    layer_test.LayerCase("random_features", make_random_features, random_features_reference, DIMENSION,
                         sample_ids=False, checks_nan=False),
]
CASE_IDS = [case.name for case in CASES]


@pytest.fixture(params=CASES, ids=CASE_IDS)
def case(request):
    return request.param


@pytest.fixture
def built(case, rng):
    return case.make(rng), layer_test.queries_for(case, np.random.default_rng(1))


def test_every_layer_has_a_case():
    layer_classes = {getattr(kn.layers, name) for name in kn.layers.__all__
                     if isinstance(getattr(kn.layers, name), type) and issubclass(getattr(kn.layers, name),
                                                                                   keras.layers.Layer)}
    abstract = {kn.layers.CenterLayer, kn.layers.KernelCenterLayer}
    covered = {type(case.make(np.random.default_rng(0))) for case in CASES}
    assert layer_classes - abstract - covered == set()


def test_matches_reference(case, built):
    layer_test.check_reference(case, *built)


def test_config_round_trip(case, built):
    layer_test.check_config_round_trip(case, *built)


def test_keras_file_round_trip(case, built, tmp_path):
    layer_test.check_keras_round_trip(case, *built, str(tmp_path))


def test_training_step(case, built, rng):
    layer_test.check_training_step(case, *built, rng)


def test_bad_input(case, built):
    layer_test.check_bad_input(case, built[0])


@pytest.mark.slow  # A TFLite conversion per layer (about 3 s each).
def test_tflite_parity(case, built, tmp_path):
    layer_test.check_tflite_parity(case, *built, str(tmp_path))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    built = []
    for case in CASES:
        keras.utils.set_random_seed(0)
        layer = case.make(np.random.default_rng(0))
        built.append((case, layer, layer_test.queries_for(case, np.random.default_rng(1))))
    return layer_test.saved_models_in_one_fresh_process(built, str(tmp_path_factory.mktemp("saved_models")))


@pytest.mark.slow  # Every layer's SavedModel, served in one new Python process (about 15 s for all).
def test_saved_model_in_a_fresh_process(case, served):
    layer_test.check_saved_model_served(case, served)


def test_the_helper_fails_on_a_wrong_layer(rng):
    """A check that cannot fail is no check: a head whose reference is off must fail `check_reference`."""
    case = CASES[0]
    layer, queries = case.make(rng), layer_test.queries_for(case, rng)
    wrong = layer_test.LayerCase("wrong", case.make, lambda layer, queries: nngk_reference(layer, queries)[:, ::-1],
                                 DIMENSION, NUM_CLASSES)
    with pytest.raises(AssertionError):
        layer_test.check_reference(wrong, layer, queries)
