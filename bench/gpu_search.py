"""Neighbour search on a GPU: keras-nngk's faiss backend on the GPU against the exact product, up to 1M x 512.

    python bench/gpu_search.py --embeddings embeddings.npz --json gpu_search.json     # on a CUDA machine
    python bench/gpu_search.py --write-embeddings embeddings.npz                      # here, with TensorFlow

Written for machines where TensorFlow cannot be installed but faiss-gpu can (bench/gpu.sh's offline mode): it needs
numpy and faiss, and loads keras-nngk's `FaissIndex` from its files without importing the package (which imports
TensorFlow), so the rows marked `faiss-*` run the library's own GPU path (index_cpu_to_all_gpus, nprobe through
GpuParameterSpace, a trained quantizer kept across refreshes). The exact in-graph search (TensorFlow) is stood in for
by the same arithmetic in PyTorch when it is installed: squared norms minus twice the (batch, N) product, then
top-k, in float32 with TF32 off (`torch-exact`); `torch-bf16` does the product in bfloat16, keeps 4k candidates and
re-ranks them exactly in float32.

Centers: real embeddings (`--write-embeddings`: the networks of bench/search.py, trained one epoch on Fashion-MNIST,
60,000 training images at d = 64 and 128, 20,000 at d = 512; 256 test images as queries), carried in float16.
Larger N is reached by interpolating between a center and one of its 10 nearest neighbours at a uniform random
fraction, then renormalising: points stay on the data's manifold (random vectors make every index look bad).

Checks printed before the table: the GPU Flat index returns the CPU Flat index's neighbours (up to ties); an IVF
index rebuilt over the same vectors after `reset()` (trained quantizer reused) answers as the first build did; a
saved and reloaded GPU index answers as before.
"""

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
import types

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIMS_AND_SIZES = ((64, 60_000), (128, 60_000), (512, 20_000))


def write_embeddings(path):
    """Trains bench/search.py's networks and saves their embeddings (float16), as the GPU run reads them."""
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import search  # pylint: disable=g-import-not-at-top

    arrays = {}
    for dimension, size in DIMS_AND_SIZES:
        pools, queries = search.trained_embeddings(dimension, [60_000], 256)
        arrays[f"centers{dimension}"] = pools[60_000][:size].astype(np.float16)
        arrays[f"queries{dimension}"] = queries.astype(np.float16)
    np.savez(path, **arrays)


def load_faiss_index_class():
    """keras_nngk.search.faiss_index.FaissIndex, loaded without running keras_nngk/__init__.py (TensorFlow)."""
    for package in ("keras_nngk", "keras_nngk.utils", "keras_nngk.search"):
        module = types.ModuleType(package)
        module.__path__ = [os.path.join(ROOT, *package.split("."))]
        sys.modules.setdefault(package, module)
    for name in ("keras_nngk.utils.files", "keras_nngk.search.base", "keras_nngk.search.faiss_index"):
        spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, *name.split(".")) + ".py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        setattr(sys.modules[name.rsplit(".", 1)[0]], name.rsplit(".", 1)[1], module)
    return sys.modules["keras_nngk.search.faiss_index"].FaissIndex


def extend(base, size, rng, faiss):
    """`size` unit vectors: `base`, then interpolations between a base vector and one of its 10 nearest."""
    if size <= len(base):
        return base[:size].copy()
    index = faiss.IndexFlatL2(base.shape[1])
    index.add(base)
    _, neighbours = index.search(base, 11)
    extra = size - len(base)
    first = rng.integers(0, len(base), extra)
    second = neighbours[first, rng.integers(1, 11, extra)]
    fraction = rng.random((extra, 1), dtype=np.float32)
    points = base[first] + fraction * (base[second] - base[first])
    points /= np.linalg.norm(points, axis=1, keepdims=True) + 1e-12
    return np.concatenate([base, points]).astype(np.float32)


def median_ms(function, repeats):
    """`kn.metrics.median_seconds` in ms, repeated here: this script runs where importing keras_nngk (TF) fails."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def faiss_variants(size, dimension):
    lists = "{nlist}"
    pq = dimension // 4 if dimension <= 128 else 64
    return {
        "faiss-flat (GPU)": {"factory": "Flat"},
        "faiss-ivf (GPU)": {"factory": f"IVF{lists},Flat", "nprobe": 16},
        "faiss-ivfpq (GPU)": {"factory": f"IVF{lists},PQ{pq}np", "nprobe": 16},
        "faiss-flat (CPU)": {"factory": "Flat", "use_gpu": False},
    }


def torch_search(torch, centers, queries, k, bf16=False):
    norms = (centers * centers).sum(1)
    if not bf16:
        scores = norms[None, :] - 2.0 * queries @ centers.T
        return torch.topk(scores, k, dim=1, largest=False).indices
    rough = norms[None, :] - 2.0 * (queries.bfloat16() @ centers.bfloat16().T).float()
    candidates = torch.topk(rough, 4 * k, dim=1, largest=False).indices
    exact = norms[candidates] - 2.0 * torch.einsum("bd,bcd->bc", queries, centers[candidates])
    order = torch.topk(exact, k, dim=1, largest=False).indices
    return torch.gather(candidates, 1, order)


def recall(ids, reference, k):
    return float(np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(ids, reference)]))


def checks(FaissIndex, faiss, centers, queries, k):
    """The GPU path against the CPU one; returns `[(name, passed, detail)]`."""
    results = []
    cpu, gpu = FaissIndex("Flat", use_gpu=False), FaissIndex("Flat")
    cpu.add(centers)
    gpu.add(centers)
    cpu_d, cpu_i = cpu.search(queries, k)
    gpu_d, gpu_i = gpu.search(queries, k)
    same = np.mean(cpu_i == gpu_i)
    # Where ids differ the distances must tie (faiss' own tests compare this way).
    tied = np.allclose(np.sort(cpu_d, 1), np.sort(gpu_d, 1), atol=1e-3)
    results.append(("GPU Flat = CPU Flat (ids, ties allowed)", bool(gpu.on_gpu and tied and same > 0.99),
                    f"on_gpu={gpu.on_gpu}, same id {same:.4f}, distances tie={tied}"))
    ivf = FaissIndex("IVF{nlist},Flat", nprobe=16)
    ivf.add(centers)
    first = ivf.search(queries, k)[1]
    trainings = ivf.trainings
    ivf.reset()
    ivf.add(centers)
    again = ivf.search(queries, k)[1]
    results.append(("IVF rebuilt after reset() reuses its training, same answers",
                    bool(ivf.trainings == trainings == 1 and np.array_equal(first, again)),
                    f"trainings {ivf.trainings}, same ids {np.mean(first == again):.4f}"))
    with tempfile.TemporaryDirectory() as directory:
        folder = os.path.join(directory, "index")
        ivf.save(folder)
        base = sys.modules["keras_nngk.search.base"]
        loaded = FaissIndex.from_config(base.read_saved_config(folder)["config"])
        loaded._restore(folder)  # What kn.search.load does, without importing the package.  # pylint: disable=protected-access
        reloaded = loaded.search(queries, k)[1]
        results.append(("saved GPU index reloads with the same answers",
                        bool(loaded.on_gpu and np.array_equal(first, reloaded)),
                        f"on_gpu={loaded.on_gpu}, same ids {np.mean(first == reloaded):.4f}"))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embeddings", help="npz written by --write-embeddings")
    parser.add_argument("--write-embeddings", help="train the networks and write their embeddings here, then stop")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 128, 512])
    parser.add_argument("-k", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.write_embeddings:
        write_embeddings(args.write_embeddings)
        return
    import faiss  # pylint: disable=g-import-not-at-top

    try:
        import torch  # pylint: disable=g-import-not-at-top

        torch.backends.cuda.matmul.allow_tf32 = False
        has_torch = torch.cuda.is_available()
    except ImportError:
        torch, has_torch = None, False
    FaissIndex = load_faiss_index_class()
    print(f"faiss {faiss.__version__}, GPUs seen by faiss: {faiss.get_num_gpus()}, CPU threads: "
          f"{faiss.omp_get_max_threads()}, torch: {torch.__version__ if torch else None}", flush=True)
    data = np.load(args.embeddings)
    rng = np.random.default_rng(0)
    rows = []
    checked = False
    for dimension in args.dims:
        base = data[f"centers{dimension}"].astype(np.float32)
        queries = data[f"queries{dimension}"].astype(np.float32)
        for size in args.sizes:
            centers = extend(base, size, rng, faiss)
            if not checked:
                for name, passed, detail in checks(FaissIndex, faiss, centers, queries, args.k):
                    print(f"CHECK {'PASS' if passed else 'FAIL'}: {name} ({detail})", flush=True)
                checked = True
            reference, floor = None, float("nan")
            if has_torch:
                c_gpu, q_gpu = torch.from_numpy(centers).cuda(), torch.from_numpy(queries).cuda()

                def product(c_gpu=c_gpu, q_gpu=q_gpu):
                    q_gpu @ c_gpu.T
                    torch.cuda.synchronize()

                floor = median_ms(product, args.repeats)
                for name, bf16 in (("torch-exact", False), ("torch-bf16", True)):
                    def run(bf16=bf16, c_gpu=c_gpu, q_gpu=q_gpu):
                        ids = torch_search(torch, c_gpu, q_gpu, args.k, bf16)
                        torch.cuda.synchronize()
                        return ids
                    ms = median_ms(run, args.repeats)
                    ids = run().cpu().numpy()
                    reference = ids if reference is None else reference
                    rows.append({"N": size, "d": dimension, "index": name, "ms": ms, "recall": recall(
                        ids, reference, args.k), "build_s": 0.0, "rebuild_s": 0.0, "floor_ms": floor})
                    print(rows[-1], flush=True)
                del c_gpu, q_gpu
                torch.cuda.empty_cache()
            for name, config in faiss_variants(size, dimension).items():
                index = FaissIndex(**config)
                start = time.perf_counter()
                index.add(centers)
                index.search(queries[:1], args.k)
                build = time.perf_counter() - start
                start = time.perf_counter()  # What a center refresh pays: same shape, trained quantizer kept.
                index.reset()
                index.add(centers)
                index.search(queries[:1], args.k)
                rebuild = time.perf_counter() - start
                ms = median_ms(lambda index=index, queries=queries: index.search(queries, args.k), args.repeats)
                ids = index.search(queries, args.k)[1]
                reference = ids if reference is None else reference
                rows.append({"N": size, "d": dimension, "index": name, "ms": ms, "recall": recall(
                    ids, reference, args.k), "build_s": build, "rebuild_s": rebuild, "floor_ms": floor,
                    "on_gpu": index.on_gpu})
                print(rows[-1], flush=True)
                del index
            if args.json:
                with open(args.json, "w") as handle:
                    json.dump(rows, handle, indent=1)
    print(f"\nbatch 256 queries, k = {args.k}, median of {args.repeats}; recall@k against the first exact row")
    print("| N | d | search | ms per batch | recall@k | build s | rebuild s | / product |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['N']} | {row['d']} | {row['index']} | {row['ms']:.2f} | {row['recall']:.4f} | "
              f"{row['build_s']:.2f} | {row['rebuild_s']:.2f} | {row['ms'] / row['floor_ms']:.2f} |")


if __name__ == "__main__":
    main()
