// Prioritized experience replay with columnar storage (pybind-free).
//
// Storage: one array per field, `capacity` rows each (states f32[C,20], actions i32[C], rewards f32[C],
// next_states f32[C,20], dones u8[C], generations u64[C]), written in ring order: slot = cursor, then
// cursor = (cursor + 1) mod C, overwriting the oldest slot once full. Arrays are calloc'd, so untouched
// rows cost no memory. bytes_per_transition = 177 column bytes + 24 L / C tree bytes (L = leaf count).
//
// Priorities (Schaul et al. 2016, proportional variant):
//   p_i  = clamp((|delta_i| + epsilon)^alpha, kMinPriority)        stored in the sum tree leaf of slot i
//   P(i) = p_i / sum_k p_k                                          sampling probability
//   w_i  = (N * P(i))^-beta / max_j (N * P(j))^-beta = (p_min / p_i)^beta
// with N = size and p_min the smallest stored priority, read from the min tree: the weights are normalised
// by the GLOBAL maximum weight (so w_i is in (0, 1] and does not depend on which batch was drawn), not by
// the batch maximum. A new transition gets max_priority, the running maximum of every priority assigned so
// far (starts at 1, never decreases), so it is replayed soon. Sampling is stratified (see sum_tree.hpp).
// Uniform mode (prioritized = false): slots drawn uniformly with replacement, floor(U * N), weights 1;
// priorities are still tracked so update_priorities behaves identically.
//
// Generations: generation[i] counts the writes to slot i (first write -> 1). sample() returns it with each
// index; update_priorities(..., generations) skips every entry whose slot has been overwritten since
// (generation differs), counts it in stale_updates and applies the others.
//
// Concurrency contract: one std::mutex per buffer serialises every method; each call is atomic with
// respect to every other, so any number of threads may call any method. No method calls back into the
// caller while holding the lock.
//
// Errors: methods that take caller data check it before changing anything and throw std::invalid_argument
// naming the argument and value, leaving the buffer untouched.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <vector>

#include "itp/ring.hpp"
#include "itp/state.hpp"
#include "itp/sum_tree.hpp"

namespace itp {

struct ReplayConfig {
  std::size_t capacity = 0;   // 1..kMaxReplayCapacity slots
  double alpha = 0.6;         // priority exponent, finite, >= 0
  double epsilon = 1e-6;      // added to |delta|, finite, >= 0
  bool prioritized = true;    // false: uniform sampling, weights 1
  std::uint64_t seed = 0;     // RNG seed (xoshiro256** via splitmix64)
};

inline constexpr std::size_t kMaxReplayCapacity = std::size_t{1} << 30;
// Priorities are clamped up to kMinPriority (so every stored item stays sampleable and p_min > 0) and
// rejected above kMaxPriority (so the float64 total of up to 2^30 items cannot overflow).
inline constexpr double kMinPriority = 1e-150;
inline constexpr double kMaxPriority = 1e150;

// Columnar input rows (row-major, n rows each); `dones` holds 0 or 1 as float.
struct TransitionColumns {
  const float* states = nullptr;       // [n, 20]
  const std::int64_t* actions = nullptr;  // [n], 0..14
  const float* rewards = nullptr;      // [n]
  const float* next_states = nullptr;  // [n, 20]
  const float* dones = nullptr;        // [n], 0 or 1
};

// Caller-owned output buffers of at least `batch` rows each.
struct SampleOutput {
  float* states = nullptr;             // [B, 20]
  std::int64_t* actions = nullptr;     // [B]
  float* rewards = nullptr;            // [B]
  float* next_states = nullptr;        // [B, 20]
  float* dones = nullptr;              // [B], 0.0 or 1.0
  float* weights = nullptr;            // [B], importance weights in (0, 1]
  std::int64_t* indices = nullptr;     // [B], slots
  std::uint64_t* generations = nullptr;  // [B]
};

// Everything save/load needs, rows [0, size) in slot order.
struct ReplaySnapshot {
  ReplayConfig config;
  std::size_t size = 0;
  std::size_t cursor = 0;
  double max_priority = 1.0;
  std::uint64_t stale_updates = 0;
  Xoshiro256::State rng_state{};
  std::vector<float> states, next_states, rewards;
  std::vector<std::int32_t> actions;
  std::vector<std::uint8_t> dones;
  std::vector<double> priorities;
  std::vector<std::uint64_t> generations;
};

class PrioritizedReplay {
 public:
  // Throws std::invalid_argument naming a bad field of `config`, std::bad_alloc if memory runs out.
  explicit PrioritizedReplay(const ReplayConfig& config);
  // Rebuilds a buffer from a snapshot; validates every field and value (std::invalid_argument).
  explicit PrioritizedReplay(const ReplaySnapshot& snapshot);

  PrioritizedReplay(const PrioritizedReplay&) = delete;
  PrioritizedReplay& operator=(const PrioritizedReplay&) = delete;

  // Read-only configuration (no lock needed: fixed at construction).
  std::size_t capacity() const noexcept { return config_.capacity; }
  double alpha() const noexcept { return config_.alpha; }
  double epsilon() const noexcept { return config_.epsilon; }
  bool prioritized() const noexcept { return config_.prioritized; }
  std::uint64_t seed() const noexcept { return config_.seed; }
  std::size_t bytes_per_transition() const noexcept;

  // Locked snapshots of the mutable state.
  std::size_t size() const;
  std::size_t cursor() const;
  double max_priority() const;
  double total_priority() const;
  double min_priority() const;  // smallest stored priority; +inf when empty
  std::uint64_t stale_updates() const;
  std::uint64_t rejected_records() const;

  // Stores one validated transition (is_valid_record) with priority max_priority; returns its slot.
  // O(log C).
  std::size_t add(const TransitionRecord& record);
  // Like add(), but returns nullopt at once if another call holds the lock (lets a binding release the
  // GIL only when it would have to wait).
  std::optional<std::size_t> try_add(const TransitionRecord& record);
  // Stores n validated rows in order (validated by the caller: finite, actions 0..14, dones 0/1); returns
  // the slot of the first. O(n + log C) per contiguous run of slots.
  std::size_t add_batch(const TransitionColumns& rows, std::size_t n);
  // Stores the valid records of records[0..n) in order; invalid ones (is_valid_record false) are skipped
  // and counted in rejected_records. Returns how many were stored. Never throws. O(n + log C) per
  // contiguous run of slots (the same tree as n add() calls).
  std::size_t add_records(const TransitionRecord* records, std::size_t n) noexcept;

  // Draws `batch` transitions (1..size) into `out` with importance weights for beta in [0, 1].
  // O(batch log C). Throws std::invalid_argument (nothing changes, the RNG does not advance).
  void sample(std::size_t batch, double beta, const SampleOutput& out);

  // Sets p = clamp((|td_errors[k]| + epsilon)^alpha) for slot indices[k], k in order (a repeated index
  // keeps the last). With generations (non-null), entries whose slot generation differs are skipped and
  // counted in stale_updates. Returns the number applied. Throws std::invalid_argument, changing nothing,
  // if an index is outside [0, size), a td error is NaN or infinite, or a priority exceeds kMaxPriority.
  // O(n log C).
  template <typename Td>
  std::size_t update_priorities(const std::int64_t* indices, const Td* td_errors,
                                const std::uint64_t* generations, std::size_t n);

  // Priorities of the given slots (checked against size). For tests and diagnostics.
  void get_priorities(const std::int64_t* indices, std::size_t n, double* out) const;
  // Consistent copy of everything save() needs, taken under the lock. O(size).
  ReplaySnapshot snapshot() const;
  // True when the tree's internal nodes match its leaves exactly and every slot < size has a positive
  // leaf. O(C).
  bool check_invariants() const;

 private:
  double priority_of(double td_abs) const noexcept;
  void write_row(std::size_t slot, const TransitionRecord& record) noexcept;
  std::size_t advance_one() noexcept;
  // Cache hints for every line slot's row touches in the gather (no effect on results).
  void prefetch_row(std::size_t slot) const noexcept;
  std::size_t add_locked(const TransitionRecord& record) noexcept;

  ReplayConfig config_;
  mutable std::mutex mutex_;
  std::size_t size_ = 0;
  std::size_t cursor_ = 0;
  double max_priority_ = 1.0;
  std::uint64_t stale_updates_ = 0;
  std::uint64_t rejected_records_ = 0;
  Xoshiro256 rng_;
  ZeroedArray<float> states_;
  ZeroedArray<float> next_states_;
  ZeroedArray<float> rewards_;
  ZeroedArray<std::int32_t> actions_;
  ZeroedArray<std::uint8_t> dones_;
  ZeroedArray<std::uint64_t> generations_;
  SumTree tree_;
  // Scratch reused under the lock (no allocation per call once grown).
  std::vector<double> scratch_priorities_;
  std::vector<std::int64_t> scratch_indices_;
};

extern template std::size_t PrioritizedReplay::update_priorities<float>(const std::int64_t*, const float*,
                                                                        const std::uint64_t*, std::size_t);
extern template std::size_t PrioritizedReplay::update_priorities<double>(const std::int64_t*,
                                                                         const double*,
                                                                         const std::uint64_t*, std::size_t);

}  // namespace itp
