// NngkTransposedTopK: the k largest scores 2 q.c + bias[c] of each query q over the columns c of a (d, N) variable,
// computed tile by tile and kept in a heap per query, without writing the (B, N) score matrix.
//
// A benchmark (bench/fused_search.py), not used by the library: what it would replace in a training step's exact
// search (keras_nngk/search/exact.py) is the product into a (B, N) matrix, its block maxima, two top_k, a gather
// and the copy of the centers that a read of a variable in copy-on-read mode makes (bench/README.md, "Training
// step"). The scores are the same float32 sums in another order, so neighbours can differ from TensorFlow's only
// between centers whose distances are equal to rounding.

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/resource_mgr.h"
#include "tensorflow/core/framework/resource_var.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/platform/blocking_counter.h"
#include "tensorflow/core/platform/threadpool.h"

namespace keras_nngk {
namespace {

using tensorflow::DEVICE_CPU;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::errors::InvalidArgument;

#ifndef NNGK_QB
#define NNGK_QB 8
#endif
#ifndef NNGK_NV
#define NNGK_NV 2
#endif
constexpr int kQueryBlock = NNGK_QB;  // Queries per micro-kernel.
constexpr int kVectors = NNGK_NV;     // Vectors of 16 columns per micro-kernel: kQueryBlock x kVectors accumulators.
constexpr int kColumnBlock = 16 * kVectors;
constexpr int kTile = 256;          // Columns packed at once: a (d, 256) panel, 64 KB at d = 64.

// The k best (score, column) of one query: a heap whose root is the worst kept (a lower score, or an equal score
// at a higher column: ties go to the lower column, as tf.math.top_k).
struct Best {
  int k = 0;
  int size = 0;
  float* scores = nullptr;
  int32_t* columns = nullptr;

  static bool Worse(float a, int32_t i, float b, int32_t j) { return a < b || (a == b && i > j); }
  float Threshold() const { return size < k ? -std::numeric_limits<float>::infinity() : scores[0]; }
  void Push(float score, int32_t column) {
    if (size < k) {
      int c = size++;
      scores[c] = score;
      columns[c] = column;
      while (c > 0) {
        int p = (c - 1) / 2;
        if (!Worse(scores[c], columns[c], scores[p], columns[p])) break;
        std::swap(scores[c], scores[p]);
        std::swap(columns[c], columns[p]);
        c = p;
      }
      return;
    }
    if (!Worse(scores[0], columns[0], score, column)) return;
    scores[0] = score;
    columns[0] = column;
    int c = 0;
    for (;;) {
      int l = 2 * c + 1, r = l + 1, m = c;
      if (l < k && Worse(scores[l], columns[l], scores[m], columns[m])) m = l;
      if (r < k && Worse(scores[r], columns[r], scores[m], columns[m])) m = r;
      if (m == c) break;
      std::swap(scores[c], scores[m]);
      std::swap(columns[c], columns[m]);
      c = m;
    }
  }
};

// Scans columns [begin, end) for every query. queries: (num_padded, d), rows past the real ones zero.
void Scan(const float* queries, int num_queries, int num_padded, int d, const float* transposed, int64_t num_columns,
          const float* bias, int64_t begin, int64_t end, Best* best) {
  std::vector<float> panel_store(static_cast<size_t>(d) * kTile + 16);
  float* panel = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(panel_store.data()) + 63) & ~uintptr_t{63});
  alignas(64) float tile_bias[kTile];
  alignas(64) float scores[16];
  const __m512 two = _mm512_set1_ps(2.0f);
  for (int64_t start = begin; start < end; start += kTile) {
    const int width = static_cast<int>(std::min<int64_t>(kTile, end - start));
    const int padded = (width + kColumnBlock - 1) / kColumnBlock * kColumnBlock;
    for (int i = 0; i < d; ++i) {
      float* row = panel + static_cast<size_t>(i) * kTile;
      std::memcpy(row, transposed + static_cast<size_t>(i) * num_columns + start, width * sizeof(float));
      std::fill(row + width, row + padded, 0.0f);
    }
    std::memcpy(tile_bias, bias + start, width * sizeof(float));
    std::fill(tile_bias + width, tile_bias + padded, -std::numeric_limits<float>::infinity());
    for (int q0 = 0; q0 < num_padded; q0 += kQueryBlock) {
      const float* block = queries + static_cast<size_t>(q0) * d;
      for (int c0 = 0; c0 < padded; c0 += kColumnBlock) {
        __m512 sums[kQueryBlock][kVectors];
        for (int a = 0; a < kQueryBlock; ++a) {
          for (int v = 0; v < kVectors; ++v) sums[a][v] = _mm512_setzero_ps();
        }
        const float* columns = panel + c0;
#pragma GCC unroll 4
        for (int i = 0; i < d; ++i) {
          __m512 row[kVectors];
#pragma GCC unroll 4
          for (int v = 0; v < kVectors; ++v) row[v] = _mm512_load_ps(columns + static_cast<size_t>(i) * kTile + 16 * v);
#pragma GCC unroll 16
          for (int a = 0; a < kQueryBlock; ++a) {
            const __m512 q = _mm512_set1_ps(block[static_cast<size_t>(a) * d + i]);
#pragma GCC unroll 4
            for (int v = 0; v < kVectors; ++v) sums[a][v] = _mm512_fmadd_ps(q, row[v], sums[a][v]);
          }
        }
        const int rows = std::min(kQueryBlock, num_queries - q0);
        for (int a = 0; a < rows; ++a) {
          Best& kept = best[q0 + a];
          for (int v = 0; v < kVectors; ++v) {
            const __m512 threshold = _mm512_set1_ps(kept.Threshold());
            const __m512 score = _mm512_fmadd_ps(two, sums[a][v], _mm512_load_ps(tile_bias + c0 + 16 * v));
            // >= keeps an equal score (an earlier column of another shard may tie); -inf never enters.
            uint32_t mask = _mm512_cmp_ps_mask(score, threshold, _CMP_GE_OQ);
            if (!mask) continue;
            _mm512_store_ps(scores, score);
            while (mask) {
              const int l = __builtin_ctz(mask);
              mask &= mask - 1;
              if (scores[l] > -std::numeric_limits<float>::infinity()) {
                kept.Push(scores[l], static_cast<int32_t>(start + c0 + 16 * v + l));
              }
            }
          }
        }
      }
    }
  }
}

class TransposedTopKOp : public OpKernel {
 public:
  explicit TransposedTopKOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("k", &k_));
    OP_REQUIRES(context, k_ >= 1, InvalidArgument("k must be at least 1, got ", k_));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& queries = context->input(0);
    const Tensor& bias = context->input(2);
    // The variable's own buffer, read under its lock: no copy, even in the copy-on-read mode that sparse writes
    // put it in (a ReadVariableOp would copy all of it).
    tensorflow::core::RefCountPtr<tensorflow::Var> variable;
    OP_REQUIRES_OK(context, tensorflow::LookupResource(context, tensorflow::HandleFromInput(context, 1), &variable));
    tensorflow::tf_shared_lock lock(*variable->mu());
    const Tensor& transposed = *variable->tensor();
    OP_REQUIRES(context, variable->is_initialized && transposed.dtype() == tensorflow::DT_FLOAT,
                InvalidArgument("the transposed centers must be an initialized float32 variable"));
    OP_REQUIRES(context, queries.dims() == 2 && bias.dims() == 1,
                InvalidArgument("expected queries (B, d) and bias (N,); got ", queries.shape().DebugString(), ", ",
                                bias.shape().DebugString()));
    const int num_queries = static_cast<int>(queries.dim_size(0));
    const int d = static_cast<int>(queries.dim_size(1));
    const int64_t num_columns = bias.dim_size(0);
    OP_REQUIRES(context, transposed.NumElements() == d * num_columns,
                InvalidArgument("queries of dimension ", d, " and a bias of ", num_columns,
                                " centers against a transposed variable of shape ", transposed.shape().DebugString()));
    Tensor* ids = nullptr;
    Tensor* top = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, TensorShape({num_queries, k_}), &ids));
    OP_REQUIRES_OK(context, context->allocate_output(1, TensorShape({num_queries, k_}), &top));
    auto ids_out = ids->matrix<int32_t>();
    auto top_out = top->matrix<float>();
    if (num_queries == 0) return;

    const int num_padded = (num_queries + kQueryBlock - 1) / kQueryBlock * kQueryBlock;
    std::vector<float> padded(static_cast<size_t>(num_padded) * d, 0.0f);
    std::memcpy(padded.data(), queries.flat<float>().data(), sizeof(float) * num_queries * d);

    auto* workers = context->device()->tensorflow_cpu_worker_threads()->workers;
    const int64_t tiles = (num_columns + kTile - 1) / kTile;
    const int shards = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(workers->NumThreads(), tiles)));
    std::vector<float> scores(static_cast<size_t>(shards) * num_queries * k_);
    std::vector<int32_t> columns(scores.size());
    std::vector<Best> best(static_cast<size_t>(shards) * num_queries);
    for (size_t b = 0; b < best.size(); ++b) {
      best[b].k = k_;
      best[b].scores = scores.data() + b * k_;
      best[b].columns = columns.data() + b * k_;
    }
    const float* transposed_data = transposed.flat<float>().data();
    const float* bias_data = bias.flat<float>().data();
    tensorflow::BlockingCounter done(shards);
    for (int s = 0; s < shards; ++s) {
      const int64_t begin = tiles * s / shards * kTile;
      const int64_t end = std::min<int64_t>(num_columns, tiles * (s + 1) / shards * kTile);
      auto work = [&, s, begin, end] {
        Scan(padded.data(), num_queries, num_padded, d, transposed_data, num_columns, bias_data, begin, end,
             best.data() + static_cast<size_t>(s) * num_queries);
        done.DecrementCount();
      };
      if (s + 1 == shards) {
        work();  // The calling thread takes the last shard.
      } else {
        workers->Schedule(work);
      }
    }
    done.Wait();

    std::vector<std::pair<float, int32_t>> merged;
    for (int q = 0; q < num_queries; ++q) {
      merged.clear();
      for (int s = 0; s < shards; ++s) {
        const Best& kept = best[static_cast<size_t>(s) * num_queries + q];
        for (int j = 0; j < kept.size; ++j) merged.emplace_back(kept.scores[j], kept.columns[j]);
      }
      const int found = std::min<int>(k_, static_cast<int>(merged.size()));
      std::partial_sort(merged.begin(), merged.begin() + found, merged.end(), [](const auto& a, const auto& b) {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
      });
      for (int j = 0; j < k_; ++j) {
        ids_out(q, j) = j < found ? merged[j].second : -1;
        top_out(q, j) = j < found ? merged[j].first : -std::numeric_limits<float>::infinity();
      }
    }
  }

 private:
  int k_;
};

REGISTER_OP("NngkTransposedTopK")
    .Input("queries: float")
    .Input("transposed_centers: resource")
    .Input("bias: float")
    .Attr("k: int >= 1")
    .Output("ids: int32")
    .Output("scores: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      int k;
      TF_RETURN_IF_ERROR(c->GetAttr("k", &k));
      auto out = c->Matrix(c->Dim(c->input(0), 0), k);
      c->set_output(0, out);
      c->set_output(1, out);
      return tensorflow::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("NngkTransposedTopK").Device(DEVICE_CPU), TransposedTopKOp);

}  // namespace
}  // namespace keras_nngk
