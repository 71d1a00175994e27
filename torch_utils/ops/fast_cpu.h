// Per-plane CPU kernels behind fast_cpu.cpp (plain C++, no torch dependency): polyphase FIR resampling of one
// [H, W] image plane, the fused filtered leaky ReLU, and fused bias/activation rows. See fast_cpu.py for the
// semantics they reproduce.
//
// Every separable FIR stage reduces to one primitive, `combine`: an output vector is a weighted sum of a few input
// vectors, `y[j] = sum_t w[t] * src[t][j]`, vectorised over j. Filtering along the height axis combines whole rows.
// Filtering along the width axis uses polyphase decomposition: zero-insertion up-sampling by `up` becomes `up`
// short filters on the real samples (one per output phase) whose results are interleaved, and decimation by `down`
// reads `down` de-interleaved copies of the row, so no multiply touches an inserted zero or a discarded output.

#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace fast_cpu {

// ------------------------------------------------------------------------------------------------------------------
// Portable SIMD through GCC/Clang vector extensions: 16 floats (AVX-512), 8 (AVX) or 4 (SSE / other).

#if defined(__AVX512F__)
constexpr int kVec = 16;
#elif defined(__AVX__)
constexpr int kVec = 8;
#else
constexpr int kVec = 4;
#endif
typedef float vfloat __attribute__((vector_size(sizeof(float) * kVec)));

inline vfloat vload(const float* p) {
    vfloat v;
    std::memcpy(&v, p, sizeof(v));
    return v;
}

inline void vstore(float* p, vfloat v) { std::memcpy(p, &v, sizeof(v)); }

inline vfloat vbroadcast(float s) {
    vfloat v = {};
    return v + s;
}

// y[j] = sum_t w[t] * src[t][j] for j < n (y = 0 when T == 0). Four vectors of sums stay in registers per block.
inline void combine(float* y, const float* const* src, const float* w, int T, int n) {
    if (T == 0) {
        std::memset(y, 0, sizeof(float) * n);
        return;
    }
    constexpr int U = 4;
    int j = 0;
    for (; j + U * kVec <= n; j += U * kVec) {
        vfloat acc[U];
        const vfloat w0 = vbroadcast(w[0]);
        for (int u = 0; u < U; u++) acc[u] = vload(src[0] + j + u * kVec) * w0;
        for (int t = 1; t < T; t++) {
            const vfloat wt = vbroadcast(w[t]);
            const float* s = src[t] + j;
            for (int u = 0; u < U; u++) acc[u] += vload(s + u * kVec) * wt;
        }
        for (int u = 0; u < U; u++) vstore(y + j + u * kVec, acc[u]);
    }
    for (; j + kVec <= n; j += kVec) {
        vfloat acc = vload(src[0] + j) * vbroadcast(w[0]);
        for (int t = 1; t < T; t++) acc += vload(src[t] + j) * vbroadcast(w[t]);
        vstore(y + j, acc);
    }
    for (; j < n; j++) {
        float acc = w[0] * src[0][j];
        for (int t = 1; t < T; t++) acc += w[t] * src[t][j];
        y[j] = acc;
    }
}

// y = clamp(lrelu(y, slope) * gain, -clamp, clamp), in the reference's order of operations.
inline void lrelu_gain_clamp(float* y, int n, float slope, float gain, float clamp) {
    int j = 0;
    const vfloat vs = vbroadcast(slope), vg = vbroadcast(gain), vlo = vbroadcast(-clamp), vhi = vbroadcast(clamp);
    const vfloat zero = {};
    for (; j + kVec <= n; j += kVec) {
        vfloat v = vload(y + j);
        v = v >= zero ? v : v * vs;
        v = v * vg;
        v = v < vlo ? vlo : v;  // NaN compares false and passes through, as in torch.clamp.
        v = v > vhi ? vhi : v;
        vstore(y + j, v);
    }
    for (; j < n; j++) {
        float v = y[j];
        v = v >= 0.0f ? v : v * slope;
        v = v * gain;
        v = v < -clamp ? -clamp : v;
        v = v > clamp ? clamp : v;
        y[j] = v;
    }
}

// ------------------------------------------------------------------------------------------------------------------
// One-dimensional upfirdn plan.
//
// With taps g[k] used as correlation weights (the caller flips the filter for a true convolution), output o is
//     y[o] = sum_k g[k] * u[o * down + k - pad0],   u[j] = x[j / up] if j % up == 0 and 0 <= j / up < in, else 0.
// Only up == 1 or down == 1 is supported. Output o belongs to phase q = o % up and reads the consecutive inputs
// x[base(o) + t], t < w[q].size(), with weights w[q][t], where base(o) = (o / up) * down + offset[q].

struct AxisPlan {
    int in = 0, out = 0, up = 1, down = 1;
    std::vector<std::vector<float>> w;  // Per phase: weights of the inputs x[base + t].
    std::vector<int> offset;            // Per phase: base(o) - (o / up) * down.
    int lo = 0, hi = 0;                 // Zeros needed before / after x so that every read is in range.

    int base(int o) const { return (o / up) * down + offset[o % up]; }
};

inline int floor_div(int a, int b) { return (a >= 0) ? a / b : -((-a + b - 1) / b); }

inline AxisPlan make_plan(int in, int up, int down, int pad0, int pad1, const std::vector<float>& g) {
    if (!(up == 1 || down == 1) || up < 1 || down < 1) throw std::invalid_argument("fast_cpu: bad up/down");
    const int K = static_cast<int>(g.size());
    AxisPlan p;
    p.in = in;
    p.up = up;
    p.down = down;
    const int span = in * up + pad0 + pad1 - K;
    if (span < 0) throw std::invalid_argument("fast_cpu: filter longer than the padded signal");
    p.out = span / down + 1;
    for (int q = 0; q < up; q++) {
        // First tap that lands on a real sample for this phase: (q - pad0 + k) % up == 0.
        const int k0 = (((pad0 - q) % up) + up) % up;
        std::vector<float> taps;
        for (int k = k0; k < K; k += up) taps.push_back(g[k]);
        p.w.push_back(taps);
        p.offset.push_back(up > 1 ? floor_div(q - pad0 + k0, up) : -pad0);  // The division is exact.
    }
    int min_i = 0, max_i = in - 1;
    for (int o = 0; o < p.out; o++) {
        const int T = static_cast<int>(p.w[o % up].size());
        if (T == 0) continue;
        min_i = std::min(min_i, p.base(o));
        max_i = std::max(max_i, p.base(o) + T - 1);
    }
    p.lo = -min_i;
    p.hi = max_i - (in - 1);
    return p;
}

// Scratch memory of one worker, reused across planes.
struct Scratch {
    std::vector<float> padded;  // Rows with zeros on both sides, [rows, stride].
    std::vector<float> phases;  // Per-phase outputs (up > 1) or de-interleaved inputs (down > 1).
    std::vector<const float*> src;
    std::vector<float> wbuf;
};

// Interleave `up` phase planes into rows: y[h, m * up + q] = ph[q][h * stride + m] for m * up + q < width. Fixed
// factors let the compiler vectorise the scatter with shuffles.
template <int UP>
inline void interleave_rows(const float* ph, size_t phase_size, int stride, int rows, float* y, int width, int up_rt) {
    const int up = UP > 0 ? UP : up_rt;
    const int full = width / up;
    for (int h = 0; h < rows; h++) {
        float* yr = y + static_cast<size_t>(h) * width;
        const float* pr = ph + static_cast<size_t>(h) * stride;
        for (int m = 0; m < full; m++)
            for (int q = 0; q < up; q++) yr[m * up + q] = pr[q * phase_size + m];
        for (int o = full * up; o < width; o++) yr[o] = pr[(o % up) * phase_size + o / up];
    }
}

// De-interleave rows into `d` streams: st[r][h * S + m] = xp[h * stride + m * d + r] for m < S (stride = S * d).
template <int D>
inline void deinterleave_rows(const float* xp, int rows, int S, float* st, int d_rt) {
    const int d = D > 0 ? D : d_rt;
    const size_t plane = static_cast<size_t>(rows) * S;
    for (int h = 0; h < rows; h++) {
        const float* xr = xp + static_cast<size_t>(h) * S * d;
        for (int m = 0; m < S; m++)
            for (int r = 0; r < d; r++) st[r * plane + static_cast<size_t>(h) * S + m] = xr[m * d + r];
    }
}

// Filter `rows` rows along the width axis: y[h, 0:p.out] (row stride p.out) from x[h, 0:p.in] (row stride
// x_stride), the real samples taken as x * scale + bias (the zero padding stays zero, as in the reference, where the
// bias is added before padding). The rows are laid end to end with their padding, so each phase is one long
// vectorised `combine` over the whole plane; the samples it computes between rows are discarded.
inline void filter_rows(const AxisPlan& p, const float* x, int x_stride, int rows, float scale, float bias, float* y,
                        Scratch& s) {
    const int d = p.down, up = p.up;
    const int len = p.lo + p.in + p.hi;
    const int S = (len + d - 1) / d;  // Samples per row and stream (down > 1).
    // Padded row length. Computing phase q at input position k gives output k of that phase, so a row must also
    // hold every phase's outputs (phases without taps can outnumber the padded inputs).
    const int stride = d > 1 ? S * d : std::max(len, (p.out + up - 1) / up);
    const size_t total = static_cast<size_t>(rows) * stride;
    s.padded.resize(total);
    float* xp = s.padded.data();
    for (int h = 0; h < rows; h++) {
        float* pr = xp + static_cast<size_t>(h) * stride;
        const float* xr = x + static_cast<size_t>(h) * x_stride;
        std::fill(pr, pr + p.lo, 0.0f);
        if (scale == 1.0f && bias == 0.0f) {
            std::memcpy(pr + p.lo, xr, sizeof(float) * p.in);
        } else {
            for (int i = 0; i < p.in; i++) pr[p.lo + i] = xr[i] * scale + bias;
        }
        std::fill(pr + p.lo + p.in, pr + stride, 0.0f);
    }

    if (d == 1) {
        // Phase q of row h: ph[q][h * stride + m] = sum_t w[q][t] * xp[h * stride + lo + offset[q] + m + t].
        s.phases.resize(total * up);
        for (int q = 0; q < up; q++) {
            const int Mq = q < p.out ? (p.out - q + up - 1) / up : 0;
            float* ph = s.phases.data() + q * total;
            const auto& w = p.w[q];
            const int T = static_cast<int>(w.size());
            s.src.resize(std::max(T, 1));
            for (int t = 0; t < T; t++) s.src[t] = xp + p.lo + p.offset[q] + t;
            if (Mq > 0) combine(ph, s.src.data(), w.data(), T, static_cast<int>((rows - 1) * static_cast<size_t>(stride)) + Mq);
        }
        if (up == 1) {
            for (int h = 0; h < rows; h++)
                std::memcpy(y + static_cast<size_t>(h) * p.out, s.phases.data() + static_cast<size_t>(h) * stride, sizeof(float) * p.out);
        } else if (up == 2) {
            interleave_rows<2>(s.phases.data(), total, stride, rows, y, p.out, up);
        } else if (up == 4) {
            interleave_rows<4>(s.phases.data(), total, stride, rows, y, p.out, up);
        } else {
            interleave_rows<0>(s.phases.data(), total, stride, rows, y, p.out, up);
        }
    } else {
        // Output o of row h reads xp[h * stride + o * d + e_t] = stream (e_t % d) at h * S + o + e_t / d.
        s.phases.resize(total);
        float* st = s.phases.data();
        if (d == 2) {
            deinterleave_rows<2>(xp, rows, S, st, d);
        } else if (d == 4) {
            deinterleave_rows<4>(xp, rows, S, st, d);
        } else {
            deinterleave_rows<0>(xp, rows, S, st, d);
        }
        const auto& w = p.w[0];
        const int T = static_cast<int>(w.size());
        const size_t plane = static_cast<size_t>(rows) * S;
        s.src.resize(std::max(T, 1));
        for (int t = 0; t < T; t++) {
            const int e = p.lo + p.offset[0] + t;  // >= 0 by construction of lo.
            s.src[t] = st + (e % d) * plane + e / d;
        }
        // Reuse the padded buffer for the results (row stride S), then compact the rows.
        float* res = xp;
        combine(res, s.src.data(), w.data(), T, static_cast<int>((rows - 1) * static_cast<size_t>(S)) + p.out);
        for (int h = 0; h < rows; h++)
            std::memcpy(y + static_cast<size_t>(h) * p.out, res + static_cast<size_t>(h) * S, sizeof(float) * p.out);
    }
}

// Output row o of a height-axis plan: a combination of input rows, rows(i) giving row i (0 <= i < p.in); rows
// outside the image are zero padding and are skipped.
template <typename RowFn>
inline void filter_col_row(const AxisPlan& p, int o, RowFn rows, float* y, int width, Scratch& s) {
    const auto& w = p.w[o % p.up];
    const int b = p.base(o);
    s.src.clear();
    s.wbuf.clear();
    for (int t = 0; t < static_cast<int>(w.size()); t++) {
        const int i = b + t;
        if (i >= 0 && i < p.in) {
            s.src.push_back(rows(i));
            s.wbuf.push_back(w[t]);
        }
    }
    combine(y, s.src.data(), s.wbuf.data(), static_cast<int>(s.src.size()), width);
}

// ------------------------------------------------------------------------------------------------------------------
// Whole-plane operations.

// upfirdn2d of one plane x [py.in, px.in] into y [py.out, px.out]; `tmp` holds the width-filtered rows.
inline void upfirdn2d_plane(const AxisPlan& px, const AxisPlan& py, const float* x, float* y, std::vector<float>& tmp,
                            Scratch& s) {
    const int H = py.in, W = px.in, Wo = px.out, Ho = py.out;
    tmp.resize(static_cast<size_t>(H) * Wo);
    filter_rows(px, x, W, H, 1.0f, 0.0f, tmp.data(), s);
    const float* t0 = tmp.data();
    auto rows = [&](int i) { return t0 + static_cast<size_t>(i) * Wo; };
    for (int o = 0; o < Ho; o++) filter_col_row(py, o, rows, y + static_cast<size_t>(o) * Wo, Wo, s);
}

// Plans and parameters of one filtered_lrelu call.
struct FilteredLreluPlan {
    AxisPlan ux, uy;  // Up-sampling stage (carries the padding).
    AxisPlan dx, dy;  // Decimation stage (no padding).
    float gain = 1.0f, slope = 1.0f, clamp = INFINITY;
};

// Buffers of one filtered_lrelu worker.
struct FilteredLreluScratch {
    std::vector<float> a;    // Width-up-sampled input rows [H, Wt].
    std::vector<float> act;  // Ring of activated, fully up-sampled rows [ring, Wt].
    std::vector<float> dec;  // Height-decimated rows [Ho, Wt].
    Scratch s;
};

// filtered_lrelu of one plane: x [H, W] -> y [Ho, Wo], with x * scale + bias as the input. The height axis streams
// through a ring of activated rows, so the fully up-sampled plane is never stored whole.
inline void filtered_lrelu_plane(const FilteredLreluPlan& p, const float* x, float scale, float bias, float* y,
                                 FilteredLreluScratch& b) {
    const int H = p.uy.in, W = p.ux.in, Wt = p.ux.out, Ht = p.uy.out, Ho = p.dy.out;
    const int taps_d = static_cast<int>(p.dy.w[0].size());
    const int ring = taps_d + p.dy.down;
    b.a.resize(static_cast<size_t>(H) * Wt);
    b.act.resize(static_cast<size_t>(ring) * Wt);
    b.dec.resize(static_cast<size_t>(Ho) * Wt);
    filter_rows(p.ux, x, W, H, scale, bias, b.a.data(), b.s);
    const float* a0 = b.a.data();
    const float* r0 = b.act.data();
    auto a_rows = [&](int i) { return a0 + static_cast<size_t>(i) * Wt; };
    auto act_rows = [&](int i) { return r0 + static_cast<size_t>(i % ring) * Wt; };
    int done = 0;  // Activated rows computed so far.
    for (int o = 0; o < Ho; o++) {
        const int need = std::min(Ht, p.dy.base(o) + taps_d);
        for (; done < need; done++) {
            float* r = b.act.data() + static_cast<size_t>(done % ring) * Wt;
            filter_col_row(p.uy, done, a_rows, r, Wt, b.s);
            lrelu_gain_clamp(r, Wt, p.slope, p.gain, p.clamp);
        }
        filter_col_row(p.dy, o, act_rows, b.dec.data() + static_cast<size_t>(o) * Wt, Wt, b.s);
    }
    filter_rows(p.dx, b.dec.data(), Wt, Ho, 1.0f, 0.0f, y, b.s);
}

}  // namespace fast_cpu
