#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <string>

#include "checks.hpp"
#include "itp/reward.hpp"
#include "itp/state.hpp"
#include "register.hpp"

namespace itp::bind {

namespace {

// The native reward for callers that validated their inputs (itp/reward.py validates; the simulator and
// the partitioner build them): shapes are checked here, values are trusted (never a crash either way).
py::tuple reward_terms_py(const py::handle& raw_obj, const py::handle& chunks_obj, double expected_time_s,
                          double throughput_bps, double latency_s, bool success, std::uint64_t retransmissions,
                          const std::array<double, 5>& weights) {
  auto raw = as_input<double>(raw_obj, "raw_state");
  require_1d(raw, "raw_state", static_cast<py::ssize_t>(kNumFeatures));
  auto chunks = as_input<std::uint64_t>(chunks_obj, "chunk_bytes");
  require_1d(chunks, "chunk_bytes", static_cast<py::ssize_t>(kNumStreams));
  const RewardWeights w{weights[0], weights[1], weights[2], weights[3], weights[4]};
  const RewardTerms t = reward_terms(raw.data(), chunks.data(), expected_time_s, throughput_bps, latency_s,
                                     success, retransmissions, w);
  return py::make_tuple(t.throughput_improvement, t.latency_penalty, t.stream_imbalance, t.completion_bonus,
                        t.retransmission_penalty, t.total);
}

}  // namespace

void register_reward(py::module_& m) {
  m.attr("THROUGHPUT_CLIP") = kThroughputClip;
  m.attr("LATENCY_CLIP") = kLatencyClip;
  m.def("reward_terms", &reward_terms_py, py::arg("raw_state"), py::arg("chunk_bytes"),
        py::arg("expected_time_s"), py::arg("throughput_bps"), py::arg("latency_s"), py::arg("success"),
        py::arg("retransmissions"), py::arg("weights"),
        "(throughput_improvement, latency_penalty, stream_imbalance, completion_bonus, retransmission_penalty,"
        " total) of one decision and its outcome; inputs validated by the caller.");
}

}  // namespace itp::bind
