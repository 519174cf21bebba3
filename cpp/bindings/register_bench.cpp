// Private native timing of the per-task decision core, so the "under 1 us natively" target is measured in
// C++ without the Python call overhead that pytest-benchmark adds to every call.
//
// One call of the core = find_invalid_feature + normalize_state + action_mask + split_bytes on one raw
// state, i.e. everything the partitioner does per task except the policy network. The raw states, actions
// and sizes are generated before the clock starts; every result feeds a checksum that is returned, so the
// optimiser cannot drop the work. Calls are timed in batches of kBatchCalls with std::chrono::steady_clock
// (one clock read per batch, so the clock's own cost is amortised); p50/p99 are over the per-call means of
// the batches.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "itp/actions.hpp"
#include "itp/state.hpp"
#include "register.hpp"

namespace itp::bind {

namespace {

namespace py = pybind11;

constexpr std::size_t kNumCases = 1024;   // distinct states cycled through: varied, yet cache-resident
constexpr long long kBatchCalls = 64;      // calls per clock reading
constexpr long long kMaxIterations = 1LL << 32;

struct Case {
  std::array<double, kNumFeatures> raw{};
  std::uint64_t size_bytes = 1;
  int action = 0;
};

// Varied, realistic raw states: some dead streams (rate 0), rates spread over four decades, RTTs from LAN
// to intercontinental, task sizes log-uniform from 1 B to 1 TiB, every action.
std::vector<Case> make_cases(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::vector<Case> cases(kNumCases);
  for (Case& c : cases) {
    for (std::size_t i = 0; i < kNumStreams; ++i) {
      const bool dead = unit(rng) < 0.1;
      c.raw[kBandwidthOffset + i] = dead ? 0.0 : std::pow(10.0, 6.0 + 4.0 * unit(rng));
      c.raw[kLatencyOffset + i] = 0.001 + 0.3 * unit(rng);
      c.raw[kCongestionOffset + i] = unit(rng);
      c.raw[kSuccessRateOffset + i] = unit(rng);
    }
    c.raw[kQueueDepthIndex] = std::floor(200.0 * unit(rng));
    const double size = std::max(1.0, std::floor(std::exp2(40.0 * unit(rng))));
    c.raw[kTaskSizeIndex] = size;
    c.raw[kPriorityIndex] = unit(rng);
    c.raw[kTimeOfDayIndex] = 24.0 * unit(rng) * 0.999999;
    c.size_bytes = static_cast<std::uint64_t>(size);
    c.action = static_cast<int>(rng() % static_cast<std::uint64_t>(kNumActions));
  }
  return cases;
}

py::dict bench_decision_core(long long iterations, long long seed) {
  if (iterations < 1 || iterations > kMaxIterations) {
    throw py::value_error("iterations must be in 1..2**32, got " + std::to_string(iterations));
  }
  if (seed < 0) throw py::value_error("seed must be >= 0, got " + std::to_string(seed));

  const std::vector<Case> cases = make_cases(static_cast<std::uint64_t>(seed));
  const long long batches = (iterations + kBatchCalls - 1) / kBatchCalls;
  std::vector<double> batch_ns_per_call(static_cast<std::size_t>(batches));
  double checksum = 0.0;
  std::uint64_t bytes_requested = 0;  // sizes of every call, summed outside the decision core
  std::uint64_t bytes_placed = 0;     // chunk bytes returned by split_bytes, summed
  long long invalid_states = 0;
  double total_ns = 0.0;
  {
    py::gil_scoped_release nogil;
    using clock = std::chrono::steady_clock;
    std::array<float, kNumFeatures> norm{};
    long long done = 0;
    std::size_t next = 0;
    for (long long b = 0; b < batches; ++b) {
      const long long n = std::min(kBatchCalls, iterations - done);
      const auto t0 = clock::now();
      for (long long j = 0; j < n; ++j) {
        const Case& c = cases[next];
        next = next + 1 == kNumCases ? 0 : next + 1;
        if (find_invalid_feature(c.raw.data()) >= 0) {
          ++invalid_states;
          continue;
        }
        normalize_state(c.raw.data(), norm.data());
        const Split s = split_bytes(c.size_bytes, action_mask(c.action), c.raw.data() + kBandwidthOffset,
                                    c.raw.data() + kLatencyOffset);
        float feature_sum = 0.0F;
        for (const float f : norm) feature_sum += f;
        checksum += static_cast<double>(feature_sum);
        if (std::isfinite(s.expected_time_s)) checksum += s.expected_time_s;
        for (const std::uint64_t chunk : s.chunk_bytes) bytes_placed += chunk;
      }
      const auto t1 = clock::now();
      const double ns = static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
      total_ns += ns;
      batch_ns_per_call[static_cast<std::size_t>(b)] = ns / static_cast<double>(n);
      done += n;
    }
    // The expected byte total is computed after timing, from the same cycle of cases.
    for (long long i = 0; i < iterations; ++i) bytes_requested += cases[static_cast<std::size_t>(i) % kNumCases].size_bytes;
  }
  std::sort(batch_ns_per_call.begin(), batch_ns_per_call.end());
  const auto pick = [&](double q) {
    const auto idx = static_cast<std::size_t>(q * static_cast<double>(batch_ns_per_call.size() - 1) + 0.5);
    return batch_ns_per_call[idx];
  };
  py::dict out;
  out["ns_per_call_mean"] = total_ns / static_cast<double>(iterations);
  out["ns_per_call_p50"] = pick(0.50);
  out["ns_per_call_p99"] = pick(0.99);
  out["checksum"] = checksum;
  out["iterations"] = iterations;
  out["batch_calls"] = kBatchCalls;
  out["bytes_requested"] = bytes_requested;
  out["bytes_placed"] = bytes_placed;
  out["invalid_states"] = invalid_states;
  return out;
}

}  // namespace

void register_bench(pybind11::module_& m) {
  m.def("_bench_decision_core", &bench_decision_core, py::arg("iterations"), py::arg("seed"),
        "Private: time validate + normalize_state + action_mask + split_bytes natively (GIL released).\n"
        "Returns ns_per_call_mean/p50/p99 (p50/p99 over batches of 64 calls), checksum, iterations,\n"
        "batch_calls, bytes_requested, bytes_placed (equal when every split is exact), invalid_states.");
}

}  // namespace itp::bind
