"""Reading image files into model inputs, exactly as the training pipelines preprocess them."""

import os

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
MAX_PIXELS = 50_000_000  # Larger images are refused before decoding (PIL's own limit is ~179 million).


def load_image(path, image_shape, central_crop=1.0):
    """An image file as a float32 `(H, W, C)` array in [0, 1].

    Grayscale or RGB as the model expects; resized to `H / central_crop` and
    centrally cropped to `H x W` (the evaluation preprocessing of the fine-grained
    sets), or resized straight to `H x W` when `central_crop` is 1.
    """
    from PIL import Image, UnidentifiedImageError  # pylint: disable=g-import-not-at-top
    height, width, channels = image_shape
    try:
        with Image.open(path) as image:  # Reads the header only.
            if image.size[0] * image.size[1] > MAX_PIXELS:
                raise ValueError(f"Image {path!r} is too large to decode ({image.size[0]} x {image.size[1]} pixels, "
                                 f"more than {MAX_PIXELS:,}: a decompression bomb?); resize it first.")
            image = image.convert("L" if channels == 1 else "RGB")
            if central_crop < 1.0:
                outer_height, outer_width = round(height / central_crop), round(width / central_crop)
                image = image.resize((outer_width, outer_height), Image.BILINEAR)
                top, left = (outer_height - height) // 2, (outer_width - width) // 2
                image = image.crop((left, top, left + width, top + height))
            elif image.size != (width, height):
                image = image.resize((width, height), Image.BILINEAR)
            array = np.asarray(image, dtype=np.float32) / 255.0
    except Image.DecompressionBombError as error:  # PIL's own check, at open, above ~179 million pixels.
        raise ValueError(f"Image {path!r} is too large to decode ({error}); resize it first.") from None
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"Cannot decode image {path!r} ({error.__class__.__name__}); pass a PNG or JPEG "
                         "file.") from None
    return array.reshape(height, width, channels)


def image_files(path):
    """`path` itself, or the image files in the folder `path`, sorted."""
    if os.path.isdir(path):
        files = sorted(os.path.join(path, name) for name in os.listdir(path) if name.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise ValueError(f"No image files ({', '.join(IMAGE_EXTENSIONS)}) in folder {path!r}.")
        return files
    if not os.path.exists(path):
        raise ValueError(f"No such image file or folder: {path!r}")
    return [path]
