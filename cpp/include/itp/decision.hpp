// The decision path for one task, natively: snapshot the stream table, build and normalise the state,
// run the Q-network (or take the caller's Q-values), epsilon-greedy, fall back to the heuristic on any
// model fault, and split the bytes by the transport-aware equal finish time (transport.hpp) over effective
// rates and measured RTTs.
//
// Transport parameters: the engine holds one TransportParams per stream (transport.hpp: set-up RTTs,
// initial window, rate efficiency; the defaults are the compile-time model) that the split, the
// heuristic's choice and expected_time_s use on both the model and the heuristic path. They live beside
// the stream table under the same mutex, so setting them never blocks a decision for longer than the copy
// of 12 doubles, and a decision sees one consistent set.
//
// Thread-safety: every public method may be called from any number of threads at once. The stream table
// is guarded by a mutex held only to copy 16 doubles (and the 12 transport parameters); the model is swapped atomically (shared_ptr) so a
// decision in flight keeps the network it started with; exploration draws come from a counter-based
// generator (splitmix64 over an atomic counter), which needs no lock.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>

#include "itp/actions.hpp"
#include "itp/guard_verdicts.hpp"
#include "itp/heuristic.hpp"
#include "itp/mlp.hpp"
#include "itp/state.hpp"
#include "itp/transport.hpp"

namespace itp {

enum class DecisionSource : std::uint8_t { kModel = 0, kExplore = 1, kHeuristic = 2 };

struct DecisionOutput {
  int action = 0;
  DecisionSource source = DecisionSource::kHeuristic;
  bool model_fault = false;  // the model produced NaN/inf (the decision then came from the heuristic)
  bool has_q = false;        // q_values holds the model's output
  // The model's greedy action was replaced by the heuristic's because the transport model predicted it
  // slower by more than the guard margin (DecisionEngine::set_guard_margin); source stays kModel.
  bool guarded = false;
  Split split;
  double confidence = 0.0;  // see DecisionEngine::decide
  // Probability the behaviour policy gave the executed action (for off-policy corrections): under
  // epsilon-greedy with the epsilon this decision used and exploration over the k best actions by Q
  // (k = 15: all actions), (1 - eps) + eps / k for the greedy action and eps / k for any other of the k;
  // 1 for a heuristic decision (deterministic). With the guard on, "greedy" is the guarded greedy action,
  // which may lie outside the k best; it then has probability 1 - eps.
  double propensity = 1.0;
  // The guard's verdicts for this decision, logged with it so that the off-policy gate can score any
  // model as the guard would have let it act here (encode_guard_verdicts); kNoGuardVerdicts when the guard
  // did not run (off, or a heuristic decision).
  std::int32_t guard_verdicts = kNoGuardVerdicts;
  std::array<double, kNumFeatures> raw{};
  std::array<float, kNumFeatures> state{};
  std::array<float, kNumActions> q_values{};
};

struct StreamMetrics {
  double bandwidth_bps = 0.0;
  double latency_s = 0.0;
  double congestion = 0.0;
  double success_rate = 1.0;
  // Congestion window a chunk sent now on this stream would start from, bits (a warm persistent stream:
  // its cwnd while it has not been idle longer than its RTO); 0: unknown. The split uses
  // max(initial_window_bits of the stream's transport parameters, this).
  double start_window_bits = 0.0;
};

class DecisionEngine {
 public:
  explicit DecisionEngine(std::uint64_t seed);

  // Caller-validated metrics (finite, non-negative, congestion and success rate in [0, 1]).
  void update_stream(std::size_t stream_id, const StreamMetrics& metrics);
  void set_queue_depth(double queue_depth);
  StreamMetrics stream(std::size_t stream_id) const;
  double queue_depth() const;

  // Caller-validated parameters (invalid_transport_param is null for all 4). Thread-safe; O(1).
  void set_transport_params(const StreamTransportParams& params);
  StreamTransportParams transport_params() const;
  // Per-stream failure models (heuristic.hpp; caller-validated) that the guard's and the heuristic's
  // scores charge (the resends' expected time) while set; clear_failure_models() removes the charge.
  void set_failure_models(const StreamFailureModels& models);
  void clear_failure_models();
  // Copies the failure models into `out` and returns true while they are set; false otherwise.
  bool failure_models(StreamFailureModels& out) const;

  // The guard: when the model's greedy action's heuristic score (predicted time x (1 + failure mass), the
  // same transport model as the split) exceeds (1 + margin) x the heuristic's best score, the heuristic's
  // action is taken instead. margin < 0 (default) or NaN: off. Costs one heuristic pass (15 splits) per
  // model decision while on.
  void set_guard_margin(double margin) noexcept { guard_margin_.store(margin, std::memory_order_relaxed); }
  double guard_margin() const noexcept { return guard_margin_.load(std::memory_order_relaxed); }
  // Guarded exploration: while the guard is on, exploration draws only among the actions the guard lets
  // through (the k best of them by Q), so a random draw never takes a split the calibrated transport model
  // scores clearly worse than the heuristic's; the logged propensity is that policy's. Off (default):
  // exploration ignores the guard.
  void set_guard_exploration(bool on) noexcept { guard_exploration_.store(on, std::memory_order_relaxed); }
  bool guard_exploration() const noexcept { return guard_exploration_.load(std::memory_order_relaxed); }
  // Model decisions the guard replaced (executed), since construction.
  std::uint64_t guard_overrides() const noexcept { return guard_overrides_.load(std::memory_order_relaxed); }

  void set_model(std::shared_ptr<const FusedMlp> model);  // nullptr: heuristic only
  std::shared_ptr<const FusedMlp> model() const;
  void set_epsilon(double epsilon) noexcept { epsilon_.store(epsilon, std::memory_order_relaxed); }
  double epsilon() const noexcept { return epsilon_.load(std::memory_order_relaxed); }
  // Exploration draws among the k actions with the highest Q-values (ties: lower action index first);
  // k = 15 (default) is uniform over all actions, with the same draws as before this option existed.
  // Caller-validated: 1 <= k <= 15.
  void set_explore_top_k(int k) noexcept { explore_top_k_.store(k, std::memory_order_relaxed); }
  int explore_top_k() const noexcept { return explore_top_k_.load(std::memory_order_relaxed); }

  // Exploration only on tasks up to a size: a task whose size feature (task_size_feature, as the float32 of
  // the normalised state) exceeds the limit's is decided greedily (propensity 1 for the greedy action).
  // Why: an exploratory split costs time in proportion to the task, and the largest tasks set the p95.
  // Comparing the float32 features, not the bytes, lets the off-policy gate recompute which logged rows
  // could explore from their states alone. UINT64_MAX (default): every task may explore.
  void set_explore_max_bytes(std::uint64_t max_bytes) noexcept {
    explore_max_feature_.store(max_bytes == std::numeric_limits<std::uint64_t>::max()
                                   ? std::numeric_limits<float>::infinity()
                                   : normalized_task_size(static_cast<double>(max_bytes)),
                               std::memory_order_relaxed);
    explore_max_bytes_.store(max_bytes, std::memory_order_relaxed);
  }
  // The limit as set (the getter's value); decisions compare its feature, cached once per set.
  std::uint64_t explore_max_bytes() const noexcept { return explore_max_bytes_.load(std::memory_order_relaxed); }

  // Writes the raw state (caller units) for a task of this size/priority at this hour.
  // params_out (may be null) receives the transport parameters under the same lock.
  void snapshot(double size_bytes, double priority, double hour, double* raw,
                StreamTransportParams* params_out = nullptr) const;

  // Decides one task. `external_q` (15 floats, may be null) replaces the native model, for models served
  // by ONNX Runtime. `explore`: whether epsilon-greedy may pick a random action.
  // Confidence: for model and explore decisions, the softmax probability softmax(Q)[action] of the
  // executed action under the model's Q-values (reward units, temperature 1); for heuristic decisions,
  // min_a T_a / T_action, how close the executed action's predicted completion time is to the best
  // predicted time over all 15 actions (1 = the fastest predicted).
  void decide(std::uint64_t size_bytes, double priority, double hour, const float* external_q, bool explore,
              DecisionOutput& out) const;

  // The same decision for a caller-provided raw state (no stream table): used for batch and simulation.
  void decide_raw(const double* raw, std::uint64_t size_bytes, const float* external_q, bool explore,
                  DecisionOutput& out) const;

  // decide_raw with the network given by the caller instead of the engine's own (`model` may be null:
  // heuristic, unless external_q is given). Lets a caller that swaps (model, version) pairs atomically
  // report exactly the model that answered. `params`: the transport parameters to split with (4 sets, as
  // snapshot_table hands them out), or null to read the engine's current ones.
  void decide_raw_with(const double* raw, std::uint64_t size_bytes, const FusedMlp* model,
                       const float* external_q, bool explore, DecisionOutput& out,
                       const TransportParams* params = nullptr) const;

  // Copies the stream table (16 metrics and the queue depth) into raw[0..17) under the table lock; the
  // task fields raw[17..20) are left alone. Lets a batch decide every task on one snapshot. If params_out
  // is not null it receives the transport parameters under the same lock, each stream's initial window
  // raised to its known start window (StreamMetrics::start_window_bits) where that is larger.
  void snapshot_table(double* raw, StreamTransportParams* params_out = nullptr) const;

 private:
  double next_uniform() const noexcept;

  mutable std::mutex table_mutex_;
  std::array<StreamMetrics, kNumStreams> streams_{};
  double queue_depth_ = 0.0;
  StreamTransportParams transport_{};
  StreamFailureModels failures_{};           // under table_mutex_
  std::atomic<bool> failures_on_{false};     // read without the lock on the decision path
  std::shared_ptr<const FusedMlp> model_;  // read/written with std::atomic_load/store
  std::atomic<double> epsilon_{0.0};
  std::atomic<int> explore_top_k_{kNumActions};
  std::atomic<std::uint64_t> explore_max_bytes_{std::numeric_limits<std::uint64_t>::max()};
  std::atomic<float> explore_max_feature_{std::numeric_limits<float>::infinity()};
  std::atomic<double> guard_margin_{-1.0};
  std::atomic<bool> guard_exploration_{false};
  mutable std::atomic<std::uint64_t> guard_overrides_{0};
  std::uint64_t seed_;
  mutable std::atomic<std::uint64_t> draw_counter_{0};
};

}  // namespace itp
