#include <Python.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "itp/crc32c.hpp"
#include "register.hpp"

namespace itp::bind {

namespace py = pybind11;

namespace {

// A C-contiguous, read-only view of any buffer-protocol object (bytes, bytearray, memoryview slices,
// mmap, numpy arrays), released by the destructor.
class ContiguousView {
 public:
  explicit ContiguousView(const py::handle& obj) {
    if (PyObject_GetBuffer(obj.ptr(), &view_, PyBUF_C_CONTIGUOUS) != 0) {
      PyErr_Clear();
      throw py::type_error(std::string("data must be a C-contiguous bytes-like object, got ") +
                           Py_TYPE(obj.ptr())->tp_name);
    }
  }
  ~ContiguousView() { PyBuffer_Release(&view_); }
  ContiguousView(const ContiguousView&) = delete;
  ContiguousView& operator=(const ContiguousView&) = delete;

  const void* data() const noexcept { return view_.buf; }
  std::size_t size() const noexcept { return static_cast<std::size_t>(view_.len); }

 private:
  Py_buffer view_{};
};

// Below this many bytes the checksum takes less time than a GIL hand-off would cost other threads.
constexpr std::size_t kReleaseGilBytes = 32 * 1024;

std::uint32_t crc32c_py(const py::handle& data, const py::handle& value) {
  if (PyBool_Check(value.ptr()) || !PyLong_Check(value.ptr())) {
    throw py::type_error(std::string("value must be an int, got ") + Py_TYPE(value.ptr())->tp_name);
  }
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
  if (overflow != 0 || v < 0 || v > 0xFFFFFFFFLL) {
    throw py::value_error("value must be in 0..2**32-1, got " + std::string(py::str(value)));
  }
  const ContiguousView view(data);
  const auto crc = static_cast<std::uint32_t>(v);
  if (view.size() >= kReleaseGilBytes) {
    py::gil_scoped_release nogil;
    return crc32c(view.data(), view.size(), crc);
  }
  return crc32c(view.data(), view.size(), crc);
}

std::uint32_t crc32c_portable_py(const py::handle& data, std::uint32_t value) {
  const ContiguousView view(data);
  return crc32c_portable(view.data(), view.size(), value);
}

}  // namespace

void register_checksum(py::module_& m) {
  m.def("crc32c", &crc32c_py, py::arg("data"), py::arg("value") = 0,
        "CRC-32C of a bytes-like object, continuing from value (zlib.crc32 conventions); GIL released "
        "for buffers of 32 KiB and more.");
  m.def("crc32c_portable", &crc32c_portable_py, py::arg("data"), py::arg("value") = 0,
        "The table-driven CRC-32C path alone (tests).");
  m.def("crc32c_hardware", &crc32c_hardware, "True when crc32c uses the CPU's CRC-32C instruction.");
}

}  // namespace itp::bind
