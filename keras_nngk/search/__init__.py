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
NAMES = ("auto", "exact") + tuple(_FAISS_FACTORIES) + ("faiss:<factory string>",)


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
        if identifier in ("exact", "auto"):  # "auto" is resolved by the layer once it knows its centers.
            return ExactSearch()
        if identifier in _FAISS_FACTORIES:
            return _faiss_index(factory=_FAISS_FACTORIES[identifier])
        if identifier.startswith("faiss:"):
            return _faiss_index(factory=identifier[len("faiss:"):])
    raise ValueError(f"Unknown search {identifier!r}; valid names: {', '.join(NAMES)}, a config dict or a "
                     f"SearchIndex instance. Received: search={identifier!r}")


# Where "auto" hands over from the exact in-graph search to a faiss HNSW index: the number of centers times
# their dimension above which HNSW answers a training batch faster than the exact search on a CPU (measured by
# bench/search.py and bench/train_step.py; see bench/README.md). Below it the exact search is both fast and exact.
AUTO_HNSW_MIN_SIZE = 4_000_000


def resolve(identifier, num_centers, dimension, faiss_available=None):
    """The search "auto" stands for with `num_centers` centers of `dimension`; any other identifier unchanged.

    "auto" is the exact in-graph search, unless `num_centers * dimension >= AUTO_HNSW_MIN_SIZE` and faiss is
    installed, where it is "faiss-hnsw". On a GPU the exact search stays the better choice up to far larger sets,
    so "auto" keeps it there.
    """
    if identifier != "auto":
        return identifier
    if faiss_available is None:
        import importlib.util  # pylint: disable=g-import-not-at-top
        faiss_available = importlib.util.find_spec("faiss") is not None
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    on_gpu = bool(tf.config.list_logical_devices("GPU"))
    if faiss_available and not on_gpu and num_centers * dimension >= AUTO_HNSW_MIN_SIZE:
        return "faiss-hnsw"
    return "exact"


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


__all__ = ["pq", "SearchIndex", "ExactSearch", "exact_search", "get", "serialize", "load", "is_in_graph", "NAMES",
           "resolve", "AUTO_HNSW_MIN_SIZE"]
