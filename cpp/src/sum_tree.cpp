#include "itp/sum_tree.hpp"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>

namespace itp {

namespace {

std::size_t round_up_pow2(std::size_t n) {
  std::size_t p = 2;
  while (p < n) p <<= 1;
  return p;
}

std::size_t log2_exact(std::size_t p) {
  std::size_t d = 0;
  while ((std::size_t{1} << d) < p) ++d;
  return d;
}

// Descents run in groups of this many lanes: each level issues kLanes independent loads, so the misses of
// one group overlap instead of queueing behind each other.
constexpr std::size_t kLanes = 16;
// set_many walks up in chunks of this many leaves (stack buffer).
constexpr std::size_t kUpdateChunk = 256;

}  // namespace

SumTree::SumTree(std::size_t capacity)
    : capacity_(capacity),
      leaves_(capacity >= 1 && capacity <= kMaxCapacity ? round_up_pow2(capacity) : 2),
      depth_(log2_exact(leaves_)),
      sum_(2 * leaves_),
      min_(leaves_) {
  if (capacity < 1 || capacity > kMaxCapacity) {
    throw std::invalid_argument("capacity must be in 1.." + std::to_string(kMaxCapacity) + ", got " +
                                std::to_string(capacity));
  }
}

double SumTree::min_positive() const noexcept {
  const double m = min_[1];
  return m == 0.0 ? std::numeric_limits<double>::infinity() : m;
}

void SumTree::set(std::size_t index, double value) noexcept {
  std::size_t node = leaves_ + index;
  sum_[node] = value;
  for (node >>= 1; node >= 1; node >>= 1) recompute(node);
}

void SumTree::set_range(std::size_t first, std::size_t count, double value) noexcept {
  if (count == 0) return;
  std::size_t lo = leaves_ + first;
  std::size_t hi = lo + count - 1;
  std::fill(sum_.data() + lo, sum_.data() + hi + 1, value);
  while (lo > 1) {
    lo >>= 1;
    hi >>= 1;
    for (std::size_t p = lo; p <= hi; ++p) recompute(p);
  }
}

void SumTree::set_many(const std::int64_t* indices, const double* values, std::size_t n) noexcept {
  std::array<std::size_t, kUpdateChunk> node{};
  for (std::size_t base = 0; base < n; base += kUpdateChunk) {
    const std::size_t m = std::min(kUpdateChunk, n - base);
    // All leaves first (in order, so a repeated index keeps its last value), then each level for every
    // walk: a level only reads children that are final, so the result equals m sequential set() calls.
    for (std::size_t k = 0; k < m; ++k) {
      node[k] = leaves_ + static_cast<std::size_t>(indices[base + k]);
      sum_[node[k]] = values[base + k];
    }
    for (std::size_t level = 0; level < depth_; ++level) {
      for (std::size_t k = 0; k < m; ++k) {
        node[k] >>= 1;
        recompute(node[k]);
      }
    }
  }
}

void SumTree::rebuild() noexcept {
  for (std::size_t p = leaves_ - 1; p >= 1; --p) recompute(p);
}

std::size_t SumTree::find_prefix(double mass) const noexcept {
  std::size_t node = 1;
  while (node < leaves_) {
    const std::size_t l = 2 * node;
    const double left = sum_[l];
    const bool right = !(mass < left) && sum_[l + 1] > 0.0;
    mass -= right ? left : 0.0;
    node = l + static_cast<std::size_t>(right);
  }
  return node - leaves_;
}

void SumTree::find_prefix_many(const double* masses, std::size_t n, std::int64_t* indices,
                               double* values) const noexcept {
  std::array<std::size_t, kLanes> node{};
  std::array<double, kLanes> mass{};
  const double* s = sum_.data();
  for (std::size_t base = 0; base < n; base += kLanes) {
    const std::size_t m = std::min(kLanes, n - base);
    for (std::size_t k = 0; k < m; ++k) {
      node[k] = 1;
      mass[k] = masses[base + k];
    }
    for (std::size_t level = 0; level < depth_; ++level) {
      for (std::size_t k = 0; k < m; ++k) {
        const std::size_t l = 2 * node[k];
        const double left = s[l];
        const bool right = !(mass[k] < left) && s[l + 1] > 0.0;
        mass[k] -= right ? left : 0.0;
        node[k] = l + static_cast<std::size_t>(right);
      }
    }
    for (std::size_t k = 0; k < m; ++k) {
      if (indices != nullptr) indices[base + k] = static_cast<std::int64_t>(node[k] - leaves_);
      if (values != nullptr) values[base + k] = s[node[k]];
    }
  }
}

void SumTree::sample_stratified(std::size_t batch, Xoshiro256& rng, std::int64_t* indices,
                                double* values) const noexcept {
  std::array<double, kLanes> masses{};
  const double segment = total() / static_cast<double>(batch);
  for (std::size_t base = 0; base < batch; base += kLanes) {
    const std::size_t m = std::min(kLanes, batch - base);
    for (std::size_t k = 0; k < m; ++k) {
      masses[k] = (static_cast<double>(base + k) + rng.uniform()) * segment;
    }
    find_prefix_many(masses.data(), m, indices + base, values != nullptr ? values + base : nullptr);
  }
}

bool SumTree::check_invariants() const noexcept {
  for (std::size_t p = 1; p < leaves_; ++p) {
    const std::size_t l = 2 * p;
    if (sum_[p] != sum_[l] + sum_[l + 1]) return false;
    const double m =
        l >= leaves_ ? min_nonzero(sum_[l], sum_[l + 1]) : min_nonzero(min_[l], min_[l + 1]);
    if (min_[p] != m) return false;
  }
  for (std::size_t i = capacity_; i < leaves_; ++i) {
    if (sum_[leaves_ + i] != 0.0) return false;
  }
  return true;
}

}  // namespace itp
