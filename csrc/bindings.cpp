// Python module fsrf._C. The ops themselves are registered with the dispatcher through
// TORCH_LIBRARY in their own files; this module only makes the shared library importable and
// reports how it was built, so `import fsrf` can explain a mismatch instead of crashing.
#include <pybind11/pybind11.h>
#include <torch/version.h>

#ifndef FSRF_TORCH_VERSION
#define FSRF_TORCH_VERSION "unknown"
#endif

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "fsrf compiled kernels (registered as torch.ops.fsrf.*)";
  m.def("build_info", []() {
    py::dict d;
    d["torch"] = FSRF_TORCH_VERSION;
    d["torch_major"] = TORCH_VERSION_MAJOR;
    d["torch_minor"] = TORCH_VERSION_MINOR;
#ifdef FSRF_WITH_CUDA
    d["with_cuda"] = true;
#else
    d["with_cuda"] = false;
#endif
#ifdef _OPENMP
    d["openmp"] = true;
#else
    d["openmp"] = false;
#endif
    return d;
  }, "Dictionary describing how fsrf._C was compiled.");
}
