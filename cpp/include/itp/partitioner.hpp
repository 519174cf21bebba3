// The partitioner's per-decision bookkeeping, natively: which model serves, the pending-decision table
// (task id -> raw state, normalised state, action, propensity, chunk plan, creation time), expiry, the
// outcome path (reward, transition into the experience ring) and the counters. itp/partitioner.py wraps
// it; the binding (cpp/bindings/register_partitioner.cpp) turns a task into one call with the GIL released
// around everything below.
//
// Decision:  raw = stream table snapshot + (size_bytes, priority, hour)        (DecisionEngine)
//            action, chunk plan, expected_time_s, confidence, propensity       (DecisionEngine::decide_raw_with)
// Outcome:   reward = reward_terms(raw then, chunk plan, expected_time_s, outcome).total   (reward.hpp)
//            ring <- (normalise(raw then), action, reward, normalise(table now with the task's size,
//                     priority and the hour now), done = 0)                      (ring.hpp, lock-free)
// Expiry:    a pending decision created at c (monotonic seconds) expires once now - c >= ttl_s; expired
//            entries are removed and counted on the next insertion that finds the oldest one due, or on
//            expire_all().
//
// Pending table: kShards shards by hash of the task id, each a hash map plus a creation-ordered list
// (O(1) insert, find, erase; expiry pops the list's front), under its own mutex, so threads deciding
// different tasks rarely meet. `earliest_created_s_` is a lower bound on the creation time of every live
// entry; an insertion sweeps the shards only when that bound says something may be due, so the common
// insertion touches one shard.
//
// Counters: decisions per source, expired, fallbacks and NaN faults of native decisions are atomics; the
// outcome statistics (count, successes, reward sums overall and per canary arm) change together under one
// small mutex, so a snapshot is consistent and, single-threaded, sums in exactly the order of the calls.
//
// Thread-safety: every public method may be called from any number of threads at once.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "itp/decision.hpp"
#include "itp/mlp.hpp"
#include "itp/reward.hpp"
#include "itp/ring.hpp"

namespace itp {

// What answers decisions now; replaced as a whole (atomically) by set_serving.
struct Serving {
  std::shared_ptr<const FusedMlp> model;  // null: heuristic (unless `native` is false)
  std::string version;                    // model version; empty when no model
  bool model_wanted = false;              // a model was asked for: heuristic decisions are fallbacks
  bool native = true;                     // false: the caller must decide (ONNX Runtime model, canary)
};

// A decision awaiting its outcome (the transition's first half).
struct PendingDecision {
  std::array<double, kNumFeatures> raw{};   // raw state at decision time (caller units)
  std::array<float, kNumFeatures> state{};  // normalised state at decision time
  std::array<std::uint64_t, kNumStreams> chunk_bytes{};
  double expected_time_s = 0.0;
  double confidence = 0.0;
  double propensity = 1.0;
  std::int32_t guard_verdicts = kNoGuardVerdicts;  // DecisionOutput::guard_verdicts
  double created_s = 0.0;    // monotonic seconds at insertion
  std::uint64_t token = 0;   // identifies the one Decision object handed out for it
  std::int32_t action = 0;
  std::uint8_t source = 0;   // DecisionSource
  std::uint8_t arm = 0;      // 0 current, 1 candidate
  bool has_model_version = false;
  std::string model_version;  // of the model consulted (short: fits the small-string buffer)
};

// One task of a decision call (validated by the caller: size 1..2^50, priority in [0, 1]).
struct TaskInput {
  std::string_view id;
  std::uint64_t size_bytes = 0;
  double priority = 0.0;
};

// A reported outcome (validated by the caller: finite, throughput >= 0, latency > 0).
struct OutcomeInput {
  double throughput_bps = 0.0;
  double latency_s = 0.0;
  bool success = false;
  std::uint64_t retransmissions = 0;
};

enum class ReportStatus : std::uint8_t { kOk = 0, kUnknown = 1, kWrongDecision = 2 };

struct ReportResult {
  ReportStatus status = ReportStatus::kUnknown;
  double reward = 0.0;
  bool pushed = false;       // the transition entered the ring (false: the ring was full; counted there)
  PendingDecision decision;  // what was pending (valid when status is kOk)
};

// A consistent snapshot of the outcome statistics.
struct OutcomeStats {
  std::uint64_t reported = 0;
  std::uint64_t successes = 0;
  double reward_sum = 0.0;
  std::array<std::uint64_t, 2> arm_count{};
  std::array<double, 2> arm_reward{};
};

class PartitionerCore {
 public:
  static constexpr std::size_t kShards = 16;
  // A token that matches whatever decision is pending for the id (tasks decided in array form, for which
  // no Decision object exists). Never issued.
  static constexpr std::uint64_t kAnyToken = ~std::uint64_t{0};

  // engine: the decision engine (stream table, epsilon, draws), shared with the caller.
  // ring: where report() pushes transitions; must outlive the core (the binding ties the lifetimes).
  // ttl_s: seconds after which an unreported decision expires (finite, > 0; the binding validates).
  PartitionerCore(std::shared_ptr<DecisionEngine> engine, ExperienceRing* ring, double ttl_s);

  const std::shared_ptr<DecisionEngine>& engine() const noexcept { return engine_; }
  double ttl_s() const noexcept { return ttl_s_; }

  void set_serving(std::shared_ptr<const Serving> serving);
  std::shared_ptr<const Serving> serving() const;

  // True when `id` has a pending decision.
  bool is_pending(std::string_view id) const;
  // Index of the first id in ids[0..n) that is pending, or -1.
  std::ptrdiff_t first_pending(const std::string_view* ids, std::size_t n) const;

  // Decides one task with the serving snapshot `serving` (native only; caller checked serving.native) on
  // the live stream table at `hour`. No bookkeeping: insert() records it. Counts a fallback when a model
  // was wanted and the heuristic answered, and a NaN fault when the model produced NaN/inf.
  void decide(const Serving& serving, const TaskInput& task, double hour, DecisionOutput& out);
  // The same for n tasks on one snapshot of the stream table.
  void decide_many(const Serving& serving, const TaskInput* tasks, std::size_t n, double hour,
                   DecisionOutput* out);

  // Records a decided task as pending at monotonic time now_s (expiring what is due first) and counts it
  // by source. Returns its token (> 0), or 0 if the id is already pending (nothing changes).
  // `version`: the consulted model's version, or null.
  std::uint64_t insert(std::string_view id, const DecisionOutput& d, std::uint8_t arm, const std::string* version,
                       double now_s);
  // Inserts n decisions all or nothing: returns -1 and writes tokens[k] on success, else the index of the
  // first id already pending (nothing changes). Ids must be distinct (the caller checks).
  std::ptrdiff_t insert_many(const std::string_view* ids, const DecisionOutput* d, const std::uint8_t* arms,
                             const std::string* version, std::size_t n, double now_s, std::uint64_t* tokens);

  // Completes a pending decision: checks the id and the token, removes it, computes the reward, updates
  // the outcome statistics and pushes the transition (next state from the live table at `hour`).
  ReportResult report(std::string_view id, std::uint64_t token, const OutcomeInput& outcome, double hour);
  // Validates every (id, token) first (all or nothing); returns -1 on success with results[k] filled, else
  // the index of the first bad entry (status in results[that index]); nothing changes then. Ids must be
  // distinct (the caller checks).
  std::ptrdiff_t report_many(const std::string_view* ids, const std::uint64_t* tokens,
                             const OutcomeInput* outcomes, std::size_t n, double hour, ReportResult* results);

  // Removes every pending decision created at or before now_s - ttl_s; returns how many.
  std::size_t expire_all(double now_s);

  // Ids of the pending decisions (any order).
  std::vector<std::string> pending_ids() const;
  std::size_t outstanding() const;
  std::array<std::uint64_t, 3> decisions_by_source() const noexcept;
  std::uint64_t expired() const noexcept { return expired_.load(std::memory_order_relaxed); }
  std::uint64_t fallbacks() const noexcept { return fallbacks_.load(std::memory_order_relaxed); }
  std::uint64_t nan_faults() const noexcept { return nan_faults_.load(std::memory_order_relaxed); }
  OutcomeStats outcome_stats() const;

 private:
  struct Entry;
  using Order = std::list<const std::string*>;  // keys in creation order (map keys are stable)
  struct Entry {
    PendingDecision decision;
    Order::iterator order_it;
  };
  struct Shard {
    mutable std::mutex mutex;
    std::unordered_map<std::string, Entry> map;
    Order order;
  };

  static std::size_t shard_of(std::string_view id) noexcept;
  // Expires the due entries of one shard (caller holds its lock); returns how many.
  std::size_t expire_locked(Shard& shard, double cutoff_s);
  // Sweeps every shard if the earliest live entry may be due at now_s.
  void maybe_expire(double now_s);
  void lower_earliest(double created_s) noexcept;
  void fill_pending(PendingDecision& p, const DecisionOutput& d, std::uint8_t arm, const std::string* version,
                    double now_s);
  double finish(const PendingDecision& p, const OutcomeInput& outcome, double hour, bool& pushed);
  void count_decision(const Serving& serving, const DecisionOutput& out) noexcept;

  std::shared_ptr<DecisionEngine> engine_;
  ExperienceRing* ring_;
  double ttl_s_;
  std::shared_ptr<const Serving> serving_;  // std::atomic_load/store
  std::array<Shard, kShards> shards_;
  std::atomic<double> earliest_created_s_;
  std::mutex sweep_mutex_;
  std::atomic<std::uint64_t> next_token_{1};
  std::array<std::atomic<std::uint64_t>, 3> by_source_{};
  std::atomic<std::uint64_t> expired_{0};
  std::atomic<std::uint64_t> fallbacks_{0};
  std::atomic<std::uint64_t> nan_faults_{0};
  mutable std::mutex stats_mutex_;
  OutcomeStats stats_;
  RewardWeights weights_;
};

// Local time of day in hours, [0, 24), from the system clock and time zone (the default clock of the
// partitioner; the same value as itp.partitioner.local_hour). The UTC offset is cached per quarter hour.
double local_hour_now() noexcept;
// Seconds on the monotonic clock (CLOCK_MONOTONIC, as Python's time.monotonic on Linux).
double monotonic_now_s() noexcept;

}  // namespace itp
