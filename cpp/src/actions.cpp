#include "itp/actions.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace itp {

const std::array<std::uint8_t, kNumActions> kActionMasks = {
    0b0001, 0b0010, 0b0100, 0b1000,                  // singles
    0b0011, 0b0101, 0b1001, 0b0110, 0b1010, 0b1100,  // pairs (0,1)(0,2)(0,3)(1,2)(1,3)(2,3)
    0b0111, 0b1011, 0b1101, 0b1110,                  // triples (0,1,2)(0,1,3)(0,2,3)(1,2,3)
    0b1111,                                          // all four
};

namespace {
// Inverse of kActionMasks, indexed by mask; -1 for the empty mask.
constexpr std::array<std::int8_t, 16> kMaskToAction = {-1, 0, 1, 4, 2, 5, 7, 10, 3, 6, 8, 11, 9, 12, 13, 14};
}  // namespace

int encode_mask(unsigned mask) noexcept {
  if (mask == 0 || mask > 15) return -1;
  return kMaskToAction[mask];
}

Split split_bytes(std::uint64_t size_bytes, unsigned mask, const double* rate_bps,
                  const double* latency_s) noexcept {
  Split out;
  // Candidate streams with positive rate, sorted by latency (insertion sort over <= 4 items).
  std::array<int, kNumStreams> order{};
  std::size_t m = 0;
  for (int i = 0; i < static_cast<int>(kNumStreams); ++i) {
    if ((mask >> i) & 1U) {
      if (rate_bps[i] > 0.0) order[m++] = i;
    }
  }
  if (m == 0) {
    int best = -1;
    for (int i = 0; i < static_cast<int>(kNumStreams); ++i) {
      if (((mask >> i) & 1U) && (best < 0 || latency_s[i] < latency_s[best])) best = i;
    }
    if (best < 0) return out;  // empty mask: nothing to do (callers validate the action)
    out.chunk_bytes[static_cast<std::size_t>(best)] = size_bytes;
    out.used_mask = static_cast<std::uint8_t>(1U << best);
    out.expected_time_s = std::numeric_limits<double>::infinity();
    return out;
  }
  for (std::size_t a = 1; a < m; ++a) {
    const int v = order[a];
    std::size_t b = a;
    while (b > 0 && latency_s[order[b - 1]] > latency_s[v]) {
      order[b] = order[b - 1];
      --b;
    }
    order[b] = v;
  }
  // Water filling: admit streams by latency while the next one's latency is below the finish time.
  //
  // Everything is written in latency *differences* so that no large quantity is subtracted from a nearly
  // equal one (the direct forms T = (8S + sum r L) / sum r and c_s = r_s (T - L_s) / 8 lose up to
  // r_s L_s * eps bytes to cancellation, 11 bytes at 1 Pbit/s and 1e6 s, and the whole split when the
  // latencies are near the top of the double range):
  //   admit stream k  <=>  L_k < T_A  <=>  sum_{j in A} r_j (L_k - L_j) < 8 S   (every term >= 0),
  //   c_s = r_s (8 S + sum_{j in A} r_j (L_j - L_s)) / (8 sum_{j in A} r_j),
  // where the negative terms of the numerator sum to less than 8 S, so the rounding error of c_s is at
  // most about 3 eps S (eps = 2^-63 for the x87 long double: < 1e-3 byte at S = 2^50) for any finite
  // rates and latencies (long double's exponent range holds every product of two doubles).
  using real = long double;
  const real bits = static_cast<real>(size_bytes) * 8.0L;
  const auto rate = [&](std::size_t j) { return static_cast<real>(rate_bps[order[j]]); };
  const auto lat = [&](std::size_t j) { return static_cast<real>(latency_s[order[j]]); };
  std::size_t k = 1;  // the lowest-latency stream is always admitted: T > L_0 for S >= 1
  for (; k < m; ++k) {
    real backlog = 0.0L;  // bits the admitted streams carry by the time the next stream starts
    for (std::size_t j = 0; j < k; ++j) backlog += rate(j) * (lat(k) - lat(j));
    if (backlog >= bits) break;
  }
  real sum_r = 0.0L;
  real sum_rl = 0.0L;
  for (std::size_t j = 0; j < k; ++j) {
    sum_r += rate(j);
    sum_rl += rate(j) * lat(j);
  }
  out.expected_time_s = static_cast<double>((bits + sum_rl) / sum_r);  // all terms >= 0: no cancellation
  // Real-valued shares, floored; distribute the remainder by largest fractional part.
  std::array<real, kNumStreams> frac{};
  std::uint64_t assigned = 0;
  for (std::size_t j = 0; j < k; ++j) {
    const int s = order[j];
    real numerator = bits;
    for (std::size_t i = 0; i < k; ++i) numerator += rate(i) * (lat(i) - lat(j));
    real share = rate(j) * numerator / (8.0L * sum_r);
    share = std::max<real>(0.0L, std::min<real>(share, static_cast<real>(size_bytes)));
    const real whole = std::floor(share);
    auto c = static_cast<std::uint64_t>(whole);
    c = std::min<std::uint64_t>(c, size_bytes - assigned);
    out.chunk_bytes[static_cast<std::size_t>(s)] = c;
    frac[j] = share - whole;
    assigned += c;
  }
  std::uint64_t remaining = size_bytes - assigned;  // < k up to rounding error; loop handles any value
  while (remaining > 0) {
    std::size_t best = 0;
    for (std::size_t j = 1; j < k; ++j) {
      if (frac[j] > frac[best]) best = j;
    }
    const std::uint64_t give = (remaining + (k - 1)) / k;  // usually 1
    out.chunk_bytes[static_cast<std::size_t>(order[best])] += std::min(give, remaining);
    remaining -= std::min(give, remaining);
    frac[best] = -1.0L;
    bool any = false;
    for (std::size_t j = 0; j < k; ++j) any = any || frac[j] >= 0.0L;
    if (!any) {
      for (std::size_t j = 0; j < k; ++j) frac[j] = 0.0L;
    }
  }
  for (std::size_t i = 0; i < kNumStreams; ++i) {
    if (out.chunk_bytes[i] > 0) out.used_mask = static_cast<std::uint8_t>(out.used_mask | (1U << i));
  }
  return out;
}

}  // namespace itp
