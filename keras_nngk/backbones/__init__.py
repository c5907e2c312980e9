"""Feature extractors with an embedding projection: `get(name, input_shape=..., embedding_dim=...)`."""

from keras_nngk.backbones.applications import resnet50, vgg16
from keras_nngk.backbones.common import RETRIEVAL_FEATURES, L2Normalize, retrieval_network
from keras_nngk.backbones.small_conv import small_conv
from keras_nngk.backbones.squeezenet import squeezenet

BACKBONES = {"small_conv": small_conv, "squeezenet": squeezenet, "vgg16": vgg16, "resnet50": resnet50}
POOLINGS = ("avg", "flatten")


def check_pooling(name, pooling):
    """Raises a ValueError unless `pooling` is one of POOLINGS and backbone `name` offers it (only small_conv
    offers more than "avg")."""
    if pooling not in POOLINGS:
        raise ValueError(f"Unknown pooling {pooling!r}; valid: {', '.join(POOLINGS)}. Received: pooling={pooling!r}")
    if pooling != "avg" and name != "small_conv":
        raise ValueError(f"pooling={pooling!r} is an option of the small_conv backbone; use pooling='avg' with "
                         f"{name}.")


def get(name, input_shape, embedding_dim=64, l2_normalize=True, weights=None, pooling="avg"):
    """Builds the named backbone: a model from images in [0, 1] to `(B, embedding_dim)` embeddings.

    `pooling` (one of POOLINGS) is an option of small_conv; the others pool globally ("avg" only).
    """
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; valid: {', '.join(sorted(BACKBONES))}. "
                         f"Received: backbone={name!r}")
    check_pooling(name, pooling)
    extra = {"pooling": pooling} if pooling != "avg" else {}
    return BACKBONES[name](input_shape=tuple(input_shape), embedding_dim=embedding_dim, l2_normalize=l2_normalize,
                           weights=weights, **extra)


__all__ = ["get", "check_pooling", "BACKBONES", "POOLINGS", "RETRIEVAL_FEATURES", "retrieval_network", "small_conv",
           "squeezenet", "vgg16", "resnet50", "L2Normalize"]
