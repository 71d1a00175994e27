// Python binding of the filtered_lrelu plugin: one FIR pass (upfirdn2d.h) per call, optionally with the bias added
// to the input and the leaky ReLU/clamp stage (or its derivative, from stored codes) applied to the output. The
// Python op composes the passes: up-sampling filter with bias and activation, then the down-sampling filter; the
// backward pass runs the adjoint passes with the stored codes. CPU tensors run the kernel's arithmetic in a host
// loop (for testing without a GPU; the Python op sends CPU tensors to its reference path instead).

// ATen and torch's pybind11 type casters only, rather than all of <torch/extension.h>: half the compile time.
#include <ATen/ATen.h>
#include <torch/csrc/utils/pybind.h>

#define LVG_PASS_NAMESPACE lvg_filtered_lrelu_plugin // Its own copy of the pass code (upfirdn2d.h).
#include "upfirdn2d.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("filtered_pass", &lvg_filtered_lrelu_plugin::run_pass,
          "One FIR pass with an optional bias on the input and a leaky ReLU stage (mode 1, codes optional) or its "
          "stored derivative (mode 2) on the output; fp32_inside: float32 taps and output for float16/bfloat16.",
          py::arg("x"), py::arg("f"), py::arg("b"), py::arg("codes"), py::arg("mode"), py::arg("upx"), py::arg("upy"),
          py::arg("downx"), py::arg("downy"), py::arg("padx0"), py::arg("pady0"), py::arg("out_w"), py::arg("out_h"),
          py::arg("flip"), py::arg("fgain"), py::arg("slope"), py::arg("act_gain"), py::arg("clamp"),
          py::arg("clamp_grad_at_limit"), py::arg("fp32_inside"));
}
