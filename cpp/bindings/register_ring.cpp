// Bindings for the lock-free experience ring, plus a private native throughput benchmark.
// Python input is validated (same rules and messages as the replay buffer) before anything is pushed, so
// the ring only ever holds valid records from Python.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "checks.hpp"
#include "itp/replay.hpp"
#include "itp/ring.hpp"
#include "register.hpp"

namespace itp::bind {

using FloatArray = py::array_t<float, py::array::c_style>;
using Int64Array = py::array_t<std::int64_t, py::array::c_style>;
using Int32Array = py::array_t<std::int32_t, py::array::c_style>;
using TransitionArrays = std::tuple<FloatArray, Int64Array, FloatArray, FloatArray, FloatArray>;

// Shared parsers, defined in register_replay.cpp.
namespace replay_args {
long long read_int(const py::handle& obj, const char* name);
TransitionRecord read_transition(const py::handle& state, const py::handle& action,
                                 const py::handle& reward, const py::handle& next_state,
                                 const py::handle& done);
TransitionArrays read_transitions(const py::handle& states, const py::handle& actions,
                                  const py::handle& rewards, const py::handle& next_states,
                                  const py::handle& dones);
}  // namespace replay_args

using replay_args::read_int;
using replay_args::read_transition;
using replay_args::read_transitions;

namespace {

constexpr std::size_t kF = kNumFeatures;

std::size_t read_count(const py::handle& obj, const char* name, long long lo, long long hi) {
  const long long v = read_int(obj, name);
  if (v < lo || v > hi) {
    std::ostringstream os;
    os << name << " must be in " << lo << ".." << hi << ", got " << v;
    throw py::value_error(os.str());
  }
  return static_cast<std::size_t>(v);
}

// A propensity from Python: None (unknown: stored as NaN) or a real number in (0, 1] (float32), named in
// the error. An explicit NaN is refused: it is more likely a computation gone wrong than a choice.
float read_propensity(const py::handle& obj, const char* name) {
  if (obj.is_none()) return std::numeric_limits<float>::quiet_NaN();
  const double v = PyBool_Check(obj.ptr()) || PyUnicode_Check(obj.ptr()) || PyBytes_Check(obj.ptr())
                       ? -1.0
                       : PyFloat_AsDouble(obj.ptr());  // floats, ints, numpy scalars (__float__)
  if (PyBool_Check(obj.ptr()) || PyUnicode_Check(obj.ptr()) || PyBytes_Check(obj.ptr()) ||
      (v == -1.0 && PyErr_Occurred() != nullptr)) {
    PyErr_Clear();
    throw py::type_error(std::string(name) + " must be a number or None, got " +
                         py::str(py::type::of(obj).attr("__name__")).cast<std::string>());
  }
  const auto f = static_cast<float>(v);
  if (!(f > 0.0F && f <= 1.0F)) {
    std::ostringstream os;
    os << name << " must be in (0, 1], got " << v;
    throw py::value_error(os.str());
  }
  return f;
}

// Guard verdicts from Python (itp/guard_verdicts.hpp): an int, -1 for none; named in the error.
std::int32_t read_guard_verdicts(const py::handle& obj, const char* name) {
  if (PyBool_Check(obj.ptr()) || !PyIndex_Check(obj.ptr())) {
    throw py::type_error(std::string(name) + " must be an int, got " +
                         py::str(py::type::of(obj).attr("__name__")).cast<std::string>());
  }
  const long long v = obj.cast<long long>();
  if (v < std::numeric_limits<std::int32_t>::min() || v > std::numeric_limits<std::int32_t>::max() ||
      !valid_guard_verdicts(static_cast<std::int32_t>(v))) {
    throw py::value_error(std::string(name) + " must be -1 or a mask of the actions let through (bits 0..14) "
                          "with the heuristic's action (bits 16..19, let through), got " + std::to_string(v));
  }
  return static_cast<std::int32_t>(v);
}

std::size_t push_batch(ExperienceRing& ring, const py::handle& states, const py::handle& actions,
                       const py::handle& rewards, const py::handle& next_states, const py::handle& dones,
                       const py::handle& propensities_obj, const py::handle& guards_obj) {
  auto cols = read_transitions(states, actions, rewards, next_states, dones);
  const auto n_rows = std::get<0>(cols).shape(0);
  py::array_t<float, py::array::c_style> props;
  if (!propensities_obj.is_none()) {
    props = as_input<float>(propensities_obj, "propensities");
    require_1d(props, "propensities", n_rows);
    for (py::ssize_t k = 0; k < n_rows; ++k) {
      const float v = props.data()[k];
      if (!(v > 0.0F && v <= 1.0F)) {
        std::ostringstream os;
        os << "propensities[" << k << "] must be in (0, 1], got " << v;
        throw py::value_error(os.str());
      }
    }
  }
  const float* pr = propensities_obj.is_none() ? nullptr : props.data();
  Int32Array guards;
  if (!guards_obj.is_none()) {
    guards = as_input<std::int32_t>(guards_obj, "guard_verdicts");
    require_1d(guards, "guard_verdicts", n_rows);
    for (py::ssize_t k = 0; k < n_rows; ++k) {
      if (!valid_guard_verdicts(guards.data()[k])) {
        throw py::value_error("guard_verdicts[" + std::to_string(k) + "] is not a valid verdict code: " +
                              std::to_string(guards.data()[k]));
      }
    }
  }
  const std::int32_t* gv = guards_obj.is_none() ? nullptr : guards.data();
  const float* s = std::get<0>(cols).data();
  const std::int64_t* a = std::get<1>(cols).data();
  const float* r = std::get<2>(cols).data();
  const float* ns = std::get<3>(cols).data();
  const float* d = std::get<4>(cols).data();
  const auto n = static_cast<std::size_t>(std::get<0>(cols).shape(0));
  py::gil_scoped_release nogil;
  return ring.push_with(n, [&](std::size_t k, TransitionRecord& cell) {
    std::memcpy(cell.state.data(), s + k * kF, kF * sizeof(float));
    cell.action = static_cast<std::int32_t>(a[k]);
    cell.reward = r[k];
    std::memcpy(cell.next_state.data(), ns + k * kF, kF * sizeof(float));
    cell.done = d[k] != 0.0F ? 1 : 0;
    cell.propensity = pr != nullptr ? pr[k] : std::numeric_limits<float>::quiet_NaN();
    cell.guard_verdicts = gv != nullptr ? gv[k] : kNoGuardVerdicts;
  });
}

py::tuple drain(ExperienceRing& ring, const py::handle& max_obj) {
  const std::size_t max_records =
      read_count(max_obj, "max_records", 0, static_cast<long long>(std::numeric_limits<std::int32_t>::max()));
  // Allocate for what is there now; records arriving later wait for the next drain.
  const std::size_t n = std::min(max_records, ring.size_approx());
  const auto rows = static_cast<py::ssize_t>(n);
  const auto f = static_cast<py::ssize_t>(kF);
  FloatArray states({rows, f});
  Int64Array actions(rows);
  FloatArray rewards(rows);
  FloatArray next_states({rows, f});
  FloatArray dones(rows);
  FloatArray propensities(rows);
  float* pr = propensities.mutable_data();
  Int32Array guards(rows);
  std::int32_t* gv = guards.mutable_data();
  float* s = states.mutable_data();
  std::int64_t* a = actions.mutable_data();
  float* r = rewards.mutable_data();
  float* ns = next_states.mutable_data();
  float* d = dones.mutable_data();
  std::size_t moved = 0;
  {
    py::gil_scoped_release nogil;
    moved = ring.drain(n, [&](const TransitionRecord* recs, std::size_t count) {
      for (std::size_t k = 0; k < count; ++k) {
        const TransitionRecord& rec = recs[k];
        const std::size_t row = moved + k;
        std::memcpy(s + row * kF, rec.state.data(), kF * sizeof(float));
        a[row] = rec.action;
        r[row] = rec.reward;
        std::memcpy(ns + row * kF, rec.next_state.data(), kF * sizeof(float));
        d[row] = rec.done != 0 ? 1.0F : 0.0F;
        pr[row] = rec.propensity;
        gv[row] = rec.guard_verdicts;
      }
      moved += count;
    });
  }
  if (moved == n) return py::make_tuple(states, actions, rewards, next_states, dones, propensities, guards);
  const py::slice head(0, static_cast<py::ssize_t>(moved), 1);
  return py::make_tuple(states[head], actions[head], rewards[head], next_states[head], dones[head],
                        propensities[head], guards[head]);
}

std::size_t drain_into(ExperienceRing& ring, PrioritizedReplay& replay, const py::handle& max_obj) {
  const std::size_t max_records =
      read_count(max_obj, "max_records", 0, std::numeric_limits<long long>::max());
  py::gil_scoped_release nogil;
  std::size_t stored = 0;
  ring.drain(max_records, [&](const TransitionRecord* recs, std::size_t count) {
    stored += replay.add_records(recs, count);
  });
  return stored;
}

// Native throughput probe: n_threads std::threads push records_per_thread records each (push_many in
// batches of batch_records; try_push when 1) while one native consumer drains and checks that every
// producer's records arrive exactly once and in order. Returns wall seconds from release to last record.
double ring_push_benchmark(ExperienceRing& ring, const py::handle& threads_obj,
                           const py::handle& per_thread_obj, const py::handle& batch_obj) {
  const std::size_t n_threads = read_count(threads_obj, "n_threads", 1, 64);
  const std::size_t per_thread = read_count(per_thread_obj, "records_per_thread", 1, 1LL << 32);
  const std::size_t batch = read_count(batch_obj, "batch_records", 1, 4096);
  if (ring.pushed() != ring.drained()) {
    throw py::value_error("the ring must be empty before the benchmark, it holds " +
                          std::to_string(ring.size_approx()) + " records");
  }
  const std::uint64_t expected = static_cast<std::uint64_t>(n_threads) * per_thread;
  std::atomic<bool> go{false};
  std::atomic<bool> out_of_order{false};
  double seconds = 0.0;
  {
    py::gil_scoped_release nogil;
    std::vector<std::thread> threads;
    threads.reserve(n_threads + 1);
    for (std::size_t t = 0; t < n_threads; ++t) {
      threads.emplace_back([&ring, &go, t, per_thread, batch] {
        std::vector<TransitionRecord> recs(batch);
        for (auto& rec : recs) {
          rec.state.fill(0.5F);
          rec.next_state.fill(0.25F);
          rec.action = static_cast<std::int32_t>(t % kNumActions);
          rec.reward = 1.0F;
          rec.done = 0;
        }
        while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
        std::size_t seq = 0;
        while (seq < per_thread) {
          const std::size_t k = std::min(batch, per_thread - seq);
          for (std::size_t j = 0; j < k; ++j) {
            // Producer id and sequence number, exact in float32 (16-bit halves).
            recs[j].state[0] = static_cast<float>((seq + j) & 0xFFFF);
            recs[j].state[1] = static_cast<float>((seq + j) >> 16);
            recs[j].state[2] = static_cast<float>(t);
          }
          const std::size_t pushed = k == 1 ? static_cast<std::size_t>(ring.try_push(recs[0]))
                                            : ring.push_many(recs.data(), k);
          seq += pushed;
          if (pushed == 0) std::this_thread::yield();
        }
      });
    }
    threads.emplace_back([&ring, &go, &out_of_order, expected, n_threads] {
      std::vector<std::uint64_t> next_seq(n_threads, 0);
      std::uint64_t received = 0;
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      while (received < expected) {
        const std::size_t moved = ring.drain(4096, [&](const TransitionRecord* recs, std::size_t count) {
          for (std::size_t k = 0; k < count; ++k) {
            const auto t = static_cast<std::size_t>(recs[k].state[2]);
            const auto seq = static_cast<std::uint64_t>(recs[k].state[0]) +
                             (static_cast<std::uint64_t>(recs[k].state[1]) << 16);
            if (t >= n_threads || next_seq[t] != seq) {
              out_of_order.store(true, std::memory_order_relaxed);
            } else {
              ++next_seq[t];
            }
          }
        });
        received += moved;
        if (moved == 0) std::this_thread::yield();
      }
    });
    const auto start = std::chrono::steady_clock::now();
    go.store(true, std::memory_order_release);
    for (auto& th : threads) th.join();
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  if (out_of_order.load()) {
    throw std::runtime_error("ring benchmark: a record arrived twice, out of order or corrupted");
  }
  return seconds;
}

}  // namespace

void register_ring(py::module_& m) {
  m.attr("MAX_RING_CAPACITY") = ExperienceRing::kMaxCapacity;
  py::class_<ExperienceRing>(m, "ExperienceRing",
                             "Bounded lock-free MPSC ring of transition records (see ring.hpp).")
      .def(py::init([](const py::handle& capacity) {
             return std::make_unique<ExperienceRing>(read_count(
                 capacity, "capacity", 1, static_cast<long long>(ExperienceRing::kMaxCapacity)));
           }),
           py::arg("capacity"))
      .def_property_readonly("capacity", &ExperienceRing::capacity)
      .def_property_readonly("pushed", &ExperienceRing::pushed)
      .def_property_readonly("dropped", &ExperienceRing::dropped)
      .def_property_readonly("drained", &ExperienceRing::drained)
      .def_property_readonly("size", &ExperienceRing::size_approx)
      .def(
          "try_push",
          [](ExperienceRing& ring, const py::handle& state, const py::handle& action, const py::handle& reward,
             const py::handle& next_state, const py::handle& done, const py::handle& propensity,
             const py::handle& guard_verdicts) {
            TransitionRecord rec = read_transition(state, action, reward, next_state, done);
            rec.propensity = read_propensity(propensity, "propensity");
            rec.guard_verdicts = read_guard_verdicts(guard_verdicts, "guard_verdicts");
            return ring.try_push(rec);
          },
          py::arg("state"), py::arg("action"), py::arg("reward"), py::arg("next_state"), py::arg("done"),
          py::arg("propensity") = py::none(), py::arg("guard_verdicts") = kNoGuardVerdicts)
      .def("push_batch", &push_batch, py::arg("states"), py::arg("actions"), py::arg("rewards"),
           py::arg("next_states"), py::arg("dones"), py::arg("propensities") = py::none(),
           py::arg("guard_verdicts") = py::none())
      .def("drain", &drain, py::arg("max_records"))
      .def("drain_into", &drain_into, py::arg("replay"), py::arg("max_records"));

  m.def("_ring_push_benchmark", &ring_push_benchmark, py::arg("ring"), py::arg("n_threads"),
        py::arg("records_per_thread"), py::arg("batch_records") = 256,
        "Private: seconds for n_threads native producers to push records_per_thread records each while "
        "a native consumer drains and checks them.");
}

}  // namespace itp::bind
