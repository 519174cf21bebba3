#include "itp/transport.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

namespace itp {

namespace {

constexpr double kLn2 = 0.69314718055994530942;

// One stream's transport model (see transport.hpp): fixed cost a, RTT R, modelled rate r (measured rate x
// efficiency), initial window W, ramp duration s and the bits rho the ramp carries.
struct StreamModel {
  double a = 0.0;
  double rtt = 0.0;
  double rate = 0.0;
  double window = kInitialWindowBits;
  double ramp_s = 0.0;
  double ramp_bits = 0.0;

  // rate_bps: the rate to model (efficiency already applied).
  StreamModel(double rate_bps, double rtt_s, double setup_rtts, double window_bits) noexcept
      : a(setup_rtts * rtt_s), rtt(rtt_s), rate(rate_bps), window(window_bits) {
    const double bdp = rate_bps * rtt_s;
    if (bdp > window_bits) {
      // log2(r R / W) written as a sum of logs so that an overflowing product (absurd but finite inputs)
      // still gives a finite ramp duration.
      ramp_s = rtt_s * (std::log2(rate_bps) + std::log2(rtt_s) - std::log2(window_bits));
      ramp_bits = bdp - window_bits;
    }
  }

  // From precomputed parts (TransportStreams caches them per decision state).
  StreamModel(double a_s, double rtt_s, double rate_bps, double window_bits, double ramp_duration_s,
              double ramp_bits_total) noexcept
      : a(a_s), rtt(rtt_s), rate(rate_bps), window(window_bits), ramp_s(ramp_duration_s),
        ramp_bits(ramp_bits_total) {}

  // Bits delivered by `elapsed` seconds after the chunk started.
  double bits_by(double elapsed) const noexcept {
    const double t = elapsed - a;
    if (t <= 0.0) return 0.0;
    if (t <= ramp_s) return window * std::expm1(t / rtt * kLn2);
    return ramp_bits + rate * (t - ramp_s);
  }

  // A subgradient of bits_by at `elapsed` (its right slope inside the ramp, 0 before the start).
  double slope(double elapsed) const noexcept {
    const double t = elapsed - a;
    if (t <= 0.0) return 0.0;
    if (t <= ramp_s) return window * kLn2 / rtt * std::exp2(t / rtt);
    return rate;
  }

  // Seconds to deliver `bits` (> 0), fixed cost included.
  double time_for(double bits) const noexcept {
    if (bits <= ramp_bits) return a + rtt * std::log1p(bits / window) / kLn2;
    return a + ramp_s + (bits - ramp_bits) / rate;
  }
};

}  // namespace

const char* invalid_transport_param(const TransportParams& p) noexcept {
  if (!(std::isfinite(p.setup_rtts) && p.setup_rtts >= 0.0)) return "setup_rtts";
  if (!(p.initial_window_bits > 0.0)) return "initial_window_bits";  // NaN fails too; +inf is allowed
  if (!(std::isfinite(p.efficiency) && p.efficiency > 0.0)) return "efficiency";
  return nullptr;
}

double transport_chunk_time(double bits, double rate_bps, double rtt_s, const TransportParams& params) noexcept {
  if (bits <= 0.0) return 0.0;
  if (!(rate_bps > 0.0)) return std::numeric_limits<double>::infinity();
  return StreamModel(rate_bps * params.efficiency, rtt_s, params.setup_rtts, params.initial_window_bits)
      .time_for(bits);
}

double transport_bits_by(double elapsed_s, double rate_bps, double rtt_s, const TransportParams& params) noexcept {
  if (!(rate_bps > 0.0)) return 0.0;
  return StreamModel(rate_bps * params.efficiency, rtt_s, params.setup_rtts, params.initial_window_bits)
      .bits_by(elapsed_s);
}

TransportStreams::TransportStreams(const double* rate_bps, const double* rtt_s,
                                   const TransportParams* params) noexcept {
  const TransportParams defaults{};
  for (std::size_t i = 0; i < kNumStreams; ++i) {
    const TransportParams& p = params != nullptr ? params[i] : defaults;
    rate_[i] = rate_bps[i] > 0.0 ? rate_bps[i] * p.efficiency : rate_bps[i];
    rtt_[i] = rtt_s[i];
    const StreamModel m(rate_[i] > 0.0 ? rate_[i] : 0.0, rtt_s[i], p.setup_rtts, p.initial_window_bits);
    a_[i] = m.a;
    window_[i] = m.window;
    ramp_s_[i] = m.ramp_s;
    ramp_bits_[i] = m.ramp_bits;
  }
}

Split transport_split(std::uint64_t size_bytes, unsigned mask, const double* rate_bps, const double* rtt_s,
                      const TransportParams* params) noexcept {
  return TransportStreams(rate_bps, rtt_s, params).split(size_bytes, mask);
}

Split TransportStreams::split(std::uint64_t size_bytes, unsigned mask) const noexcept {
  const double* rate_bps = rate_.data();
  const double* rtt_s = rtt_.data();
  Split out;
  std::array<int, kNumStreams> ids{};
  std::array<StreamModel, kNumStreams> models{
      StreamModel(0.0, 0.0, 0.0, kInitialWindowBits), StreamModel(0.0, 0.0, 0.0, kInitialWindowBits),
      StreamModel(0.0, 0.0, 0.0, kInitialWindowBits), StreamModel(0.0, 0.0, 0.0, kInitialWindowBits)};
  std::size_t m = 0;
  int lowest_rtt = -1;
  for (int i = 0; i < static_cast<int>(kNumStreams); ++i) {
    if (((mask >> i) & 1U) == 0) continue;
    if (lowest_rtt < 0 || rtt_s[i] < rtt_s[lowest_rtt]) lowest_rtt = i;
    if (rate_bps[i] > 0.0) {
      ids[m] = i;
      models[m] = StreamModel(a_[i], rtt_s[i], rate_bps[i], window_[i], ramp_s_[i], ramp_bits_[i]);
      ++m;
    }
  }
  if (lowest_rtt < 0) return out;  // empty mask: callers validate the action
  if (m == 0) {
    out.chunk_bytes[static_cast<std::size_t>(lowest_rtt)] = size_bytes;
    out.used_mask = static_cast<std::uint8_t>(1U << lowest_rtt);
    out.expected_time_s = std::numeric_limits<double>::infinity();
    return out;
  }

  const double bits = 8.0 * static_cast<double>(size_bytes);
  // Start at the best single-stream time: f(T) = sum B_i(T) - bits >= 0 there.
  double finish = std::numeric_limits<double>::infinity();
  for (std::size_t j = 0; j < m; ++j) finish = std::min(finish, models[j].time_for(bits));
  const double tolerance = bits * 1e-13;
  for (int iter = 0; iter < 64; ++iter) {
    double excess = -bits;
    double slope = 0.0;
    for (std::size_t j = 0; j < m; ++j) {
      excess += models[j].bits_by(finish);
      slope += models[j].slope(finish);
    }
    if (excess <= tolerance || !(slope > 0.0)) break;
    const double next = finish - excess / slope;
    if (!(next < finish)) break;  // converged to the last ulp (or a NaN guard)
    finish = next;
  }
  out.expected_time_s = finish;

  // Shares proportional to the bits each stream delivers by the finish time, then largest remainder.
  std::array<long double, kNumStreams> share{};
  long double total = 0.0L;
  for (std::size_t j = 0; j < m; ++j) {
    share[j] = static_cast<long double>(models[j].bits_by(finish));
    total += share[j];
  }
  if (!(total > 0.0L)) {  // unreachable for finite inputs: the best single stream delivers by `finish`
    std::size_t best = 0;
    for (std::size_t j = 1; j < m; ++j) {
      if (models[j].time_for(bits) < models[best].time_for(bits)) best = j;
    }
    share = {};
    share[best] = 1.0L;
    total = 1.0L;
  }
  const auto size = static_cast<long double>(size_bytes);
  std::array<long double, kNumStreams> frac{};
  std::uint64_t assigned = 0;
  for (std::size_t j = 0; j < m; ++j) {
    const long double exact = std::min(size, size * share[j] / total);
    const long double whole = std::floor(exact);
    auto c = static_cast<std::uint64_t>(whole);
    c = std::min<std::uint64_t>(c, size_bytes - assigned);
    out.chunk_bytes[static_cast<std::size_t>(ids[j])] = c;
    frac[j] = exact - whole;
    assigned += c;
  }
  // Fewer than m bytes remain (each floor loses < 1); hand them out by largest fractional part.
  while (assigned < size_bytes) {
    std::size_t best = 0;
    for (std::size_t j = 1; j < m; ++j) {
      if (frac[j] > frac[best]) best = j;
    }
    out.chunk_bytes[static_cast<std::size_t>(ids[best])] += 1;
    frac[best] = -1.0L;
    ++assigned;
  }
  for (std::size_t i = 0; i < kNumStreams; ++i) {
    if (out.chunk_bytes[i] > 0) out.used_mask = static_cast<std::uint8_t>(out.used_mask | (1U << i));
  }
  return out;
}

}  // namespace itp
