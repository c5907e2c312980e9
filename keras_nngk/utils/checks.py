"""Argument checks shared by layers, configs and entry points (one-line ValueErrors ending in `Received:`)."""

import numpy as np


def check_positive_int(name, value, allow_none=False):
    """`value` as an int if it is a positive integer (not a bool); None passes when `allow_none`."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return int(value)


def check_non_negative_int(name, value):
    """`value` as an int if it is an integer >= 0 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"`{name}` must be an integer >= 0. Received: {name}={value!r}")
    return int(value)


def check_positive_float(name, value):
    """`value` as a float if it is a positive finite number (not a bool)."""
    if (isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating))
            or not np.isfinite(value) or value <= 0):
        raise ValueError(f"`{name}` must be a positive finite number. Received: {name}={value!r}")
    return float(value)


def check_soft_labels(labels, num_centers, num_classes):
    """Labels as soft label rows `(num_centers, num_classes)` float32: class ids become one-hot rows; a one-line
    ValueError for a wrong length, non-integer or out-of-range ids, or rows that are not probability vectors."""
    labels = np.asarray(labels)
    if labels.ndim == 1 or (labels.ndim == 2 and labels.shape[1] == 1 and num_classes > 1):
        labels = labels.reshape(-1)
        if labels.shape[0] != num_centers:
            raise ValueError(f"Centers and labels must have the same length. Received: {num_centers} centers "
                             f"and {labels.shape[0]} labels")
        if not np.issubdtype(labels.dtype, np.integer):
            if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
                raise ValueError("Integer class labels expected (or soft labels of shape (N, num_classes)). "
                                 f"Received: labels of dtype {labels.dtype}")
            labels = labels.astype(np.int64)
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(f"Labels must lie in [0, num_classes={num_classes}). "
                             f"Received: labels in [{labels.min()}, {labels.max()}]")
        return np.eye(num_classes, dtype=np.float32)[labels]
    if labels.ndim != 2 or labels.shape[1] != num_classes:
        raise ValueError(f"Labels must be class ids (N,) or soft labels (N, num_classes={num_classes}). "
                         f"Received: labels.shape={labels.shape}")
    if labels.shape[0] != num_centers:
        raise ValueError(f"Centers and labels must have the same length. Received: {num_centers} centers "
                         f"and {labels.shape[0]} labels")
    labels = labels.astype(np.float32)
    if not np.all(np.isfinite(labels)) or labels.min() < 0 or not np.allclose(labels.sum(1), 1.0, atol=1e-4):
        raise ValueError("Soft labels must be finite, non-negative, and each row must sum to 1. "
                         f"Received: row sums in [{labels.sum(1).min():.4g}, {labels.sum(1).max():.4g}]")
    return labels
