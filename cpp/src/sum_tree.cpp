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

constexpr std::size_t kLanes = SumTree::kDescentLanes;
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
  if (sum_[node] == value) return;
  sum_[node] = value;
  // An ancestor that comes out unchanged leaves everything above it unchanged too.
  bool sum_live = true;
  bool min_live = true;
  for (node >>= 1; node >= 1 && (sum_live || min_live); node >>= 1) {
    if (sum_live) sum_live = recompute_sum(node);
    if (min_live) min_live = recompute_min(node);
  }
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
  std::array<bool, kUpdateChunk> sum_live{};
  std::array<bool, kUpdateChunk> min_live{};
  for (std::size_t base = 0; base < n; base += kUpdateChunk) {
    const std::size_t m = std::min(kUpdateChunk, n - base);
    // All leaves first (in order, so a repeated index keeps its last value); then the ancestors, a level
    // at a time, so a level only reads children that are already final and the result equals m
    // sequential set() calls. Every node is recomputed from its children, so the order of work does not
    // change a single bit of the result.
    for (std::size_t k = 0; k < m; ++k) {
      const std::size_t leaf = leaves_ + static_cast<std::size_t>(indices[base + k]);
      const double v = values[base + k];
      const bool changed = sum_[leaf] != v;
      sum_[leaf] = v;
      node[k] = leaf;
      sum_live[k] = changed;
      min_live[k] = changed;
    }
    // Low levels: one walk per leaf. A walk stops carrying the sum (or the min) at the first ancestor
    // whose sum (or min) comes out unchanged: nothing above can change on its account, and any other
    // walk below carries its own change. Mins settle within a few levels; re-applying the same
    // priorities stops every walk at its leaf.
    // High levels: from the first height with at most m nodes up, recomputing every node of the level
    // in one dense pass (<= 2m nodes in all) is cheaper than m walks that share most of their nodes.
    std::size_t dense_from = 1;
    while (dense_from < depth_ && (leaves_ >> dense_from) > m) ++dense_from;
    bool any = false;
    for (std::size_t k = 0; k < m; ++k) any = any || sum_live[k];
    for (std::size_t height = 1; height < dense_from && any; ++height) {
      any = false;
      for (std::size_t k = 0; k < m; ++k) {
        if (!(sum_live[k] || min_live[k])) continue;
        const std::size_t p = node[k] >> 1;
        node[k] = p;
        if (sum_live[k]) sum_live[k] = recompute_sum(p);
        if (min_live[k]) min_live[k] = recompute_min(p);
        any = any || sum_live[k] || min_live[k];
      }
    }
    if (any) {
      for (std::size_t height = dense_from; height <= depth_; ++height) {
        const std::size_t lo = leaves_ >> height;
        for (std::size_t p = lo; p < 2 * lo; ++p) recompute(p);
      }
    }
  }
}

void SumTree::rebuild() noexcept {
  for (std::size_t p = leaves_ - 1; p >= 1; --p) recompute(p);
}

std::size_t SumTree::find_prefix(double mass) const noexcept {
  std::size_t node = 1;
  const double* s = sum_.data();
  for (std::size_t level = 0; level < depth_; ++level) node = descend(s, node, mass);
  return node - leaves_;
}

void SumTree::find_prefix_many(const double* masses, std::size_t n, std::int64_t* indices,
                               double* values) const noexcept {
  std::array<std::size_t, kLanes> node{};
  std::array<double, kLanes> mass{};
  const double* s = sum_.data();
  for (std::size_t base = 0; base < n; base += kLanes) {
    const std::size_t m = std::min(kLanes, n - base);
    // Always kLanes lanes (a short group is padded with mass 0, a valid descent whose result is
    // dropped), so the lane loop has a constant trip count and unrolls without branches.
    for (std::size_t k = 0; k < kLanes; ++k) {
      node[k] = 1;
      mass[k] = k < m ? masses[base + k] : 0.0;
    }
    for (std::size_t level = 0; level < depth_; ++level) {
      // The descent is branch-free, so nothing speculates ahead of the loads: prefetch, for each lane,
      // the line holding all 8 great-grandchildren of its node (8p..8p+7, 64-byte aligned), which is
      // the line this lane reads two levels further down.
      if (level + 3 <= depth_) {
        for (std::size_t k = 0; k < kLanes; ++k) prefetch_read(s + 8 * node[k]);
      }
      for (std::size_t k = 0; k < kLanes; ++k) node[k] = descend(s, node[k], mass[k]);
    }
    for (std::size_t k = 0; k < m; ++k) {
      if (indices != nullptr) indices[base + k] = static_cast<std::int64_t>(node[k] - leaves_);
      if (values != nullptr) values[base + k] = s[node[k]];
    }
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
