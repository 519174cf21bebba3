// Argument checks shared by the binding units: dtype, contiguity and shape are checked before any work,
// with TypeError/ValueError messages that name the argument, so bad input never reaches the core.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <sstream>
#include <string>

namespace itp::bind {

namespace py = pybind11;

inline std::string shape_str(const py::array& a) {
  std::ostringstream os;
  os << "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) os << (i ? ", " : "") << a.shape(i);
  os << (a.ndim() == 1 ? ",)" : ")");
  return os.str();
}

// Converts any array-like of numbers to a C-contiguous array of T (copying only if needed).
// Raises TypeError if it is not numeric.
template <typename T>
py::array_t<T, py::array::c_style> as_input(const py::handle& obj, const char* name) {
  // Fast path: already a C-contiguous array of exactly T (what numpy callers pass on the hot path).
  if (py::isinstance<py::array_t<T, py::array::c_style>>(obj)) {
    return py::reinterpret_borrow<py::array_t<T, py::array::c_style>>(obj);
  }
  py::array arr;
  try {
    arr = py::array::ensure(obj);
  } catch (const py::error_already_set&) {
    arr = py::array();
  }
  if (!arr) throw py::type_error(std::string(name) + " must be an array of numbers, got " +
                                 std::string(py::str(py::type::of(obj).attr("__name__"))));
  const char kind = arr.dtype().kind();
  if (kind != 'f' && kind != 'i' && kind != 'u' && kind != 'b') {
    throw py::type_error(std::string(name) + " must hold numbers, got dtype " +
                         std::string(py::str(arr.dtype())));
  }
  return py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(arr);
}

// Requires a 1-D array of length n (n < 0: any length).
inline void require_1d(const py::array& a, const char* name, py::ssize_t n) {
  if (a.ndim() != 1 || (n >= 0 && a.shape(0) != n)) {
    std::ostringstream os;
    os << name << " must have shape (" << (n >= 0 ? std::to_string(n) : std::string("N")) << ",), got "
       << shape_str(a);
    throw py::value_error(os.str());
  }
}

// Requires a 2-D array with `cols` columns and, if rows >= 0, that many rows.
inline void require_2d(const py::array& a, const char* name, py::ssize_t rows, py::ssize_t cols) {
  if (a.ndim() != 2 || a.shape(1) != cols || (rows >= 0 && a.shape(0) != rows)) {
    std::ostringstream os;
    os << name << " must have shape (" << (rows >= 0 ? std::to_string(rows) : std::string("N")) << ", "
       << cols << "), got " << shape_str(a);
    throw py::value_error(os.str());
  }
}

// An output buffer must already be exactly dtype T, C-contiguous and writeable: we never copy into a
// temporary and lose the caller's zero-copy view.
template <typename T>
py::array_t<T, py::array::c_style> as_output(const py::handle& obj, const char* name) {
  if (!py::isinstance<py::array>(obj)) {
    throw py::type_error(std::string(name) + " must be a numpy array");
  }
  auto arr = py::reinterpret_borrow<py::array>(obj);
  if (!arr.dtype().is(py::dtype::of<T>())) {
    throw py::type_error(std::string(name) + " must have dtype " + std::string(py::str(py::dtype::of<T>())) +
                         ", got " + std::string(py::str(arr.dtype())));
  }
  if (!(arr.flags() & py::array::c_style)) {
    throw py::value_error(std::string(name) + " must be C-contiguous");
  }
  if (!arr.writeable()) throw py::value_error(std::string(name) + " must be writeable");
  return py::reinterpret_borrow<py::array_t<T, py::array::c_style>>(arr);
}

}  // namespace itp::bind
