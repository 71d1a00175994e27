// Fused bias, activation, gain and clamp (bias_act.py): the per-element arithmetic, shared by the CUDA kernel
// (bias_act.cu) and the host loop (bias_act.cpp) so that a machine without a GPU can test the kernel's numerics.
//
// One element, with v = x + b[channel], everything computed in the accumulation type (float32 for float16 and
// bfloat16 tensors, as the original's kernel does) and only the result rounded to the tensor dtype:
//   forward: y   = clamp(act(v) * gain, -clamp, clamp)
//   grad:    out = m1 * act'(v) * gain * pass
//   grad2:   out = m1 * m2 * act''(v) * gain * pass
// where pass is 1 when the unclamped value lies inside [-clamp, clamp] and 0 otherwise; whether a value exactly at a
// limit passes follows torch.clamp's gradient in the running torch version (clamp_grad_at_limit: it passes up to
// torch 2.13, not from 2.14). A negative clamp means no clamping. A NaN (an fp16 overflow upstream, say) counts as
// outside: it becomes -clamp with a zero gradient, as in the original's kernel (torch.clamp, and so the reference
// path, would pass the NaN on). In float32 and float64 this equals the reference path's separate torch ops.

#pragma once

#include <ATen/OpMathType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define LVG_HD __host__ __device__ __forceinline__
#else
#define LVG_HD inline
#endif

namespace lvg_bias_act {

// Activation numbers: activation_funcs[...].cuda_idx in bias_act.py.
enum Act : int {
    kLinear = 1,
    kRelu = 2,
    kLrelu = 3,
    kTanh = 4,
    kSigmoid = 5,
    kElu = 6,
    kSelu = 7,
    kSoftplus = 8,
    kSwish = 9,
};

// What one call computes (the formulas at the top of this file).
enum Mode : int {
    kForward = 0,
    kGrad = 1,
    kGrad2 = 2,
};

// Type-erased arguments of one call; every tensor has the memory layout of x (dense, any stride order), so one
// storage index addresses the same element in all of them.
struct Args {
    const void* x;       // input
    const void* b;       // bias [bias_size], or nullptr
    const void* m1;      // grad, grad2: first multiplier (the incoming gradient)
    const void* m2;      // grad2: second multiplier
    void* out;           // result, same layout as x
    int64_t numel;       // elements of x
    int64_t bias_stride; // channel of storage index i: (i / bias_stride) % bias_size
    int64_t bias_size;
    int act;             // Act
    int mode;            // Mode
    double alpha;        // lrelu slope
    double gain;         // scale after the activation
    double clamp;        // clip limit after the gain; negative: none
    bool clamp_grad_at_limit; // a value exactly at +-clamp gets the gradient (true) or counts as clamped (false)
    int device;          // CUDA device index (CUDA launches only)
};

// ---------------------------------------------------------------------------------------------------------------------
// Math functions for float and double, callable from host and device code.

LVG_HD float lvg_exp(float v) { return expf(v); }
LVG_HD double lvg_exp(double v) { return exp(v); }
LVG_HD float lvg_expm1(float v) { return expm1f(v); }
LVG_HD double lvg_expm1(double v) { return expm1(v); }
LVG_HD float lvg_log1p(float v) { return log1pf(v); }
LVG_HD double lvg_log1p(double v) { return log1p(v); }
LVG_HD float lvg_tanh(float v) { return tanhf(v); }
LVG_HD double lvg_tanh(double v) { return tanh(v); }

// Value, first and second derivative of activation `act` at v. The branch points follow torch's own kernels (for
// example leaky_relu's gradient takes the slope at exactly 0, elu/selu the exponential side, softplus switches to
// the identity above 20), so that the kernel's gradients equal the reference path's autograd.
template <typename acc_t>
LVG_HD void activation(int act, acc_t v, acc_t alpha, acc_t& a, acc_t& d1, acc_t& d2) {
    const acc_t one = 1, zero = 0;
    switch (act) {
    case kRelu:
        a = v > zero ? v : zero;
        d1 = v > zero ? one : zero;
        d2 = zero;
        break;
    case kLrelu:
        a = v > zero ? v : v * alpha;
        d1 = v > zero ? one : alpha;
        d2 = zero;
        break;
    case kTanh:
        a = lvg_tanh(v);
        d1 = one - a * a;
        d2 = acc_t(-2) * a * d1;
        break;
    case kSigmoid: {
        const acc_t s = one / (one + lvg_exp(-v));
        a = s;
        d1 = s * (one - s);
        d2 = d1 * (one - acc_t(2) * s);
        break;
    }
    case kElu:
        a = v > zero ? v : lvg_expm1(v);
        d1 = v > zero ? one : lvg_exp(v);
        d2 = v > zero ? zero : lvg_exp(v);
        break;
    case kSelu: {
        // The fixed constants of the SELU paper (Klambauer et al. 2017), as torch uses them.
        const acc_t scale = acc_t(1.0507009873554804934193349852946);
        const acc_t scaled_alpha = scale * acc_t(1.6732632423543772848170429916717);
        a = v > zero ? scale * v : scaled_alpha * lvg_expm1(v);
        d1 = v > zero ? scale : scaled_alpha * lvg_exp(v);
        d2 = v > zero ? zero : scaled_alpha * lvg_exp(v);
        break;
    }
    case kSoftplus: {
        const acc_t threshold = 20;
        const acc_t z = lvg_exp(v);
        const acc_t s = z / (z + one);
        a = v > threshold ? v : lvg_log1p(z);
        d1 = v > threshold ? one : s;
        d2 = v > threshold ? zero : s * (one - s);
        break;
    }
    case kSwish: {
        const acc_t s = one / (one + lvg_exp(-v));
        a = v * s;
        d1 = s + v * s * (one - s);
        d2 = s * (one - s) * (acc_t(2) + v * (one - acc_t(2) * s));
        break;
    }
    default: // kLinear
        a = v;
        d1 = one;
        d2 = zero;
        break;
    }
}

// Computes element `i` (a storage index) of one call.
template <typename scalar_t, typename index_t>
LVG_HD void bias_act_element(const Args& args, index_t i) {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* x = static_cast<const scalar_t*>(args.x);
    const scalar_t* b = static_cast<const scalar_t*>(args.b);
    const scalar_t* m1 = static_cast<const scalar_t*>(args.m1);
    const scalar_t* m2 = static_cast<const scalar_t*>(args.m2);
    scalar_t* out = static_cast<scalar_t*>(args.out);

    // Bias add.
    acc_t v = static_cast<acc_t>(x[i]);
    if (b != nullptr) {
        const index_t channel = (i / static_cast<index_t>(args.bias_stride)) % static_cast<index_t>(args.bias_size);
        v = v + static_cast<acc_t>(b[channel]);
    }

    // Activation, gain and the clamp test (a NaN fails both comparisons, so it counts as outside).
    acc_t a, d1, d2;
    activation<acc_t>(args.act, v, static_cast<acc_t>(args.alpha), a, d1, d2);
    const acc_t gain = static_cast<acc_t>(args.gain);
    const acc_t clamp = static_cast<acc_t>(args.clamp);
    acc_t y = a;
    if (args.gain != 1.0) {
        y = y * gain;
    }
    const bool inside = args.clamp_grad_at_limit ? (y >= -clamp && y <= clamp) : (y > -clamp && y < clamp);
    const bool clamped = args.clamp >= 0 && !inside;

    if (args.mode == kForward) {
        if (clamped) {
            y = y > clamp ? clamp : -clamp;
        }
        out[i] = static_cast<scalar_t>(y);
    } else if (args.mode == kGrad) {
        const acc_t slope = clamped ? acc_t(0) : d1 * gain;
        out[i] = static_cast<scalar_t>(static_cast<acc_t>(m1[i]) * slope);
    } else { // kGrad2
        const acc_t curvature = clamped ? acc_t(0) : d2 * gain;
        out[i] = static_cast<scalar_t>(static_cast<acc_t>(m1[i]) * static_cast<acc_t>(m2[i]) * curvature);
    }
}

// Launches the CUDA kernel (bias_act.cu) on the current stream of args.device.
void bias_act_cuda(const Args& args, c10::ScalarType dtype);

} // namespace lvg_bias_act
