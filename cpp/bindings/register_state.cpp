#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <sstream>

#include "checks.hpp"
#include "itp/state.hpp"
#include "register.hpp"

namespace itp::bind {

namespace {

[[noreturn]] void raise_bad_feature(const double* raw, int idx, py::ssize_t row) {
  std::ostringstream os;
  os << "state";
  if (row >= 0) os << "[" << row << "]";
  os << " field " << kFeatureNames[static_cast<std::size_t>(idx)] << " must be finite and >= 0, got "
     << raw[idx];
  throw py::value_error(os.str());
}

py::array_t<float> normalize_one(const py::handle& raw_obj) {
  auto raw = as_input<double>(raw_obj, "raw_state");
  require_1d(raw, "raw_state", static_cast<py::ssize_t>(kNumFeatures));
  py::array_t<float> out(static_cast<py::ssize_t>(kNumFeatures));
  const double* src = raw.data();
  const int bad = find_invalid_feature(src);
  if (bad >= 0) raise_bad_feature(src, bad, -1);
  normalize_state(src, out.mutable_data());
  return out;
}

py::array_t<float> normalize_many(const py::handle& raw_obj, const py::object& out_obj) {
  auto raw = as_input<double>(raw_obj, "raw_states");
  require_2d(raw, "raw_states", -1, static_cast<py::ssize_t>(kNumFeatures));
  const py::ssize_t n = raw.shape(0);
  py::array_t<float, py::array::c_style> out;
  if (out_obj.is_none()) {
    out = py::array_t<float, py::array::c_style>({n, static_cast<py::ssize_t>(kNumFeatures)});
  } else {
    out = as_output<float>(out_obj, "out");
    require_2d(out, "out", n, static_cast<py::ssize_t>(kNumFeatures));
  }
  const double* src = raw.data();
  float* dst = out.mutable_data();
  // Validate every row before writing any, so a bad row leaves `out` untouched.
  for (py::ssize_t r = 0; r < n; ++r) {
    const int bad = find_invalid_feature(src + r * static_cast<py::ssize_t>(kNumFeatures));
    if (bad >= 0) raise_bad_feature(src + r * static_cast<py::ssize_t>(kNumFeatures), bad, r);
  }
  {
    py::gil_scoped_release nogil;
    for (py::ssize_t r = 0; r < n; ++r) {
      normalize_state(src + r * static_cast<py::ssize_t>(kNumFeatures),
                      dst + r * static_cast<py::ssize_t>(kNumFeatures));
    }
  }
  return out;
}

}  // namespace

void register_state(py::module_& m) {
  m.attr("NUM_STREAMS") = kNumStreams;
  m.attr("NUM_FEATURES") = kNumFeatures;
  m.attr("STATE_LAYOUT_VERSION") = kStateLayoutVersion;
  py::tuple names(kNumFeatures);
  for (std::size_t i = 0; i < kNumFeatures; ++i) names[i] = py::str(kFeatureNames[i]);
  m.attr("FEATURE_NAMES") = names;
  m.attr("BANDWIDTH_SCALE_BPS") = kBandwidthScaleBps;
  m.attr("LATENCY_SCALE_S") = kLatencyScaleS;
  m.attr("QUEUE_DEPTH_SCALE") = kQueueDepthScale;
  m.attr("TASK_SIZE_LOG2_SCALE") = kTaskSizeLog2Scale;

  m.def("normalize_state", &normalize_one, py::arg("raw_state"),
        "Normalise one raw state (20 numbers, caller units) into float32[20] in [0, 1].");
  m.def("normalize_states", &normalize_many, py::arg("raw_states"), py::arg("out") = py::none(),
        "Normalise raw states float64[N, 20] into out (float32[N, 20], C-contiguous) or a new array.");
  m.def(
      "task_size_feature",
      [](double size_bytes) {
        if (!std::isfinite(size_bytes) || size_bytes < 0) {
          throw py::value_error("size_bytes must be finite and >= 0, got " + std::to_string(size_bytes));
        }
        return std::min(1.0, task_size_feature(size_bytes));
      },
      py::arg("size_bytes"), "The [0, 1] task-size feature: log2(max(size_bytes, 1)) / 40, clamped.");
}

}  // namespace itp::bind
