#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "checks.hpp"
#include "itp/decision.hpp"
#include "itp/heuristic.hpp"
#include "itp/transport.hpp"
#include "itp/mlp.hpp"
#include "register.hpp"

namespace itp::bind {

namespace {

// Builds the network from PyTorch/ONNX-convention weights W[out, in] (y = W x + b).
std::shared_ptr<FusedMlp> make_mlp(const py::list& weights, const py::list& biases) {
  if (weights.size() != biases.size()) {
    throw py::value_error("weights and biases must have the same length, got " +
                          std::to_string(weights.size()) + " and " + std::to_string(biases.size()));
  }
  std::vector<DenseLayer> layers;
  for (std::size_t k = 0; k < weights.size(); ++k) {
    const std::string wname = "weights[" + std::to_string(k) + "]";
    const std::string bname = "biases[" + std::to_string(k) + "]";
    auto w = as_input<float>(weights[k], wname.c_str());
    auto b = as_input<float>(biases[k], bname.c_str());
    if (w.ndim() != 2) throw py::value_error(wname + " must be 2-D (out, in), got " + shape_str(w));
    DenseLayer l;
    l.out_dim = static_cast<std::size_t>(w.shape(0));
    l.in_dim = static_cast<std::size_t>(w.shape(1));
    require_1d(b, bname.c_str(), w.shape(0));
    l.weight_t.resize(l.in_dim * l.out_dim);
    const float* src = w.data();
    for (std::size_t o = 0; o < l.out_dim; ++o) {
      for (std::size_t i = 0; i < l.in_dim; ++i) l.weight_t[i * l.out_dim + o] = src[o * l.in_dim + i];
    }
    l.bias.assign(b.data(), b.data() + l.out_dim);
    layers.push_back(std::move(l));
  }
  try {
    return std::make_shared<FusedMlp>(std::move(layers));
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
}

py::array_t<float> forward_one(const FusedMlp& mlp, const py::handle& x_obj) {
  auto x = as_input<float>(x_obj, "state");
  require_1d(x, "state", static_cast<py::ssize_t>(mlp.input_dim()));
  py::array_t<float> q(static_cast<py::ssize_t>(mlp.output_dim()));
  const float* src = x.data();
  float* dst = q.mutable_data();
  {
    py::gil_scoped_release nogil;
    mlp.forward(src, dst);
  }
  return q;
}

py::array_t<float> forward_many(const FusedMlp& mlp, const py::handle& x_obj, const py::object& out_obj) {
  auto x = as_input<float>(x_obj, "states");
  require_2d(x, "states", -1, static_cast<py::ssize_t>(mlp.input_dim()));
  const py::ssize_t n = x.shape(0);
  const auto od = static_cast<py::ssize_t>(mlp.output_dim());
  py::array_t<float, py::array::c_style> out;
  if (out_obj.is_none()) {
    out = py::array_t<float, py::array::c_style>({n, od});
  } else {
    out = as_output<float>(out_obj, "out");
    require_2d(out, "out", n, od);
  }
  const float* src = x.data();
  float* dst = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    mlp.forward_many(src, static_cast<std::size_t>(n), dst);
  }
  return out;
}

void check_metric(double v, const char* name, bool unit_interval) {
  if (!std::isfinite(v) || v < 0.0 || (unit_interval && v > 1.0)) {
    std::ostringstream os;
    os << name << " must be " << (unit_interval ? "in [0, 1]" : "finite and >= 0") << ", got " << v;
    throw py::value_error(os.str());
  }
}

std::uint64_t checked_size(const py::handle& size_obj) {
  if (!py::isinstance<py::int_>(size_obj) || py::isinstance<py::bool_>(size_obj)) {
    throw py::type_error("size_bytes must be an int, got " +
                         std::string(py::str(py::type::of(size_obj).attr("__name__"))));
  }
  const auto size = py::reinterpret_borrow<py::int_>(size_obj);
  if (size < py::int_(1) || size > py::int_(kMaxTaskBytes)) {
    throw py::value_error("size_bytes must be in 1..2**50, got " + std::string(py::str(size)));
  }
  return size.cast<std::uint64_t>();
}

const float* optional_q(const py::object& q_obj, py::array_t<float, py::array::c_style>& holder) {
  if (q_obj.is_none()) return nullptr;
  holder = as_input<float>(q_obj, "q_values");
  require_1d(holder, "q_values", kNumActions);
  return holder.data();
}

py::tuple to_tuple(const DecisionOutput& d) {
  py::tuple chunks(kNumStreams);
  for (std::size_t i = 0; i < kNumStreams; ++i) chunks[i] = py::int_(d.split.chunk_bytes[i]);
  py::array_t<float> state(static_cast<py::ssize_t>(kNumFeatures));
  std::copy(d.state.begin(), d.state.end(), state.mutable_data());
  py::array_t<double> raw(static_cast<py::ssize_t>(kNumFeatures));
  std::copy(d.raw.begin(), d.raw.end(), raw.mutable_data());
  return py::make_tuple(d.action, static_cast<int>(d.source), chunks, d.split.expected_time_s, d.confidence,
                        state, raw, d.model_fault, d.propensity, d.guard_verdicts);
}

py::tuple engine_decide(const DecisionEngine& e, const py::handle& size_obj, double priority, double hour,
                        bool explore, const py::object& q_obj) {
  const std::uint64_t size = checked_size(size_obj);
  check_metric(priority, "priority", true);
  if (!std::isfinite(hour) || hour < 0.0 || hour >= 24.0) {
    throw py::value_error("hour must be in [0, 24), got " + std::to_string(hour));
  }
  py::array_t<float, py::array::c_style> qh;
  const float* q = optional_q(q_obj, qh);
  DecisionOutput d;
  {
    py::gil_scoped_release nogil;
    e.decide(size, priority, hour, q, explore, d);
  }
  return to_tuple(d);
}

// A validated raw state (float64[20], every feature finite and >= 0) and its task size in bytes.
std::pair<py::array_t<double, py::array::c_style>, std::uint64_t> checked_raw(const py::handle& raw_obj) {
  auto raw = as_input<double>(raw_obj, "raw_state");
  require_1d(raw, "raw_state", static_cast<py::ssize_t>(kNumFeatures));
  const int bad = find_invalid_feature(raw.data());
  if (bad >= 0) {
    throw py::value_error(std::string("raw_state field ") + kFeatureNames[static_cast<std::size_t>(bad)] +
                          " must be finite and >= 0, got " + std::to_string(raw.data()[bad]));
  }
  const double size_d = raw.data()[kTaskSizeIndex];
  if (size_d < 1.0 || size_d > static_cast<double>(kMaxTaskBytes)) {
    throw py::value_error("raw_state task_size_bytes must be in 1..2**50, got " + std::to_string(size_d));
  }
  return {raw, static_cast<std::uint64_t>(std::llround(size_d))};
}

py::tuple engine_decide_raw(const DecisionEngine& e, const py::handle& raw_obj, bool explore,
                            const py::object& q_obj) {
  const auto [raw, size] = checked_raw(raw_obj);
  py::array_t<float, py::array::c_style> qh;
  const float* q = optional_q(q_obj, qh);
  DecisionOutput d;
  {
    py::gil_scoped_release nogil;
    e.decide_raw(raw.data(), size, q, explore, d);
  }
  return to_tuple(d);
}

// Batch decisions over the current stream table: fills caller arrays, GIL released for the whole loop.
void engine_decide_batch(const DecisionEngine& e, const py::handle& sizes_obj, const py::handle& prio_obj,
                         double hour, bool explore, const py::handle& actions_obj, const py::handle& sources_obj,
                         const py::handle& chunks_obj, const py::handle& times_obj, const py::handle& conf_obj,
                         const py::handle& states_obj) {
  auto sizes = as_input<std::uint64_t>(sizes_obj, "sizes_bytes");
  require_1d(sizes, "sizes_bytes", -1);
  const py::ssize_t n = sizes.shape(0);
  auto prio = as_input<double>(prio_obj, "priorities");
  require_1d(prio, "priorities", n);
  if (!std::isfinite(hour) || hour < 0.0 || hour >= 24.0) {
    throw py::value_error("hour must be in [0, 24), got " + std::to_string(hour));
  }
  for (py::ssize_t i = 0; i < n; ++i) {
    const std::uint64_t s = sizes.data()[i];
    if (s < 1 || s > kMaxTaskBytes) {
      throw py::value_error("sizes_bytes[" + std::to_string(i) + "] must be in 1..2**50, got " +
                            std::to_string(s));
    }
    const double p = prio.data()[i];
    if (!std::isfinite(p) || p < 0.0 || p > 1.0) {
      throw py::value_error("priorities[" + std::to_string(i) + "] must be in [0, 1], got " +
                            std::to_string(p));
    }
  }
  auto actions = as_output<std::int64_t>(actions_obj, "actions");
  require_1d(actions, "actions", n);
  auto sources = as_output<std::uint8_t>(sources_obj, "sources");
  require_1d(sources, "sources", n);
  auto chunks = as_output<std::uint64_t>(chunks_obj, "chunks");
  require_2d(chunks, "chunks", n, static_cast<py::ssize_t>(kNumStreams));
  auto times = as_output<double>(times_obj, "expected_times_s");
  require_1d(times, "expected_times_s", n);
  auto conf = as_output<double>(conf_obj, "confidences");
  require_1d(conf, "confidences", n);
  auto states = as_output<float>(states_obj, "states");
  require_2d(states, "states", n, static_cast<py::ssize_t>(kNumFeatures));
  const std::uint64_t* sp = sizes.data();
  const double* pp = prio.data();
  std::int64_t* ap = actions.mutable_data();
  std::uint8_t* srcp = sources.mutable_data();
  std::uint64_t* cp = chunks.mutable_data();
  double* tp = times.mutable_data();
  double* cfp = conf.mutable_data();
  float* stp = states.mutable_data();
  py::gil_scoped_release nogil;
  DecisionOutput d;
  for (py::ssize_t i = 0; i < n; ++i) {
    e.decide(sp[i], pp[i], hour, nullptr, explore, d);
    ap[i] = d.action;
    srcp[i] = static_cast<std::uint8_t>(d.source) | static_cast<std::uint8_t>(d.model_fault ? 0x80 : 0);
    std::copy(d.split.chunk_bytes.begin(), d.split.chunk_bytes.end(), cp + i * static_cast<py::ssize_t>(kNumStreams));
    tp[i] = d.split.expected_time_s;
    cfp[i] = d.confidence;
    std::copy(d.state.begin(), d.state.end(), stp + i * static_cast<py::ssize_t>(kNumFeatures));
  }
}

py::array_t<double> engine_snapshot(const DecisionEngine& e, double size_bytes, double priority, double hour) {
  py::array_t<double> raw(static_cast<py::ssize_t>(kNumFeatures));
  e.snapshot(size_bytes, priority, hour, raw.mutable_data());
  return raw;
}

int checked_action(const py::handle& action_obj) {
  if (!py::isinstance<py::int_>(action_obj) || py::isinstance<py::bool_>(action_obj)) {
    throw py::type_error("action must be an int, got " +
                         std::string(py::str(py::type::of(action_obj).attr("__name__"))));
  }
  const auto action = py::reinterpret_borrow<py::int_>(action_obj);
  if (action < py::int_(0) || action > py::int_(kNumActions - 1)) {
    throw py::value_error("action must be in 0..14, got " + std::string(py::str(action)));
  }
  return action.cast<int>();
}

py::array_t<double, py::array::c_style> checked_stream_values(const py::handle& obj, const char* name) {
  auto v = as_input<double>(obj, name);
  require_1d(v, name, static_cast<py::ssize_t>(kNumStreams));
  for (std::size_t i = 0; i < kNumStreams; ++i) check_metric(v.data()[i], name, false);
  return v;
}

py::tuple split_to_tuple(const Split& s) {
  py::tuple chunks(kNumStreams);
  for (std::size_t i = 0; i < kNumStreams; ++i) chunks[i] = py::int_(s.chunk_bytes[i]);
  return py::make_tuple(chunks, s.expected_time_s);
}

// Per-stream values from a float64 array of shape (4, N): rows are streams, columns `fields`. `make`
// builds one stream's value from its row; `invalid` names its first bad field (nullptr: valid). The
// ValueError names the array, the stream and the field, with the field's requirement from `rules`.
template <class Value, std::size_t N, class Make, class Invalid>
std::array<Value, kNumStreams> checked_stream_rows(const py::handle& obj, const char* name,
                                                   const std::array<const char*, N>& fields,
                                                   const std::array<const char*, N>& rules, Make make,
                                                   Invalid invalid) {
  auto arr = as_input<double>(obj, name);
  require_2d(arr, name, static_cast<py::ssize_t>(kNumStreams), static_cast<py::ssize_t>(N));
  std::array<Value, kNumStreams> out;
  for (std::size_t i = 0; i < kNumStreams; ++i) {
    const double* row = arr.data() + N * i;
    out[i] = make(row);
    if (const char* bad = invalid(out[i])) {
      std::size_t col = 0;
      while (col + 1 < N && std::string(fields[col]) != bad) ++col;
      std::ostringstream os;
      os << name << "[" << i << "]." << bad << " must be " << rules[col] << ", got " << row[col];
      throw py::value_error(os.str());
    }
  }
  return out;
}

// Transport parameters of the 4 streams, shape (4, 3): (setup_rtts, initial_window_bits, efficiency).
StreamTransportParams checked_transport_params(const py::handle& obj) {
  return checked_stream_rows<TransportParams, 3>(
      obj, "transport_params", {"setup_rtts", "initial_window_bits", "efficiency"},
      {"finite and >= 0", "> 0 (+inf: no slow start)", "finite and > 0"},
      [](const double* r) { return TransportParams{r[0], r[1], r[2]}; },
      [](const TransportParams& t) { return invalid_transport_param(t); });
}

// Failure models of the 4 streams, shape (4, 2): (fail_probability, hazard_per_s).
StreamFailureModels checked_failure_models(const py::handle& obj) {
  return checked_stream_rows<FailureModel, 2>(
      obj, "failure_models", {"fail_probability", "hazard_per_s"}, {"in [0, 1)", "finite and >= 0"},
      [](const double* r) { return FailureModel{r[0], r[1]}; },
      [](const FailureModel& m) { return invalid_failure_model(m); });
}

py::object failure_models_to_array(const DecisionEngine& e) {
  StreamFailureModels models;
  if (!e.failure_models(models)) return py::none();
  py::array_t<double> out({static_cast<py::ssize_t>(kNumStreams), py::ssize_t{2}});
  double* o = out.mutable_data();
  for (std::size_t i = 0; i < kNumStreams; ++i) {
    o[2 * i] = models[i].fail_probability;
    o[2 * i + 1] = models[i].hazard_per_s;
  }
  return std::move(out);
}

// Optional parameters: None gives the defaults (a null pointer to the core).
const TransportParams* optional_params(const py::handle& obj, StreamTransportParams& holder) {
  if (obj.is_none()) return nullptr;
  holder = checked_transport_params(obj);
  return holder.data();
}

py::array_t<double> params_to_array(const StreamTransportParams& params) {
  py::array_t<double> out({static_cast<py::ssize_t>(kNumStreams), py::ssize_t{3}});
  double* o = out.mutable_data();
  for (std::size_t i = 0; i < kNumStreams; ++i) {
    o[3 * i] = params[i].setup_rtts;
    o[3 * i + 1] = params[i].initial_window_bits;
    o[3 * i + 2] = params[i].efficiency;
  }
  return out;
}

py::tuple transport_split_py(const py::handle& size_obj, const py::handle& action_obj, const py::handle& rate_obj,
                             const py::handle& rtt_obj, const py::handle& params_obj) {
  const std::uint64_t size = checked_size(size_obj);
  const int action = checked_action(action_obj);
  const auto rate = checked_stream_values(rate_obj, "rate_bps");
  const auto rtt = checked_stream_values(rtt_obj, "rtt_s");
  StreamTransportParams holder;
  const TransportParams* params = optional_params(params_obj, holder);
  return split_to_tuple(transport_split(size, action_mask(action), rate.data(), rtt.data(), params));
}

double transport_chunk_time_py(double bits, double rate_bps, double rtt_s, double setup_rtts,
                               double initial_window_bits, double efficiency) {
  check_metric(bits, "bits", false);
  check_metric(rate_bps, "rate_bps", false);
  check_metric(rtt_s, "rtt_s", false);
  const TransportParams p{setup_rtts, initial_window_bits, efficiency};
  if (const char* bad = invalid_transport_param(p)) {
    throw py::value_error(std::string(bad) + " must be " +
                          (std::string(bad) == "initial_window_bits" ? "> 0 (+inf: no slow start)"
                           : std::string(bad) == "setup_rtts"       ? "finite and >= 0"
                                                                    : "finite and > 0") +
                          ", got " + std::to_string(std::string(bad) == "setup_rtts"   ? setup_rtts
                                                    : std::string(bad) == "efficiency" ? efficiency
                                                                                       : initial_window_bits));
  }
  return transport_chunk_time(bits, rate_bps, rtt_s, p);
}

int heuristic_for_raw(const py::handle& raw_obj, const py::handle& params_obj, const py::handle& failures_obj) {
  const auto [raw, size] = checked_raw(raw_obj);
  StreamTransportParams holder;
  const TransportParams* params = optional_params(params_obj, holder);
  StreamFailureModels failure_holder;
  const FailureModel* failures = nullptr;
  if (!failures_obj.is_none()) {
    failure_holder = checked_failure_models(failures_obj);
    failures = failure_holder.data();
  }
  const double* data = raw.data();
  py::gil_scoped_release nogil;
  return heuristic_action(data, size, nullptr, nullptr, params, nullptr, failures);
}

}  // namespace

void register_policy(py::module_& m) {
  py::class_<FusedMlp, std::shared_ptr<FusedMlp>>(m, "FusedMlp",
                                                  "Native dense ReLU chain (the folded Q-network).")
      .def(py::init(&make_mlp), py::arg("weights"), py::arg("biases"),
           "Layers from W[out, in] float32 and b[out]; ReLU between layers, none after the last.")
      .def("forward", &forward_one, py::arg("state"), "q_values float32[out] for one input.")
      .def("forward_batch", &forward_many, py::arg("states"), py::arg("out") = py::none(),
           "q_values float32[N, out] for N inputs (GIL released).")
      .def_property_readonly("input_dim", &FusedMlp::input_dim)
      .def_property_readonly("output_dim", &FusedMlp::output_dim)
      .def_property_readonly("num_layers", &FusedMlp::num_layers)
      .def_property_readonly_static("kernel_name", [](const py::object&) { return FusedMlp::kernel_name(); });

  m.attr("SETUP_RTTS") = kSetupRtts;
  m.attr("INITIAL_WINDOW_BITS") = kInitialWindowBits;
  m.def("transport_split", &transport_split_py, py::arg("size_bytes"), py::arg("action"), py::arg("rate_bps"),
        py::arg("rtt_s"), py::arg("transport_params") = py::none(),
        "Transport-aware equal-finish split: ((bytes per stream 0..3), expected_time_s). transport_params: "
        "float64[4, 3] (setup_rtts, initial_window_bits, efficiency per stream) or None for the defaults.");
  m.def("transport_chunk_time", &transport_chunk_time_py, py::arg("bits"), py::arg("rate_bps"), py::arg("rtt_s"),
        py::arg("setup_rtts") = kSetupRtts, py::arg("initial_window_bits") = kInitialWindowBits,
        py::arg("efficiency") = 1.0,
        "Seconds for one chunk of `bits` under the transport model (set-up and slow start included).");
  m.def(
      "production_split",
      [](const py::handle& raw_obj, const py::handle& action_obj, const py::handle& params_obj) {
        const int action = checked_action(action_obj);
        const auto [raw, size] = checked_raw(raw_obj);
        StreamTransportParams holder;
        const TransportParams* params = optional_params(params_obj, holder);
        return split_to_tuple(production_split(raw.data(), size, action, params));
      },
      py::arg("raw_state"), py::arg("action"), py::arg("transport_params") = py::none(),
      "The production split of `action` for a raw state: transport_split over bandwidth x success rate.");
  m.def("heuristic_action", &heuristic_for_raw, py::arg("raw_state"), py::arg("transport_params") = py::none(),
        py::arg("failure_models") = py::none(),
        "The heuristic's action (0..14) for a raw state float64[20] (caller units); failure_models: "
        "float64[4, 2] (fail_probability, hazard_per_s per stream) for the failure-model score, or None.");

  py::class_<DecisionEngine, std::shared_ptr<DecisionEngine>>(m, "DecisionEngine", "Native decision path (stream table, model, split).")
      .def(py::init<std::uint64_t>(), py::arg("seed"))
      .def(
          "update_stream",
          [](DecisionEngine& e, long long stream_id, double bandwidth_bps, double latency_s, double congestion,
             double success_rate, double start_window_bits) {
            if (stream_id < 0 || stream_id >= static_cast<long long>(kNumStreams)) {
              throw py::value_error("stream_id must be in 0..3, got " + std::to_string(stream_id));
            }
            check_metric(bandwidth_bps, "bandwidth_bps", false);
            check_metric(latency_s, "latency_s", false);
            check_metric(congestion, "congestion", true);
            check_metric(success_rate, "success_rate", true);
            check_metric(start_window_bits, "start_window_bits", false);
            e.update_stream(static_cast<std::size_t>(stream_id),
                            StreamMetrics{bandwidth_bps, latency_s, congestion, success_rate, start_window_bits});
          },
          py::arg("stream_id"), py::arg("bandwidth_bps"), py::arg("latency_s"), py::arg("congestion"),
          py::arg("success_rate"), py::arg("start_window_bits") = 0.0,
          "Caller-validated stream metrics; start_window_bits: the window a chunk sent now would start from "
          "(bits, 0: unknown).")
      .def(
          "start_window_bits",
          [](const DecisionEngine& e, long long stream_id) {
            if (stream_id < 0 || stream_id >= static_cast<long long>(kNumStreams)) {
              throw py::value_error("stream_id must be in 0..3, got " + std::to_string(stream_id));
            }
            return e.stream(static_cast<std::size_t>(stream_id)).start_window_bits;
          },
          py::arg("stream_id"), "The stream's known start window, bits (0: unknown).")
      .def_property(
          "guard_margin",
          [](const DecisionEngine& e) -> py::object {
            const double current = e.guard_margin();
            return current >= 0.0 ? py::object(py::float_(current)) : py::object(py::none());
          },
          [](DecisionEngine& e, const py::object& margin) {
            if (margin.is_none()) {
              e.set_guard_margin(-1.0);
              return;
            }
            const double value = margin.cast<double>();
            if (!(value >= 0.0 && std::isfinite(value))) {
              throw py::value_error("guard_margin must be None or a finite number >= 0, got " +
                                    std::to_string(value));
            }
            e.set_guard_margin(value);
          },
          "The guard's margin (None: off): a model decision whose heuristic score exceeds (1 + margin) x the "
          "heuristic's best is replaced by the heuristic's action.")
      .def_property(
          "guard_exploration", &DecisionEngine::guard_exploration,
          [](DecisionEngine& e, const py::object& on) {
            if (!py::isinstance<py::bool_>(on)) {
              throw py::type_error("guard_exploration must be a bool, got " +
                                   std::string(py::str(py::type::of(on).attr("__name__"))));
            }
            e.set_guard_exploration(on.cast<bool>());
          },
          "Guarded exploration (default False): while the guard is on, exploration draws only among the "
          "actions the guard lets through (the k best of them by Q); the propensity logged is that policy's.")
      .def_property_readonly("guard_overrides", &DecisionEngine::guard_overrides,
                             "Model decisions the guard replaced since construction.")
      .def(
          "set_queue_depth",
          [](DecisionEngine& e, double q) {
            check_metric(q, "queue_depth", false);
            e.set_queue_depth(q);
          },
          py::arg("queue_depth"))
      .def_property_readonly("queue_depth", &DecisionEngine::queue_depth)
      .def(
          "set_transport_params",
          [](DecisionEngine& e, const py::handle& params) { e.set_transport_params(checked_transport_params(params)); },
          py::arg("transport_params"),
          "Per-stream transport parameters float64[4, 3] (setup_rtts, initial_window_bits, efficiency), "
          "validated first (nothing changes on error); used by every later split, heuristic choice and "
          "expected time.")
      .def(
          "transport_params", [](const DecisionEngine& e) { return params_to_array(e.transport_params()); },
          "The current per-stream transport parameters, float64[4, 3].")
      .def(
          "set_failure_models",
          [](DecisionEngine& e, const py::handle& models) {
            if (models.is_none()) {
              e.clear_failure_models();
            } else {
              e.set_failure_models(checked_failure_models(models));
            }
          },
          py::arg("failure_models"),
          "Per-stream failure models float64[4, 2] (fail_probability, hazard_per_s), validated first "
          "(nothing changes on error), whose resend time the guard's and the heuristic's scores add; "
          "None: none.")
      .def("failure_models", &failure_models_to_array,
           "The failure models in use, float64[4, 2], or None.")
      .def(
          "stream",
          [](const DecisionEngine& e, long long stream_id) {
            if (stream_id < 0 || stream_id >= static_cast<long long>(kNumStreams)) {
              throw py::value_error("stream_id must be in 0..3, got " + std::to_string(stream_id));
            }
            const StreamMetrics s = e.stream(static_cast<std::size_t>(stream_id));
            return py::make_tuple(s.bandwidth_bps, s.latency_s, s.congestion, s.success_rate);
          },
          py::arg("stream_id"))
      .def(
          "set_model", [](DecisionEngine& e, std::shared_ptr<FusedMlp> model) { e.set_model(std::move(model)); },
          py::arg("model").none(true))
      .def_property("epsilon", &DecisionEngine::epsilon,
                    [](DecisionEngine& e, double eps) {
                      if (!(eps >= 0.0 && eps <= 1.0)) {
                        throw py::value_error("epsilon must be in [0, 1], got " + std::to_string(eps));
                      }
                      e.set_epsilon(eps);
                    })
      .def_property("explore_top_k", &DecisionEngine::explore_top_k,
                    [](DecisionEngine& e, int k) {
                      if (k < 1 || k > kNumActions) {
                        throw py::value_error("explore_top_k must be in 1..15, got " + std::to_string(k));
                      }
                      e.set_explore_top_k(k);
                    })
      .def_property(
          "explore_max_bytes",
          [](const DecisionEngine& e) -> py::object {
            const std::uint64_t limit = e.explore_max_bytes();
            if (limit == std::numeric_limits<std::uint64_t>::max()) return py::none();
            return py::int_(limit);
          },
          [](DecisionEngine& e, const py::object& value) {
            if (value.is_none()) {
              e.set_explore_max_bytes(std::numeric_limits<std::uint64_t>::max());
              return;
            }
            if (py::isinstance<py::bool_>(value) || !py::isinstance<py::int_>(value)) {
              throw py::type_error("explore_max_bytes must be None or an int, got " +
                                   std::string(py::str(py::type::of(value).attr("__name__"))));
            }
            const py::int_ v = value.cast<py::int_>();
            if (v < py::int_(1) || v >= py::int_(std::numeric_limits<std::uint64_t>::max())) {
              throw py::value_error("explore_max_bytes must be None or an int in 1..2**64 - 2, got " +
                                    std::string(py::str(value)));
            }
            e.set_explore_max_bytes(value.cast<std::uint64_t>());
          },
          "Exploration size limit in bytes (None, default: none): a task whose size feature exceeds the "
          "limit's (float32 log2(size) / 40) is decided greedily, with propensity 1.")
      .def("decide", &engine_decide, py::arg("size_bytes"), py::arg("priority"), py::arg("hour"),
           py::arg("explore") = true, py::arg("q_values") = py::none(),
           "(action, source, chunks, expected_time_s, confidence, state f32[20], raw f64[20], model_fault, propensity)")
      .def("decide_raw", &engine_decide_raw, py::arg("raw_state"), py::arg("explore") = false,
           py::arg("q_values") = py::none())
      .def("decide_batch", &engine_decide_batch, py::arg("sizes_bytes"), py::arg("priorities"), py::arg("hour"),
           py::arg("explore"), py::arg("actions"), py::arg("sources"), py::arg("chunks"),
           py::arg("expected_times_s"), py::arg("confidences"), py::arg("states"))
      .def("snapshot", &engine_snapshot, py::arg("size_bytes"), py::arg("priority"), py::arg("hour"),
           "Raw state float64[20] from the current stream table (no validation of the task fields).");
}

}  // namespace itp::bind
