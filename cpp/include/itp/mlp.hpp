// Fused forward pass of the Q-network on one state: a chain of dense layers with ReLU between them.
//
// The exported model is Gemm -> Relu -> Gemm -> Relu -> Gemm -> Relu -> Gemm (BatchNorm already folded into
// the following Gemm, dropout removed). For one state the network is ~28k multiply-adds and ~111 KiB of
// weights; ONNX Runtime spends more time in call overhead than in arithmetic, so we run it here:
//
//   y_0 = x;   y_{k+1} = relu(W_k y_k + b_k)  (no relu after the last layer)
//
// Weights are stored transposed ([in][out], row-major) so that each input element scales one contiguous
// row that is added to the output: an axpy the compiler vectorises without reassociating float sums (which
// keeps the result bit-identical between the baseline and the AVX2 kernels). The kernel is compiled twice,
// for baseline x86-64 and for x86-64-v3 (AVX2), and chosen once at run time from CPUID.
#pragma once

#include <cstddef>
#include <vector>

namespace itp {

struct DenseLayer {
  std::size_t in_dim = 0;
  std::size_t out_dim = 0;
  std::vector<float> weight_t;  // [in_dim][out_dim], row-major (W transposed)
  std::vector<float> bias;      // [out_dim]
};

class FusedMlp {
 public:
  // Largest layer width the stack scratch holds.
  static constexpr std::size_t kMaxWidth = 1024;
  // The kernels run on copies whose output widths are padded with zero columns to a multiple of kPad.
  static constexpr std::size_t kPad = 16;
  static constexpr std::size_t kMaxPaddedWidth = (kMaxWidth + kPad - 1) / kPad * kPad;

  // Takes ownership of the layers. Throws std::invalid_argument if the chain is empty, the dimensions do
  // not chain, a width exceeds kMaxWidth, or a weight is not finite.
  explicit FusedMlp(std::vector<DenseLayer> layers);

  // q[output_dim()] = network(x[input_dim()]). No allocation; const, so any number of threads may call it
  // at once. O(sum in*out).
  void forward(const float* x, float* q) const noexcept;

  // q[k] = network(x[k]) for n states: x is n rows of input_dim() floats, q n rows of output_dim(). Four
  // states go through each layer together, so every weight row loaded serves four of them (the single-state
  // kernel is bound by weight loads); each output still accumulates bias + x_0 w_0j + x_1 w_1j + ... in input
  // order, so every result is bit-identical to forward(). No allocation; thread-safe. O(n sum in*out).
  void forward_many(const float* x, std::size_t n, float* q) const noexcept;

  std::size_t input_dim() const noexcept { return layers_.front().in_dim; }
  std::size_t output_dim() const noexcept { return layers_.back().out_dim; }
  std::size_t num_layers() const noexcept { return layers_.size(); }
  const std::vector<DenseLayer>& layers() const noexcept { return layers_; }

  // "avx2" or "baseline": which kernel forward() runs on this CPU.
  static const char* kernel_name() noexcept;

 private:
  std::vector<DenseLayer> layers_;
  std::vector<DenseLayer> padded_;  // layers_ with out_dim padded to a multiple of kPad (zero columns)
};

}  // namespace itp
