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
#pragma once

#include <cstdint>

#include "itp/actions.hpp"
#include "itp/state.hpp"
#include "itp/transport.hpp"

namespace itp {

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
// score_a for all 15 actions.
int heuristic_action(const double* raw, std::uint64_t size_bytes, double* predicted_times_out,
                     Split* chosen_split_out = nullptr, const TransportParams* params = nullptr,
                     double* scores_out = nullptr) noexcept;

}  // namespace itp
