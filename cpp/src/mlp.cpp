#include "itp/mlp.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

namespace itp {

FusedMlp::FusedMlp(std::vector<DenseLayer> layers) : layers_(std::move(layers)) {
  if (layers_.empty()) throw std::invalid_argument("FusedMlp needs at least one layer");
  for (std::size_t k = 0; k < layers_.size(); ++k) {
    const DenseLayer& l = layers_[k];
    const std::string where = "layer " + std::to_string(k);
    if (l.in_dim == 0 || l.out_dim == 0 || l.in_dim > kMaxWidth || l.out_dim > kMaxWidth) {
      throw std::invalid_argument(where + ": dimensions must be in 1.." + std::to_string(kMaxWidth));
    }
    if (l.weight_t.size() != l.in_dim * l.out_dim || l.bias.size() != l.out_dim) {
      throw std::invalid_argument(where + ": weight/bias sizes do not match its dimensions");
    }
    if (k > 0 && layers_[k - 1].out_dim != l.in_dim) {
      throw std::invalid_argument(where + ": input width does not match the previous layer's output");
    }
    for (float w : l.weight_t) {
      if (!std::isfinite(w)) throw std::invalid_argument(where + ": weight is not finite");
    }
    for (float b : l.bias) {
      if (!std::isfinite(b)) throw std::invalid_argument(where + ": bias is not finite");
    }
  }
}

namespace {

// Outputs are computed in blocks of kBlock accumulators that stay in registers for the whole input
// loop (4 AVX registers), instead of loading and storing y[j] once per input element; every output still
// accumulates bias + x_0 w_0j + x_1 w_1j + ... in input order, so the result is bit-identical to the
// plain loop and across kernels.
constexpr std::size_t kBlock = 32;

// The kernel proper. Forced inline so that each target-specific wrapper below gets its own copy compiled
// for its instruction set (a plain call would run the baseline code in both).
__attribute__((always_inline)) inline void dense_relu(const DenseLayer& l, const float* __restrict in,
                                                      float* __restrict y, bool relu) {
  const std::size_t od = l.out_dim;
  const std::size_t id = l.in_dim;
  const float* __restrict w = l.weight_t.data();
  const float* __restrict b = l.bias.data();
  std::size_t j0 = 0;
  for (; j0 + kBlock <= od; j0 += kBlock) {
    float acc[kBlock];
    for (std::size_t k = 0; k < kBlock; ++k) acc[k] = b[j0 + k];
    for (std::size_t i = 0; i < id; ++i) {
      const float xi = in[i];
      const float* __restrict row = w + i * od + j0;
      for (std::size_t k = 0; k < kBlock; ++k) acc[k] += xi * row[k];
    }
    for (std::size_t k = 0; k < kBlock; ++k) y[j0 + k] = relu ? (acc[k] > 0.0f ? acc[k] : 0.0f) : acc[k];
  }
  for (std::size_t j = j0; j < od; ++j) {  // the tail (e.g. the 15 Q-values)
    float acc = b[j];
    for (std::size_t i = 0; i < id; ++i) acc += in[i] * w[i * od + j];
    y[j] = relu ? (acc > 0.0f ? acc : 0.0f) : acc;
  }
}

__attribute__((always_inline)) inline void forward_kernel(const std::vector<DenseLayer>& layers,
                                                          const float* x, float* q) {
  alignas(64) float buf_a[FusedMlp::kMaxWidth];
  alignas(64) float buf_b[FusedMlp::kMaxWidth];
  const float* in = x;
  float* out = buf_a;
  const std::size_t n = layers.size();
  for (std::size_t k = 0; k < n; ++k) {
    const bool last = k + 1 == n;
    float* y = last ? q : out;
    dense_relu(layers[k], in, y, !last);
    in = y;
    out = (out == buf_a) ? buf_b : buf_a;
  }
}

__attribute__((target("avx2"))) void forward_avx2(const std::vector<DenseLayer>& layers, const float* x,
                                                  float* q) {
  forward_kernel(layers, x, q);
}

void forward_baseline(const std::vector<DenseLayer>& layers, const float* x, float* q) {
  forward_kernel(layers, x, q);
}

bool cpu_has_avx2() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
  }();
  return has;
#else
  return false;
#endif
}

}  // namespace

void FusedMlp::forward(const float* x, float* q) const noexcept {
  if (cpu_has_avx2()) {
    forward_avx2(layers_, x, q);
  } else {
    forward_baseline(layers_, x, q);
  }
}

const char* FusedMlp::kernel_name() noexcept { return cpu_has_avx2() ? "avx2" : "baseline"; }

}  // namespace itp
