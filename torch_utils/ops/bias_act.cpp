// Python binding of the fused bias/activation kernel (bias_act.h): argument checks, output allocation, then the CUDA
// kernel for CUDA tensors or the equivalent host loop for CPU tensors (the host loop exists so that the kernel's
// arithmetic can be tested without a GPU; the Python op sends CPU tensors to its reference path instead).

// ATen and torch's pybind11 type casters only, rather than all of <torch/extension.h>: half the compile time.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/utils/pybind.h>

#include "bias_act.h"

namespace lvg_bias_act {

namespace {

bool is_supported_dtype(c10::ScalarType dtype) {
    return dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16;
}

// Returns `t` with the memory layout of `like` (a copy only when the strides differ).
at::Tensor with_layout_of(const at::Tensor& t, const at::Tensor& like) {
    if (t.strides() == like.strides()) {
        return t;
    }
    return at::empty_like(like).copy_(t);
}

void check_like(const at::Tensor& t, const at::Tensor& x, const char* name) {
    TORCH_CHECK(t.device() == x.device(), "bias_act: ", name, " must be on ", x.device(), ", got ", t.device());
    TORCH_CHECK(t.scalar_type() == x.scalar_type(), "bias_act: ", name, " must have dtype ", x.scalar_type(),
                ", got ", t.scalar_type());
    TORCH_CHECK(t.sizes() == x.sizes(), "bias_act: ", name, " must have shape ", x.sizes(), ", got ", t.sizes());
}

} // namespace

// mode 0: y = clamp(act(x + b) * gain); mode 1: m1 * d/dx of that; mode 2: m1 * m2 * d2/dx2 of that.
at::Tensor bias_act(at::Tensor x, c10::optional<at::Tensor> b, c10::optional<at::Tensor> m1,
                    c10::optional<at::Tensor> m2, int64_t dim, int64_t act, int64_t mode, double alpha, double gain,
                    double clamp, bool clamp_grad_at_limit) {
    TORCH_CHECK(is_supported_dtype(x.scalar_type()), "bias_act: x must be float16, bfloat16, float32 or float64, got ",
                x.scalar_type());
    TORCH_CHECK(act >= kLinear && act <= kSwish, "bias_act: act must be an activation number in [1, 9], got ", act);
    TORCH_CHECK(mode >= kForward && mode <= kGrad2, "bias_act: mode must be 0, 1 or 2, got ", mode);
    TORCH_CHECK(mode == kForward || m1.has_value(), "bias_act: mode ", mode, " needs m1");
    TORCH_CHECK(mode != kGrad2 || m2.has_value(), "bias_act: mode 2 needs m2");

    // One dense layout for every tensor, so that a storage index addresses the same element everywhere.
    if (!x.is_non_overlapping_and_dense()) {
        x = x.contiguous();
    }
    at::Tensor bias, mul1, mul2;
    int64_t bias_stride = 1, bias_size = 1;
    if (b.has_value()) {
        TORCH_CHECK(x.dim() > 0 && dim >= 0 && dim < x.dim(), "bias_act: dim must be in [0, ", x.dim(), "), got ",
                    dim);
        bias = b->contiguous();
        TORCH_CHECK(bias.device() == x.device(), "bias_act: b must be on ", x.device(), ", got ", bias.device());
        TORCH_CHECK(bias.scalar_type() == x.scalar_type(), "bias_act: b must have dtype ", x.scalar_type(), ", got ",
                    bias.scalar_type());
        TORCH_CHECK(bias.dim() == 1 && bias.size(0) == x.size(dim), "bias_act: b must have shape [", x.size(dim),
                    "], got ", bias.sizes());
        bias_size = x.size(dim);
        bias_stride = bias_size > 1 ? x.stride(dim) : 1;
    }
    if (m1.has_value() && mode != kForward) {
        check_like(*m1, x, "m1");
        mul1 = with_layout_of(*m1, x);
    }
    if (m2.has_value() && mode == kGrad2) {
        check_like(*m2, x, "m2");
        mul2 = with_layout_of(*m2, x);
    }

    at::Tensor out = at::empty_like(x); // Same strides as x: it is dense.
    TORCH_CHECK(out.strides() == x.strides(), "bias_act: internal error: output layout differs from x");
    if (x.numel() == 0) {
        return out;
    }

    Args args;
    args.x = x.data_ptr();
    args.b = bias.defined() ? bias.data_ptr() : nullptr;
    args.m1 = mul1.defined() ? mul1.data_ptr() : nullptr;
    args.m2 = mul2.defined() ? mul2.data_ptr() : nullptr;
    args.out = out.data_ptr();
    args.numel = x.numel();
    args.bias_stride = bias_stride;
    args.bias_size = bias_size;
    args.act = static_cast<int>(act);
    args.mode = static_cast<int>(mode);
    args.alpha = alpha;
    args.gain = gain;
    args.clamp = clamp;
    args.clamp_grad_at_limit = clamp_grad_at_limit;
    args.device = x.is_cuda() ? x.get_device() : -1;

    if (x.is_cuda()) {
#ifdef LVG_WITH_CUDA
        bias_act_cuda(args, x.scalar_type());
#else
        TORCH_CHECK(false, "bias_act: this build of the plugin has no CUDA kernels (built without LVG_WITH_CUDA)");
#endif
        return out;
    }

    // Host loop with the kernel's per-element code.
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bias_act_host", [&] {
        at::parallel_for(0, args.numel, 4096, [&](int64_t begin, int64_t end) {
            for (int64_t i = begin; i < end; ++i) {
                bias_act_element<scalar_t, int64_t>(args, i);
            }
        });
    });
    return out;
}

} // namespace lvg_bias_act

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("bias_act", &lvg_bias_act::bias_act, "Fused bias, activation, gain and clamp (and its derivatives).",
          py::arg("x"), py::arg("b"), py::arg("m1"), py::arg("m2"), py::arg("dim"), py::arg("act"), py::arg("mode"),
          py::arg("alpha"), py::arg("gain"), py::arg("clamp"), py::arg("clamp_grad_at_limit"));
}
