// Python bindings of the fast CPU forward kernels (inference only, no autograd): separable upfirdn2d, fused
// filtered leaky ReLU and fused bias/activation. The per-plane kernels live in fast_cpu.h; here the tensors are
// checked and the planes ([H, W] images of one sample and channel) are spread over torch's intra-op threads.

// Only the headers needed (not torch/extension.h), which cuts the first-use build time about fourfold.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/csrc/utils/pybind.h>

#include "fast_cpu.h"

namespace {

std::vector<float> to_vector(const at::Tensor& f) {
    auto c = f.to(at::kFloat).contiguous();
    return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

fast_cpu::AxisPlan plan(int64_t in, int64_t up, int64_t down, int64_t pad0, int64_t pad1, const std::vector<float>& g) {
    TORCH_CHECK(up >= 1 && down >= 1 && (up == 1 || down == 1), "fast_cpu: need up == 1 or down == 1 per axis, got up=",
                up, " down=", down);
    TORCH_CHECK(in * up + pad0 + pad1 >= static_cast<int64_t>(g.size()), "fast_cpu: padded size ", in * up + pad0 + pad1,
                " is smaller than the filter (", g.size(), " taps)");
    return fast_cpu::make_plan(in, up, down, pad0, pad1, g);
}

// upfirdn2d with a separable filter: gx (width taps) and gy (height taps), given as correlation weights.
at::Tensor upfirdn2d_sep(at::Tensor x, at::Tensor gx, at::Tensor gy, int64_t upx, int64_t upy,
                            int64_t downx, int64_t downy, int64_t px0, int64_t px1, int64_t py0, int64_t py1) {
    TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat && x.device().is_cpu(),
                "fast_cpu.upfirdn2d_sep: x must be a float32 CPU tensor [N, C, H, W]");
    x = x.contiguous();
    const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
    const auto px = plan(W, upx, downx, px0, px1, to_vector(gx));
    const auto py = plan(H, upy, downy, py0, py1, to_vector(gy));
    auto y = at::empty({N, C, py.out, px.out}, x.options());
    const float* xd = x.data_ptr<float>();
    float* yd = y.data_ptr<float>();
    const int64_t in_plane = H * W, out_plane = static_cast<int64_t>(py.out) * px.out;
    at::parallel_for(0, N * C, 1, [&](int64_t begin, int64_t end) {
        fast_cpu::Scratch s;
        std::vector<float> tmp;
        for (int64_t i = begin; i < end; i++) fast_cpu::upfirdn2d_plane(px, py, xd + i * in_plane, yd + i * out_plane, tmp, s);
    });
    return y;
}

// filtered_lrelu: (x * scale + b) -> up-sample (gu taps, padding) -> leaky ReLU, gain, clamp -> down-sample (gd taps).
// `b` [C] and `scale` [N * C] may be empty; a negative clamp means none.
at::Tensor filtered_lrelu(at::Tensor x, at::Tensor gu, at::Tensor gd, at::Tensor b, at::Tensor scale,
                             int64_t up, int64_t down, int64_t px0, int64_t px1, int64_t py0, int64_t py1, double gain,
                             double slope, double clamp) {
    TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat && x.device().is_cpu(),
                "fast_cpu.filtered_lrelu: x must be a float32 CPU tensor [N, C, H, W]");
    x = x.contiguous();
    const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
    const std::vector<float> vu = to_vector(gu), vd = to_vector(gd);
    fast_cpu::FilteredLreluPlan p;
    p.ux = plan(W, up, 1, px0, px1, vu);
    p.uy = plan(H, up, 1, py0, py1, vu);
    p.dx = plan(p.ux.out, 1, down, 0, 0, vd);
    p.dy = plan(p.uy.out, 1, down, 0, 0, vd);
    p.gain = static_cast<float>(gain);
    p.slope = static_cast<float>(slope);
    p.clamp = clamp < 0 ? INFINITY : static_cast<float>(clamp);
    std::vector<float> bias(C, 0.0f);
    if (b.numel() > 0) {
        TORCH_CHECK(b.numel() == C, "fast_cpu.filtered_lrelu: b must have ", C, " elements, got ", b.numel());
        bias = to_vector(b);
    }
    std::vector<float> scales;
    if (scale.numel() > 0) {
        TORCH_CHECK(scale.numel() == N * C, "fast_cpu.filtered_lrelu: scale must have ", N * C, " elements");
        scales = to_vector(scale);
    }
    auto y = at::empty({N, C, p.dy.out, p.dx.out}, x.options());
    const float* xd = x.data_ptr<float>();
    float* yd = y.data_ptr<float>();
    const int64_t in_plane = H * W, out_plane = static_cast<int64_t>(p.dy.out) * p.dx.out;
    at::parallel_for(0, N * C, 1, [&](int64_t begin, int64_t end) {
        fast_cpu::FilteredLreluScratch buffers;
        for (int64_t i = begin; i < end; i++) {
            const float sc = scales.empty() ? 1.0f : scales[i];
            fast_cpu::filtered_lrelu_plane(p, xd + i * in_plane, sc, bias[i % C], yd + i * out_plane, buffers);
        }
    });
    return y;
}

// bias_act for the linear and leaky-ReLU activations: clamp(act(x + b) * gain), computed in float32 whatever the
// storage type, with the bias along dimension `dim`. A negative clamp means none.
template <typename scalar_t>
void bias_act_kernel(const scalar_t* x, scalar_t* y, const float* bias, int64_t outer, int64_t C, int64_t inner,
                     bool lrelu, float slope, float gain, float clamp) {
    at::parallel_for(0, outer * C, 1, [&](int64_t begin, int64_t end) {
        for (int64_t row = begin; row < end; row++) {
            const float b = bias ? bias[row % C] : 0.0f;
            const scalar_t* xr = x + row * inner;
            scalar_t* yr = y + row * inner;
            for (int64_t j = 0; j < inner; j++) {
                float v = static_cast<float>(xr[j]) + b;
                if (lrelu) v = v >= 0.0f ? v : v * slope;
                v = v * gain;
                v = v < -clamp ? -clamp : v;  // NaN passes through, as in torch.clamp.
                v = v > clamp ? clamp : v;
                yr[j] = static_cast<scalar_t>(v);
            }
        }
    });
}

at::Tensor bias_act(at::Tensor x, at::Tensor b, int64_t dim, bool lrelu, double slope, double gain,
                       double clamp) {
    TORCH_CHECK(x.device().is_cpu() && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16),
                "fast_cpu.bias_act: x must be a float32 or bfloat16 CPU tensor");
    TORCH_CHECK(x.dim() > 0 && dim >= 0 && dim < x.dim(), "fast_cpu.bias_act: bad dim ", dim);
    x = x.contiguous();
    auto y = at::empty_like(x);
    const int64_t C = x.size(dim);
    int64_t outer = 1, inner = 1;
    for (int64_t i = 0; i < dim; i++) outer *= x.size(i);
    for (int64_t i = dim + 1; i < x.dim(); i++) inner *= x.size(i);
    std::vector<float> bias;
    if (b.numel() > 0) {
        TORCH_CHECK(b.numel() == C, "fast_cpu.bias_act: b must have ", C, " elements, got ", b.numel());
        bias = to_vector(b);
    }
    const float fclamp = clamp < 0 ? INFINITY : static_cast<float>(clamp);
    const float* bp = bias.empty() ? nullptr : bias.data();
    if (x.scalar_type() == at::kFloat) {
        bias_act_kernel<float>(x.data_ptr<float>(), y.data_ptr<float>(), bp, outer, C, inner, lrelu,
                               static_cast<float>(slope), static_cast<float>(gain), fclamp);
    } else {
        bias_act_kernel<at::BFloat16>(x.data_ptr<at::BFloat16>(), y.data_ptr<at::BFloat16>(), bp, outer, C, inner,
                                      lrelu, static_cast<float>(slope), static_cast<float>(gain), fclamp);
    }
    return y;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("upfirdn2d_sep", &upfirdn2d_sep, "Separable upfirdn2d forward (float32, CPU)");
    m.def("filtered_lrelu", &filtered_lrelu, "Fused filtered leaky ReLU forward (float32, CPU)");
    m.def("bias_act", &bias_act, "Bias, linear/leaky-ReLU activation, gain and clamp forward (CPU)");
}
