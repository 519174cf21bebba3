#include "itp/heuristic.hpp"

#include <limits>

namespace itp {

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
                     Split* chosen_split_out, const TransportParams* params, double* scores_out) noexcept {
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
    const double score = s.expected_time_s * (1.0 + fail_mass);
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
