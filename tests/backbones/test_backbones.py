import numpy as np
import pytest
import tf_keras as keras

from keras_nngk import backbones


@pytest.mark.parametrize("name,shape,dim", [("small_conv", (28, 28, 1), 16), ("squeezenet", (64, 64, 3), 32),
                                            ("squeezenet", (28, 28, 1), 16),
                                            ("vgg16", (32, 32, 3), 8), ("resnet50", (32, 32, 3), 8)])
def test_shapes_and_normalisation(name, shape, dim, rng):
    model = backbones.get(name, input_shape=shape, embedding_dim=dim, l2_normalize=True)
    out = model.predict(rng.uniform(size=(2,) + shape).astype(np.float32), verbose=0)
    assert out.shape == (2, dim)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)


def test_squeezenet_has_the_published_feature_size():
    model = backbones.get("squeezenet", input_shape=(224, 224, 3), embedding_dim=512)
    features = sum(layer.count_params() for layer in model.layers if layer.name != "embedding")
    # SqueezeNet 1.1: 1,235,496 parameters, of which the 1000-way classifier conv holds 513,000.
    assert features == 1_235_496 - 513_000


def test_weights_file_round_trip_and_errors(tmp_path, rng):
    model = backbones.get("small_conv", input_shape=(28, 28, 1), embedding_dim=8, l2_normalize=False)
    path = str(tmp_path / "small.weights.h5")
    model.save_weights(path)
    clone = backbones.get("small_conv", input_shape=(28, 28, 1), embedding_dim=8, l2_normalize=False, weights=path)
    x = rng.uniform(size=(3, 28, 28, 1)).astype(np.float32)
    np.testing.assert_allclose(clone.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    with pytest.raises(ValueError, match="Weights file not found"):
        backbones.get("resnet50", input_shape=(32, 32, 3), weights=str(tmp_path / "missing.h5"))
    with pytest.raises(ValueError, match="download"):
        backbones.get("vgg16", input_shape=(32, 32, 3), weights="imagenet")
    with pytest.raises(ValueError, match="valid: resnet50, small_conv, squeezenet, vgg16"):
        backbones.get("alexnet", input_shape=(32, 32, 3))


def test_l2_normalize_layer_serializes(tmp_path):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, backbones.L2Normalize()(inputs))
    model.save(str(tmp_path / "m.keras"))
    reloaded = keras.models.load_model(str(tmp_path / "m.keras"))
    np.testing.assert_allclose(reloaded.predict(np.array([[3.0, 4.0, 0.0]]), verbose=0), [[0.6, 0.8, 0.0]], rtol=1e-6)


def test_backbones_normalise_with_keras_unit_normalization_bit_for_bit_as_before(tmp_path, rng):
    """New backbones use `UnitNormalization`; a model saved with the old `L2Normalize` layer still loads, and both
    give the same bits."""
    model = backbones.get("small_conv", input_shape=(28, 28, 1), embedding_dim=8)
    assert isinstance(model.get_layer("l2_normalize"), keras.layers.UnitNormalization)
    embedding = model.get_layer("embedding").output
    old = keras.Model(model.input, backbones.L2Normalize(name="l2_normalize_old")(embedding))
    kn_path = str(tmp_path / "old.keras")
    old.save(kn_path)
    from keras_nngk.utils import load_model  # pylint: disable=g-import-not-at-top
    reloaded = load_model(kn_path)
    x = rng.uniform(size=(5, 28, 28, 1)).astype(np.float32)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), model.predict(x, verbose=0))
    inputs = keras.Input((3,))
    unit = keras.Model(inputs, keras.layers.UnitNormalization()(inputs))
    values = rng.normal(size=(50, 3)).astype(np.float32) * 10.0 ** rng.uniform(-8, 8, size=(50, 1))
    np.testing.assert_array_equal(unit.predict(values, verbose=0),
                                  keras.Model(inputs, backbones.L2Normalize()(inputs)).predict(values, verbose=0))


def test_flatten_pooling_is_a_linear_map_of_the_whole_feature_map(rng):
    """pooling="flatten": the embedding is the Dense layer applied to the flattened last feature map (NumPy)."""
    model = backbones.get("small_conv", input_shape=(28, 28, 1), embedding_dim=8, l2_normalize=False,
                          pooling="flatten")
    x = rng.uniform(size=(3, 28, 28, 1)).astype(np.float32)
    features = keras.Model(model.input, model.get_layer("relu3").output).predict(x, verbose=0)
    assert features.shape == (3, 7, 7, 128)  # Two pools: 28 -> 7; nothing averaged away.
    kernel, bias = model.get_layer("embedding").get_weights()
    expected = features.reshape(3, -1) @ kernel + bias
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-4, atol=1e-5)
    # Where a feature is matters: moving the map's content changes a flattened embedding, not a pooled one.
    pooled = backbones.get("small_conv", input_shape=(28, 28, 1), embedding_dim=8, l2_normalize=False)
    assert pooled.get_layer("embedding").get_weights()[0].shape == (128, 8)
    assert kernel.shape == (7 * 7 * 128, 8)


def test_pooling_errors():
    with pytest.raises(ValueError, match="valid: avg, flatten"):
        backbones.get("small_conv", input_shape=(28, 28, 1), pooling="max")
    with pytest.raises(ValueError, match="option of the small_conv backbone"):
        backbones.get("squeezenet", input_shape=(32, 32, 3), pooling="flatten")


@pytest.mark.parametrize("pooling", ["avg", "flatten"])
def test_retrieval_network_gives_the_normalised_features_under_the_projection(pooling, rng):
    model = backbones.get("small_conv", input_shape=(28, 28, 1), embedding_dim=8, pooling=pooling)
    x = rng.uniform(size=(3, 28, 28, 1)).astype(np.float32)
    assert backbones.retrieval_network(model, "embedding") is model
    pooled = backbones.retrieval_network(model, "pooled").predict(x, verbose=0)
    features = keras.Model(model.input, model.get_layer("relu3").output).predict(x, verbose=0)
    expected = features.mean(axis=(1, 2)) if pooling == "avg" else features.reshape(3, -1)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(pooled, expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="valid: embedding, pooled, map"):
        backbones.retrieval_network(model, "logits")
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="head")])
    with pytest.raises(ValueError, match="projection is the layer named 'embedding'"):
        backbones.retrieval_network(plain, "pooled")


@pytest.mark.parametrize("pooling", ["avg", "flatten"])
def test_retrieval_map_is_the_normalised_feature_map_under_the_pooling(pooling, rng):
    model = backbones.get("small_conv", input_shape=(28, 28, 1), embedding_dim=8, pooling=pooling)
    x = rng.uniform(size=(3, 28, 28, 1)).astype(np.float32)
    found = backbones.retrieval_network(model, "map").predict(x, verbose=0)
    expected = keras.Model(model.input, model.get_layer("relu3").output).predict(x, verbose=0).reshape(3, -1)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert found.shape == (3, 7 * 7 * 128)
    np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name,shape", [("squeezenet", (64, 64, 3)),
                                        pytest.param("resnet50", (64, 64, 3), marks=pytest.mark.slow)])
def test_retrieval_map_averages_to_the_pooled_features(name, shape, rng):
    """For backbones that average-pool (resnet50's pooling sits inside the nested keras.applications network), the
    map's mean over positions is the pooled vector: normalised, the "pooled" read-out."""
    model = backbones.get(name, input_shape=shape, embedding_dim=8)
    x = rng.uniform(size=(2,) + shape).astype(np.float32)
    pooled = backbones.retrieval_network(model, "pooled").predict(x, verbose=0)
    found = backbones.retrieval_network(model, "map").predict(x, verbose=0)
    channels = pooled.shape[1]
    assert found.shape[1] % channels == 0 and found.shape[1] > channels  # H * W positions of the pooled channels.
    np.testing.assert_allclose(np.linalg.norm(found, axis=1), 1.0, rtol=1e-5)
    mean = found.reshape(2, -1, channels).mean(axis=1)
    np.testing.assert_allclose(mean / np.linalg.norm(mean, axis=1, keepdims=True), pooled, rtol=1e-3, atol=1e-5)


def test_retrieval_map_needs_a_pooled_feature_map():
    images = keras.Input((4, 4, 1))
    vector = keras.layers.Dense(3)(keras.layers.Reshape((16,))(images))
    model = keras.Model(images, keras.layers.Dense(2, name="embedding")(vector))
    with pytest.raises(ValueError, match="retrieval_features='map' needs a backbone whose projection"):
        backbones.retrieval_network(model, "map")
