"""The one small interface every neighbour-search backend implements."""

import abc
import json
import os

import numpy as np

from keras_nngk.utils import files

_CONFIG_FILE = "search_config.json"
_VECTORS_FILE = "vectors.npz"


def _as_float_matrix(name, value, dimension=None):
    array = np.asarray(value, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"`{name}` must be a 2-D array (num_vectors, dimension). Received: shape={array.shape}")
    if dimension is not None and array.shape[1] != dimension:
        raise ValueError(
            f"`{name}` has dimension {array.shape[1]} but the index holds vectors of dimension {dimension}. "
            f"Received: shape={array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"`{name}` contains NaN or Inf values; clean or re-embed them first. "
                         f"Received: {int(np.sum(~np.isfinite(array)))} non-finite entries")
    return array


class SearchIndex(abc.ABC):
    """Exact or approximate k-nearest-neighbour search over a mutable set of vectors.

    Every backend keeps the vectors and their integer ids (so it can be saved,
    rebuilt and compared), and answers `search(queries, k) -> (distances, ids)`:
    squared Euclidean distances in ascending order, `(B, k)` float32, and the ids
    of the matching vectors, `(B, k)` int64. When fewer than `k` vectors exist,
    the missing columns hold distance `inf` and id `-1`.

    Subclasses implement `_search` and may override `_on_add` / `_on_remove`.
    """

    name = None

    def __init__(self):
        self._vectors = None
        self._ids = np.zeros((0,), dtype=np.int64)
        self._positions = None  # {id: row of `_vectors`}, built by the first `update` after a change of the ids.

    # -- state ---------------------------------------------------------------------------------------
    @property
    def size(self):
        """Number of vectors in the index."""
        return int(self._ids.shape[0])

    @property
    def dimension(self):
        """Dimension of the stored vectors, or None before the first `add`."""
        return None if self._vectors is None else int(self._vectors.shape[1])

    @property
    def vectors(self):
        return self._vectors

    @property
    def ids(self):
        return self._ids

    def add(self, vectors, ids=None):
        """Adds vectors with unique non-negative integer ids (default: consecutive after the largest)."""
        vectors = _as_float_matrix("vectors", vectors, self.dimension)
        if ids is None:
            start = int(self._ids.max()) + 1 if self.size else 0
            ids = np.arange(start, start + vectors.shape[0], dtype=np.int64)
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.shape[0] != vectors.shape[0]:
            raise ValueError(f"`vectors` and `ids` must have the same length. "
                             f"Received: {vectors.shape[0]} vectors and {ids.shape[0]} ids")
        if ids.size and ids.min() < 0:
            raise ValueError(f"`ids` must be non-negative (-1 marks a missing neighbour). Received: min id {ids.min()}")
        if np.unique(ids).size != ids.size or np.isin(ids, self._ids).any():
            raise ValueError("`ids` must be unique and not already in the index; remove() them first to replace.")
        self._vectors = vectors.copy() if self._vectors is None else np.concatenate([self._vectors, vectors])
        self._ids = np.concatenate([self._ids, ids])
        self._positions = None
        self._on_add(vectors, ids)

    def remove(self, ids):
        """Removes the vectors with these ids (unknown ids are ignored). Returns how many were removed."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        keep = ~np.isin(self._ids, ids)
        removed = int(np.sum(~keep))
        if removed:
            self._vectors = self._vectors[keep]
            self._ids = self._ids[keep]
            self._positions = None
            self._on_remove(ids)
        return removed

    def update(self, vectors, ids):
        """Replaces the vectors of ids already in the index (a center written from the training pass).

        What `remove(ids)` then `add(vectors, ids)` leave, in place: the stored
        vectors keep their order (no copy of the whole set) and the backend
        updates its structure where it can (`_on_update`; a faiss IVF index moves
        the vectors between its lists).
        """
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        vectors = _as_float_matrix("vectors", vectors, self.dimension)
        if ids.shape[0] != vectors.shape[0]:
            raise ValueError(f"`vectors` and `ids` must have the same length. "
                             f"Received: {vectors.shape[0]} vectors and {ids.shape[0]} ids")
        if np.unique(ids).size != ids.size:
            raise ValueError("`ids` must be unique: each names one stored vector to replace.")
        if self._positions is None:
            self._positions = {int(known): position for position, known in enumerate(self._ids)}
        positions = np.array([self._positions.get(int(i), -1) for i in ids], dtype=np.int64)
        if (positions < 0).any():
            raise ValueError(f"`update` replaces stored vectors only; add() new ones. Received: ids not in the index, "
                             f"e.g. {int(ids[positions < 0][0])}")
        if not ids.size:
            return
        self._vectors[positions] = vectors
        self._on_update(vectors, ids)

    def reset(self):
        """Removes every vector."""
        self._vectors = None
        self._ids = np.zeros((0,), dtype=np.int64)
        self._positions = None
        self._on_reset()

    def search(self, queries, k):
        """Returns `(distances, ids)` of the `k` nearest stored vectors of each query."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"`k` must be a positive integer. Received: k={k!r}")
        if self.size == 0:
            raise ValueError("The index is empty: add() vectors before searching.")
        queries = _as_float_matrix("queries", queries, self.dimension)
        k = int(k)
        found = min(k, self.size)
        distances, ids = self._search(queries, found)
        distances = np.asarray(distances, dtype=np.float32)
        ids = np.asarray(ids, dtype=np.int64)
        missing = ids < 0
        distances = np.where(missing, np.float32(np.inf), distances)
        if found < k:
            pad = k - found
            distances = np.pad(distances, ((0, 0), (0, pad)), constant_values=np.inf)
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        return distances, ids

    # -- hooks -----------------------------------------------------------------------------------
    @abc.abstractmethod
    def _search(self, queries, k):
        """Backend search for `1 <= k <= size`; returns `(distances, ids)` arrays."""

    def _on_add(self, vectors, ids):
        pass

    def _on_remove(self, ids):
        pass

    def _on_update(self, vectors, ids):
        """`update` replaced these ids' vectors in `_vectors`; by default, what a removal and an addition do."""
        self._on_remove(ids)
        self._on_add(vectors, ids)

    def _on_reset(self):
        pass

    def _save_extra(self, directory):
        pass

    def _load_extra(self, directory):
        pass

    # -- serialization -----------------------------------------------------------------------------
    def get_config(self):
        """Constructor arguments, JSON-serializable."""
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def save(self, directory):
        """Writes the configuration, vectors and ids (and any built index) into `directory`, replaced as a whole."""
        files.write_folder_atomically(directory, self._save_into)

    def _save_into(self, directory):
        with open(os.path.join(directory, _CONFIG_FILE), "w") as handle:
            json.dump({"class_name": self.name, "config": self.get_config()}, handle)
        vectors = self._vectors if self._vectors is not None else np.zeros((0, 0), np.float32)
        np.savez(os.path.join(directory, _VECTORS_FILE), vectors=vectors, ids=self._ids)
        self._save_extra(directory)

    def _restore(self, directory):
        data = np.load(os.path.join(directory, _VECTORS_FILE))
        if data["ids"].size:
            self._vectors = data["vectors"].astype(np.float32)
            self._ids = data["ids"].astype(np.int64)
            self._positions = None
        self._load_extra(directory)

    def __repr__(self):
        return f"{type(self).__name__}(size={self.size}, dimension={self.dimension}, config={self.get_config()})"


def read_saved_config(directory):
    path = os.path.join(directory, _CONFIG_FILE)
    if not os.path.exists(path):
        raise ValueError(f"No saved search index in {directory!r} (missing {_CONFIG_FILE}); save one with "
                         "index.save().")
    with open(path) as handle:
        return json.load(handle)
