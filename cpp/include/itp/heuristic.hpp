// The best non-learned policy (also the fallback when the model is missing or faulty), natively, so the
// fallback path costs about as much as the model path. itp/heuristic.py documents the rule and keeps a
// pure-Python copy that the tests compare against.
//
// Effective rate of stream i: r_i = bandwidth_i * success_i (a chunk that fails is resent, so on average
// 1/success_i sends carry each byte). For each of the 15 actions the transport-aware equal-finish split
// (transport.hpp: set-up and slow start included) over the effective rates and the measured RTTs predicts a
// completion time T_a. A split is only as fast as its slowest stream, and every stream used is one more
// chance for a failed chunk to become the straggler, so the rule scores
//
//   score_a = T_a * (1 + sum_{i used by a} (1 - success_i))
//
// and picks the lowest score (ties go to the action with fewer streams).
//
// With a per-stream failure model (fitted from per-chunk retries, itp/calibration.py), the expected time the
// resends add is charged on top: an attempt of data time D_i = 8 bytes_i / r_i fails with probability
// q_i = 1 - (1 - fail_probability_i) exp(-hazard_per_s_i D_i) (capped at 0.99), a failed chunk is resent
// whole after an RTO (rto_i = max(0.2 s, 2 rtt_i)), half its data time lost on average, so
//
//   score_a = T_a * (1 + sum_{i used by a} (1 - success_i))
//             + max_{i used by a} q_i / (1 - q_i) * (D_i / 2 + rto_i)
//
// Why: with a hazard per second of transfer, a large chunk on a lossy stream fails far more often than
// the measured success rate (mostly from smaller chunks) says, and each failure costs its whole chunk.
// On top of, not instead of, the success-rate factor: replacing it lost goodput in 13 of 15 runs of the
// adaptation benchmark (docs/simulator.md).
#pragma once

#include <array>
#include <cstdint>

#include "itp/actions.hpp"
#include "itp/state.hpp"
#include "itp/transport.hpp"

namespace itp {

// One stream's failure model (see the header comment). Plain data; both fields finite and >= 0,
// fail_probability < 1. All zeros: no failures.
struct FailureModel {
  double fail_probability = 0.0;  // per attempt, whatever its length, in [0, 1)
  double hazard_per_s = 0.0;      // per second of data time, >= 0
};
using StreamFailureModels = std::array<FailureModel, kNumStreams>;

// Name of the first invalid field of `m`, or null when both are valid. O(1).
const char* invalid_failure_model(const FailureModel& m) noexcept;

// The failure penalty of the header comment for one split: max over its streams of the expected resend
// time, seconds (0 for a split on failure-free streams). rate_bps: effective rates; rtt_s: measured RTTs.
double failure_penalty_s(const Split& split, const double* rate_bps, const double* rtt_s,
                         const FailureModel* failures) noexcept;

// rate_out[i] = raw bandwidth_i * success_rate_i (bits per second). raw is a validated raw state.
void effective_rates(const double* raw, double* rate_out) noexcept;

// The production split of action `action` for a validated raw state: transport_split over the effective
// rates and the measured RTTs, with the streams' transport parameters (4 valid sets; null: the defaults).
// O(1), no allocation.
Split production_split(const double* raw, std::uint64_t size_bytes, int action,
                       const TransportParams* params = nullptr) noexcept;

// The heuristic's action for a validated raw state and a task of size_bytes (1..2^50). If
// predicted_times_out is not null it receives T_a for all 15 actions (seconds). O(15 splits), no allocation.
// If chosen_split_out is not null it receives the chosen action's split (the production split). params: the
// streams' transport parameters (4 valid sets; null: the defaults). If scores_out is not null it receives
// score_a for all 15 actions. failures: 4 valid per-stream failure models (the header comment's resend
// charge added to the score), or null for none.
int heuristic_action(const double* raw, std::uint64_t size_bytes, double* predicted_times_out,
                     Split* chosen_split_out = nullptr, const TransportParams* params = nullptr,
                     double* scores_out = nullptr, const FailureModel* failures = nullptr) noexcept;

}  // namespace itp
