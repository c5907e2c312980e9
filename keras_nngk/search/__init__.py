"""Neighbour search backends behind one interface, and the registry that names them.

`get(identifier)` accepts a name, a config dict (as written by `serialize`) or an
index instance:

| name            | backend                                            |
| --------------- | -------------------------------------------------- |
| `exact`         | `ExactSearch`: TensorFlow matmul + top_k, in-graph |
| `faiss-flat`    | `FaissIndex("Flat")`: faiss exact search            |
| `faiss-hnsw`    | `FaissIndex("HNSW32")`                             |
| `faiss-ivf`     | `FaissIndex("IVF{nlist},Flat")`                    |
| `faiss:<spec>`  | `FaissIndex(<spec>)`, any faiss factory string      |
"""

from keras_nngk.search import pq
from keras_nngk.search.base import SearchIndex
from keras_nngk.search.exact import ExactSearch, exact_search

_FAISS_FACTORIES = {"faiss-flat": "Flat", "faiss-hnsw": "HNSW32", "faiss-ivf": "IVF{nlist},Flat"}
NAMES = ("exact",) + tuple(_FAISS_FACTORIES) + ("faiss:<factory string>",)


def _faiss_index(**config):
    from keras_nngk.search import faiss_index  # pylint: disable=g-import-not-at-top
    return faiss_index.FaissIndex(**config)


_CLASSES = {"exact": ExactSearch, "faiss": _faiss_index}


def get(identifier):
    """Returns a new (empty) index for a name or config dict, or `identifier` itself if it is an index."""
    if isinstance(identifier, SearchIndex):
        return identifier
    if isinstance(identifier, dict):
        class_name = identifier.get("class_name")
        if class_name not in _CLASSES:
            raise ValueError(f"Unknown search class {class_name!r}; valid: {sorted(_CLASSES)}. "
                             f"Received: search={identifier!r}")
        return _CLASSES[class_name](**identifier.get("config", {}))
    if isinstance(identifier, str):
        if identifier == "exact":
            return ExactSearch()
        if identifier in _FAISS_FACTORIES:
            return _faiss_index(factory=_FAISS_FACTORIES[identifier])
        if identifier.startswith("faiss:"):
            return _faiss_index(factory=identifier[len("faiss:"):])
    raise ValueError(f"Unknown search {identifier!r}; valid names: {', '.join(NAMES)}, a config dict or a "
                     f"SearchIndex instance. Received: search={identifier!r}")


def serialize(index):
    """A JSON-serializable description that `get` turns back into an equivalent empty index."""
    return {"class_name": index.name, "config": index.get_config()}


def is_in_graph(identifier):
    """True when `identifier` means the exportable in-graph exact search."""
    if isinstance(identifier, str):
        return identifier == "exact"
    if isinstance(identifier, dict):
        return identifier.get("class_name") == "exact"
    return isinstance(identifier, ExactSearch)


def load(directory):
    """Loads an index written by `SearchIndex.save(directory)`, with its vectors and ids."""
    from keras_nngk.search import base  # pylint: disable=g-import-not-at-top
    index = get(base.read_saved_config(directory))
    index._restore(directory)  # pylint: disable=protected-access
    return index


__all__ = ["pq", "SearchIndex", "ExactSearch", "exact_search", "get", "serialize", "load", "is_in_graph", "NAMES"]
