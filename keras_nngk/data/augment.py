"""Label-preserving augmentation of training batches: per-image shifts and horizontal flips.

    augment = make("shift,flip")       # A function on a batch of images (B, H, W, C), or None for "none".
    images = augment(images)

`--augment` names a comma-separated set of AUGMENTATIONS, "none", or "auto" (the data set's own default: crops and
flips for the fine-grained and colour sets, nothing for the small grayscale ones, as before the option existed).
Shifts move each image by its own whole number of pixels (at most `max_shift`, default 1/14 of the image side:
2 pixels at 28 x 28) and fill with zeros, the background of the small grayscale sets; flips mirror left-right and
suit clothes and objects, not digits.
"""

import tensorflow as tf

AUGMENTATIONS = ("shift", "flip")
CHOICES = ("auto", "none") + AUGMENTATIONS


def parse(spec):
    """`"shift,flip"` -> `("shift", "flip")`; "none" -> `()`; "auto" -> None (the data set decides)."""
    if not isinstance(spec, str):
        raise ValueError(f"`augment` must be a string such as 'shift,flip', 'none' or 'auto'. Received: {spec!r}")
    parts = [part.strip() for part in spec.split(",") if part.strip()]
    if parts == ["auto"]:
        return None
    if parts in ([], ["none"]):
        return ()
    unknown = [part for part in parts if part not in AUGMENTATIONS]
    if unknown or len(set(parts)) != len(parts):
        raise ValueError(f"Unknown or repeated augmentation {unknown[0] if unknown else spec!r}; valid: "
                         f"{', '.join(AUGMENTATIONS)} (comma-separated), 'none' or 'auto'. Received: augment={spec!r}")
    return tuple(part for part in AUGMENTATIONS if part in parts)


def default_shift(image_size):
    """Largest shift in pixels for an image side: 1/14 of it, at least 1 (2 pixels at 28)."""
    return max(1, round(image_size / 14))


def shift_images(images, offsets):
    """Moves image `b` down by `offsets[b, 0]` and right by `offsets[b, 1]` pixels, filling with zeros.

    Args:
        images: `(B, H, W, C)`.
        offsets: `(B, 2)` integers; negative moves up / left.
    """
    images = tf.convert_to_tensor(images)
    offsets = tf.cast(offsets, tf.int32)
    pad = tf.reduce_max(tf.abs(offsets))
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    rows = pad - offsets[:, :1] + tf.range(height)[None, :]  # out[y] = in[y - dy].
    cols = pad - offsets[:, 1:] + tf.range(width)[None, :]
    shifted = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(shifted, cols, axis=2, batch_dims=1)


def flip_images(images, mask):
    """Mirrors left-right the images where `mask (B,)` is true."""
    return tf.where(tf.reshape(tf.cast(mask, tf.bool), [-1, 1, 1, 1]), tf.reverse(images, axis=[2]), images)


def make(spec, image_size, max_shift=None):
    """The augmentation function for `spec` (see `parse`), or None when it does nothing or `spec` is "auto"."""
    names = parse(spec)
    if not names:
        return None
    max_shift = default_shift(image_size) if max_shift is None else int(max_shift)

    def augment(images):
        batch = tf.shape(images)[0]
        if "shift" in names:
            images = shift_images(images, tf.random.uniform([batch, 2], -max_shift, max_shift + 1, tf.int32))
        if "flip" in names:
            images = flip_images(images, tf.random.uniform([batch]) < 0.5)
        return images

    return augment
