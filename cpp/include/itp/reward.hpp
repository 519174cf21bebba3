// The reward of one decision and its reported outcome: the single definition used by the simulator,
// training and the online learner (itp/reward.py documents every term and wraps this).
//
// With S = sum(chunk_bytes) bytes, effective rates e_i = bandwidth_i * min(success_i, 1) and RTTs L_i (raw
// state at decision time):
//   throughput_improvement = clip(log2(throughput_bps * T_ref / (8 S)), -3, 3),
//                            T_ref = min_{e_i > 0} (L_i + 8 S / e_i); 0 if no e_i > 0; -3 if nothing arrived
//   latency_penalty        = clip((latency_s - expected_time_s) / expected_time_s, 0, 2); 0 if expected is
//                            +inf, 2 if it is 0
//   stream_imbalance       = (max f - min f) / max f over used streams, f_i = transport_chunk_time(8 c_i,
//                            e_i, L_i); 0 for one stream; 1 if a used stream has e_i = 0 or f_i = inf
//   completion_bonus       = success ? 1 : 0
//   retransmission_penalty = min(retransmissions / n_used, 1)
//   total = w_t T - w_l L - w_i I + w_c C - w_r R
#pragma once

#include <cstdint>

namespace itp {

inline constexpr double kThroughputClip = 3.0;
inline constexpr double kLatencyClip = 2.0;

struct RewardWeights {
  double throughput = 1.0;
  double latency = 0.5;
  double imbalance = 0.3;
  double completion = 2.0;
  double retransmission = 1.0;
};

struct RewardTerms {
  double throughput_improvement = 0.0;
  double latency_penalty = 0.0;
  double stream_imbalance = 0.0;
  double completion_bonus = 0.0;
  double retransmission_penalty = 0.0;
  double total = 0.0;
};

// raw: validated raw decision state (20 values); chunk_bytes: 4 counts summing to >= 1. Outcome values
// validated by the caller (finite, throughput >= 0, latency > 0). O(1), no allocation, thread-safe.
RewardTerms reward_terms(const double* raw, const std::uint64_t* chunk_bytes, double expected_time_s,
                         double throughput_bps, double latency_s, bool success, std::uint64_t retransmissions,
                         const RewardWeights& weights) noexcept;

}  // namespace itp
