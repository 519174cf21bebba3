// The 15-action table and the equal-finish-time byte split.
//
// Actions (stream sets):
//   0-3    one stream: {0} {1} {2} {3}
//   4-9    pairs: {0,1} {0,2} {0,3} {1,2} {1,3} {2,3}
//   10-13  triples: {0,1,2} {0,1,3} {0,2,3} {1,2,3}
//   14     all four
// A stream set is also a 4-bit mask (bit i = stream i); encode/decode are exact inverses over the 15
// non-empty masks.
//
// Split: S bytes over streams with rate r_i (bit/s) and latency L_i (s). The fluid optimum gives every
// used stream the same finish time T:   L_i + 8 c_i / r_i = T   with   sum c_i = S,
// so  T = (8 S + sum r_i L_i) / sum r_i  over the used set, and c_i = r_i (T - L_i) / 8.
// Streams are admitted in order of latency (water filling); a stream with L_i >= T gets nothing and is
// dropped, as are streams with rate 0. Adding a stream of positive rate can only lower T (or leave it).
// The real-valued chunks are rounded to integers by largest remainder so that they sum exactly to S.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "itp/state.hpp"

namespace itp {

inline constexpr int kNumActions = 15;
// Largest task the split accepts: 2^50 bytes (1 PiB). 8*S stays exact in a double.
inline constexpr std::uint64_t kMaxTaskBytes = std::uint64_t{1} << 50;

// Bit mask of the stream set of each action.
extern const std::array<std::uint8_t, kNumActions> kActionMasks;

// Mask of `action`; precondition 0 <= action < 15.
inline std::uint8_t action_mask(int action) noexcept { return kActionMasks[static_cast<std::size_t>(action)]; }

// Action whose stream set is `mask` (1..15), or -1 for 0 or a mask above 15. O(1).
int encode_mask(unsigned mask) noexcept;

struct Split {
  std::array<std::uint64_t, kNumStreams> chunk_bytes{};  // per stream; 0 for unused streams
  double expected_time_s = 0.0;  // the fluid equal finish time T (seconds); +inf if no usable stream
  std::uint8_t used_mask = 0;    // streams that received at least one byte
};

// Splits `size_bytes` (1..2^50) over the streams in `mask` so that predicted finish times are equal.
// rate_bps and latency_s hold 4 finite, non-negative values each (validated by the caller).
// If no stream in `mask` has a positive rate, every byte goes to the lowest-latency stream of the mask and
// expected_time_s is +inf. O(1) (at most 4 streams), no allocation, thread-safe.
Split split_bytes(std::uint64_t size_bytes, unsigned mask, const double* rate_bps,
                  const double* latency_s) noexcept;

}  // namespace itp
