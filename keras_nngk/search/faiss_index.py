"""FAISS backends (the only module that imports faiss): flat, HNSW, IVF or any factory string, CPU or GPU."""

import math
import os

import numpy as np
from absl import logging

from keras_nngk.search import base

_INDEX_FILE = "faiss.index"


def import_faiss():
    """Imports faiss lazily, with an install hint when it is missing."""
    try:
        import faiss  # pylint: disable=g-import-not-at-top
    except ImportError as error:
        raise ImportError("This search backend needs faiss: `pip install faiss-cpu` (or faiss-gpu-cu12 on a "
                          "CUDA machine), or use search='exact'.") from error
    return faiss


def default_num_lists(num_vectors):
    """IVF list count: about 4 sqrt(N), with at least 39 training points per list."""
    return int(max(1, min(4 * math.sqrt(num_vectors), num_vectors // 39)))


def _inner_index(index):
    """The factory-built index inside an optional IndexIDMap2 wrapper."""
    faiss = import_faiss()
    index = faiss.downcast_index(index)
    return faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index


class FaissIndex(base.SearchIndex):
    """Neighbour search with a FAISS index built from a factory string.

    The index is (re)built lazily at the first search after vectors change:
    vectors added to a built index are appended to it, removals use
    `remove_ids` where the index supports it and a rebuild otherwise (HNSW).
    Indexes that need training (IVF, PQ) are trained on the stored vectors at
    the first build; with `reuse_training` (default) a `reset()` keeps that
    training (the coarse quantizer's lists, PQ codebooks), so that rebuilding
    over new vectors of the same dimension, as a center refresh does, only
    assigns them to the trained lists: training an IVF quantizer takes seconds
    at 100,000 vectors, adding them a fraction of that. `retrain()` (or
    `reuse_training=False`) trains again at the next build. A network in
    training moves its embeddings away from those the quantizer was trained on,
    which piles them into few lists (slow, and a worse recall): a rebuild that
    reuses IVF lists retrains by itself when the lists' imbalance factor (faiss'
    `sum n_i^2 * nlist / N^2`, 1 when even) exceeds `retrain_imbalance` times the
    one right after training. On a
    machine where `faiss.get_num_gpus() > 0`, the index is copied to all GPUs
    (falling back to the CPU, with a log line, for index types FAISS cannot
    move there).

    Args:
        factory: a `faiss.index_factory` string, e.g. "Flat", "HNSW32",
            "IVF{nlist},Flat", "OPQ16,IVF{nlist},PQ16". `{nlist}` is replaced at
            build time by `default_num_lists(N)`.
        nprobe: IVF lists visited per query (default 16, at most nlist).
        ef_search: HNSW search breadth (default max(64, 2k)).
        use_gpu: True, False, or None for "when a GPU is present".
        reuse_training: keep the trained quantizer across `reset()` (see above).
        retrain_imbalance: retrain a reused IVF quantizer whose lists grew this much more uneven.

    Example:

    >>> index = FaissIndex("HNSW32")
    >>> index.add(vectors)
    >>> distances, ids = index.search(queries, k=32)
    """

    name = "faiss"

    def __init__(self, factory="Flat", nprobe=None, ef_search=None, use_gpu=None, reuse_training=True,
                 retrain_imbalance=2.0):
        super().__init__()
        faiss = import_faiss()
        if not isinstance(factory, str) or not factory:
            raise ValueError(f"`factory` must be a non-empty faiss index_factory string. Received: factory={factory!r}")
        try:  # Fail at construction, not at the first search, on a bad factory string. 960 is divisible by
            # every usual sub-quantizer count; a real mismatch with the data's dimension shows at build time.
            probe = faiss.index_factory(960, factory.replace("{nlist}", "1"), faiss.METRIC_L2)
        except RuntimeError as error:
            raise ValueError(f"faiss cannot build an index from factory={factory!r}: "
                             f"{str(error).strip().splitlines()[-1]}") from error
        self._inverted_lists = faiss.try_extract_index_ivf(probe) is not None
        self.factory = factory
        self.nprobe = nprobe
        self.ef_search = ef_search
        self.use_gpu = use_gpu
        self.reuse_training = bool(reuse_training)
        self.retrain_imbalance = float(retrain_imbalance)
        self._trained_imbalance = None
        self._index = None
        self._cpu_index = None
        self._num_lists = None
        self._trained = None  # An empty copy of the last trained index (IVF, PQ), reused by the next build.
        self.trainings = 0  # How many times an index was trained (builds that reused one do not count).

    @property
    def on_gpu(self):
        faiss = import_faiss()
        wanted = self.use_gpu if self.use_gpu is not None else faiss.get_num_gpus() > 0
        return bool(wanted) and faiss.get_num_gpus() > 0

    def _on_add(self, vectors, ids):
        if self._index is not None:
            self._index.add_with_ids(vectors, ids)

    def _on_remove(self, ids):
        if self._index is None:
            return
        try:
            self._index.remove_ids(np.asarray(ids, dtype=np.int64))
        except RuntimeError:  # e.g. HNSW has no removal: rebuild at the next search.
            self._index = None

    @property
    def updates_in_place(self):
        """Whether `update` moves vectors within the built index (an IVF index on the CPU: a removal and an addition
        per vector, about 5 us each at 60,000 x 64) rather than dropping it for a rebuild at the next search."""
        return self._inverted_lists and not self.on_gpu

    def _on_update(self, vectors, ids):
        if self._index is None:
            return
        if not self.updates_in_place:
            self._index = None  # Rebuilt from the stored vectors at the next search.
            return
        self._index.remove_ids(ids)
        self._index.add_with_ids(vectors, ids)

    def _on_reset(self):
        self._index = None

    def retrain(self):
        """Drops the kept training: the next build trains the index again on the vectors it then holds."""
        self._trained = None
        self._index = None

    def _build(self):
        faiss = import_faiss()
        template = self._trained
        if template is not None and self.reuse_training and template.d == self.dimension:
            index = faiss.clone_index(template)  # Trained, empty: only the vectors are added below.
            ivf = faiss.try_extract_index_ivf(index)
            self._num_lists = ivf.nlist if ivf is not None else default_num_lists(self.size)
            self._finish_build(index)
            imbalance = self._imbalance()
            if (imbalance is None or not self._trained_imbalance
                    or imbalance <= self.retrain_imbalance * self._trained_imbalance):
                return
            logging.info("faiss %s: the reused lists are %.1fx as uneven as after training; retraining.",
                         self.factory, imbalance / self._trained_imbalance)
            self._trained = None
        self._num_lists = default_num_lists(self.size)
        description = self.factory.replace("{nlist}", str(self._num_lists))
        index = faiss.index_factory(self.dimension, description, faiss.METRIC_L2)
        if not index.is_trained:
            try:
                index.train(self._vectors)
            except RuntimeError as error:  # faiss' message names a C++ function; say what to change.
                detail = str(error).split("Error: ")[-1].strip()
                raise ValueError(f"The faiss index {description!r} cannot be trained on {self.size} vectors "
                                 f"({detail}); store more centers or use search='exact' or 'faiss-flat'.") from None
            self.trainings += 1
            if self.reuse_training:
                self._trained = faiss.clone_index(index)
        self._finish_build(index)
        self._trained_imbalance = self._imbalance() if self._trained is not None else None

    def _imbalance(self):
        """The IVF lists' imbalance factor of the built index (None for other index types or no vectors)."""
        ivf = import_faiss().try_extract_index_ivf(_inner_index(self._cpu_index))
        if ivf is None or self.size == 0:
            return None
        return float(ivf.invlists.imbalance_factor())

    def _finish_build(self, index):
        faiss = import_faiss()
        if faiss.try_extract_index_ivf(index) is None:
            # Flat and graph indexes number vectors 0..n-1; IDMap2 maps them to our ids. (IVF lists store ids
            # themselves, and IDMap2's compacting removal would corrupt them.)
            index = faiss.IndexIDMap2(index)
        index.add_with_ids(self._vectors, self._ids)
        self._cpu_index = index
        self._index = self._to_device(index)

    def _to_device(self, index):
        if not self.on_gpu:
            return index
        faiss = import_faiss()
        try:
            return faiss.index_cpu_to_all_gpus(index)
        except RuntimeError as error:
            logging.warning("faiss index %r cannot move to the GPU (%s); searching on the CPU.", self.factory, error)
            return index

    def _set_search_parameters(self, k):
        faiss = import_faiss()
        nprobe = int(min(self.nprobe or 16, self._num_lists or 1))
        if self._index is not self._cpu_index:  # On the GPU: only IVF parameters apply.
            try:
                faiss.GpuParameterSpace().set_index_parameter(self._index, "nprobe", nprobe)
            except RuntimeError:
                pass
            return
        inner = _inner_index(self._index)
        ivf = faiss.try_extract_index_ivf(inner)
        if ivf is not None:
            ivf.nprobe = int(min(self.nprobe or 16, ivf.nlist))
        hnsw = getattr(inner, "hnsw", None)
        if hnsw is not None:
            hnsw.efSearch = int(self.ef_search or max(64, 2 * k))

    def _search(self, queries, k):
        if self._index is None:
            self._build()
        self._set_search_parameters(k)
        distances, ids = self._index.search(np.ascontiguousarray(queries), k)
        return distances, ids

    def get_config(self):
        return {"factory": self.factory, "nprobe": self.nprobe, "ef_search": self.ef_search, "use_gpu": self.use_gpu,
                "reuse_training": self.reuse_training, "retrain_imbalance": self.retrain_imbalance}

    def _save_extra(self, directory):
        if self.size == 0:
            return
        faiss = import_faiss()
        if self._index is None:
            self._build()
        index = self._index if self._index is self._cpu_index else faiss.index_gpu_to_cpu(self._index)
        faiss.write_index(index, os.path.join(directory, _INDEX_FILE))

    def _load_extra(self, directory):
        path = os.path.join(directory, _INDEX_FILE)
        if self.size == 0 or not os.path.exists(path):
            return
        faiss = import_faiss()
        try:
            index = faiss.read_index(path)
        except RuntimeError as error:
            raise ValueError(f"The saved faiss index {path!r} is corrupt or from an incompatible faiss: "
                             f"{str(error).strip().splitlines()[-1]}. Delete it to rebuild from vectors.npz."
                             ) from error
        if index.ntotal != self.size:
            raise ValueError(f"The saved faiss index {path!r} holds {index.ntotal} vectors but vectors.npz holds "
                             f"{self.size}; delete {_INDEX_FILE} to rebuild it.")
        ivf = faiss.try_extract_index_ivf(_inner_index(index))
        self._num_lists = ivf.nlist if ivf is not None else default_num_lists(self.size)
        self._cpu_index = index
        self._index = self._to_device(index)


def train_opq(vectors, num_subquantizers, bits=8, rotation=True):
    """Optimized Product Quantization (Ge et al. 2014) of `vectors` with faiss.

    Learns a rotation `A` (OPQMatrix; the identity when `rotation=False`: plain
    product quantization) and a product quantizer of `num_subquantizers`
    sub-vectors with `2**bits` centroids each on the rotated vectors.

    Returns:
        `(rotation (d, d), codebooks (M, 2**bits, d / M), codes (N, M) uint8)`, with
        `rotated = vectors @ rotation.T` and `vectors ~= decoded @ rotation`; one
        code per sub-quantizer (not packed), the nearest codebook entry.
    """
    faiss = import_faiss()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    num_vectors, dimension = vectors.shape
    if dimension % num_subquantizers:
        divisors = [m for m in range(1, dimension + 1) if dimension % m == 0]
        raise ValueError(f"pq_bytes={num_subquantizers} must divide the embedding dimension {dimension}; valid: "
                         f"{divisors}.")
    needed = 2 ** bits
    if num_vectors < needed:
        raise ValueError(f"Training {bits}-bit product-quantization codebooks needs at least {needed} centers; got "
                         f"{num_vectors}. Keep the float centers (no --pq_bytes) for so few.")
    if rotation:
        opq = faiss.OPQMatrix(dimension, num_subquantizers)
        opq.train(vectors)
        rotated = opq.apply_py(vectors)
        matrix = faiss.vector_to_array(opq.A).reshape(dimension, dimension)
    else:
        rotated, matrix = vectors, np.eye(dimension)
    quantizer = faiss.ProductQuantizer(dimension, num_subquantizers, bits)
    quantizer.train(rotated)
    sub_dimension = dimension // num_subquantizers
    codebooks = faiss.vector_to_array(quantizer.centroids).reshape(num_subquantizers, needed, sub_dimension)
    # Nearest entry per sub-vector, computed here: faiss packs codes of fewer than 8 bits.
    codes = np.empty((num_vectors, num_subquantizers), dtype=np.uint8)
    for m in range(num_subquantizers):
        pieces = rotated[:, m * sub_dimension:(m + 1) * sub_dimension]
        scores = (codebooks[m] ** 2).sum(1)[np.newaxis, :] - 2.0 * pieces @ codebooks[m].T
        codes[:, m] = np.argmin(scores, axis=1)
    return matrix.astype(np.float32), codebooks.astype(np.float32), codes
