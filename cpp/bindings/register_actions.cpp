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

// Python ints and numpy integers (anything with __index__), never bool or float.
py::int_ as_index(const py::handle& obj, const char* name) {
  if (py::isinstance<py::bool_>(obj) || PyBool_Check(obj.ptr()) ||
      std::string(py::str(py::type::of(obj).attr("__name__"))) == "bool_" || !PyIndex_Check(obj.ptr())) {
    throw py::type_error(std::string(name) + " must be an int, got " +
                         std::string(py::str(py::type::of(obj).attr("__name__"))));
  }
  return py::reinterpret_steal<py::int_>(PyNumber_Index(obj.ptr()));
}

// Range check in Python's unbounded ints, so 2**70 is a ValueError, not an OverflowError.
long long checked_range(const py::int_& v, const char* name, long long lo, long long hi) {
  if (v < py::int_(lo) || v > py::int_(hi)) {
    throw py::value_error(std::string(name) + " must be in " + std::to_string(lo) + ".." + std::to_string(hi) +
                          ", got " + std::string(py::str(v)));
  }
  return v.cast<long long>();
}

int checked_action(const py::int_& action) {
  return static_cast<int>(checked_range(action, "action", 0, kNumActions - 1));
}

py::tuple decode_checked(int action) {
  const unsigned mask = action_mask(action);
  std::vector<int> ids;
  for (int i = 0; i < static_cast<int>(kNumStreams); ++i) {
    if ((mask >> i) & 1U) ids.push_back(i);
  }
  return py::cast(ids);
}

py::tuple decode(const py::handle& action) { return decode_checked(checked_action(as_index(action, "action"))); }

int encode(const py::iterable& streams) {
  unsigned mask = 0;
  std::size_t count = 0;
  for (const auto& item : streams) {
    const long long s = checked_range(as_index(item, "stream id"), "stream id", 0, kNumStreams - 1);
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

py::tuple split(const py::object& size_obj, const py::handle& action_obj, const py::handle& rate_obj,
                const py::handle& latency_obj) {
  const py::int_ size_bytes = as_index(size_obj, "size_bytes");
  if (size_bytes < py::int_(1) || size_bytes > py::int_(kMaxTaskBytes)) {
    throw py::value_error("size_bytes must be in 1..2**50, got " + std::string(py::str(size_bytes)));
  }
  const int a = checked_action(as_index(action_obj, "action"));
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
  for (int a = 0; a < kNumActions; ++a) table[static_cast<std::size_t>(a)] = decode_checked(a);
  m.attr("ACTION_STREAMS") = table;
  m.def("decode_action", &decode, py::arg("action"), "Stream ids (ascending) of action 0..14.");
  m.def("encode_streams", &encode, py::arg("streams"), "Action 0..14 whose stream set is `streams`.");
  m.def("split_task", &split, py::arg("size_bytes"), py::arg("action"), py::arg("rate_bps"),
        py::arg("latency_s"),
        "Equal-finish-time split: ((bytes per stream 0..3), expected_time_s). Unused streams get 0.");
}

}  // namespace itp::bind
