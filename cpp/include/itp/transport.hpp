// Transport-aware equal-finish split: the production chunking rule.
//
// The plain split (actions.hpp) models a stream as "latency + bytes / rate". A real stream is a TCP (or
// TCP-like) connection, and for the task sizes itp sees (64 KiB - 4 GiB) two more costs dominate small and
// medium chunks: connection set-up and slow start. Per stream i with effective rate r_i (bit/s) and smoothed
// RTT R_i (s), a chunk of b bits started at time 0 finishes at
//
//   t_i(b) = a_i + u_i(b),      a_i = kSetupRtts * R_i
//
// where a_i is the fixed cost (1 RTT handshake + 0.5 RTT request before data; the last byte lands 0.5 RTT
// after it is sent) and u_i is the data phase: slow start from an initial window of W = kInitialWindowBits
// (IW10, RFC 6928), doubling every RTT until the window reaches the bandwidth-delay product r_i R_i, then
// the full rate:
//
//   if r R > W:  ramp  s = R log2(r R / W)  carrying  rho = r R - W  bits, else  s = rho = 0;
//   u(b) = R log2(1 + b / W)          for b <= rho   (still in slow start)
//   u(b) = s + (b - rho) / r          for b >  rho.
//
// Its inverse, the bits a stream has delivered by time T, is
//
//   B_i(T) = 0                        for T <= a_i
//          = W (2^((T - a_i)/R) - 1)  for a_i < T <= a_i + s
//          = rho + r (T - a_i - s)    after.
//
// The equal-finish split over a stream set A solves  sum_{i in A} B_i(T) = 8 S  for the common finish time
// T. Every B_i is convex and non-decreasing (its slope rises from W ln2 / R to ln2 r during the ramp, then
// jumps to r), so their sum f(T) is too, and Newton's method started to the right of the root (at the best
// single-stream time, where f >= 0) descends monotonically onto it using any subgradient: no bracketing is
// needed and it converges in a handful of steps. Streams with a_i >= T get nothing (water filling falls
// out of B_i = 0), and adding a stream with positive rate can only lower T. Bytes are
// c_i = S B_i(T) / sum B(T), rounded by largest remainder to integers that sum exactly to S.
//
// For chunks past the ramp the model is exactly the plain split with latency  a_i + s_i - rho_i / r_i.
//
// Runtime parameters (TransportParams, per stream): the fixed cost in RTTs S (kSetupRtts by default), the
// initial window W in bits (kInitialWindowBits by default; +inf, or any window at or above the
// bandwidth-delay product, models a warm persistent stream without slow start) and the rate efficiency
// eta (1 by default): the model uses the rate eta * r wherever r appears above and a_i = S_i R_i. With the
// default parameters every result is bit-identical to the compile-time model (eta = 1 multiplies exactly,
// and the default S and W are the same doubles as the constants). itp/calibration.py fits them online.
#pragma once

#include <array>
#include <cstdint>

#include "itp/actions.hpp"

namespace itp {

// Fixed cost of a chunk in RTTs: 1 (handshake) + 0.5 (request) + 0.5 (last byte's propagation).
inline constexpr double kSetupRtts = 2.0;
// Initial congestion window: 10 segments of 1460 bytes (RFC 6928), in bits.
inline constexpr double kInitialWindowBits = 8.0 * 14600.0;

// One stream's transport parameters (see the header comment). Plain data, trivially copyable.
struct TransportParams {
  double setup_rtts = kSetupRtts;                   // fixed cost of a chunk, RTTs; finite, >= 0
  double initial_window_bits = kInitialWindowBits;  // window a chunk starts from, bits; > 0, +inf allowed
  double efficiency = 1.0;                          // delivered rate / measured rate; finite, > 0
};

// The parameters of the four streams.
using StreamTransportParams = std::array<TransportParams, kNumStreams>;

// Name of the first invalid field of `p` ("setup_rtts", "initial_window_bits", "efficiency"), or null when
// every field is valid. O(1).
const char* invalid_transport_param(const TransportParams& p) noexcept;

// Seconds a chunk of `bits` (>= 0) takes on a stream of measured rate_bps (> 0) and rtt_s (>= 0) with the
// given (valid) parameters, including the fixed cost; 0 for 0 bits. O(1).
double transport_chunk_time(double bits, double rate_bps, double rtt_s,
                            const TransportParams& params = TransportParams{}) noexcept;

// Bits a stream has delivered `elapsed_s` seconds after its chunk started (fixed cost included). O(1).
double transport_bits_by(double elapsed_s, double rate_bps, double rtt_s,
                         const TransportParams& params = TransportParams{}) noexcept;

// The four streams' transport models for one decision state, built once (the logarithms of the ramp)
// and shared by the splits of all 15 actions. Trivially copyable, no allocation, thread-safe to read.
class TransportStreams {
 public:
  // rate_bps (effective rates) and rtt_s: 4 finite, non-negative values each. params: 4 valid parameter
  // sets (the rate each stream models is rate_bps[i] * efficiency), or null for the defaults.
  TransportStreams(const double* rate_bps, const double* rtt_s,
                   const TransportParams* params = nullptr) noexcept;
  // transport_split(size_bytes, mask, rate_bps, rtt_s) with the cached models.
  Split split(std::uint64_t size_bytes, unsigned mask) const noexcept;

 private:
  std::array<double, kNumStreams> rate_{};
  std::array<double, kNumStreams> rtt_{};
  std::array<double, kNumStreams> a_{};
  std::array<double, kNumStreams> ramp_s_{};
  std::array<double, kNumStreams> ramp_bits_{};
  std::array<double, kNumStreams> window_{};
};

// Splits size_bytes (1..2^50) over the streams of `mask` (1..15) so that transport-model finish times are
// equal. rate_bps (effective rates) and rtt_s hold 4 finite, non-negative values. If no stream of the mask
// has a positive rate, every byte goes to its lowest-RTT stream and expected_time_s is +inf (as
// split_bytes). params: 4 valid parameter sets, or null for the defaults. O(1) (at most 4 streams, <= 64
// Newton steps), no allocation, thread-safe.
Split transport_split(std::uint64_t size_bytes, unsigned mask, const double* rate_bps, const double* rtt_s,
                      const TransportParams* params = nullptr) noexcept;

}  // namespace itp
