#!/usr/bin/env bash
# GPU benchmarks: faiss GPU indexes and TensorFlow on a GPU. Run on a machine with an NVIDIA GPU:
#
#     bash bench/gpu.sh                 # installs requirements-gpu.txt into a venv under /tmp, then runs everything
#     OUT=/some/dir bash bench/gpu.sh   # tables and JSON go to $OUT (default bench/gpu-results)
#     EMBEDDINGS=e.npz bash bench/gpu.sh  # offline mode (faiss-gpu importable, no TensorFlow): search only
#
# Never needed by the tests. Prints the same tables as the CPU runs, so bench/README.md can show both.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/gpu-results}"
mkdir -p "$OUT"
if ! python -c "import tensorflow" 2>/dev/null && python -c "import faiss; assert faiss.get_num_gpus() > 0" 2>/dev/null; then
  # Offline mode: a machine with faiss-gpu but no TensorFlow (nothing to install it from). Runs the search benchmark
  # that needs only numpy and faiss (torch, when present, for the exact product); the embeddings come from
  # `python bench/gpu_search.py --write-embeddings embeddings.npz` on a machine with TensorFlow.
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
  python bench/gpu_search.py --embeddings "${EMBEDDINGS:-embeddings.npz}" --json "$OUT/gpu_search.json" \
    | tee "$OUT/gpu_search.txt"
  echo "Results in $OUT (offline mode: no TensorFlow, so no training-step or memory tables)"
  exit 0
fi
if ! python -c "import faiss, tensorflow" 2>/dev/null || ! python -c "import faiss; assert faiss.get_num_gpus() > 0"; then
  python -m venv /tmp/keras-nngk-gpu
  # shellcheck disable=SC1091
  source /tmp/keras-nngk-gpu/bin/activate
  pip install -q -r requirements-gpu.txt
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python - <<'PY' | tee -a "$OUT/gpu.txt"
import faiss, tensorflow as tf
print("faiss GPUs:", faiss.get_num_gpus(), "| TF GPUs:", tf.config.list_physical_devices("GPU"))
assert faiss.get_num_gpus() > 0, "faiss sees no GPU: install faiss-gpu (requirements-gpu.txt)"
assert tf.config.list_physical_devices("GPU"), "TensorFlow sees no GPU"
PY
# 1. Search: exact in-graph (TF on the GPU) vs faiss indexes (moved to all GPUs by FaissIndex).
python bench/search.py --sizes 10000 100000 1000000 --dims 64 128 512 --repeats 10 --json "$OUT/search.json" \
  | tee "$OUT/search.txt"
# 2. Training step and center refresh at N = 6k and 60k (and 600k, where exact search starts to cost on a CPU).
python bench/train_step.py --sizes 6000 60000 600000 --rounds 15 | tee "$OUT/train_step.txt"
# 3. Memory per center and peak training memory.
python bench/memory.py --dims 64 512 | tee "$OUT/memory.txt"
python bench/plot_scaling.py "$OUT/search.json" --output "$OUT/scaling.png"
echo "Results in $OUT"
