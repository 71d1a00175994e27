// Python binding of the upfirdn2d plugin: one FIR pass (upfirdn2d.h) per call. The Python op composes the passes:
// one for a 2-D filter, two (width, then height) for a separable 1-D filter, and its gradient from the same pass.
// CPU tensors run the kernel's arithmetic in a host loop (for testing without a GPU; the Python op sends CPU tensors
// to its reference path instead).

// ATen and torch's pybind11 type casters only, rather than all of <torch/extension.h>: half the compile time.
#include <ATen/ATen.h>
#include <torch/csrc/utils/pybind.h>

#define LVG_PASS_NAMESPACE lvg_upfirdn2d_plugin
#include "upfirdn2d.h"

namespace lvg_upfirdn2d_plugin {

// The plain passes of upfirdn2d (mode 0: no bias, no activation).
at::Tensor upfirdn2d_pass(const at::Tensor& x, const c10::optional<at::Tensor>& f, int64_t upx, int64_t upy,
                          int64_t downx, int64_t downy, int64_t padx0, int64_t pady0, int64_t out_w, int64_t out_h,
                          bool flip, double fgain) {
    return run_pass(x, f, c10::nullopt, c10::nullopt, kPlain, upx, upy, downx, downy, padx0, pady0, out_w, out_h, flip,
                    fgain, 0.0, 1.0, -1.0, true, false);
}

} // namespace lvg_upfirdn2d_plugin

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("upfirdn2d_pass", &lvg_upfirdn2d_plugin::upfirdn2d_pass,
          "One FIR pass: zero-insert by up, pad by (padx0, pady0), filter, keep every down-th sample.", py::arg("x"),
          py::arg("f"), py::arg("upx"), py::arg("upy"), py::arg("downx"), py::arg("downy"), py::arg("padx0"),
          py::arg("pady0"), py::arg("out_w"), py::arg("out_h"), py::arg("flip"), py::arg("fgain"));
}
