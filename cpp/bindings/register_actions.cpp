#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <sstream>
#include <vector>

#include "checks.hpp"
#include "itp/actions.hpp"
#include "register.hpp"

namespace itp::bind {

namespace {

int checked_action(long long action) {
  if (action < 0 || action >= kNumActions) {
    throw py::value_error("action must be in 0..14, got " + std::to_string(action));
  }
  return static_cast<int>(action);
}

py::tuple decode(long long action) {
  const unsigned mask = action_mask(checked_action(action));
  std::vector<int> ids;
  for (int i = 0; i < static_cast<int>(kNumStreams); ++i) {
    if ((mask >> i) & 1U) ids.push_back(i);
  }
  return py::cast(ids);
}

int encode(const py::iterable& streams) {
  unsigned mask = 0;
  std::size_t count = 0;
  for (const auto& item : streams) {
    if (!py::isinstance<py::int_>(item) || py::isinstance<py::bool_>(item)) {
      throw py::type_error("stream ids must be ints, got " +
                           std::string(py::str(py::type::of(item).attr("__name__"))));
    }
    const auto s = item.cast<long long>();
    if (s < 0 || s >= static_cast<long long>(kNumStreams)) {
      throw py::value_error("stream id must be in 0..3, got " + std::to_string(s));
    }
    if ((mask >> s) & 1U) throw py::value_error("stream id " + std::to_string(s) + " appears twice");
    mask |= 1U << s;
    ++count;
  }
  if (count == 0) throw py::value_error("streams must name at least one stream id, got none");
  return encode_mask(mask);
}

void check_stream_metric(const double* v, const char* name) {
  for (std::size_t i = 0; i < kNumStreams; ++i) {
    if (!std::isfinite(v[i]) || v[i] < 0.0) {
      std::ostringstream os;
      os << name << "[" << i << "] must be finite and >= 0, got " << v[i];
      throw py::value_error(os.str());
    }
  }
}

py::tuple split(const py::object& size_obj, long long action, const py::handle& rate_obj,
                const py::handle& latency_obj) {
  if (!py::isinstance<py::int_>(size_obj) || py::isinstance<py::bool_>(size_obj)) {
    throw py::type_error("size_bytes must be an int, got " +
                         std::string(py::str(py::type::of(size_obj).attr("__name__"))));
  }
  const auto size_bytes = size_obj.cast<py::int_>();
  if (size_bytes < py::int_(1) || size_bytes > py::int_(kMaxTaskBytes)) {
    throw py::value_error("size_bytes must be in 1..2**50, got " + std::string(py::str(size_bytes)));
  }
  const int a = checked_action(action);
  auto rate = as_input<double>(rate_obj, "rate_bps");
  require_1d(rate, "rate_bps", static_cast<py::ssize_t>(kNumStreams));
  auto lat = as_input<double>(latency_obj, "latency_s");
  require_1d(lat, "latency_s", static_cast<py::ssize_t>(kNumStreams));
  check_stream_metric(rate.data(), "rate_bps");
  check_stream_metric(lat.data(), "latency_s");
  const Split s = split_bytes(size_bytes.cast<std::uint64_t>(), action_mask(a), rate.data(), lat.data());
  py::tuple chunks(kNumStreams);
  for (std::size_t i = 0; i < kNumStreams; ++i) chunks[i] = py::int_(s.chunk_bytes[i]);
  return py::make_tuple(chunks, s.expected_time_s);
}

}  // namespace

void register_actions(py::module_& m) {
  m.attr("NUM_ACTIONS") = kNumActions;
  m.attr("MAX_TASK_BYTES") = kMaxTaskBytes;
  py::tuple table(kNumActions);
  for (int a = 0; a < kNumActions; ++a) table[static_cast<std::size_t>(a)] = decode(a);
  m.attr("ACTION_STREAMS") = table;
  m.def("decode_action", &decode, py::arg("action"), "Stream ids (ascending) of action 0..14.");
  m.def("encode_streams", &encode, py::arg("streams"), "Action 0..14 whose stream set is `streams`.");
  m.def("split_task", &split, py::arg("size_bytes"), py::arg("action"), py::arg("rate_bps"),
        py::arg("latency_s"),
        "Equal-finish-time split: ((bytes per stream 0..3), expected_time_s). Unused streams get 0.");
}

}  // namespace itp::bind
