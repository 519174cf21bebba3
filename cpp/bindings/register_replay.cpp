// Bindings for the sum tree and the prioritized replay buffer. Every argument is checked (dtype, shape,
// finiteness, ranges) before the GIL is released and before the core sees it; the core re-checks what
// depends on its locked state (size, indices) and throws std::invalid_argument (-> ValueError).
//
// The transition parsers here are shared with register_ring.cpp (declared there): one set of rules and
// messages for everything that enters a buffer.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <climits>
#include <cmath>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "checks.hpp"
#include "itp/replay.hpp"
#include "itp/ring.hpp"
#include "itp/sum_tree.hpp"
#include "register.hpp"

namespace itp::bind {

using FloatArray = py::array_t<float, py::array::c_style>;
using Int64Array = py::array_t<std::int64_t, py::array::c_style>;
// states, actions, rewards, next_states, dones (0.0 / 1.0), all with the same row count.
using TransitionArrays = std::tuple<FloatArray, Int64Array, FloatArray, FloatArray, FloatArray>;

namespace {

constexpr auto kF = static_cast<py::ssize_t>(kNumFeatures);

std::string type_name(const py::handle& obj) {
  return std::string(py::str(py::type::of(obj).attr("__name__")));
}

template <typename T>
std::string str(const T& x) {
  std::ostringstream os;
  os << x;
  return os.str();
}

bool is_array(const py::handle& obj) { return py::isinstance<py::array>(obj); }

// A state vector: float32[20] arrays are read in place; anything else numeric is converted.
void read_vector(const py::handle& obj, const char* name, std::array<float, kNumFeatures>& dst) {
  const float* src = nullptr;
  FloatArray converted;
  if (is_array(obj)) {
    auto a = py::reinterpret_borrow<py::array>(obj);
    if (a.dtype().is(py::dtype::of<float>()) && a.ndim() == 1 && a.shape(0) == kF &&
        (a.flags() & py::array::c_style)) {
      src = static_cast<const float*>(a.data());
    }
  }
  if (src == nullptr) {
    converted = as_input<float>(obj, name);
    require_1d(converted, name, kF);
    src = converted.data();
  }
  for (std::size_t i = 0; i < kNumFeatures; ++i) {
    if (!std::isfinite(src[i])) {
      throw py::value_error(std::string(name) + "[" + str(i) + "] must be finite, got " + str(src[i]));
    }
  }
  std::memcpy(dst.data(), src, sizeof(float) * kNumFeatures);
}

double read_double(const py::handle& obj, const char* name) {
  PyObject* p = obj.ptr();
  if (PyFloat_Check(p)) return PyFloat_AS_DOUBLE(p);
  if (PyUnicode_Check(p) || PyBytes_Check(p) || !PyNumber_Check(p)) {
    throw py::type_error(std::string(name) + " must be a real number, got " + type_name(obj));
  }
  const double v = PyFloat_AsDouble(p);
  if (v == -1.0 && PyErr_Occurred()) {
    PyErr_Clear();
    throw py::type_error(std::string(name) + " must be a real number, got " + type_name(obj));
  }
  return v;
}

// obj as a numpy array (no copy if it already is one), or a null array if numpy cannot convert it.
py::array probe_array(const py::handle& obj) {
  try {
    return py::array::ensure(obj);
  } catch (const py::error_already_set&) {
    return py::array();
  }
}

// An integer array argument (no floats or bools), converted to int64.
Int64Array read_index_array(const py::handle& obj, const char* name) {
  if (py::isinstance<Int64Array>(obj)) return py::reinterpret_borrow<Int64Array>(obj);  // fast path
  py::array probe = probe_array(obj);
  if (!probe) throw py::type_error(std::string(name) + " must be an array of ints, got " + type_name(obj));
  const char kind = probe.dtype().kind();
  if (kind != 'i' && kind != 'u') {
    throw py::type_error(std::string(name) + " must have an integer dtype, got " +
                         std::string(py::str(probe.dtype())));
  }
  return as_input<std::int64_t>(probe, name);
}

}  // namespace

namespace replay_args {

// An integer argument (int or numpy integer; not bool or float). Out-of-range values saturate so that the
// caller's range check reports them.
long long read_int(const py::handle& obj, const char* name) {
  PyObject* p = obj.ptr();
  if (PyBool_Check(p) || !PyIndex_Check(p)) {
    throw py::type_error(std::string(name) + " must be an int, got " + type_name(obj));
  }
  auto index = py::reinterpret_steal<py::object>(PyNumber_Index(p));
  if (!index) throw py::error_already_set();
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
  if (overflow != 0) return overflow > 0 ? LLONG_MAX : LLONG_MIN;
  return v;
}

// One transition from Python values, fully validated.
TransitionRecord read_transition(const py::handle& state, const py::handle& action,
                                 const py::handle& reward, const py::handle& next_state,
                                 const py::handle& done) {
  TransitionRecord r{};
  read_vector(state, "state", r.state);
  const long long a = read_int(action, "action");
  if (a < 0 || a >= kNumActions) throw py::value_error("action must be in 0..14, got " + str(a));
  r.action = static_cast<std::int32_t>(a);
  const double rew = read_double(reward, "reward");
  r.reward = static_cast<float>(rew);
  if (!std::isfinite(r.reward)) {
    throw py::value_error("reward must be finite (as float32), got " + str(rew));
  }
  read_vector(next_state, "next_state", r.next_state);
  const double d = read_double(done, "done");
  if (d != 0.0 && d != 1.0) throw py::value_error("done must be a bool (or 0/1), got " + str(d));
  r.done = d != 0.0 ? 1 : 0;
  return r;
}

// Columnar transitions, converted to the core dtypes and fully validated (shapes agree with states'
// row count; every float finite; actions integer-typed in 0..14; dones 0 or 1).
TransitionArrays read_transitions(const py::handle& states_obj, const py::handle& actions_obj,
                                  const py::handle& rewards_obj, const py::handle& next_states_obj,
                                  const py::handle& dones_obj) {
  auto states = as_input<float>(states_obj, "states");
  require_2d(states, "states", -1, kF);
  const py::ssize_t n = states.shape(0);
  auto actions = read_index_array(actions_obj, "actions");
  require_1d(actions, "actions", n);
  auto rewards = as_input<float>(rewards_obj, "rewards");
  require_1d(rewards, "rewards", n);
  auto next_states = as_input<float>(next_states_obj, "next_states");
  require_2d(next_states, "next_states", n, kF);
  auto dones = as_input<float>(dones_obj, "dones");
  require_1d(dones, "dones", n);

  const float* s = states.data();
  const float* ns = next_states.data();
  for (py::ssize_t i = 0; i < n * kF; ++i) {
    if (!std::isfinite(s[i])) {
      throw py::value_error("states[" + str(i / kF) + ", " + str(i % kF) + "] must be finite, got " + str(s[i]));
    }
    if (!std::isfinite(ns[i])) {
      throw py::value_error("next_states[" + str(i / kF) + ", " + str(i % kF) + "] must be finite, got " +
                            str(ns[i]));
    }
  }
  const std::int64_t* a = actions.data();
  const float* r = rewards.data();
  const float* d = dones.data();
  for (py::ssize_t i = 0; i < n; ++i) {
    if (a[i] < 0 || a[i] >= kNumActions) {
      throw py::value_error("actions[" + str(i) + "] must be in 0..14, got " + str(a[i]));
    }
    if (!std::isfinite(r[i])) throw py::value_error("rewards[" + str(i) + "] must be finite, got " + str(r[i]));
    if (d[i] != 0.0F && d[i] != 1.0F) {
      throw py::value_error("dones[" + str(i) + "] must be 0 or 1, got " + str(d[i]));
    }
  }
  return {std::move(states), std::move(actions), std::move(rewards), std::move(next_states), std::move(dones)};
}

}  // namespace replay_args

using replay_args::read_int;
using replay_args::read_transition;
using replay_args::read_transitions;

namespace {

// Moves a vector into a 1-D/2-D numpy array without copying (the capsule owns the vector).
template <typename T>
py::array_t<T> to_numpy(std::vector<T>&& v, std::vector<py::ssize_t> shape) {
  auto holder = std::make_unique<std::vector<T>>(std::move(v));
  T* data = holder->data();
  py::capsule owner(holder.get(), [](void* p) { std::unique_ptr<std::vector<T>>(static_cast<std::vector<T>*>(p)); });
  holder.release();
  return py::array_t<T>(std::move(shape), data, owner);
}

template <typename T>
std::vector<T> from_numpy(const py::handle& obj, const char* name, std::size_t expected) {
  auto a = as_input<T>(obj, name);
  if (static_cast<std::size_t>(a.size()) != expected) {
    throw py::value_error(std::string(name) + " must hold " + str(expected) + " values, got " +
                          str(a.size()) + " (shape " + shape_str(a) + ")");
  }
  return std::vector<T>(a.data(), a.data() + a.size());
}

std::size_t checked_count(long long v, const char* name, long long lo, long long hi) {
  if (v < lo || v > hi) {
    throw py::value_error(std::string(name) + " must be in " + str(lo) + ".." + str(hi) + ", got " + str(v));
  }
  return static_cast<std::size_t>(v);
}

void sample(PrioritizedReplay& self, const py::handle& batch_obj, const py::handle& beta_obj,
            const py::handle& states_obj, const py::handle& actions_obj, const py::handle& rewards_obj,
            const py::handle& next_states_obj, const py::handle& dones_obj, const py::handle& weights_obj,
            const py::handle& indices_obj, const py::handle& generations_obj) {
  const long long b = read_int(batch_obj, "batch_size");
  if (b < 1) throw py::value_error("batch_size must be >= 1, got " + str(b));
  const double beta = read_double(beta_obj, "beta");
  if (!(beta >= 0.0 && beta <= 1.0)) throw py::value_error("beta must be in [0, 1], got " + str(beta));
  const auto rows = static_cast<py::ssize_t>(b);
  auto states = as_output<float>(states_obj, "out.states");
  require_2d(states, "out.states", rows, kF);
  auto actions = as_output<std::int64_t>(actions_obj, "out.actions");
  require_1d(actions, "out.actions", rows);
  auto rewards = as_output<float>(rewards_obj, "out.rewards");
  require_1d(rewards, "out.rewards", rows);
  auto next_states = as_output<float>(next_states_obj, "out.next_states");
  require_2d(next_states, "out.next_states", rows, kF);
  auto dones = as_output<float>(dones_obj, "out.dones");
  require_1d(dones, "out.dones", rows);
  auto weights = as_output<float>(weights_obj, "out.weights");
  require_1d(weights, "out.weights", rows);
  auto indices = as_output<std::int64_t>(indices_obj, "out.indices");
  require_1d(indices, "out.indices", rows);
  auto generations = as_output<std::uint64_t>(generations_obj, "out.generations");
  require_1d(generations, "out.generations", rows);
  SampleOutput out;
  out.states = states.mutable_data();
  out.actions = actions.mutable_data();
  out.rewards = rewards.mutable_data();
  out.next_states = next_states.mutable_data();
  out.dones = dones.mutable_data();
  out.weights = weights.mutable_data();
  out.indices = indices.mutable_data();
  out.generations = generations.mutable_data();
  py::gil_scoped_release nogil;
  self.sample(static_cast<std::size_t>(b), beta, out);
}

std::size_t update_priorities(PrioritizedReplay& self, const py::handle& indices_obj,
                              const py::handle& td_obj, const py::handle& generations_obj) {
  auto indices = read_index_array(indices_obj, "indices");
  require_1d(indices, "indices", -1);
  const py::ssize_t n = indices.shape(0);
  py::array_t<float, py::array::c_style> td32;
  py::array_t<double, py::array::c_style> td64;
  bool single = false;
  if (py::isinstance<py::array_t<double, py::array::c_style>>(td_obj)) {  // fast path: float64 array
    td64 = py::reinterpret_borrow<py::array_t<double, py::array::c_style>>(td_obj);
  } else {
    py::array td_probe = probe_array(td_obj);
    if (!td_probe) throw py::type_error("td_errors must be an array of numbers, got " + type_name(td_obj));
    single = td_probe.dtype().is(py::dtype::of<float>());
    if (single) {
      td32 = as_input<float>(td_probe, "td_errors");
    } else {
      td64 = as_input<double>(td_probe, "td_errors");
    }
  }
  if (single) {
    require_1d(td32, "td_errors", n);
  } else {
    require_1d(td64, "td_errors", n);
  }
  py::array_t<std::uint64_t, py::array::c_style> gens;
  if (!generations_obj.is_none()) {
    py::array g = probe_array(generations_obj);
    if (!g) throw py::type_error("generations must be an array of ints, got " + type_name(generations_obj));
    const char kind = g.dtype().kind();
    if (kind != 'i' && kind != 'u') {
      throw py::type_error("generations must have an integer dtype, got " + std::string(py::str(g.dtype())));
    }
    if (kind == 'i') {
      auto signed_gens = as_input<std::int64_t>(g, "generations");
      require_1d(signed_gens, "generations", n);
      for (py::ssize_t k = 0; k < n; ++k) {
        if (signed_gens.data()[k] < 0) {
          throw py::value_error("generations[" + str(k) + "] must be >= 0, got " + str(signed_gens.data()[k]));
        }
      }
    }
    gens = as_input<std::uint64_t>(g, "generations");
    require_1d(gens, "generations", n);
  }
  const std::int64_t* idx = indices.data();
  const std::uint64_t* gp = generations_obj.is_none() ? nullptr : gens.data();
  const auto count = static_cast<std::size_t>(n);
  py::gil_scoped_release nogil;
  return single ? self.update_priorities(idx, td32.data(), gp, count)
                : self.update_priorities(idx, td64.data(), gp, count);
}

py::dict snapshot(const PrioritizedReplay& self) {
  ReplaySnapshot s;
  {
    py::gil_scoped_release nogil;
    s = self.snapshot();
  }
  const auto n = static_cast<py::ssize_t>(s.size);
  py::dict d;
  d["capacity"] = s.config.capacity;
  d["alpha"] = s.config.alpha;
  d["epsilon"] = s.config.epsilon;
  d["prioritized"] = s.config.prioritized;
  d["seed"] = s.config.seed;
  d["size"] = s.size;
  d["cursor"] = s.cursor;
  d["max_priority"] = s.max_priority;
  d["stale_updates"] = s.stale_updates;
  d["rng_state"] = to_numpy(std::vector<std::uint64_t>(s.rng_state.begin(), s.rng_state.end()), {4});
  d["states"] = to_numpy(std::move(s.states), {n, kF});
  d["actions"] = to_numpy(std::move(s.actions), {n});
  d["rewards"] = to_numpy(std::move(s.rewards), {n});
  d["next_states"] = to_numpy(std::move(s.next_states), {n, kF});
  d["dones"] = to_numpy(std::move(s.dones), {n});
  d["priorities"] = to_numpy(std::move(s.priorities), {n});
  d["generations"] = to_numpy(std::move(s.generations), {n});
  return d;
}

std::unique_ptr<PrioritizedReplay> from_snapshot(const py::dict& d) {
  auto get = [&d](const char* key) -> py::object {
    if (!d.contains(key)) throw py::value_error(std::string("snapshot is missing '") + key + "'");
    return d[key];
  };
  ReplaySnapshot s;
  s.config.capacity = checked_count(read_int(get("capacity"), "capacity"), "capacity", 1,
                                    static_cast<long long>(kMaxReplayCapacity));
  s.config.alpha = read_double(get("alpha"), "alpha");
  s.config.epsilon = read_double(get("epsilon"), "epsilon");
  s.config.prioritized = read_double(get("prioritized"), "prioritized") != 0.0;
  const long long seed = read_int(get("seed"), "seed");
  s.config.seed = static_cast<std::uint64_t>(seed);
  s.size = checked_count(read_int(get("size"), "size"), "size", 0, static_cast<long long>(s.config.capacity));
  s.cursor = checked_count(read_int(get("cursor"), "cursor"), "cursor", 0,
                           static_cast<long long>(s.config.capacity) - 1);
  s.max_priority = read_double(get("max_priority"), "max_priority");
  s.stale_updates = static_cast<std::uint64_t>(
      checked_count(read_int(get("stale_updates"), "stale_updates"), "stale_updates", 0, LLONG_MAX));
  const auto rng = from_numpy<std::uint64_t>(get("rng_state"), "rng_state", 4);
  std::copy(rng.begin(), rng.end(), s.rng_state.begin());
  const std::size_t n = s.size;
  s.states = from_numpy<float>(get("states"), "states", n * kNumFeatures);
  s.next_states = from_numpy<float>(get("next_states"), "next_states", n * kNumFeatures);
  s.rewards = from_numpy<float>(get("rewards"), "rewards", n);
  s.actions = from_numpy<std::int32_t>(get("actions"), "actions", n);
  s.dones = from_numpy<std::uint8_t>(get("dones"), "dones", n);
  s.priorities = from_numpy<double>(get("priorities"), "priorities", n);
  s.generations = from_numpy<std::uint64_t>(get("generations"), "generations", n);
  py::gil_scoped_release nogil;
  return std::make_unique<PrioritizedReplay>(s);
}

// ---- SumTree (exposed for tests and diagnostics) ----

std::size_t tree_index(const SumTree& t, long long i, const char* name) {
  if (i < 0 || static_cast<std::size_t>(i) >= t.capacity()) {
    throw py::value_error(std::string(name) + " = " + str(i) + " is out of range for capacity " +
                          str(t.capacity()));
  }
  return static_cast<std::size_t>(i);
}

double tree_value(double v, const char* name) {
  if (!std::isfinite(v) || v < 0.0) throw py::value_error(std::string(name) + " must be finite and >= 0, got " + str(v));
  return v;
}

void register_sum_tree(py::module_& m) {
  py::class_<SumTree>(m, "SumTree",
                      "Float64 sum tree + min tree over power-of-two leaves (see sum_tree.hpp). Not "
                      "thread-safe.")
      .def(py::init([](const py::handle& capacity) {
             const long long c = read_int(capacity, "capacity");
             return std::make_unique<SumTree>(
                 checked_count(c, "capacity", 1, static_cast<long long>(SumTree::kMaxCapacity)));
           }),
           py::arg("capacity"))
      .def_property_readonly("capacity", &SumTree::capacity)
      .def_property_readonly("leaf_count", &SumTree::leaf_count)
      .def_property_readonly("total", &SumTree::total)
      .def_property_readonly("min", &SumTree::min_positive, "Smallest positive leaf (+inf if none).")
      .def(
          "get",
          [](const SumTree& t, const py::handle& i) { return t.get(tree_index(t, read_int(i, "index"), "index")); },
          py::arg("index"))
      .def(
          "set",
          [](SumTree& t, const py::handle& i, const py::handle& v) {
            const std::size_t index = tree_index(t, read_int(i, "index"), "index");
            t.set(index, tree_value(read_double(v, "value"), "value"));
          },
          py::arg("index"), py::arg("value"))
      .def(
          "set_many",
          [](SumTree& t, const py::handle& idx_obj, const py::handle& val_obj) {
            auto idx = read_index_array(idx_obj, "indices");
            require_1d(idx, "indices", -1);
            auto val = as_input<double>(val_obj, "values");
            require_1d(val, "values", idx.shape(0));
            for (py::ssize_t k = 0; k < idx.shape(0); ++k) {
              tree_index(t, idx.data()[k], ("indices[" + str(k) + "]").c_str());
              tree_value(val.data()[k], ("values[" + str(k) + "]").c_str());
            }
            py::gil_scoped_release nogil;
            t.set_many(idx.data(), val.data(), static_cast<std::size_t>(idx.shape(0)));
          },
          py::arg("indices"), py::arg("values"))
      .def(
          "find_prefix",
          [](const SumTree& t, const py::handle& mass_obj) {
            const double mass = tree_value(read_double(mass_obj, "mass"), "mass");
            if (!(t.total() > 0.0)) throw py::value_error("find_prefix needs a positive total, got 0");
            return t.find_prefix(mass);
          },
          py::arg("mass"))
      .def(
          "find_prefix_many",
          [](const SumTree& t, const py::handle& masses_obj) {
            auto masses = as_input<double>(masses_obj, "masses");
            require_1d(masses, "masses", -1);
            for (py::ssize_t k = 0; k < masses.shape(0); ++k) {
              tree_value(masses.data()[k], ("masses[" + str(k) + "]").c_str());
            }
            if (!(t.total() > 0.0)) throw py::value_error("find_prefix_many needs a positive total, got 0");
            const py::ssize_t n = masses.shape(0);
            Int64Array idx(n);
            py::array_t<double> val(n);
            {
              py::gil_scoped_release nogil;
              t.find_prefix_many(masses.data(), static_cast<std::size_t>(n), idx.mutable_data(),
                                 val.mutable_data());
            }
            return py::make_tuple(idx, val);
          },
          py::arg("masses"), "Leaf index and value reached by each mass (lock-step descents).")
      .def("check_invariants", &SumTree::check_invariants);
}

}  // namespace

void register_replay(py::module_& m) {
  register_sum_tree(m);
  m.attr("MAX_REPLAY_CAPACITY") = kMaxReplayCapacity;
  m.attr("MIN_PRIORITY") = kMinPriority;
  m.attr("MAX_PRIORITY") = kMaxPriority;

  py::class_<PrioritizedReplay>(m, "PrioritizedReplay",
                                "Columnar prioritized replay (see replay.hpp). Every method is atomic "
                                "(one mutex); batch methods release the GIL.")
      .def(py::init([](const py::handle& capacity, const py::handle& alpha, const py::handle& epsilon,
                       bool prioritized, const py::handle& seed) {
             ReplayConfig c;
             c.capacity = checked_count(read_int(capacity, "capacity"), "capacity", 1,
                                        static_cast<long long>(kMaxReplayCapacity));
             c.alpha = read_double(alpha, "alpha");
             c.epsilon = read_double(epsilon, "epsilon");
             c.prioritized = prioritized;
             const long long s = read_int(seed, "seed");
             if (s < 0) throw py::value_error("seed must be >= 0, got " + str(s));
             c.seed = static_cast<std::uint64_t>(s);
             return std::make_unique<PrioritizedReplay>(c);
           }),
           py::arg("capacity"), py::arg("alpha") = 0.6, py::arg("epsilon") = 1e-6,
           py::arg("prioritized") = true, py::arg("seed") = 0)
      .def_property_readonly("capacity", &PrioritizedReplay::capacity)
      .def_property_readonly("alpha", &PrioritizedReplay::alpha)
      .def_property_readonly("epsilon", &PrioritizedReplay::epsilon)
      .def_property_readonly("prioritized", &PrioritizedReplay::prioritized)
      .def_property_readonly("seed", &PrioritizedReplay::seed)
      .def_property_readonly("bytes_per_transition", &PrioritizedReplay::bytes_per_transition)
      .def_property_readonly("size", &PrioritizedReplay::size)
      .def_property_readonly("cursor", &PrioritizedReplay::cursor)
      .def_property_readonly("max_priority", &PrioritizedReplay::max_priority)
      .def_property_readonly("total_priority", &PrioritizedReplay::total_priority)
      .def_property_readonly("min_priority", &PrioritizedReplay::min_priority)
      .def_property_readonly("stale_updates", &PrioritizedReplay::stale_updates)
      .def_property_readonly("rejected_records", &PrioritizedReplay::rejected_records)
      .def(
          "add",
          [](PrioritizedReplay& self, const py::handle& state, const py::handle& action,
             const py::handle& reward, const py::handle& next_state, const py::handle& done) {
            const TransitionRecord r = read_transition(state, action, reward, next_state, done);
            // Fast path keeps the GIL; if another thread holds the buffer, wait without the GIL.
            if (auto slot = self.try_add(r)) return *slot;
            py::gil_scoped_release nogil;
            return self.add(r);
          },
          py::arg("state"), py::arg("action"), py::arg("reward"), py::arg("next_state"), py::arg("done"))
      .def(
          "add_batch",
          [](PrioritizedReplay& self, const py::handle& states, const py::handle& actions,
             const py::handle& rewards, const py::handle& next_states, const py::handle& dones) {
            auto cols = read_transitions(states, actions, rewards, next_states, dones);
            TransitionColumns rows;
            rows.states = std::get<0>(cols).data();
            rows.actions = std::get<1>(cols).data();
            rows.rewards = std::get<2>(cols).data();
            rows.next_states = std::get<3>(cols).data();
            rows.dones = std::get<4>(cols).data();
            const auto n = static_cast<std::size_t>(std::get<0>(cols).shape(0));
            py::gil_scoped_release nogil;
            return self.add_batch(rows, n);
          },
          py::arg("states"), py::arg("actions"), py::arg("rewards"), py::arg("next_states"),
          py::arg("dones"))
      .def("sample", &sample, py::arg("batch_size"), py::arg("beta"), py::arg("states"),
           py::arg("actions"), py::arg("rewards"), py::arg("next_states"), py::arg("dones"),
           py::arg("weights"), py::arg("indices"), py::arg("generations"))
      .def("update_priorities", &update_priorities, py::arg("indices"), py::arg("td_errors"),
           py::arg("generations") = py::none())
      .def(
          "get_priorities",
          [](const PrioritizedReplay& self, const py::handle& indices_obj) {
            auto idx = read_index_array(indices_obj, "indices");
            require_1d(idx, "indices", -1);
            py::array_t<double> out(idx.shape(0));
            double* dst = out.mutable_data();
            {
              py::gil_scoped_release nogil;
              self.get_priorities(idx.data(), static_cast<std::size_t>(idx.shape(0)), dst);
            }
            return out;
          },
          py::arg("indices"))
      .def("check_invariants",
           [](const PrioritizedReplay& self) {
             py::gil_scoped_release nogil;
             return self.check_invariants();
           })
      .def("snapshot", &snapshot)
      .def_static("from_snapshot", &from_snapshot, py::arg("snapshot"));
}

}  // namespace itp::bind
