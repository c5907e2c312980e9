"""Training utilities: the center-refresh callback (and, later, loops)."""

from keras_nngk.training import callbacks

__all__ = ["callbacks"]
