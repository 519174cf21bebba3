#include <pybind11/pybind11.h>

#include "register.hpp"

namespace itp::bind {

void register_replay(pybind11::module_& m) { (void)m; }

}  // namespace itp::bind
