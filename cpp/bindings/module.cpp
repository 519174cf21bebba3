#include <pybind11/pybind11.h>

#include "register.hpp"

PYBIND11_MODULE(_native, m) {
  m.doc() = "itp native core (private): state normalisation, actions and splitting, replay, ring.";
  itp::bind::register_state(m);
  itp::bind::register_actions(m);
  itp::bind::register_replay(m);
  itp::bind::register_ring(m);
  itp::bind::register_policy(m);
  itp::bind::register_reward(m);
  itp::bind::register_partitioner(m);
  itp::bind::register_bench(m);
  itp::bind::register_checksum(m);
}
