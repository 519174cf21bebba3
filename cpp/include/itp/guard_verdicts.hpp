// The decision guard's verdicts on one decision, packed into one int32 so that they travel with the
// decision into the experience ring and the store (the off-policy gate scores a model as the guard would
// have let it act on each logged state: itp.learning.offpolicy).
#pragma once

#include <cstdint>

#include "itp/actions.hpp"

namespace itp {

// The guard's verdicts on one decision in one int32: bits 0..14, the actions the guard lets through
// (score <= (1 + margin) x the heuristic's best); bits 16..19, the heuristic's action (always let through).
// -1: none (the guard did not run).
inline constexpr std::int32_t kNoGuardVerdicts = -1;
inline constexpr std::int32_t kGuardMaskBits = (1 << kNumActions) - 1;

constexpr std::int32_t encode_guard_verdicts(std::int32_t allowed_mask, int heuristic_action) noexcept {
  return (allowed_mask & kGuardMaskBits) | (heuristic_action << 16);
}

// True for kNoGuardVerdicts or a well-formed code (mask within 15 bits, heuristic action 0..14 and let
// through, nothing else set).
constexpr bool valid_guard_verdicts(std::int32_t code) noexcept {
  if (code == kNoGuardVerdicts) return true;
  if (code < 0) return false;
  const std::int32_t h = code >> 16;
  const std::int32_t rest = code & 0xFFFF;
  return h < kNumActions && (rest & ~kGuardMaskBits) == 0 && ((rest >> h) & 1) == 1;
}

}  // namespace itp
