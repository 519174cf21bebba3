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
  // Kernel copies with every output width padded to a multiple of kPad by zero columns: the kernels then
  // have no scalar tail (the 15 Q-values of the last layer were a serial chain of dependent adds that cost
  // as much as the three other layers together). A padded column computes relu(0) = 0 (or 0 in the last
  // layer) and is never read: the next layer's in_dim stays the real width, and forward() copies only the
  // real outputs. Real outputs keep their operation order, so their bits do not change.
  padded_.reserve(layers_.size());
  for (const DenseLayer& l : layers_) {
    DenseLayer p;
    p.in_dim = l.in_dim;
    p.out_dim = (l.out_dim + kPad - 1) / kPad * kPad;
    p.weight_t.assign(p.in_dim * p.out_dim, 0.0f);
    p.bias.assign(p.out_dim, 0.0f);
    for (std::size_t i = 0; i < l.in_dim; ++i) {
      std::copy_n(l.weight_t.begin() + static_cast<std::ptrdiff_t>(i * l.out_dim), l.out_dim,
                  p.weight_t.begin() + static_cast<std::ptrdiff_t>(i * p.out_dim));
    }
    std::copy(l.bias.begin(), l.bias.end(), p.bias.begin());
    padded_.push_back(std::move(p));
  }
}

namespace {

// Outputs are computed in blocks of kBlock accumulators that stay in registers for the whole input
// loop (4 AVX registers), instead of loading and storing y[j] once per input element; every output still
// accumulates bias + x_0 w_0j + x_1 w_1j + ... in input order, so the result is bit-identical to the
// plain loop and across kernels.
constexpr std::size_t kBlock = 32;
constexpr std::size_t kHalfBlock = 16;
static_assert(FusedMlp::kPad % kHalfBlock == 0, "padded widths must be whole 16-wide blocks");

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
  for (; j0 + kHalfBlock <= od; j0 += kHalfBlock) {  // padded widths: at most one block of 16 is left
    float acc[kHalfBlock];
    for (std::size_t k = 0; k < kHalfBlock; ++k) acc[k] = b[j0 + k];
    for (std::size_t i = 0; i < id; ++i) {
      const float xi = in[i];
      const float* __restrict row = w + i * od + j0;
      for (std::size_t k = 0; k < kHalfBlock; ++k) acc[k] += xi * row[k];
    }
    for (std::size_t k = 0; k < kHalfBlock; ++k) y[j0 + k] = relu ? (acc[k] > 0.0f ? acc[k] : 0.0f) : acc[k];
  }
  for (std::size_t j = j0; j < od; ++j) {  // unpadded widths only (padded layers end above)
    float acc = b[j];
    for (std::size_t i = 0; i < id; ++i) acc += in[i] * w[i * od + j];
    y[j] = relu ? (acc > 0.0f ? acc : 0.0f) : acc;
  }
}

__attribute__((always_inline)) inline void forward_kernel(const std::vector<DenseLayer>& layers,
                                                          const float* x, float* q, std::size_t q_dim) {
  alignas(64) float buf_a[FusedMlp::kMaxPaddedWidth];
  alignas(64) float buf_b[FusedMlp::kMaxPaddedWidth];
  const float* in = x;
  float* out = buf_a;
  const std::size_t n = layers.size();
  for (std::size_t k = 0; k < n; ++k) {
    const bool last = k + 1 == n;
    dense_relu(layers[k], in, out, !last);
    in = out;
    out = (out == buf_a) ? buf_b : buf_a;
  }
  std::copy_n(in, q_dim, q);
}

// Four states at once: 16-wide output blocks keep 4 x 16 accumulators (8 AVX registers) live across the
// input loop, leaving room for the weight row and the broadcasts. Same operation order per output as
// dense_relu, hence the same bits.
constexpr std::size_t kGroup = 4;
constexpr std::size_t kBlock4 = 16;

__attribute__((always_inline)) inline void dense_relu4(const DenseLayer& l, const float* const* in, float* const* y,
                                                       bool relu) {
  const std::size_t od = l.out_dim;
  const std::size_t id = l.in_dim;
  const float* __restrict w = l.weight_t.data();
  const float* __restrict b = l.bias.data();
  const float* __restrict in0 = in[0];
  const float* __restrict in1 = in[1];
  const float* __restrict in2 = in[2];
  const float* __restrict in3 = in[3];
  std::size_t j0 = 0;
  for (; j0 + kBlock4 <= od; j0 += kBlock4) {
    float a0[kBlock4], a1[kBlock4], a2[kBlock4], a3[kBlock4];
    for (std::size_t k = 0; k < kBlock4; ++k) a0[k] = a1[k] = a2[k] = a3[k] = b[j0 + k];
    for (std::size_t i = 0; i < id; ++i) {
      const float* __restrict row = w + i * od + j0;
      const float x0 = in0[i], x1 = in1[i], x2 = in2[i], x3 = in3[i];
      for (std::size_t k = 0; k < kBlock4; ++k) {
        const float r = row[k];
        a0[k] += x0 * r;
        a1[k] += x1 * r;
        a2[k] += x2 * r;
        a3[k] += x3 * r;
      }
    }
    float* accs[kGroup] = {a0, a1, a2, a3};
    for (std::size_t s = 0; s < kGroup; ++s) {
      for (std::size_t k = 0; k < kBlock4; ++k) {
        const float v = accs[s][k];
        y[s][j0 + k] = relu ? (v > 0.0f ? v : 0.0f) : v;
      }
    }
  }
  for (std::size_t s = 0; s < kGroup; ++s) {  // the tail (e.g. the 15 Q-values)
    for (std::size_t j = j0; j < od; ++j) {
      float acc = b[j];
      for (std::size_t i = 0; i < id; ++i) acc += in[s][i] * w[i * od + j];
      y[s][j] = relu ? (acc > 0.0f ? acc : 0.0f) : acc;
    }
  }
}

__attribute__((always_inline)) inline void forward4_kernel(const std::vector<DenseLayer>& layers,
                                                           const float* const* x, float* const* q,
                                                           std::size_t q_dim) {
  alignas(64) float buf_a[kGroup][FusedMlp::kMaxPaddedWidth];
  alignas(64) float buf_b[kGroup][FusedMlp::kMaxPaddedWidth];
  const float* in[kGroup] = {x[0], x[1], x[2], x[3]};
  float* out[kGroup];
  bool to_a = true;
  const std::size_t n = layers.size();
  for (std::size_t k = 0; k < n; ++k) {
    const bool last = k + 1 == n;
    for (std::size_t s = 0; s < kGroup; ++s) out[s] = to_a ? buf_a[s] : buf_b[s];
    dense_relu4(layers[k], in, out, !last);
    for (std::size_t s = 0; s < kGroup; ++s) in[s] = out[s];
    to_a = !to_a;
  }
  for (std::size_t s = 0; s < kGroup; ++s) std::copy_n(in[s], q_dim, q[s]);
}

__attribute__((target("avx2"))) void forward4_avx2(const std::vector<DenseLayer>& layers, const float* const* x,
                                                   float* const* q, std::size_t q_dim) {
  forward4_kernel(layers, x, q, q_dim);
}

void forward4_baseline(const std::vector<DenseLayer>& layers, const float* const* x, float* const* q,
                       std::size_t q_dim) {
  forward4_kernel(layers, x, q, q_dim);
}

__attribute__((target("avx2"))) void forward_avx2(const std::vector<DenseLayer>& layers, const float* x,
                                                  float* q, std::size_t q_dim) {
  forward_kernel(layers, x, q, q_dim);
}

void forward_baseline(const std::vector<DenseLayer>& layers, const float* x, float* q, std::size_t q_dim) {
  forward_kernel(layers, x, q, q_dim);
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
    forward_avx2(padded_, x, q, output_dim());
  } else {
    forward_baseline(padded_, x, q, output_dim());
  }
}

void FusedMlp::forward_many(const float* x, std::size_t n, float* q) const noexcept {
  const std::size_t id = input_dim();
  const std::size_t od = output_dim();
  std::size_t k = 0;
  for (; k + kGroup <= n; k += kGroup) {
    const float* xs[kGroup] = {x + k * id, x + (k + 1) * id, x + (k + 2) * id, x + (k + 3) * id};
    float* qs[kGroup] = {q + k * od, q + (k + 1) * od, q + (k + 2) * od, q + (k + 3) * od};
    if (cpu_has_avx2()) {
      forward4_avx2(padded_, xs, qs, od);
    } else {
      forward4_baseline(padded_, xs, qs, od);
    }
  }
  for (; k < n; ++k) forward(x + k * id, q + k * od);
}

const char* FusedMlp::kernel_name() noexcept { return cpu_has_avx2() ? "avx2" : "baseline"; }

}  // namespace itp
