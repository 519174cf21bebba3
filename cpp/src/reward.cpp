#include "itp/reward.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "itp/state.hpp"
#include "itp/transport.hpp"

namespace itp {

RewardTerms reward_terms(const double* raw, const std::uint64_t* chunk_bytes, double expected_time_s,
                         double throughput_bps, double latency_s, bool success, std::uint64_t retransmissions,
                         const RewardWeights& weights) noexcept {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  double eff[kNumStreams];
  std::uint64_t total_bytes = 0;
  std::size_t used = 0;
  for (std::size_t i = 0; i < kNumStreams; ++i) {
    eff[i] = raw[kBandwidthOffset + i] * std::min(raw[kSuccessRateOffset + i], 1.0);
    total_bytes += chunk_bytes[i];
    used += chunk_bytes[i] > 0 ? 1 : 0;
  }
  const double bits = 8.0 * static_cast<double>(total_bytes);
  const double* lat = raw + kLatencyOffset;
  RewardTerms t;

  double t_ref = kInf;
  for (std::size_t i = 0; i < kNumStreams; ++i) {
    if (eff[i] > 0.0) t_ref = std::min(t_ref, lat[i] + bits / eff[i]);
  }
  if (std::isinf(t_ref)) {
    t.throughput_improvement = 0.0;
  } else if (throughput_bps <= 0.0) {
    t.throughput_improvement = -kThroughputClip;
  } else {
    // A sum of logs: the product can under- or overflow for extreme (but valid) inputs.
    const double ratio_log2 = std::log2(throughput_bps) + std::log2(t_ref) - std::log2(bits);
    t.throughput_improvement = std::min(std::max(ratio_log2, -kThroughputClip), kThroughputClip);
  }

  if (std::isinf(expected_time_s)) {
    t.latency_penalty = 0.0;
  } else if (expected_time_s <= 0.0) {
    t.latency_penalty = kLatencyClip;
  } else {
    t.latency_penalty = std::min(std::max((latency_s - expected_time_s) / expected_time_s, 0.0), kLatencyClip);
  }

  if (used > 1) {
    double hi = 0.0;
    double lo = kInf;
    bool dead = false;
    for (std::size_t i = 0; i < kNumStreams; ++i) {
      if (chunk_bytes[i] == 0) continue;
      if (!(eff[i] > 0.0)) {
        dead = true;
        break;
      }
      const double f = transport_chunk_time(8.0 * static_cast<double>(chunk_bytes[i]), eff[i], lat[i]);
      hi = std::max(hi, f);
      lo = std::min(lo, f);
    }
    // hi = inf: a used stream's rate is so small that its chunk never finishes, as with e_i = 0.
    t.stream_imbalance = (dead || std::isinf(hi)) ? 1.0 : (hi > 0.0 ? (hi - lo) / hi : 0.0);
  }

  t.completion_bonus = success ? 1.0 : 0.0;
  t.retransmission_penalty =
      std::min(static_cast<double>(retransmissions) / static_cast<double>(std::max<std::size_t>(1, used)), 1.0);
  t.total = weights.throughput * t.throughput_improvement - weights.latency * t.latency_penalty -
            weights.imbalance * t.stream_imbalance + weights.completion * t.completion_bonus -
            weights.retransmission * t.retransmission_penalty;
  return t;
}

}  // namespace itp
