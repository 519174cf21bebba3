// One register_<concept> function per binding unit; module.cpp only calls them.
#pragma once

#include <pybind11/pybind11.h>

namespace itp::bind {
void register_state(pybind11::module_& m);
void register_actions(pybind11::module_& m);
void register_replay(pybind11::module_& m);
void register_ring(pybind11::module_& m);
void register_policy(pybind11::module_& m);
void register_reward(pybind11::module_& m);
void register_partitioner(pybind11::module_& m);
void register_bench(pybind11::module_& m);
void register_checksum(pybind11::module_& m);
}  // namespace itp::bind
