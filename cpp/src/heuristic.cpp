#include "itp/heuristic.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace itp {

namespace {
constexpr double kRtoMinS = 0.2;         // Linux's minimum retransmission timeout
constexpr double kMaxFailProbability = 0.99;
}  // namespace

const char* invalid_failure_model(const FailureModel& m) noexcept {
  if (!(std::isfinite(m.fail_probability) && m.fail_probability >= 0.0 && m.fail_probability < 1.0)) {
    return "fail_probability";
  }
  if (!(std::isfinite(m.hazard_per_s) && m.hazard_per_s >= 0.0)) return "hazard_per_s";
  return nullptr;
}

double failure_penalty_s(const Split& split, const double* rate_bps, const double* rtt_s,
                         const FailureModel* failures) noexcept {
  double worst = 0.0;
  for (std::size_t i = 0; i < kNumStreams; ++i) {
    if (split.chunk_bytes[i] == 0) continue;
    const FailureModel& f = failures[i];
    if (f.fail_probability <= 0.0 && f.hazard_per_s <= 0.0) continue;
    if (!(rate_bps[i] > 0.0)) return std::numeric_limits<double>::infinity();
    const double data_s = 8.0 * static_cast<double>(split.chunk_bytes[i]) / rate_bps[i];
    const double q = std::min(kMaxFailProbability,
                              1.0 - (1.0 - f.fail_probability) * std::exp(-f.hazard_per_s * data_s));
    const double rto_s = std::max(kRtoMinS, 2.0 * rtt_s[i]);
    worst = std::max(worst, q / (1.0 - q) * (0.5 * data_s + rto_s));
  }
  return worst;
}

void effective_rates(const double* raw, double* rate_out) noexcept {
  for (std::size_t i = 0; i < kNumStreams; ++i) {
    rate_out[i] = raw[kBandwidthOffset + i] * raw[kSuccessRateOffset + i];
  }
}

Split production_split(const double* raw, std::uint64_t size_bytes, int action,
                       const TransportParams* params) noexcept {
  double rate[kNumStreams];
  effective_rates(raw, rate);
  return transport_split(size_bytes, action_mask(action), rate, raw + kLatencyOffset, params);
}

int heuristic_action(const double* raw, std::uint64_t size_bytes, double* predicted_times_out,
                     Split* chosen_split_out, const TransportParams* params, double* scores_out,
                     const FailureModel* failures) noexcept {
  double rate[kNumStreams];
  effective_rates(raw, rate);
  const TransportStreams streams(rate, raw + kLatencyOffset, params);
  int best = 0;
  double best_score = std::numeric_limits<double>::infinity();
  Split best_split;
  for (int a = 0; a < kNumActions; ++a) {
    const Split s = streams.split(size_bytes, action_mask(a));
    if (predicted_times_out != nullptr) predicted_times_out[a] = s.expected_time_s;
    double fail_mass = 0.0;
    for (std::size_t i = 0; i < kNumStreams; ++i) {
      if ((s.used_mask >> i) & 1U) fail_mass += 1.0 - raw[kSuccessRateOffset + i];
    }
    double score = s.expected_time_s * (1.0 + fail_mass);
    if (failures != nullptr) score += failure_penalty_s(s, rate, raw + kLatencyOffset, failures);
    if (scores_out != nullptr) scores_out[a] = score;
    if (a == 0 || score < best_score) {  // action 0 is the fallback when no score is finite
      best_score = score;
      best = a;
      best_split = s;
    }
  }
  if (chosen_split_out != nullptr) *chosen_split_out = best_split;
  return best;
}

}  // namespace itp
