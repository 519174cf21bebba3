#include "itp/decision.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "itp/heuristic.hpp"

namespace itp {

namespace {

std::uint64_t splitmix64(std::uint64_t x) noexcept {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

int argmax(const float* q) noexcept {
  int best = 0;
  for (int a = 1; a < kNumActions; ++a) {
    if (q[a] > q[best]) best = a;
  }
  return best;
}

bool in_mask(std::int32_t mask, int action) noexcept { return ((mask >> action) & 1) != 0; }

// The action of rank `rank` (0 = the best) among the actions whose bit `allowed` sets, ordered by Q
// descending, ties by lower index first (the order argmax uses). O(15 * rank); rank < the allowed count.
int kth_best(const float* q, int rank, std::int32_t allowed) noexcept {
  int pick = 0;
  for (int r = 0; r <= rank; ++r) {
    pick = -1;
    for (int a = 0; a < kNumActions; ++a) {
      if (in_mask(allowed, a) && (pick < 0 || q[a] > q[pick])) pick = a;
    }
    allowed &= ~(std::int32_t{1} << pick);  // taken
  }
  return pick;
}

// Rank of `action` among the allowed actions in the order kth_best uses; 0 = the best allowed one.
int rank_of(const float* q, int action, std::int32_t allowed) noexcept {
  int rank = 0;
  for (int a = 0; a < kNumActions; ++a) {
    if (in_mask(allowed, a) && (q[a] > q[action] || (q[a] == q[action] && a < action))) ++rank;
  }
  return rank;
}

double softmax_prob(const float* q, int action) noexcept {
  const float qmax = q[argmax(q)];
  double denom = 0.0;
  for (int a = 0; a < kNumActions; ++a) denom += std::exp(static_cast<double>(q[a] - qmax));
  return std::exp(static_cast<double>(q[action] - qmax)) / denom;
}

bool all_finite(const float* q) noexcept {
  for (int a = 0; a < kNumActions; ++a) {
    if (!std::isfinite(q[a])) return false;
  }
  return true;
}

}  // namespace

DecisionEngine::DecisionEngine(std::uint64_t seed) : seed_(seed) {}

void DecisionEngine::update_stream(std::size_t stream_id, const StreamMetrics& metrics) {
  std::lock_guard<std::mutex> lock(table_mutex_);
  streams_.at(stream_id) = metrics;
}

void DecisionEngine::set_queue_depth(double queue_depth) {
  std::lock_guard<std::mutex> lock(table_mutex_);
  queue_depth_ = queue_depth;
}

StreamMetrics DecisionEngine::stream(std::size_t stream_id) const {
  std::lock_guard<std::mutex> lock(table_mutex_);
  return streams_.at(stream_id);
}

double DecisionEngine::queue_depth() const {
  std::lock_guard<std::mutex> lock(table_mutex_);
  return queue_depth_;
}

void DecisionEngine::set_transport_params(const StreamTransportParams& params) {
  std::lock_guard<std::mutex> lock(table_mutex_);
  transport_ = params;
}

StreamTransportParams DecisionEngine::transport_params() const {
  std::lock_guard<std::mutex> lock(table_mutex_);
  return transport_;
}

void DecisionEngine::set_failure_models(const StreamFailureModels& models) {
  std::lock_guard<std::mutex> lock(table_mutex_);
  failures_ = models;
  failures_on_.store(true, std::memory_order_release);
}

void DecisionEngine::clear_failure_models() {
  std::lock_guard<std::mutex> lock(table_mutex_);
  failures_on_.store(false, std::memory_order_release);
}

bool DecisionEngine::failure_models(StreamFailureModels& out) const {
  if (!failures_on_.load(std::memory_order_acquire)) return false;
  std::lock_guard<std::mutex> lock(table_mutex_);
  if (!failures_on_.load(std::memory_order_relaxed)) return false;
  out = failures_;
  return true;
}

void DecisionEngine::set_model(std::shared_ptr<const FusedMlp> model) {
  std::atomic_store(&model_, std::move(model));
}

std::shared_ptr<const FusedMlp> DecisionEngine::model() const { return std::atomic_load(&model_); }

void DecisionEngine::snapshot_table(double* raw, StreamTransportParams* params_out) const {
  std::lock_guard<std::mutex> lock(table_mutex_);
  if (params_out != nullptr) {
    *params_out = transport_;
    for (std::size_t i = 0; i < kNumStreams; ++i) {
      double& w = (*params_out)[i].initial_window_bits;
      w = std::max(w, streams_[i].start_window_bits);
    }
  }
  for (std::size_t i = 0; i < kNumStreams; ++i) {
    raw[kBandwidthOffset + i] = streams_[i].bandwidth_bps;
    raw[kLatencyOffset + i] = streams_[i].latency_s;
    raw[kCongestionOffset + i] = streams_[i].congestion;
    raw[kSuccessRateOffset + i] = streams_[i].success_rate;
  }
  raw[kQueueDepthIndex] = queue_depth_;
}

void DecisionEngine::snapshot(double size_bytes, double priority, double hour, double* raw,
                              StreamTransportParams* params_out) const {
  snapshot_table(raw, params_out);
  raw[kTaskSizeIndex] = size_bytes;
  raw[kPriorityIndex] = priority;
  raw[kTimeOfDayIndex] = hour;
}

double DecisionEngine::next_uniform() const noexcept {
  const std::uint64_t n = draw_counter_.fetch_add(1, std::memory_order_relaxed);
  return static_cast<double>(splitmix64(seed_ ^ splitmix64(n)) >> 11) * 0x1.0p-53;
}

void DecisionEngine::decide(std::uint64_t size_bytes, double priority, double hour, const float* external_q,
                            bool explore, DecisionOutput& out) const {
  StreamTransportParams params;
  snapshot(static_cast<double>(size_bytes), priority, hour, out.raw.data(), &params);
  const std::shared_ptr<const FusedMlp> m = external_q != nullptr ? nullptr : model();
  decide_raw_with(out.raw.data(), size_bytes, m.get(), external_q, explore, out, params.data());
}

void DecisionEngine::decide_raw(const double* raw, std::uint64_t size_bytes, const float* external_q,
                                bool explore, DecisionOutput& out) const {
  // Holds the network for the whole decision even if set_model swaps it meanwhile.
  const std::shared_ptr<const FusedMlp> m = external_q != nullptr ? nullptr : model();
  decide_raw_with(raw, size_bytes, m.get(), external_q, explore, out);
}

void DecisionEngine::decide_raw_with(const double* raw, std::uint64_t size_bytes, const FusedMlp* model,
                                     const float* external_q, bool explore, DecisionOutput& out,
                                     const TransportParams* params) const {
  StreamTransportParams current;
  if (params == nullptr) {
    current = transport_params();
    params = current.data();
  }
  if (raw != out.raw.data()) std::copy(raw, raw + kNumFeatures, out.raw.begin());
  normalize_state(out.raw.data(), out.state.data());
  out.model_fault = false;
  out.has_q = false;
  if (external_q != nullptr) {
    std::copy(external_q, external_q + kNumActions, out.q_values.begin());
    out.has_q = true;
  } else if (model != nullptr) {
    model->forward(out.state.data(), out.q_values.data());
    out.has_q = true;
  }
  if (out.has_q && !all_finite(out.q_values.data())) {
    out.has_q = false;
    out.model_fault = true;
  }

  out.guarded = false;
  out.guard_verdicts = kNoGuardVerdicts;
  // The failure models (one lock while set) are read only where a heuristic score is computed.
  StreamFailureModels failure_copy;
  const auto failures = [&]() -> const FailureModel* {
    return failure_models(failure_copy) ? failure_copy.data() : nullptr;
  };
  if (out.has_q) {
    // Read once: the draw and the propensity agree. A task above the exploration size limit is greedy.
    const bool may_explore =
        explore && out.state[kTaskSizeIndex] <= explore_max_feature_.load(std::memory_order_relaxed);
    const double eps = may_explore ? epsilon() : 0.0;
    const int top_k = explore_top_k();             // likewise
    int greedy = argmax(out.q_values.data());
    bool guard_pick = false;
    // Actions exploration may draw from (bit a: action a): all 15, or (guarded exploration) those the
    // guard lets through.
    std::int32_t allowed = kGuardMaskBits;
    int n_allowed = kNumActions;
    const double margin = guard_margin();
    if (margin >= 0.0) {
      std::array<double, kNumActions> scores{};
      const int h = heuristic_action(raw, size_bytes, nullptr, nullptr, params, scores.data(), failures());
      const double limit = (1.0 + margin) * scores[static_cast<std::size_t>(h)];
      // Let through: h, and every action scoring within the margin (NaN scores compare false and pass).
      std::int32_t passed = 0;
      int n_passed = 0;
      for (int a = 0; a < kNumActions; ++a) {
        if (a == h || !(scores[static_cast<std::size_t>(a)] > limit)) {
          passed |= std::int32_t{1} << a;
          ++n_passed;
        }
      }
      out.guard_verdicts = encode_guard_verdicts(passed, h);
      if (!in_mask(passed, greedy)) {  // the model's choice is refused: the heuristic's replaces it
        greedy = h;
        guard_pick = true;
      }
      if (guard_exploration()) {
        allowed = passed;
        n_allowed = n_passed;
      }
    }
    // Exploration draws uniformly among the k best allowed actions by Q (k' = min(k, allowed) of them).
    const int k = std::min(top_k, n_allowed);
    if (eps > 0.0 && next_uniform() < eps) {
      if (k >= kNumActions) {
        out.action = std::min(kNumActions - 1, static_cast<int>(next_uniform() * kNumActions));
      } else {
        out.action = kth_best(out.q_values.data(), std::min(k - 1, static_cast<int>(next_uniform() * k)), allowed);
      }
      out.source = DecisionSource::kExplore;
    } else {
      out.action = greedy;
      out.source = DecisionSource::kModel;
      if (guard_pick) {
        out.guarded = true;
        guard_overrides_.fetch_add(1, std::memory_order_relaxed);
      }
    }
    // The (possibly guarded) greedy action gets 1 - eps on top of its exploration share.
    const double explore_share = eps / static_cast<double>(k);
    const bool explorable =
        in_mask(allowed, out.action) && rank_of(out.q_values.data(), out.action, allowed) < k;
    out.propensity = out.action == greedy ? (1.0 - eps) + (explorable ? explore_share : 0.0)
                                          : explore_share;
    out.confidence = softmax_prob(out.q_values.data(), out.action);
    out.split = production_split(out.raw.data(), size_bytes, out.action, params);
    return;
  }

  std::array<double, kNumActions> times{};
  out.action =
      heuristic_action(out.raw.data(), size_bytes, times.data(), &out.split, params, nullptr, failures());
  out.source = DecisionSource::kHeuristic;
  out.propensity = 1.0;
  double best = std::numeric_limits<double>::infinity();
  for (double t : times) best = std::min(best, t);
  const double mine = times[static_cast<std::size_t>(out.action)];
  out.confidence = (std::isfinite(mine) && mine > 0.0) ? std::min(1.0, best / mine) : 0.0;
}

}  // namespace itp
