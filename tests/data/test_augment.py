import numpy as np
import pytest
import tensorflow as tf

from keras_nngk import data as data_lib
from keras_nngk.data import augment


def _shift_by_hand(image, dy, dx):
    """NumPy: out[y, x] = in[y - dy, x - dx], zero outside."""
    out = np.zeros_like(image)
    height, width = image.shape[:2]
    for y in range(height):
        for x in range(width):
            if 0 <= y - dy < height and 0 <= x - dx < width:
                out[y, x] = image[y - dy, x - dx]
    return out


def test_shift_images_moves_each_image_by_its_own_offset(rng):
    images = rng.uniform(size=(3, 6, 5, 2)).astype(np.float32)
    offsets = np.array([[1, -2], [0, 0], [-3, 4]])
    shifted = augment.shift_images(images, offsets).numpy()
    assert shifted.shape == images.shape
    for image, out, (dy, dx) in zip(images, shifted, offsets):
        np.testing.assert_array_equal(out, _shift_by_hand(image, dy, dx))


def test_flip_images_mirrors_only_where_asked(rng):
    images = rng.uniform(size=(2, 4, 4, 1)).astype(np.float32)
    flipped = augment.flip_images(images, [True, False]).numpy()
    np.testing.assert_array_equal(flipped[0], images[0][:, ::-1])
    np.testing.assert_array_equal(flipped[1], images[1])


def test_make_keeps_shape_and_range_and_moves_content_by_at_most_the_shift(rng):
    tf.random.set_seed(0)
    images = np.zeros((64, 28, 28, 1), np.float32)
    images[:, 13, 13] = 1.0  # One bright pixel: where it lands tells the shift.
    out = augment.make("shift", 28)(images).numpy()
    assert out.shape == images.shape and out.dtype == np.float32
    positions = np.array([np.argwhere(image[..., 0] == 1.0)[0] for image in out])
    assert np.abs(positions - 13).max() == augment.default_shift(28) == 2  # Every offset in [-2, 2] is drawn ...
    assert len({tuple(p) for p in positions}) > 10  # ... and per image, not one shift for the whole batch.
    np.testing.assert_array_equal(out.sum(axis=(1, 2, 3)), 1.0)  # Nothing but the move.


def test_parse_and_errors():
    assert augment.parse("flip, shift") == ("shift", "flip")
    assert augment.parse("none") == () and augment.parse("") == ()
    assert augment.parse("auto") is None
    assert augment.make("none", 28) is None and augment.make("auto", 28) is None
    with pytest.raises(ValueError, match="Unknown or repeated augmentation 'rotate'; valid: shift, flip"):
        augment.parse("shift,rotate")
    with pytest.raises(ValueError, match="repeated"):
        augment.parse("shift,shift")


def test_load_applies_the_augmentation_to_training_batches_only():
    data = data_lib.load("digits", augment="flip")
    assert data.augment is not None
    batch = next(iter(data.train.batch(16)))[0]
    flipped = data.augment(batch).numpy()
    for image, out in zip(batch.numpy(), flipped):  # Each image is itself or its mirror.
        assert np.array_equal(out, image) or np.array_equal(out, image[:, ::-1])
    assert data_lib.load("digits").augment is None  # "auto" keeps the data set's default (none for digits).
    with pytest.raises(ValueError, match="Unknown or repeated augmentation"):
        data_lib.load("digits", augment="jitter")
