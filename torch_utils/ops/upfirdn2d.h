// One FIR pass of upfirdn2d (upfirdn2d.py): zero-insertion by `up`, zero padding, a valid FIR filter and decimation by
// `down`, evaluated in gather form (one output sample at a time, reading only the input samples that meet a nonzero
// tap). Shared by the upfirdn2d and filtered_lrelu plugins, and by each plugin's CUDA kernel (the .cu files) and host
// loop (the .cpp files), so that a machine without a GPU can test the kernel's arithmetic.
//
// Along one axis, with taps w[k] in correlation order (w[k] = f[K-1-k] for a true convolution, f[k] for
// flip_filter) and the up-sampled, padded input X[u] = x[(u - p0) / up] when that is a whole index inside the
// input, zero otherwise:
//   y[o] = sum_k w[k] * X[o * down + k].
// Only taps with (o * down + k - p0) divisible by `up` meet a sample, so the loops step by `up` from the first one.
// The end padding p1 only sets the output size, which the caller passes in.
//
// A pass can also apply the stages of filtered_lrelu around the filter:
//   kPlain: y = acc.
//   kLrelu: y = clamp(lrelu(acc, slope) * act_gain), and a 2-bit code per output sample records which branch was
//           taken (0: positive, 1: negative, 2: clamped) for the backward pass, 16 codes per 32-bit word (sample i
//           in bits 2 * (i % 16) of word i / 16), as the original keeps 2 bits per sample.
//   kMask:  y = acc * (act_gain, act_gain * slope or 0 by the stored code): the derivative of the kLrelu stage.
// Any pass can add a bias b[c] to every input sample first (zero padding stays zero).
//
// Precision: a plain upfirdn2d pass rounds the taps (`f * gain`) and its output to the tensor dtype, as the
// reference path does. A pass with `fp32_inside` (all of filtered_lrelu's) keeps the taps in float32 and writes its
// output in the accumulation type (float32 for float16/bfloat16 inputs), so that filtered_lrelu, like the original's
// fused kernel, computes everything in float32 and rounds only its final output. The bias add and the leaky ReLU
// stage never round. In the kLrelu stage a NaN counts as clamped (it becomes -clamp with code 2), as in the
// original's kernel.
//
// Everything here lives in the namespace LVG_PASS_NAMESPACE, which each plugin defines before including this file,
// so that the two plugins (upfirdn2d and filtered_lrelu, each with its own pass_cuda) share no symbol names.

#pragma once

#include <ATen/OpMathType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

#if defined(__CUDACC__)
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>

#include <algorithm>
#else
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <vector>
#endif

#if defined(__CUDACC__)
#define LVG_HD __host__ __device__ __forceinline__
#else
#define LVG_HD inline
#endif

#ifndef LVG_PASS_NAMESPACE
#error "define LVG_PASS_NAMESPACE (a namespace name of the including plugin) before including upfirdn2d.h"
#endif

namespace LVG_PASS_NAMESPACE {

enum Mode : int {
    kPlain = 0,
    kLrelu = 1,
    kMask = 2,
};

// Filters larger than this (in taps) are left to the reference path; the kernel keeps the taps in shared memory.
constexpr int kMaxTaps = 4096;

// Type-erased arguments of one pass (filled in by run_pass in the .cpp files).
struct PassArgs {
    const void* x;       // input [n, c, in_h, in_w], any strides
    int64_t x_stride[4]; // strides of x in elements (n, c, h, w)
    const void* b;       // bias [c] added to each input sample (the first stage of filtered_lrelu), or nullptr
    const void* f;       // taps [fh, fw] as given by the user (float32, or float64 when f_double), or nullptr: one tap
    bool f_double;
    void* y;             // output [n, c, out_h, out_w], contiguous; of x's dtype, or its accumulation type
    bool fp32_inside;    // taps kept unrounded and y in the accumulation type (the top of this file)
    uint32_t* codes;     // kLrelu (or-ed in unless nullptr; zeros before) / kMask (read): ceil(numel / 16) words
    int n, c, in_h, in_w, out_h, out_w;
    int upx, upy, downx, downy;
    int padx0, pady0;    // leading padding in up-sampled samples (negative crops)
    int fw, fh;          // filter size in taps (1 x 1 without a filter)
    bool flip;           // read the taps reversed along both axes (true convolution); false: as given (correlation)
    double fgain;        // multiplies every tap (without a filter: the single tap)
    int mode;            // Mode
    double slope;        // kLrelu, kMask: negative slope of the leaky ReLU
    double act_gain;     // kLrelu, kMask: gain after the leaky ReLU
    double clamp;        // kLrelu: clip limit after the gain; negative: none
    bool clamp_grad_at_limit; // kLrelu: a value exactly at +-clamp keeps its gradient (true) or counts as clamped
    int device;          // CUDA device index (CUDA launches only)
};

// ---------------------------------------------------------------------------------------------------------------------

// Tap i (row-major over [fh, fw]) in correlation order, as the kernel multiplies it: the user's tap times the gain,
// computed in the filter's dtype and, unless fp32_inside, rounded to the tensor dtype, as the reference casts
// `f * gain` to x.dtype.
template <typename scalar_t>
LVG_HD at::opmath_type<scalar_t> filter_tap(const PassArgs& a, int i) {
    using acc_t = at::opmath_type<scalar_t>;
    if (a.f == nullptr) {
        return static_cast<acc_t>(a.fgain); // The reference multiplies by the gain without casting it.
    }
    int ky = i / a.fw;
    int kx = i - ky * a.fw;
    if (a.flip) {
        ky = a.fh - 1 - ky;
        kx = a.fw - 1 - kx;
    }
    const int j = ky * a.fw + kx;
    if (a.f_double) {
        const double v = static_cast<const double*>(a.f)[j] * a.fgain;
        return a.fp32_inside ? static_cast<acc_t>(v) : static_cast<acc_t>(static_cast<scalar_t>(v));
    }
    const float v = static_cast<const float*>(a.f)[j] * static_cast<float>(a.fgain);
    return a.fp32_inside ? static_cast<acc_t>(v) : static_cast<acc_t>(static_cast<scalar_t>(v));
}

// First tap k0 along one axis that meets an input sample, and that sample's index i0, for a window starting at
// up-sampled coordinate u (the coordinate of tap 0 relative to the first input sample).
LVG_HD void first_tap(int u, int up, int& k0, int& i0) {
    if (u >= 0) {
        const int r = u % up;
        k0 = r == 0 ? 0 : up - r;
        i0 = (u + k0) / up;
    } else {
        k0 = -u;
        i0 = 0;
    }
}

// Computes output sample `idx` (its index in the contiguous [n, c, out_h, out_w] output) with prepared taps `w`;
// out_t is the output's element type (scalar_t, or the accumulation type for fp32_inside).
template <typename scalar_t, typename out_t, typename index_t, int kMode>
LVG_HD void pass_element(const PassArgs& a, const at::opmath_type<scalar_t>* w, index_t idx) {
    using acc_t = at::opmath_type<scalar_t>;

    // Output coordinates.
    const index_t ox = idx % a.out_w;
    index_t rest = idx / a.out_w;
    const index_t oy = rest % a.out_h;
    rest = rest / a.out_h;
    const index_t ch = rest % a.c;
    const index_t nb = rest / a.c;

    // Taps and input samples that meet, per axis.
    int kx0, ix0, ky0, iy0;
    first_tap(static_cast<int>(ox) * a.downx - a.padx0, a.upx, kx0, ix0);
    first_tap(static_cast<int>(oy) * a.downy - a.pady0, a.upy, ky0, iy0);

    const scalar_t* x = static_cast<const scalar_t*>(a.x) + static_cast<int64_t>(nb) * a.x_stride[0] +
                        static_cast<int64_t>(ch) * a.x_stride[1];
    const bool has_bias = a.b != nullptr;
    const acc_t bias = has_bias ? static_cast<acc_t>(static_cast<const scalar_t*>(a.b)[ch]) : acc_t(0);

    // Filter.
    acc_t acc = 0;
    for (int ky = ky0, iy = iy0; ky < a.fh && iy < a.in_h; ky += a.upy, ++iy) {
        const scalar_t* row = x + static_cast<int64_t>(iy) * a.x_stride[2];
        const acc_t* wrow = w + ky * a.fw;
        for (int kx = kx0, ix = ix0; kx < a.fw && ix < a.in_w; kx += a.upx, ++ix) {
            acc_t v = static_cast<acc_t>(row[static_cast<int64_t>(ix) * a.x_stride[3]]);
            if (has_bias) {
                v = v + bias;
            }
            acc += wrow[kx] * v;
        }
    }

    // Epilogue.
    out_t* y = static_cast<out_t*>(a.y);
    if (kMode == kPlain) {
        y[idx] = static_cast<out_t>(acc);
    } else if (kMode == kLrelu) {
        const acc_t v = acc;
        acc_t r = v > acc_t(0) ? v : v * static_cast<acc_t>(a.slope);
        if (a.act_gain != 1.0) {
            r = r * static_cast<acc_t>(a.act_gain);
        }
        uint8_t code = v > acc_t(0) ? 0 : 1; // leaky_relu's gradient takes the slope at exactly 0.
        const acc_t clamp = static_cast<acc_t>(a.clamp);
        // A NaN fails both comparisons: it counts as outside and becomes -clamp.
        const bool inside = a.clamp_grad_at_limit ? (r >= -clamp && r <= clamp) : (r > -clamp && r < clamp);
        if (a.clamp >= 0 && !inside) {
            r = r > clamp ? clamp : -clamp;
            code = 2;
        }
        y[idx] = static_cast<out_t>(r);
        if (a.codes != nullptr && code != 0) {
            const uint32_t bits = static_cast<uint32_t>(code) << (2 * static_cast<int>(idx % 16));
#if defined(__CUDA_ARCH__)
            atomicOr(reinterpret_cast<unsigned int*>(a.codes + idx / 16), static_cast<unsigned int>(bits));
#else
            a.codes[idx / 16] |= bits; // The host loop gives each thread whole words.
#endif
        }
    } else { // kMask
        const uint32_t code = (a.codes[idx / 16] >> (2 * static_cast<int>(idx % 16))) & 3u;
        const acc_t gain = static_cast<acc_t>(a.act_gain);
        const acc_t factor = code == 0 ? gain : (code == 1 ? gain * static_cast<acc_t>(a.slope) : acc_t(0));
        y[idx] = static_cast<out_t>(acc * factor);
    }
}

// Launches the CUDA kernel (defined by each plugin's .cu file, for the modes that plugin uses) on the current stream
// of a.device; numel is the number of output samples.
void pass_cuda(const PassArgs& a, c10::ScalarType dtype, int64_t numel);

// ---------------------------------------------------------------------------------------------------------------------
// The CUDA kernel: one thread per output sample (grid-stride), with the block's copy of the prepared taps in shared
// memory.

#if defined(__CUDACC__)

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535;

template <typename scalar_t, typename out_t, typename index_t, int kMode>
__global__ void __launch_bounds__(kThreads) pass_kernel(PassArgs a, index_t numel) {
    using acc_t = at::opmath_type<scalar_t>;
    extern __shared__ __align__(sizeof(double)) unsigned char shared_taps[];
    acc_t* w = reinterpret_cast<acc_t*>(shared_taps);
    const int taps = a.fw * a.fh;
    for (int i = threadIdx.x; i < taps; i += blockDim.x) {
        w[i] = filter_tap<scalar_t>(a, i);
    }
    __syncthreads();
    const index_t stride = static_cast<index_t>(blockDim.x) * static_cast<index_t>(gridDim.x);
    for (index_t idx = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < numel; idx += stride) {
        pass_element<scalar_t, out_t, index_t, kMode>(a, w, idx);
    }
}

// Launches pass_kernel for mode kMode; call from pass_cuda inside a CUDAGuard for a.device.
template <int kMode>
void launch_pass(const PassArgs& a, c10::ScalarType dtype, int64_t numel, cudaStream_t stream) {
    const int64_t blocks = std::min<int64_t>((numel + kThreads - 1) / kThreads, kMaxBlocks);
    const bool small = numel + blocks * kThreads < (int64_t(1) << 31); // Room for the last grid stride.
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "upfirdn2d_pass_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const size_t shared_bytes = sizeof(acc_t) * a.fw * a.fh;
        const unsigned grid = static_cast<unsigned>(blocks);
        if (a.fp32_inside && small) {
            pass_kernel<scalar_t, acc_t, int32_t, kMode><<<grid, kThreads, shared_bytes, stream>>>(
                a, static_cast<int32_t>(numel));
        } else if (a.fp32_inside) {
            pass_kernel<scalar_t, acc_t, int64_t, kMode><<<grid, kThreads, shared_bytes, stream>>>(a, numel);
        } else if (small) {
            pass_kernel<scalar_t, scalar_t, int32_t, kMode><<<grid, kThreads, shared_bytes, stream>>>(
                a, static_cast<int32_t>(numel));
        } else {
            pass_kernel<scalar_t, scalar_t, int64_t, kMode><<<grid, kThreads, shared_bytes, stream>>>(a, numel);
        }
        C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
}

#endif // __CUDACC__

// ---------------------------------------------------------------------------------------------------------------------
// The host side (compiled into the .cpp files only): argument checks, output allocation and dispatch.

#if !defined(__CUDACC__)

template <typename scalar_t, typename out_t, int kMode>
void run_host(const PassArgs& a, int64_t numel) {
    using acc_t = at::opmath_type<scalar_t>;
    std::vector<acc_t> w(a.fw * a.fh);
    for (int i = 0; i < a.fw * a.fh; ++i) {
        w[i] = filter_tap<scalar_t>(a, i);
    }
    // Whole 16-sample words per thread, so that no two threads write to one word of codes.
    at::parallel_for(0, (numel + 15) / 16, 64, [&](int64_t begin, int64_t end) {
        for (int64_t idx = begin * 16; idx < std::min(end * 16, numel); ++idx) {
            pass_element<scalar_t, out_t, int64_t, kMode>(a, w.data(), idx);
        }
    });
}

// One pass (see the top of this file) on x [N, C, H, W] into a new contiguous [N, C, out_h, out_w] tensor (of x's
// dtype, or of its accumulation type with fp32_inside): the CUDA kernel for CUDA tensors (when the plugin is built
// with LVG_WITH_CUDA), the host loop for CPU tensors.
//   f: taps [fh, fw] (float32 or float64), contiguous, or None for one tap of value fgain.
//   b: bias [C] of x's dtype, or None. codes: int32 [ceil(N * C * out_h * out_w / 16)], 2 bits per output sample
//   (see the top of this file), read by mode 2 and or-ed into by mode 1, so zeros before; None in mode 1 means no
//   codes are kept (a forward pass without gradients).
inline at::Tensor run_pass(const at::Tensor& x, const c10::optional<at::Tensor>& f, const c10::optional<at::Tensor>& b,
                           const c10::optional<at::Tensor>& codes, int64_t mode, int64_t upx, int64_t upy,
                           int64_t downx, int64_t downy, int64_t padx0, int64_t pady0, int64_t out_w, int64_t out_h,
                           bool flip, double fgain, double slope, double act_gain, double clamp,
                           bool clamp_grad_at_limit, bool fp32_inside) {
    const auto dtype = x.scalar_type();
    TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16,
                "upfirdn2d pass: x must be float16, bfloat16, float32 or float64, got ", dtype);
    TORCH_CHECK(x.dim() == 4, "upfirdn2d pass: x must have 4 dimensions [N, C, H, W], got ", x.sizes());
    TORCH_CHECK(mode >= kPlain && mode <= kMask, "upfirdn2d pass: mode must be 0, 1 or 2, got ", mode);
    TORCH_CHECK(upx >= 1 && upy >= 1 && downx >= 1 && downy >= 1, "upfirdn2d pass: up and down must be >= 1, got up ",
                upx, ", ", upy, " down ", downx, ", ", downy);
    TORCH_CHECK(out_w >= 1 && out_h >= 1, "upfirdn2d pass: output size must be positive, got ", out_w, "x", out_h);
    const int64_t int_max = std::numeric_limits<int>::max();
    for (int64_t size : x.sizes()) {
        TORCH_CHECK(size < int_max, "upfirdn2d pass: x is too large for 32-bit sizes: ", x.sizes());
    }

    int64_t fw = 1, fh = 1;
    at::Tensor taps;
    if (f.has_value()) {
        taps = *f;
        TORCH_CHECK(taps.dim() == 2 && taps.is_contiguous(), "upfirdn2d pass: f must be a contiguous [fh, fw] tensor, got ",
                    taps.sizes());
        TORCH_CHECK(taps.device() == x.device(), "upfirdn2d pass: f must be on ", x.device(), ", got ", taps.device());
        TORCH_CHECK(taps.scalar_type() == at::kFloat || taps.scalar_type() == at::kDouble,
                    "upfirdn2d pass: f must be float32 or float64, got ", taps.scalar_type());
        fh = taps.size(0);
        fw = taps.size(1);
        TORCH_CHECK(fw * fh >= 1 && fw * fh <= kMaxTaps, "upfirdn2d pass: f must have 1 to ", kMaxTaps, " taps, got ",
                    taps.sizes());
    }
    // Window coordinates (o * down - p0 + k) must fit in int.
    TORCH_CHECK(out_w * downx + std::abs(padx0) + fw < int_max && out_h * downy + std::abs(pady0) + fh < int_max &&
                    x.size(3) * upx < int_max && x.size(2) * upy < int_max,
                "upfirdn2d pass: sizes too large for 32-bit window coordinates");

    at::Tensor bias;
    if (b.has_value()) {
        bias = b->contiguous();
        TORCH_CHECK(bias.device() == x.device() && bias.scalar_type() == dtype && bias.dim() == 1 &&
                        bias.size(0) == x.size(1),
                    "upfirdn2d pass: b must be a [", x.size(1), "] tensor of dtype ", dtype, " on ", x.device(),
                    ", got ", bias.sizes(), " ", bias.scalar_type(), " on ", bias.device());
    }

    const auto out_dtype = fp32_inside ? at::toOpMathType(dtype) : dtype;
    at::Tensor y = at::empty({x.size(0), x.size(1), out_h, out_w}, x.options().dtype(out_dtype));
    TORCH_CHECK(mode != kMask || codes.has_value(), "upfirdn2d pass: mode ", mode, " needs codes");
    if (mode != kPlain && codes.has_value()) {
        const at::Tensor& c = *codes;
        const int64_t words = (y.numel() + 15) / 16;
        TORCH_CHECK(c.device() == x.device() && c.scalar_type() == at::kInt && c.is_contiguous() && c.dim() == 1 &&
                        c.size(0) == words,
                    "upfirdn2d pass: codes must be a contiguous int32 [", words, "] tensor (2 bits per sample of ",
                    y.sizes(), ") on ", x.device(), ", got ", c.sizes(), " ", c.scalar_type(), " on ", c.device());
    }
    if (y.numel() == 0) {
        return y;
    }

    PassArgs a;
    a.x = x.data_ptr();
    for (int d = 0; d < 4; ++d) {
        a.x_stride[d] = x.stride(d);
    }
    a.b = bias.defined() ? bias.data_ptr() : nullptr;
    a.f = taps.defined() ? taps.data_ptr() : nullptr;
    a.f_double = taps.defined() && taps.scalar_type() == at::kDouble;
    a.y = y.data_ptr();
    a.codes = mode != kPlain && codes.has_value() ? reinterpret_cast<uint32_t*>(codes->data_ptr<int32_t>()) : nullptr;
    a.fp32_inside = fp32_inside;
    a.n = static_cast<int>(x.size(0));
    a.c = static_cast<int>(x.size(1));
    a.in_h = static_cast<int>(x.size(2));
    a.in_w = static_cast<int>(x.size(3));
    a.out_h = static_cast<int>(out_h);
    a.out_w = static_cast<int>(out_w);
    a.upx = static_cast<int>(upx);
    a.upy = static_cast<int>(upy);
    a.downx = static_cast<int>(downx);
    a.downy = static_cast<int>(downy);
    a.padx0 = static_cast<int>(padx0);
    a.pady0 = static_cast<int>(pady0);
    a.fw = static_cast<int>(fw);
    a.fh = static_cast<int>(fh);
    a.flip = flip;
    a.fgain = fgain;
    a.mode = static_cast<int>(mode);
    a.slope = slope;
    a.act_gain = act_gain;
    a.clamp = clamp;
    a.clamp_grad_at_limit = clamp_grad_at_limit;
    a.device = x.is_cuda() ? x.get_device() : -1;

    if (x.is_cuda()) {
#ifdef LVG_WITH_CUDA
        pass_cuda(a, dtype, y.numel());
#else
        TORCH_CHECK(false, "upfirdn2d pass: this build of the plugin has no CUDA kernels (built without LVG_WITH_CUDA)");
#endif
        return y;
    }
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "upfirdn2d_pass_host", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        if (fp32_inside) {
            if (mode == kPlain) {
                run_host<scalar_t, acc_t, kPlain>(a, y.numel());
            } else if (mode == kLrelu) {
                run_host<scalar_t, acc_t, kLrelu>(a, y.numel());
            } else {
                run_host<scalar_t, acc_t, kMask>(a, y.numel());
            }
        } else if (mode == kPlain) {
            run_host<scalar_t, scalar_t, kPlain>(a, y.numel());
        } else if (mode == kLrelu) {
            run_host<scalar_t, scalar_t, kLrelu>(a, y.numel());
        } else {
            run_host<scalar_t, scalar_t, kMask>(a, y.numel());
        }
    });
    return y;
}

#endif // !__CUDACC__

} // namespace LVG_PASS_NAMESPACE
