// Python face of the partitioner core (itp/partitioner.hpp): the native Decision value type and
// PartitionerCore, whose partition_task / partition_tasks / report_outcome / report_outcomes are each one
// call. Every argument is checked with the GIL held, naming the field, before anything changes; the core
// work (decision, pending table, reward, ring push) runs with the GIL released; the Decision objects are
// built afterwards.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include "checks.hpp"
#include "itp/partitioner.hpp"
#include "register.hpp"

namespace itp::bind {

namespace {

constexpr std::array<const char*, 3> kSourceNames = {"model", "explore", "heuristic"};
constexpr std::array<const char*, 2> kArmNames = {"current", "candidate"};

// Interned names and numpy scalar types, looked up once (the module lives as long as the interpreter,
// so these references are intentionally never released).
struct Names {
  py::handle sources[3];
  py::handle arms[2];
  py::handle id, size, priority;
  py::handle np_floating, np_integer, np_bool;

  static const Names& get() {
    static const Names names = [] {
      Names n{};
      for (std::size_t i = 0; i < 3; ++i) n.sources[i] = py::str(kSourceNames[i]).release();
      for (std::size_t i = 0; i < 2; ++i) n.arms[i] = py::str(kArmNames[i]).release();
      n.id = py::str("id").release();
      n.size = py::str("size").release();
      n.priority = py::str("priority").release();
      py::module_ np = py::module_::import("numpy");
      n.np_floating = py::object(np.attr("floating")).release();
      n.np_integer = py::object(np.attr("integer")).release();
      n.np_bool = py::object(np.attr("bool_")).release();
      for (py::handle* h : {&n.sources[0], &n.sources[1], &n.sources[2], &n.arms[0], &n.arms[1], &n.id, &n.size,
                            &n.priority}) {
        PyUnicode_InternInPlace(reinterpret_cast<PyObject**>(h));
      }
      return n;
    }();
    return names;
  }
};

std::string type_name_of(const py::handle& obj) {
  return std::string(py::str(py::type::of(obj).attr("__name__")));
}

std::string repr_of(const py::handle& obj) { return std::string(py::repr(obj)); }

bool is_int(const py::handle& obj) {
  if (PyBool_Check(obj.ptr())) return false;
  if (PyLong_Check(obj.ptr())) return true;
  return PyObject_IsInstance(obj.ptr(), Names::get().np_integer.ptr()) == 1;
}

bool is_number(const py::handle& obj) {
  if (PyFloat_Check(obj.ptr())) return true;
  if (is_int(obj)) return true;
  return PyObject_IsInstance(obj.ptr(), Names::get().np_floating.ptr()) == 1;
}

double as_double(const py::handle& obj) {
  const double v = PyFloat_Check(obj.ptr()) ? PyFloat_AS_DOUBLE(obj.ptr()) : PyFloat_AsDouble(obj.ptr());
  if (v == -1.0 && PyErr_Occurred()) throw py::error_already_set();
  return v;
}

// A number (int, float, numpy scalar; not bool), finite and >= 0 (> 0 if `positive`).
double checked_metric(const py::handle& obj, const char* name, bool positive) {
  if (!is_number(obj)) throw py::type_error(std::string(name) + " must be a number, got " + type_name_of(obj));
  const double v = as_double(obj);
  if (!std::isfinite(v) || v < 0.0 || (positive && v == 0.0)) {
    throw py::value_error(std::string(name) + " must be finite and " + (positive ? "> 0" : ">= 0") + ", got " +
                          repr_of(obj));
  }
  return v;
}

bool checked_bool(const py::handle& obj, const char* name) {
  if (PyBool_Check(obj.ptr())) return obj.ptr() == Py_True;
  if (PyObject_IsInstance(obj.ptr(), Names::get().np_bool.ptr()) == 1) return PyObject_IsTrue(obj.ptr()) == 1;
  throw py::type_error(std::string(name) + " must be a bool, got " + type_name_of(obj));
}

std::uint64_t checked_count(const py::handle& obj, const char* name) {
  if (!is_int(obj)) throw py::type_error(std::string(name) + " must be an int, got " + type_name_of(obj));
  const auto v = py::reinterpret_steal<py::int_>(PyNumber_Index(obj.ptr()));
  if (!v) throw py::error_already_set();
  if (v < py::int_(0)) throw py::value_error(std::string(name) + " must be >= 0, got " + repr_of(obj));
  return v.cast<std::uint64_t>();
}

// ------------------------------------------------------------------------------------------- Decision

// The value handed to callers. Immutable; equality is identity (as the dataclass it replaces, eq=False):
// report_outcome accepts only the very object partition_task returned, which `token` identifies (a copy
// or an unpickled Decision carries token 0 and is refused as "does not belong").
struct Decision {
  py::object task_id;        // str
  py::object model_version;  // str or None
  std::array<std::uint64_t, kNumStreams> chunk_bytes{};
  double expected_time_s = 0.0;
  double confidence = 0.0;
  double propensity = 1.0;
  int action = 0;
  std::uint8_t source = 0;
  std::uint8_t arm = 0;
  std::uint64_t token = 0;

  py::tuple stream_ids() const {
    std::size_t n = 0;
    for (auto c : chunk_bytes) n += c > 0 ? 1 : 0;
    py::tuple t(n);
    std::size_t k = 0;
    for (std::size_t i = 0; i < kNumStreams; ++i) {
      if (chunk_bytes[i] > 0) t[k++] = py::int_(i);
    }
    return t;
  }
  py::tuple chunk_sizes() const {
    std::size_t n = 0;
    for (auto c : chunk_bytes) n += c > 0 ? 1 : 0;
    py::tuple t(n);
    std::size_t k = 0;
    for (std::size_t i = 0; i < kNumStreams; ++i) {
      if (chunk_bytes[i] > 0) t[k++] = py::int_(chunk_bytes[i]);
    }
    return t;
  }
  py::tuple bytes_per_stream() const {
    return py::make_tuple(chunk_bytes[0], chunk_bytes[1], chunk_bytes[2], chunk_bytes[3]);
  }
};

Decision make_decision(py::object task_id, const py::object& version, const std::array<std::uint64_t, 4>& chunks,
                       double expected_time_s, double confidence, double propensity, int action, std::uint8_t source,
                       std::uint8_t arm, std::uint64_t token) {
  Decision d;
  d.task_id = std::move(task_id);
  d.model_version = version;
  d.chunk_bytes = chunks;
  d.expected_time_s = expected_time_s;
  d.confidence = confidence;
  d.propensity = propensity;
  d.action = action;
  d.source = source;
  d.arm = arm;
  d.token = token;
  return d;
}

int index_of(const char* const* names, std::size_t n, const std::string& value) {
  for (std::size_t i = 0; i < n; ++i) {
    if (value == names[i]) return static_cast<int>(i);
  }
  return -1;
}

// Decision(task_id, action, stream_ids, chunk_sizes, expected_time, confidence, source, model_version,
// propensity=1.0, arm="current"), every field checked and named.
Decision construct_decision(const py::object& task_id, const py::handle& action, const py::handle& stream_ids,
                            const py::handle& chunk_sizes, const py::handle& expected_time,
                            const py::handle& confidence, const py::handle& source, const py::object& model_version,
                            const py::handle& propensity, const py::handle& arm) {
  if (!py::isinstance<py::str>(task_id) || py::len(task_id) == 0) {
    throw py::value_error("task_id must be a non-empty str, got " + repr_of(task_id));
  }
  if (!is_int(action)) throw py::type_error("action must be an int, got " + type_name_of(action));
  const auto a = py::reinterpret_steal<py::int_>(PyNumber_Index(action.ptr()));
  if (a < py::int_(0) || a > py::int_(kNumActions - 1)) {
    throw py::value_error("action must be in 0..14, got " + repr_of(action));
  }
  const auto ids = py::reinterpret_borrow<py::object>(stream_ids);
  const auto sizes = py::reinterpret_borrow<py::object>(chunk_sizes);
  if (!py::isinstance<py::sequence>(ids) || py::isinstance<py::str>(ids)) {
    throw py::type_error("stream_ids must be a sequence of ints, got " + type_name_of(ids));
  }
  if (!py::isinstance<py::sequence>(sizes) || py::isinstance<py::str>(sizes)) {
    throw py::type_error("chunk_sizes must be a sequence of ints, got " + type_name_of(sizes));
  }
  const auto id_seq = py::reinterpret_borrow<py::sequence>(ids);
  const auto size_seq = py::reinterpret_borrow<py::sequence>(sizes);
  if (id_seq.size() != size_seq.size()) {
    throw py::value_error("stream_ids and chunk_sizes must have the same length, got " +
                          std::to_string(id_seq.size()) + " and " + std::to_string(size_seq.size()));
  }
  std::array<std::uint64_t, 4> chunks{};
  long long prev = -1;
  for (std::size_t k = 0; k < id_seq.size(); ++k) {
    const py::object s = id_seq[k];
    const py::object c = size_seq[k];
    if (!is_int(s)) throw py::type_error("stream_ids must hold ints, got " + type_name_of(s));
    const long long sid = py::reinterpret_steal<py::int_>(PyNumber_Index(s.ptr())).cast<long long>();
    if (sid <= prev || sid > 3) {
      throw py::value_error("stream_ids must be ascending stream ids in 0..3, got " + repr_of(ids));
    }
    prev = sid;
    if (!is_int(c)) throw py::type_error("chunk_sizes must hold ints, got " + type_name_of(c));
    const auto cv = py::reinterpret_steal<py::int_>(PyNumber_Index(c.ptr()));
    if (cv < py::int_(1) || cv > py::int_(kMaxTaskBytes)) {
      throw py::value_error("chunk_sizes must hold byte counts in 1..2**50, got " + repr_of(sizes));
    }
    chunks[static_cast<std::size_t>(sid)] = cv.cast<std::uint64_t>();
  }
  if (!is_number(expected_time)) {
    throw py::type_error("expected_time must be a number, got " + type_name_of(expected_time));
  }
  const double t = as_double(expected_time);
  if (!(t >= 0.0)) throw py::value_error("expected_time must be >= 0 seconds, got " + repr_of(expected_time));
  if (!is_number(confidence)) throw py::type_error("confidence must be a number, got " + type_name_of(confidence));
  const double conf = as_double(confidence);
  if (!(conf >= 0.0 && conf <= 1.0)) throw py::value_error("confidence must be in [0, 1], got " + repr_of(confidence));
  if (!py::isinstance<py::str>(source)) throw py::type_error("source must be a str, got " + type_name_of(source));
  const int src = index_of(kSourceNames.data(), 3, py::cast<std::string>(source));
  if (src < 0) throw py::value_error("source must be 'model', 'explore' or 'heuristic', got " + repr_of(source));
  if (!model_version.is_none() && !py::isinstance<py::str>(model_version)) {
    throw py::type_error("model_version must be a str or None, got " + type_name_of(model_version));
  }
  if (!is_number(propensity)) throw py::type_error("propensity must be a number, got " + type_name_of(propensity));
  const double prop = as_double(propensity);
  if (!(prop > 0.0 && prop <= 1.0)) throw py::value_error("propensity must be in (0, 1], got " + repr_of(propensity));
  if (!py::isinstance<py::str>(arm)) throw py::type_error("arm must be a str, got " + type_name_of(arm));
  const int arm_code = index_of(kArmNames.data(), 2, py::cast<std::string>(arm));
  if (arm_code < 0) throw py::value_error("arm must be 'current' or 'candidate', got " + repr_of(arm));
  return make_decision(py::str(task_id), model_version, chunks, t, conf, prop, a.cast<int>(),
                       static_cast<std::uint8_t>(src), static_cast<std::uint8_t>(arm_code), 0);
}

std::string format_float(double v) {
  // Python's repr of a float (shortest round-trip form), so the repr reads like the dataclass one did.
  return std::string(py::repr(py::float_(v)));
}

std::string decision_repr(const Decision& d) {
  std::ostringstream os;
  os << "Decision(task_id=" << repr_of(d.task_id) << ", action=" << d.action
     << ", stream_ids=" << repr_of(d.stream_ids()) << ", chunk_sizes=" << repr_of(d.chunk_sizes())
     << ", expected_time=" << format_float(d.expected_time_s) << ", confidence=" << format_float(d.confidence)
     << ", source='" << kSourceNames[d.source] << "', model_version=" << repr_of(d.model_version)
     << ", propensity=" << format_float(d.propensity) << ", arm='" << kArmNames[d.arm] << "')";
  return os.str();
}

py::tuple decision_state(const Decision& d) {
  return py::make_tuple(d.task_id, d.action, d.stream_ids(), d.chunk_sizes(), d.expected_time_s, d.confidence,
                        py::handle(Names::get().sources[d.source]), d.model_version, d.propensity,
                        py::handle(Names::get().arms[d.arm]));
}

// --------------------------------------------------------------------------------------- core wrapper

struct ReadTask {
  py::object id;  // the caller's str (kept: the Decision shares it)
  TaskInput input;
};

class PyPartitioner {
 public:
  PyPartitioner(std::shared_ptr<DecisionEngine> engine, ExperienceRing& ring, double ttl_s, py::object task_type,
                py::object clock, py::object monotonic, py::object on_nan_fault)
      : core_(std::move(engine), &ring, ttl_s),
        task_type_(std::move(task_type)),
        clock_(std::move(clock)),
        monotonic_(std::move(monotonic)),
        on_nan_fault_(std::move(on_nan_fault)) {
    if (!(std::isfinite(ttl_s) && ttl_s > 0.0)) {
      throw py::value_error("decision_ttl_s must be a positive number of seconds, got " + std::to_string(ttl_s));
    }
    if (!py::isinstance<py::type>(task_type_)) throw py::type_error("task_type must be a class");
    Names::get();
  }

  void set_serving(std::shared_ptr<FusedMlp> model, const py::object& version, bool model_wanted, bool native) {
    if (!version.is_none() && !py::isinstance<py::str>(version)) {
      throw py::type_error("version must be a str or None, got " + type_name_of(version));
    }
    auto s = std::make_shared<Serving>();
    s->model = std::move(model);
    s->version = version.is_none() ? std::string() : py::cast<std::string>(version);
    s->model_wanted = model_wanted;
    s->native = native;
    // The Python version object pairs with the snapshot: both change under the GIL, which every decision
    // holds when it reads them (before releasing it for the native work).
    serving_version_ = std::make_shared<py::object>(version);
    core_.set_serving(std::move(s));
  }

  py::object partition_task(const py::handle& task) {
    ReadTask t = read_task(task, "task");
    const std::shared_ptr<const Serving> serving = core_.serving();
    if (!serving->native) return py::none();
    const std::shared_ptr<py::object> version = serving_version_;
    const double hour = hour_now();
    refuse_pending(t);
    const double now_s = monotonic_s();
    DecisionOutput out;
    std::uint64_t token = 0;
    {
      py::gil_scoped_release nogil;
      core_.decide(*serving, t.input, hour, out);
      token = core_.insert(t.input.id, out, 0, serving->model ? &serving->version : nullptr, now_s);
    }
    if (token == 0) throw pending_error(t.id);
    if (out.model_fault) notify_nan_fault();
    return py::cast(decision_of(std::move(t.id), version_of(*serving, *version), out, 0, token));
  }

  // Records a decision made outside (ONNX Runtime model, canary candidate): `out` is the engine's decision
  // tuple (action, source, chunks, expected_time_s, confidence, state, raw, model_fault, propensity).
  py::object commit(const py::handle& task, const py::tuple& out_tuple, int arm, const py::object& version) {
    ReadTask t = read_task(task, "task");
    if (arm != 0 && arm != 1) throw py::value_error("arm must be 0 or 1, got " + std::to_string(arm));
    DecisionOutput out = from_tuple(out_tuple);
    if (!version.is_none() && !py::isinstance<py::str>(version)) {
      throw py::type_error("version must be a str or None, got " + type_name_of(version));
    }
    const std::string ver = version.is_none() ? std::string() : py::cast<std::string>(version);
    const double now_s = monotonic_s();
    std::uint64_t token = 0;
    {
      py::gil_scoped_release nogil;
      token = core_.insert(t.input.id, out, static_cast<std::uint8_t>(arm), version.is_none() ? nullptr : &ver, now_s);
    }
    if (token == 0) throw pending_error(t.id);
    return py::cast(decision_of(std::move(t.id), version, out, static_cast<std::uint8_t>(arm), token));
  }

  // The early refusal of the slow path: validates the task and refuses a pending id.
  void check_task(const py::handle& task) {
    ReadTask t = read_task(task, "task");
    refuse_pending(t);
  }

  py::object partition_tasks(const py::handle& tasks_obj) {
    const std::vector<ReadTask> tasks = read_tasks(tasks_obj);
    const std::size_t n = tasks.size();
    py::list result(n);
    if (n == 0) return std::move(result);
    const std::shared_ptr<const Serving> serving = core_.serving();
    if (!serving->native) return py::none();
    const std::shared_ptr<py::object> version = serving_version_;
    std::vector<std::string_view> ids(n);
    std::vector<TaskInput> inputs(n);
    for (std::size_t k = 0; k < n; ++k) {
      ids[k] = tasks[k].input.id;
      inputs[k] = tasks[k].input;
    }
    const double hour = hour_now();
    const std::ptrdiff_t early = core_.first_pending(ids.data(), n);
    if (early >= 0) throw pending_error(tasks[static_cast<std::size_t>(early)].id);
    const double now_s = monotonic_s();
    std::vector<DecisionOutput> outs(n);
    std::vector<std::uint8_t> arms(n, 0);
    std::vector<std::uint64_t> tokens(n, 0);
    std::ptrdiff_t clash = -1;
    {
      py::gil_scoped_release nogil;
      core_.decide_many(*serving, inputs.data(), n, hour, outs.data());
      clash = core_.insert_many(ids.data(), outs.data(), arms.data(), serving->model ? &serving->version : nullptr,
                                n, now_s, tokens.data());
    }
    if (clash >= 0) throw pending_error(tasks[static_cast<std::size_t>(clash)].id);
    const py::object& ver = version_of(*serving, *version);
    bool fault = false;
    for (std::size_t k = 0; k < n; ++k) {
      fault = fault || outs[k].model_fault;
      result[k] = py::cast(decision_of(tasks[k].id, ver, outs[k], 0, tokens[k]));
    }
    if (fault) {
      for (std::size_t k = 0; k < n; ++k) {
        if (outs[k].model_fault) notify_nan_fault();
      }
    }
    return std::move(result);
  }

  // Array form: ids (list of str), sizes_bytes uint64[N], priorities float64[N] in; the caller's buffers
  // out. Returns False (nothing done) when the serving model is not native.
  bool partition_arrays(const py::handle& ids_obj, const py::handle& sizes_obj, const py::handle& prio_obj,
                        const py::handle& actions_obj, const py::handle& chunks_obj, const py::handle& times_obj,
                        const py::handle& conf_obj, const py::handle& prop_obj, const py::handle& sources_obj) {
    if (!py::isinstance<py::list>(ids_obj) && !py::isinstance<py::tuple>(ids_obj)) {
      throw py::type_error("task_ids must be a list or tuple of str, got " + type_name_of(ids_obj));
    }
    const auto id_seq = py::reinterpret_borrow<py::sequence>(ids_obj);
    const std::size_t n = id_seq.size();
    const auto ns = static_cast<py::ssize_t>(n);
    auto sizes = as_input<std::uint64_t>(sizes_obj, "sizes_bytes");
    require_1d(sizes, "sizes_bytes", ns);
    auto prio = as_input<double>(prio_obj, "priorities");
    require_1d(prio, "priorities", ns);
    auto actions = as_output<std::int64_t>(actions_obj, "actions");
    require_1d(actions, "actions", ns);
    auto chunks = as_output<std::uint64_t>(chunks_obj, "chunk_bytes");
    require_2d(chunks, "chunk_bytes", ns, static_cast<py::ssize_t>(kNumStreams));
    auto times = as_output<double>(times_obj, "expected_time_s");
    require_1d(times, "expected_time_s", ns);
    auto conf = as_output<double>(conf_obj, "confidence");
    require_1d(conf, "confidence", ns);
    auto prop = as_output<double>(prop_obj, "propensity");
    require_1d(prop, "propensity", ns);
    auto sources = as_output<std::uint8_t>(sources_obj, "sources");
    require_1d(sources, "sources", ns);
    std::vector<py::object> keep(n);
    std::vector<std::string_view> ids(n);
    std::vector<TaskInput> inputs(n);
    std::unordered_set<std::string_view> seen;
    seen.reserve(n);
    for (std::size_t k = 0; k < n; ++k) {
      keep[k] = id_seq[k];
      ids[k] = checked_id(keep[k], ("task_ids[" + std::to_string(k) + "]").c_str());
      if (!seen.insert(ids[k]).second) {
        throw py::value_error("task id " + repr_of(keep[k]) + " appears twice in the batch");
      }
      const std::uint64_t s = sizes.data()[k];
      if (s < 1 || s > kMaxTaskBytes) {
        throw py::value_error("sizes_bytes[" + std::to_string(k) + "] must be in 1..2**50, got " + std::to_string(s));
      }
      const double p = prio.data()[k];
      if (!(p >= 0.0 && p <= 1.0)) {
        throw py::value_error("priorities[" + std::to_string(k) + "] must be in [0, 1], got " + format_float(p));
      }
      inputs[k] = TaskInput{ids[k], s, p};
    }
    const std::shared_ptr<const Serving> serving = core_.serving();
    if (!serving->native) return false;
    if (n == 0) return true;
    const double hour = hour_now();
    const std::ptrdiff_t early = core_.first_pending(ids.data(), n);
    if (early >= 0) throw pending_error(keep[static_cast<std::size_t>(early)]);
    const double now_s = monotonic_s();
    std::vector<DecisionOutput> outs(n);
    std::vector<std::uint8_t> arms(n, 0);
    std::vector<std::uint64_t> tokens(n, 0);
    std::ptrdiff_t clash = -1;
    {
      py::gil_scoped_release nogil;
      core_.decide_many(*serving, inputs.data(), n, hour, outs.data());
      clash = core_.insert_many(ids.data(), outs.data(), arms.data(), serving->model ? &serving->version : nullptr,
                                n, now_s, tokens.data());
      if (clash < 0) {
        for (std::size_t k = 0; k < n; ++k) {
          const DecisionOutput& d = outs[k];
          actions.mutable_data()[k] = d.action;
          std::copy(d.split.chunk_bytes.begin(), d.split.chunk_bytes.end(), chunks.mutable_data() + k * kNumStreams);
          times.mutable_data()[k] = d.split.expected_time_s;
          conf.mutable_data()[k] = d.confidence;
          prop.mutable_data()[k] = d.propensity;
          sources.mutable_data()[k] = static_cast<std::uint8_t>(d.source);
        }
      }
    }
    if (clash >= 0) throw pending_error(keep[static_cast<std::size_t>(clash)]);
    for (std::size_t k = 0; k < n; ++k) {
      if (outs[k].model_fault) notify_nan_fault();
    }
    return true;
  }

  // The streams as the decision saw them: (effective rates bandwidth x success, bit/s; RTTs, s), what the
  // split used, for per-chunk calibration (like with like).
  static py::tuple decision_streams(const PendingDecision& p) {
    py::tuple rates(kNumStreams);
    py::tuple rtts(kNumStreams);
    for (std::size_t i = 0; i < kNumStreams; ++i) {
      rates[i] = py::float_(p.raw[kBandwidthOffset + i] * p.raw[kSuccessRateOffset + i]);
      rtts[i] = py::float_(p.raw[kLatencyOffset + i]);
    }
    return py::make_tuple(rates, rtts);
  }

  // Returns the reward; with `with_streams`, (reward, (rates, rtts) at decision time).
  py::object report_outcome(const py::handle& task_id, const py::handle& decision, const py::handle& throughput_bps,
                            const py::handle& latency_s, const py::handle& success, const py::handle& retransmissions,
                            bool with_streams) {
    const OutcomeInput o = checked_outcome(throughput_bps, latency_s, success, retransmissions);
    const double hour = hour_now();
    if (!py::isinstance<py::str>(task_id)) throw unknown_error(task_id);
    const std::string_view id = utf8_view(task_id);
    const std::uint64_t token = token_of(decision);
    ReportResult r;
    {
      py::gil_scoped_release nogil;
      r = core_.report(id, token, o, hour);
    }
    if (r.status == ReportStatus::kUnknown) throw unknown_error(task_id);
    if (r.status == ReportStatus::kWrongDecision) {
      throw py::value_error("decision does not belong to task " + repr_of(task_id));
    }
    if (with_streams) return py::make_tuple(r.reward, decision_streams(r.decision));
    return py::float_(r.reward);
  }

  // Outcome batch, all or nothing: every metric and every (id, decision) is checked before any changes.
  // decisions: a sequence of Decision aligned with task_ids, or None (tasks decided by partition_arrays,
  // which hands out no Decision objects: the id alone identifies them). Returns rewards float64[N]; with
  // `details`, (rewards, [(arm, model_version, source, expected_time_s, propensity, (rates, rtts),
  // size_bytes) per task]) for the outcome listeners and the calibration.
  py::object report_outcomes(const py::handle& ids_obj, const py::handle& decisions_obj, const py::handle& thr_obj,
                             const py::handle& lat_obj, const py::handle& succ_obj, const py::handle& retx_obj,
                             bool details) {
    if (!py::isinstance<py::list>(ids_obj) && !py::isinstance<py::tuple>(ids_obj)) {
      throw py::type_error("task_ids must be a list or tuple of str, got " + type_name_of(ids_obj));
    }
    const auto id_seq = py::reinterpret_borrow<py::sequence>(ids_obj);
    const std::size_t n = id_seq.size();
    const auto ns = static_cast<py::ssize_t>(n);
    auto thr = as_input<double>(thr_obj, "throughput_bps");
    require_1d(thr, "throughput_bps", ns);
    auto lat = as_input<double>(lat_obj, "latency_s");
    require_1d(lat, "latency_s", ns);
    auto succ_arr = py::array::ensure(succ_obj);
    if (!succ_arr || succ_arr.dtype().kind() != 'b') {
      throw py::type_error("success must be an array of bools");
    }
    auto succ = py::array_t<bool, py::array::c_style | py::array::forcecast>::ensure(succ_arr);
    require_1d(succ, "success", ns);
    py::array_t<std::uint64_t, py::array::c_style> retx;
    if (!retx_obj.is_none()) {
      auto r = py::array::ensure(retx_obj);
      if (!r || (r.dtype().kind() != 'i' && r.dtype().kind() != 'u')) {
        throw py::type_error("retransmissions must be an array of ints");
      }
      if (r.dtype().kind() == 'i') {
        auto signed_r = as_input<std::int64_t>(r, "retransmissions");
        require_1d(signed_r, "retransmissions", ns);
        for (std::size_t k = 0; k < n; ++k) {
          if (signed_r.data()[k] < 0) {
            throw py::value_error("retransmissions[" + std::to_string(k) + "] must be >= 0, got " +
                                  std::to_string(signed_r.data()[k]));
          }
        }
      }
      retx = as_input<std::uint64_t>(r, "retransmissions");
      require_1d(retx, "retransmissions", ns);
    }
    std::vector<OutcomeInput> outcomes(n);
    for (std::size_t k = 0; k < n; ++k) {
      const double t = thr.data()[k];
      const double l = lat.data()[k];
      if (!(std::isfinite(t) && t >= 0.0)) {
        throw py::value_error("throughput_bps[" + std::to_string(k) + "] must be finite and >= 0, got " +
                              format_float(t));
      }
      if (!(std::isfinite(l) && l > 0.0)) {
        throw py::value_error("latency_s[" + std::to_string(k) + "] must be finite and > 0, got " + format_float(l));
      }
      outcomes[k] = OutcomeInput{t, l, succ.data()[k], retx_obj.is_none() ? 0 : retx.data()[k]};
    }
    std::vector<py::object> keep(n);
    std::vector<std::string_view> ids(n);
    std::vector<std::uint64_t> tokens(n, 0);
    std::unordered_set<std::string_view> seen;
    seen.reserve(n);
    const bool by_decision = !decisions_obj.is_none();
    py::sequence dec_seq;
    if (by_decision) {
      if (!py::isinstance<py::sequence>(decisions_obj)) {
        throw py::type_error("decisions must be a sequence of Decision or None, got " + type_name_of(decisions_obj));
      }
      dec_seq = py::reinterpret_borrow<py::sequence>(decisions_obj);
      if (dec_seq.size() != n) {
        throw py::value_error("decisions must have the same length as task_ids (" + std::to_string(n) + "), got " +
                              std::to_string(dec_seq.size()));
      }
    }
    for (std::size_t k = 0; k < n; ++k) {
      keep[k] = id_seq[k];
      if (!py::isinstance<py::str>(keep[k])) throw unknown_error(keep[k]);
      ids[k] = utf8_view(keep[k]);
      if (!seen.insert(ids[k]).second) {
        throw py::value_error("task id " + repr_of(keep[k]) + " appears twice in the batch");
      }
      tokens[k] = by_decision ? token_of(dec_seq[k]) : kAnyToken;
    }
    const double hour = hour_now();
    std::vector<ReportResult> results(n);
    std::ptrdiff_t bad = -1;
    {
      py::gil_scoped_release nogil;
      bad = core_.report_many(ids.data(), tokens.data(), outcomes.data(), n, hour, results.data());
    }
    if (bad >= 0) {
      const auto b = static_cast<std::size_t>(bad);
      if (results[b].status == ReportStatus::kWrongDecision && by_decision) {
        throw py::value_error("decisions[" + std::to_string(b) + "] does not belong to task " + repr_of(keep[b]));
      }
      throw unknown_error(keep[b]);
    }
    py::array_t<double> rewards(ns);
    for (std::size_t k = 0; k < n; ++k) rewards.mutable_data()[k] = results[k].reward;
    if (!details) return rewards;
    py::list rows(n);
    for (std::size_t k = 0; k < n; ++k) {
      const PendingDecision& p = results[k].decision;
      std::uint64_t size_bytes = 0;
      for (const std::uint64_t b : p.chunk_bytes) size_bytes += b;
      rows[k] = py::make_tuple(py::handle(Names::get().arms[p.arm]),
                               p.has_model_version ? py::object(py::str(p.model_version)) : py::object(py::none()),
                               py::handle(Names::get().sources[p.source]), p.expected_time_s, p.propensity,
                               decision_streams(p), size_bytes);
    }
    return py::make_tuple(rewards, rows);
  }

  std::size_t expire_decisions() {
    const double now_s = monotonic_s();
    py::gil_scoped_release nogil;
    return core_.expire_all(now_s);
  }

  py::dict stats() const {
    const OutcomeStats o = core_.outcome_stats();
    const auto by = core_.decisions_by_source();
    py::dict d;
    d["decisions_by_source"] = py::make_tuple(by[0], by[1], by[2]);
    d["reported"] = o.reported;
    d["successes"] = o.successes;
    d["reward_sum"] = o.reward_sum;
    d["arm_count"] = py::make_tuple(o.arm_count[0], o.arm_count[1]);
    d["arm_reward"] = py::make_tuple(o.arm_reward[0], o.arm_reward[1]);
    d["outstanding"] = core_.outstanding();
    d["expired"] = core_.expired();
    d["fallbacks"] = core_.fallbacks();
    d["nan_faults"] = core_.nan_faults();
    return d;
  }

  py::list pending_ids() const {
    const std::vector<std::string> ids = core_.pending_ids();
    py::list out(ids.size());
    for (std::size_t k = 0; k < ids.size(); ++k) out[k] = py::str(ids[k]);
    return out;
  }

 private:
  static constexpr std::uint64_t kAnyToken = PartitionerCore::kAnyToken;

  static std::string_view utf8_view(const py::handle& s) {
    Py_ssize_t len = 0;
    const char* data = PyUnicode_AsUTF8AndSize(s.ptr(), &len);
    if (data == nullptr) throw py::error_already_set();
    return std::string_view(data, static_cast<std::size_t>(len));
  }

  static std::string_view checked_id(const py::handle& id, const char* name) {
    if (!py::isinstance<py::str>(id) || PyUnicode_GET_LENGTH(id.ptr()) == 0) {
      throw py::value_error(std::string(name) + " must be a non-empty str, got " + repr_of(id));
    }
    return utf8_view(id);
  }

  ReadTask read_task(const py::handle& task, const char* what) const {
    if (PyObject_IsInstance(task.ptr(), task_type_.ptr()) != 1) {
      throw py::type_error(std::string(what) + " must be an itp.Task, got " + type_name_of(task));
    }
    const Names& names = Names::get();
    ReadTask t;
    t.id = py::reinterpret_steal<py::object>(PyObject_GetAttr(task.ptr(), names.id.ptr()));
    if (!t.id) throw py::error_already_set();
    t.input.id = checked_id(t.id, "Task.id");
    const auto size = py::reinterpret_steal<py::object>(PyObject_GetAttr(task.ptr(), names.size.ptr()));
    if (!size) throw py::error_already_set();
    if (!is_int(size)) throw py::type_error("Task.size must be an int number of bytes, got " + type_name_of(size));
    int overflow = 0;
    const long long sv = PyLong_Check(size.ptr()) ? PyLong_AsLongLongAndOverflow(size.ptr(), &overflow)
                                                  : py::reinterpret_steal<py::int_>(PyNumber_Index(size.ptr()))
                                                        .cast<long long>();
    if (overflow != 0 || sv < 1 || static_cast<std::uint64_t>(sv) > kMaxTaskBytes) {
      throw py::value_error("Task.size must be in 1..2**50 bytes, got " + repr_of(size));
    }
    t.input.size_bytes = static_cast<std::uint64_t>(sv);
    const auto prio = py::reinterpret_steal<py::object>(PyObject_GetAttr(task.ptr(), names.priority.ptr()));
    if (!prio) throw py::error_already_set();
    if (!is_number(prio)) throw py::type_error("Task.priority must be a number, got " + type_name_of(prio));
    t.input.priority = as_double(prio);
    if (!(t.input.priority >= 0.0 && t.input.priority <= 1.0)) {
      throw py::value_error("Task.priority must be in [0, 1], got " + repr_of(prio));
    }
    return t;
  }

  std::vector<ReadTask> read_tasks(const py::handle& tasks_obj) const {
    const auto seq = py::reinterpret_steal<py::object>(PySequence_Fast(tasks_obj.ptr(), "tasks must be a sequence"));
    if (!seq) throw py::error_already_set();
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq.ptr());
    PyObject** items = PySequence_Fast_ITEMS(seq.ptr());
    std::vector<ReadTask> tasks;
    tasks.reserve(static_cast<std::size_t>(n));
    std::unordered_set<std::string_view> seen;
    seen.reserve(static_cast<std::size_t>(n));
    for (Py_ssize_t k = 0; k < n; ++k) {
      const py::handle item(items[k]);
      if (PyObject_IsInstance(item.ptr(), task_type_.ptr()) != 1) {
        throw py::type_error("tasks must hold itp.Task, got " + type_name_of(item));
      }
      tasks.push_back(read_task(item, "tasks[i]"));
    }
    // The views point into the str objects `tasks` keeps alive (UTF-8 cached by CPython).
    for (const ReadTask& t : tasks) {
      if (!seen.insert(t.input.id).second) {
        throw py::value_error("task id " + repr_of(t.id) + " appears twice in the batch");
      }
    }
    return tasks;
  }

  // With the GIL held: one shard lock for a hash lookup is far cheaper than releasing and retaking the GIL.
  void refuse_pending(const ReadTask& t) const {
    if (core_.is_pending(t.input.id)) throw pending_error(t.id);
  }

  static py::value_error pending_error(const py::handle& id) {
    return py::value_error("task id " + repr_of(id) + " already has a pending decision");
  }

  static py::value_error unknown_error(const py::handle& id) {
    return py::value_error("task_id " + repr_of(id) + " is unknown, already reported or expired");
  }

  static std::uint64_t token_of(const py::handle& decision) {
    // Anything that is not a Decision handed out by a partitioner can never match (token 0 is never issued).
    if (!py::isinstance<Decision>(decision)) return 0;
    return decision.cast<const Decision&>().token;
  }

  OutcomeInput checked_outcome(const py::handle& thr, const py::handle& lat, const py::handle& succ,
                               const py::handle& retx) const {
    OutcomeInput o;
    o.throughput_bps = checked_metric(thr, "throughput_bps", false);
    o.latency_s = checked_metric(lat, "latency_s", true);
    o.success = checked_bool(succ, "success");
    o.retransmissions = checked_count(retx, "retransmissions");
    return o;
  }

  double hour_now() const {
    if (clock_.is_none()) return local_hour_now();
    const py::object v = clock_();
    const double hour = py::float_(v).cast<double>();
    if (!(hour >= 0.0 && hour < 24.0)) {
      throw py::value_error("clock must return an hour in [0, 24), got " + format_float(hour));
    }
    return hour;
  }

  double monotonic_s() const {
    if (monotonic_.is_none()) return monotonic_now_s();
    return py::float_(monotonic_()).cast<double>();
  }

  void notify_nan_fault() const {
    if (!on_nan_fault_.is_none()) on_nan_fault_(0);
  }

  static const py::object& version_of(const Serving& serving, const py::object& version) {
    static const py::object none = py::none();
    return serving.model ? version : none;
  }

  static DecisionOutput from_tuple(const py::tuple& t) {
    if (t.size() != 10) throw py::value_error("decision tuple must have 10 fields, got " + std::to_string(t.size()));
    DecisionOutput d;
    d.action = t[0].cast<int>();
    const int src = t[1].cast<int>();
    if (d.action < 0 || d.action >= kNumActions || src < 0 || src > 2) {
      throw py::value_error("decision tuple holds an invalid action or source");
    }
    d.source = static_cast<DecisionSource>(src);
    const auto chunks = t[2].cast<std::array<std::uint64_t, kNumStreams>>();
    d.split.chunk_bytes = chunks;
    d.split.expected_time_s = t[3].cast<double>();
    d.confidence = t[4].cast<double>();
    auto state = as_input<float>(t[5], "state");
    require_1d(state, "state", static_cast<py::ssize_t>(kNumFeatures));
    std::copy(state.data(), state.data() + kNumFeatures, d.state.begin());
    auto raw = as_input<double>(t[6], "raw_state");
    require_1d(raw, "raw_state", static_cast<py::ssize_t>(kNumFeatures));
    std::copy(raw.data(), raw.data() + kNumFeatures, d.raw.begin());
    d.model_fault = !t[7].is_none() && t[7].cast<bool>();
    d.propensity = t[8].cast<double>();
    d.guard_verdicts = t[9].cast<std::int32_t>();
    if (!valid_guard_verdicts(d.guard_verdicts)) {
      throw py::value_error("decision tuple holds invalid guard verdicts " + std::to_string(d.guard_verdicts));
    }
    return d;
  }

  static Decision decision_of(py::object id, const py::object& version, const DecisionOutput& out, std::uint8_t arm,
                              std::uint64_t token) {
    return make_decision(std::move(id), version, out.split.chunk_bytes, out.split.expected_time_s, out.confidence,
                         out.propensity, out.action, static_cast<std::uint8_t>(out.source), arm, token);
  }

  PartitionerCore core_;
  py::object task_type_;
  py::object clock_;
  py::object monotonic_;
  py::object on_nan_fault_;
  std::shared_ptr<py::object> serving_version_ = std::make_shared<py::object>(py::none());
};

}  // namespace

void register_partitioner(py::module_& m) {
  py::class_<Decision>(m, "Decision",
                       "Where a task's bytes go: an immutable value (equality is identity), picklable.\n\n"
                       "Attributes: task_id, action (0..14), stream_ids (ascending streams that carry bytes),\n"
                       "chunk_sizes (bytes per used stream, aligned with stream_ids; they sum to the task size),\n"
                       "expected_time (predicted completion time, seconds), confidence (in [0, 1]), source\n"
                       "('model', 'explore', 'heuristic'), model_version (str or None), propensity (probability\n"
                       "the behaviour policy gave the executed action, in (0, 1]), arm ('current'/'candidate'),\n"
                       "bytes_per_stream (bytes for each of the 4 streams, 0 where unused).")
      .def(py::init(&construct_decision), py::arg("task_id"), py::arg("action"), py::arg("stream_ids"),
           py::arg("chunk_sizes"), py::arg("expected_time"), py::arg("confidence"), py::arg("source"),
           py::arg("model_version").none(true), py::arg("propensity") = 1.0, py::arg("arm") = "current")
      .def_property_readonly("task_id", [](const Decision& d) { return d.task_id; })
      .def_property_readonly("action", [](const Decision& d) { return d.action; })
      .def_property_readonly("stream_ids", &Decision::stream_ids)
      .def_property_readonly("chunk_sizes", &Decision::chunk_sizes)
      .def_property_readonly("expected_time", [](const Decision& d) { return d.expected_time_s; })
      .def_property_readonly("confidence", [](const Decision& d) { return d.confidence; })
      .def_property_readonly("source",
                             [](const Decision& d) { return py::reinterpret_borrow<py::str>(Names::get().sources[d.source]); })
      .def_property_readonly("model_version", [](const Decision& d) { return d.model_version; })
      .def_property_readonly("propensity", [](const Decision& d) { return d.propensity; })
      .def_property_readonly("arm",
                             [](const Decision& d) { return py::reinterpret_borrow<py::str>(Names::get().arms[d.arm]); })
      .def_property_readonly("bytes_per_stream", &Decision::bytes_per_stream)
      .def("__repr__", &decision_repr)
      .def(py::pickle(&decision_state, [](const py::tuple& t) {
        if (t.size() != 10) throw py::value_error("Decision state must have 10 fields, got " + std::to_string(t.size()));
        return construct_decision(t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9]);
      }));

  py::class_<PyPartitioner>(m, "PartitionerCore",
                            "Native bookkeeping of TaskPartitioner: pending table, decisions, outcomes, counters.")
      .def(py::init<std::shared_ptr<DecisionEngine>, ExperienceRing&, double, py::object, py::object, py::object,
                    py::object>(),
           py::arg("engine"), py::arg("ring"), py::arg("decision_ttl_s"), py::arg("task_type"),
           py::arg("clock").none(true), py::arg("monotonic").none(true), py::arg("on_nan_fault").none(true),
           py::keep_alive<1, 3>())
      .def("set_serving", &PyPartitioner::set_serving, py::arg("model").none(true), py::arg("version").none(true),
           py::arg("model_wanted"), py::arg("native"))
      .def("partition_task", &PyPartitioner::partition_task, py::arg("task"),
           "Decide and record one task; None when the serving model is not native (the caller decides).")
      .def("check_task", &PyPartitioner::check_task, py::arg("task"))
      .def("commit", &PyPartitioner::commit, py::arg("task"), py::arg("decision"), py::arg("arm"),
           py::arg("version").none(true))
      .def("partition_tasks", &PyPartitioner::partition_tasks, py::arg("tasks"))
      .def("partition_arrays", &PyPartitioner::partition_arrays, py::arg("task_ids"), py::arg("sizes_bytes"),
           py::arg("priorities"), py::arg("actions"), py::arg("chunk_bytes"), py::arg("expected_time_s"),
           py::arg("confidence"), py::arg("propensity"), py::arg("sources"))
      .def("report_outcome", &PyPartitioner::report_outcome, py::arg("task_id"), py::arg("decision"),
           py::arg("throughput_bps"), py::arg("latency_s"), py::arg("success"), py::arg("retransmissions"),
           py::arg("with_streams") = false)
      .def("report_outcomes", &PyPartitioner::report_outcomes, py::arg("task_ids"), py::arg("decisions").none(true),
           py::arg("throughput_bps"), py::arg("latency_s"), py::arg("success"),
           py::arg("retransmissions").none(true), py::arg("details") = false)
      .def("expire_decisions", &PyPartitioner::expire_decisions)
      .def("stats", &PyPartitioner::stats)
      .def("pending_ids", &PyPartitioner::pending_ids);
}

}  // namespace itp::bind
