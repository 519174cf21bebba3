#include "itp/replay.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <string>

namespace itp {

namespace {

constexpr std::size_t kF = kNumFeatures;
// Rows are prefetched this many samples ahead of the copy, so their cache misses overlap.
constexpr std::size_t kPrefetchDistance = 8;

template <typename T>
std::string str(const T& x) {
  std::ostringstream os;
  os << x;
  return os.str();
}

[[noreturn]] void fail(const std::string& message) { throw std::invalid_argument(message); }

void check_config(const ReplayConfig& c) {
  if (c.capacity < 1 || c.capacity > kMaxReplayCapacity) {
    fail("capacity must be in 1.." + str(kMaxReplayCapacity) + ", got " + str(c.capacity));
  }
  if (!std::isfinite(c.alpha) || c.alpha < 0.0) fail("alpha must be finite and >= 0, got " + str(c.alpha));
  if (!std::isfinite(c.epsilon) || c.epsilon < 0.0) {
    fail("epsilon must be finite and >= 0, got " + str(c.epsilon));
  }
}

}  // namespace

PrioritizedReplay::PrioritizedReplay(const ReplayConfig& config)
    : config_((check_config(config), config)),
      rng_(config.seed),
      states_(config.capacity * kF),
      next_states_(config.capacity * kF),
      rewards_(config.capacity),
      actions_(config.capacity),
      dones_(config.capacity),
      generations_(config.capacity),
      tree_(config.capacity) {}

PrioritizedReplay::PrioritizedReplay(const ReplaySnapshot& s) : PrioritizedReplay(s.config) {
  const std::size_t n = s.size;
  const std::size_t cap = s.config.capacity;
  if (n > cap) fail("size must be <= capacity " + str(cap) + ", got " + str(n));
  if (n < cap ? s.cursor != n : s.cursor >= cap) {
    fail("cursor must be " + (n < cap ? str(n) + " (size) while not full" : "< capacity " + str(cap)) +
         ", got " + str(s.cursor));
  }
  auto check_len = [](const char* name, std::size_t got, std::size_t want) {
    if (got != want) fail(std::string(name) + " must hold " + str(want) + " values, got " + str(got));
  };
  check_len("states", s.states.size(), n * kF);
  check_len("next_states", s.next_states.size(), n * kF);
  check_len("rewards", s.rewards.size(), n);
  check_len("actions", s.actions.size(), n);
  check_len("dones", s.dones.size(), n);
  check_len("priorities", s.priorities.size(), n);
  check_len("generations", s.generations.size(), n);
  if (!(s.max_priority >= kMinPriority && s.max_priority <= kMaxPriority)) {
    fail("max_priority must be in [1e-150, 1e150], got " + str(s.max_priority));
  }
  if (s.rng_state == Xoshiro256::State{}) fail("rng_state must not be all zero");
  for (std::size_t i = 0; i < n * kF; ++i) {
    if (!std::isfinite(s.states[i])) fail("states[" + str(i / kF) + ", " + str(i % kF) + "] must be finite, got " + str(s.states[i]));
    if (!std::isfinite(s.next_states[i])) {
      fail("next_states[" + str(i / kF) + ", " + str(i % kF) + "] must be finite, got " + str(s.next_states[i]));
    }
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (!std::isfinite(s.rewards[i])) fail("rewards[" + str(i) + "] must be finite, got " + str(s.rewards[i]));
    if (s.actions[i] < 0 || s.actions[i] >= kNumActions) {
      fail("actions[" + str(i) + "] must be in 0..14, got " + str(s.actions[i]));
    }
    if (s.dones[i] > 1) fail("dones[" + str(i) + "] must be 0 or 1, got " + str(int{s.dones[i]}));
    const double p = s.priorities[i];
    if (!(p >= kMinPriority && p <= s.max_priority)) {
      fail("priorities[" + str(i) + "] must be in [1e-150, max_priority = " + str(s.max_priority) + "], got " + str(p));
    }
    if (s.generations[i] == 0) fail("generations[" + str(i) + "] must be >= 1 for a stored slot, got 0");
  }
  size_ = n;
  cursor_ = s.cursor;
  max_priority_ = s.max_priority;
  stale_updates_ = s.stale_updates;
  rng_.set_state(s.rng_state);
  std::copy(s.states.begin(), s.states.end(), states_.data());
  std::copy(s.next_states.begin(), s.next_states.end(), next_states_.data());
  std::copy(s.rewards.begin(), s.rewards.end(), rewards_.data());
  std::copy(s.actions.begin(), s.actions.end(), actions_.data());
  std::copy(s.dones.begin(), s.dones.end(), dones_.data());
  std::copy(s.generations.begin(), s.generations.end(), generations_.data());
  for (std::size_t i = 0; i < n; ++i) tree_.set_leaf_unpropagated(i, s.priorities[i]);
  tree_.rebuild();
}

std::size_t PrioritizedReplay::bytes_per_transition() const noexcept {
  const std::size_t column_bytes = 2 * kF * sizeof(float) + sizeof(float) + sizeof(std::int32_t) +
                                   sizeof(std::uint8_t) + sizeof(std::uint64_t);
  const std::size_t cap = config_.capacity;
  return column_bytes + (tree_.memory_bytes() + cap - 1) / cap;
}

std::size_t PrioritizedReplay::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return size_;
}
std::size_t PrioritizedReplay::cursor() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return cursor_;
}
double PrioritizedReplay::max_priority() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return max_priority_;
}
double PrioritizedReplay::total_priority() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return tree_.total();
}
double PrioritizedReplay::min_priority() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return tree_.min_positive();
}
std::uint64_t PrioritizedReplay::stale_updates() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stale_updates_;
}
std::uint64_t PrioritizedReplay::rejected_records() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return rejected_records_;
}

double PrioritizedReplay::priority_of(double td_abs) const noexcept {
  const double base = td_abs + config_.epsilon;
  // pow(x, 1) == x and pow(x, 0) == 1 exactly; skip the call for the two common exponents.
  const double p = config_.alpha == 1.0 ? base : (config_.alpha == 0.0 ? 1.0 : std::pow(base, config_.alpha));
  return p < kMinPriority ? kMinPriority : p;
}

void PrioritizedReplay::write_row(std::size_t slot, const TransitionRecord& r) noexcept {
  std::memcpy(states_.data() + slot * kF, r.state.data(), kF * sizeof(float));
  std::memcpy(next_states_.data() + slot * kF, r.next_state.data(), kF * sizeof(float));
  rewards_[slot] = r.reward;
  actions_[slot] = r.action;
  dones_[slot] = r.done;
  generations_[slot] += 1;
}

void PrioritizedReplay::prefetch_row(std::size_t slot) const noexcept {
  const std::size_t row = slot * kF;
  prefetch_read(states_.data() + row);
  prefetch_read(states_.data() + row + kF - 1);
  prefetch_read(next_states_.data() + row);
  prefetch_read(next_states_.data() + row + kF - 1);
  prefetch_read(actions_.data() + slot);
  prefetch_read(rewards_.data() + slot);
  prefetch_read(dones_.data() + slot);
  prefetch_read(generations_.data() + slot);
}

std::size_t PrioritizedReplay::advance_one() noexcept {
  const std::size_t slot = cursor_;
  cursor_ = slot + 1 == config_.capacity ? 0 : slot + 1;
  if (size_ < config_.capacity) ++size_;
  return slot;
}

std::size_t PrioritizedReplay::add_locked(const TransitionRecord& record) noexcept {
  const std::size_t slot = advance_one();
  write_row(slot, record);
  tree_.set(slot, max_priority_);
  return slot;
}

std::size_t PrioritizedReplay::add(const TransitionRecord& record) {
  std::lock_guard<std::mutex> lock(mutex_);
  return add_locked(record);
}

std::optional<std::size_t> PrioritizedReplay::try_add(const TransitionRecord& record) {
  std::unique_lock<std::mutex> lock(mutex_, std::try_to_lock);
  if (!lock.owns_lock()) return std::nullopt;
  return add_locked(record);
}

std::size_t PrioritizedReplay::add_batch(const TransitionColumns& rows, std::size_t n) {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::size_t first = cursor_;
  const std::size_t cap = config_.capacity;
  std::size_t r = 0;
  while (r < n) {
    // One contiguous run of slots [cursor_, cursor_ + run) per pass; a batch longer than the capacity
    // wraps and overwrites its own first rows, as sequential adds would.
    const std::size_t run = std::min(n - r, cap - cursor_);
    const std::size_t c = cursor_;
    std::memcpy(states_.data() + c * kF, rows.states + r * kF, run * kF * sizeof(float));
    std::memcpy(next_states_.data() + c * kF, rows.next_states + r * kF, run * kF * sizeof(float));
    std::memcpy(rewards_.data() + c, rows.rewards + r, run * sizeof(float));
    for (std::size_t k = 0; k < run; ++k) {
      actions_[c + k] = static_cast<std::int32_t>(rows.actions[r + k]);
      dones_[c + k] = rows.dones[r + k] != 0.0F ? 1 : 0;
      generations_[c + k] += 1;
    }
    tree_.set_range(c, run, max_priority_);
    cursor_ = c + run == cap ? 0 : c + run;
    size_ = std::min(cap, size_ + run);
    r += run;
  }
  return first;
}

std::size_t PrioritizedReplay::add_records(const TransitionRecord* records, std::size_t n) noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  // Rows are written one by one (an invalid record takes no slot), but the tree is updated once per
  // contiguous run of slots with set_range, O(run + log C), instead of an O(log C) walk per record.
  std::size_t stored = 0;
  std::size_t run_first = cursor_;
  std::size_t run_length = 0;
  for (std::size_t k = 0; k < n; ++k) {
    if (!is_valid_record(records[k])) {
      ++rejected_records_;
      continue;
    }
    const std::size_t slot = advance_one();
    if (run_length > 0 && slot == 0) {  // wrapped: flush the run that ended at the last slot
      tree_.set_range(run_first, run_length, max_priority_);
      run_length = 0;
    }
    if (run_length == 0) run_first = slot;
    write_row(slot, records[k]);
    ++run_length;
    ++stored;
  }
  if (run_length > 0) tree_.set_range(run_first, run_length, max_priority_);
  return stored;
}

void PrioritizedReplay::sample(std::size_t batch, double beta, const SampleOutput& out) {
  if (!(beta >= 0.0 && beta <= 1.0)) fail("beta must be in [0, 1], got " + str(beta));
  std::lock_guard<std::mutex> lock(mutex_);
  if (size_ == 0) fail("cannot sample from an empty replay buffer (size 0)");
  if (batch < 1 || batch > size_) {
    fail("batch_size must be in 1..size (" + str(size_) + "), got " + str(batch));
  }
  std::int64_t* idx = out.indices;
  if (config_.prioritized) {
    scratch_priorities_.resize(batch);
    double* p = scratch_priorities_.data();
    // Each group's rows are requested as soon as its descents finish, so the row misses (8 lines per
    // sample over the six columns) overlap the next group's descents instead of waiting for the gather.
    tree_.sample_stratified(batch, rng_, idx, p, [this](const std::int64_t* group, std::size_t m) noexcept {
      for (std::size_t k = 0; k < m; ++k) prefetch_row(static_cast<std::size_t>(group[k]));
    });
    // w_i = (p_min / p_i)^beta == (N P(i))^-beta / (N P_min)^-beta: normalised by the global max weight.
    const double p_min = tree_.min_positive();
    for (std::size_t b = 0; b < batch; ++b) {
      out.weights[b] = beta == 0.0 ? 1.0F : static_cast<float>(std::pow(p_min / p[b], beta));
    }
  } else {
    const double n = static_cast<double>(size_);
    for (std::size_t b = 0; b < batch; ++b) {
      const auto i = static_cast<std::size_t>(rng_.uniform() * n);
      idx[b] = static_cast<std::int64_t>(std::min(i, size_ - 1));
      out.weights[b] = 1.0F;
    }
  }
  const float* states = states_.data();
  const float* next_states = next_states_.data();
  for (std::size_t b = 0; b < batch; ++b) {
    if (!config_.prioritized && b + kPrefetchDistance < batch) {
      prefetch_row(static_cast<std::size_t>(idx[b + kPrefetchDistance]));
    }
    const auto slot = static_cast<std::size_t>(idx[b]);
    std::memcpy(out.states + b * kF, states + slot * kF, kF * sizeof(float));
    std::memcpy(out.next_states + b * kF, next_states + slot * kF, kF * sizeof(float));
    out.actions[b] = actions_[slot];
    out.rewards[b] = rewards_[slot];
    out.dones[b] = dones_[slot] != 0 ? 1.0F : 0.0F;
    out.generations[b] = generations_[slot];
  }
}

template <typename Td>
std::size_t PrioritizedReplay::update_priorities(const std::int64_t* indices, const Td* td_errors,
                                                 const std::uint64_t* generations, std::size_t n) {
  std::lock_guard<std::mutex> lock(mutex_);
  scratch_priorities_.resize(n);
  scratch_indices_.resize(n);
  double* p = scratch_priorities_.data();
  // Pass 1 validates everything and computes priorities; nothing changes if any entry is bad.
  for (std::size_t k = 0; k < n; ++k) {
    const std::int64_t i = indices[k];
    if (i < 0 || static_cast<std::size_t>(i) >= size_) {
      fail("indices[" + str(k) + "] = " + str(i) + " is out of range for size " + str(size_));
    }
    const auto td = static_cast<double>(td_errors[k]);
    if (!std::isfinite(td)) fail("td_errors[" + str(k) + "] must be finite, got " + str(td));
    p[k] = priority_of(std::fabs(td));
    if (!(p[k] <= kMaxPriority)) {
      fail("td_errors[" + str(k) + "] = " + str(td) + " gives priority (|td| + epsilon)^alpha = " +
           str(p[k]) + ", above the limit 1e150");
    }
  }
  // Pass 2 drops stale entries (compacting in place) and applies the rest.
  std::size_t applied = 0;
  double new_max = max_priority_;
  std::int64_t* live = scratch_indices_.data();
  for (std::size_t k = 0; k < n; ++k) {
    const auto slot = static_cast<std::size_t>(indices[k]);
    if (generations != nullptr && generations[k] != generations_[slot]) continue;
    live[applied] = indices[k];
    p[applied] = p[k];
    new_max = std::max(new_max, p[k]);
    ++applied;
  }
  tree_.set_many(live, p, applied);
  stale_updates_ += n - applied;
  max_priority_ = new_max;
  return applied;
}

template std::size_t PrioritizedReplay::update_priorities<float>(const std::int64_t*, const float*,
                                                                 const std::uint64_t*, std::size_t);
template std::size_t PrioritizedReplay::update_priorities<double>(const std::int64_t*, const double*,
                                                                  const std::uint64_t*, std::size_t);

void PrioritizedReplay::get_priorities(const std::int64_t* indices, std::size_t n, double* out) const {
  std::lock_guard<std::mutex> lock(mutex_);
  for (std::size_t k = 0; k < n; ++k) {
    if (indices[k] < 0 || static_cast<std::size_t>(indices[k]) >= size_) {
      fail("indices[" + str(k) + "] = " + str(indices[k]) + " is out of range for size " + str(size_));
    }
  }
  for (std::size_t k = 0; k < n; ++k) out[k] = tree_.get(static_cast<std::size_t>(indices[k]));
}

ReplaySnapshot PrioritizedReplay::snapshot() const {
  std::lock_guard<std::mutex> lock(mutex_);
  ReplaySnapshot s;
  const std::size_t n = size_;
  s.config = config_;
  s.size = n;
  s.cursor = cursor_;
  s.max_priority = max_priority_;
  s.stale_updates = stale_updates_;
  s.rng_state = rng_.state();
  s.states.assign(states_.data(), states_.data() + n * kF);
  s.next_states.assign(next_states_.data(), next_states_.data() + n * kF);
  s.rewards.assign(rewards_.data(), rewards_.data() + n);
  s.actions.assign(actions_.data(), actions_.data() + n);
  s.dones.assign(dones_.data(), dones_.data() + n);
  s.generations.assign(generations_.data(), generations_.data() + n);
  s.priorities.resize(n);
  for (std::size_t i = 0; i < n; ++i) s.priorities[i] = tree_.get(i);
  return s;
}

bool PrioritizedReplay::check_invariants() const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!tree_.check_invariants()) return false;
  for (std::size_t i = 0; i < config_.capacity; ++i) {
    const double p = tree_.get(i);
    if (i < size_ ? !(p >= kMinPriority && p <= max_priority_) : p != 0.0) return false;
    if (i < size_ && generations_[i] == 0) return false;
  }
  return true;
}

}  // namespace itp
