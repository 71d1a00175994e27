"""Fast CPU inference paths for the ops of torch_utils.ops and the modulated convolutions of StyleGAN-family
generators, which make generation on a CPU several times faster. Each function here computes the same result as a
reference path (equal within float32 rounding) but skips work the reference does only for simplicity:

* `upfirdn2d` / `filtered_lrelu`: polyphase FIR resampling in a compiled C++ kernel (`fast_cpu.cpp`). Up-sampling
  by zero insertion becomes `up` short filters on the real samples; decimation computes only the kept outputs;
  bias, leaky ReLU, gain and clamp are fused between the two FIR stages, which stream through a small row buffer.
* `bias_act`: bias, linear / leaky-ReLU activation, gain and clamp in one pass.
* `modulated_conv2d`: the per-sample modulated weights of a grouped convolution (generator_sres.modulated_conv2d)
  replaced by scaling the activations (input channels by the styles, output channels by the demodulation
  coefficients) around one shared-weight convolution, so the whole batch runs as one large convolution.
* `temporal_modulated_conv3d`: the per-frame modulation of generator_lres.temporal_modulated_conv3d with the input
  gain and styles folded into one multiply.

The fast paths are used only for inference on CPU: tensors on the CPU, float32 or bfloat16, and no gradient
required. (Training on the CPU reaches the polyphase `upfirdn2d` too, through the autograd Function of
`filtered_lrelu._filtered_lrelu_cpu`, whose forward and backward passes run without gradient recording.) The ops'
`impl="ref"` still forces the reference path, and fast paths are off when the environment variable `LVG_FAST_CPU=0`
is set or after `set_enabled(False)`. If the C++ kernel cannot be built, the resampling ops fall back to the
reference path (with one warning).

Example, timing both paths of a network in one process:

    from torch_utils.ops import fast_cpu
    with torch.no_grad():
        y_fast = G(z, c)                            # fast paths (the default on CPU)
        with fast_cpu.disabled():
            y_ref = G(z, c)                         # reference paths
"""

import contextlib
import numbers
import os
import weakref

import numpy as np
import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------

_enabled = os.environ.get("LVG_FAST_CPU", "1").strip().lower() not in ("0", "false", "no", "off")
_plugin = None  # Compiled kernel module, once loaded.
_plugin_checked = False  # True once _init() has tried to load it.

# Compiler flags per CPU capability that torch reports; the capability is part of the plugin name, so a cached build
# is never used on a CPU lacking its instruction set.
_ARCH_FLAGS = {
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma", "-mprefer-vector-width=512"],
    "AVX2": ["-mavx2", "-mfma"],
}


def is_enabled() -> bool:
    """Whether the fast CPU paths are switched on (they still apply only to CPU inference)."""
    return _enabled


def set_enabled(enabled: bool) -> None:
    """Switch the fast CPU paths on or off for this process (the environment variable LVG_FAST_CPU=0 starts off)."""
    global _enabled
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
    _enabled = enabled


@contextlib.contextmanager
def disabled():
    """Context manager running its body on the reference paths.

    Example: `with fast_cpu.disabled(): y_ref = G(z, c)`.
    """
    global _enabled
    previous = _enabled
    _enabled = False
    try:
        yield
    finally:
        _enabled = previous


def _init() -> bool:
    """Build or load the C++ kernels on first use; return True when they are available."""
    global _plugin, _plugin_checked
    if not _plugin_checked:
        _plugin_checked = True
        from torch_utils import custom_ops

        capability = str(torch.backends.cpu.get_cpu_capability()).upper()
        flags = ["-O3", "-ffp-contract=fast"] + _ARCH_FLAGS.get(capability, [])
        _plugin = custom_ops.try_get_plugin(
            module_name=f"fast_cpu_plugin_{capability.lower()}",
            sources=["fast_cpu.cpp"],
            headers=["fast_cpu.h"],
            source_dir=os.path.dirname(os.path.abspath(__file__)),
            extra_cflags=flags,
        )
    return _plugin is not None


def applies(*tensors) -> bool:
    """True when the fast paths are on and every given tensor (None is skipped) is a CPU float32/bfloat16 tensor for
    which no gradient is being recorded."""
    if not _enabled:
        return False
    grad = torch.is_grad_enabled()
    for t in tensors:
        if t is None:
            continue
        if t.device.type != "cpu" or t.dtype not in (torch.float32, torch.bfloat16):
            return False
        if grad and t.requires_grad:
            return False
    return True


# ----------------------------------------------------------------------------
# Resampling and activation kernels. Each returns None when it does not handle the arguments, and the caller then uses
# its reference path. Arguments are already validated by the public op.


def _axis_taps(f: torch.Tensor, gain: float, flip_filter: bool) -> torch.Tensor:
    """Correlation weights of a 1-D filter scaled as the reference scales it (`f * gain ** (1/2)` per axis)."""
    f = f.to(torch.float32) * (gain ** (f.ndim / 2))
    return f if flip_filter else f.flip(0)


def _pair(value):
    """`(x, y)` from an int or a pair of ints >= 1; None for anything else (the reference path then raises)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = [value, value]
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return None
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in value):
        return None
    return int(value[0]), int(value[1])


def _padding4(value):
    """`(x0, x1, y0, y1)` from an int, `[x, y]` or a 4-list of ints; None for anything else."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = [value, value]
    if not isinstance(value, (list, tuple)) or len(value) not in (2, 4):
        return None
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
        return None
    if len(value) == 2:
        value = [value[0], value[0], value[1], value[1]]
    return tuple(int(v) for v in value)


def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    """Fast `upfirdn2d.upfirdn2d` (same arguments) for separable filters: 1-D, `[K, 1]`, `[1, K]` or None, with up or
    down (not both) per axis. Returns None when it does not apply, and the caller then runs the reference path."""
    ups, downs, padding = _pair(up), _pair(down), _padding4(padding)
    if ups is None or downs is None or padding is None or not applies(x, f) or not _init():
        return None
    (upx, upy), (downx, downy) = ups, downs
    if (upx > 1 and downx > 1) or (upy > 1 and downy > 1):
        return None
    px0, px1, py0, py1 = padding
    if f is None:
        gx = torch.tensor([float(gain)])
        gy = torch.ones([1])
    elif f.ndim == 1:
        gx = gy = _axis_taps(f, gain, flip_filter)
    elif f.ndim == 2 and (f.shape[1] == 1 or f.shape[0] == 1):
        # A single column (or row): one axis filters, the other passes through. The 2-D gain is `gain` in total.
        g = (f.to(torch.float32) * gain).reshape(-1)
        g = g if flip_filter else g.flip(0)
        if f.shape[1] == 1:
            gx, gy = torch.ones([1]), g
        else:
            gx, gy = g, torch.ones([1])
    else:
        return None
    N, C, H, W = x.shape
    if W * upx + px0 + px1 < gx.numel() or H * upy + py0 + py1 < gy.numel():
        return None  # The reference raises the size error.
    dtype = x.dtype
    with torch.profiler.record_function("fast_cpu::upfirdn2d"):
        y = _plugin.upfirdn2d_sep(x.to(torch.float32), gx, gy, upx, upy, downx, downy, px0, px1, py0, py1)
    return y.to(dtype)


def filtered_lrelu(
    x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=np.sqrt(2), slope=0.2, clamp=None, flip_filter=False,
    scale=None,
):  # fmt: skip
    """Fast `filtered_lrelu.filtered_lrelu` (same arguments) for 1-D (separable) or absent filters. Returns None when
    it does not apply, and the caller then runs the reference path.

    `scale` (optional, `[N, C]`) multiplies each input plane before the bias: it lets a caller fold a per-sample
    output scale of the preceding convolution (demodulation) into this pass.
    """
    padding = _padding4(padding)
    if padding is None or not isinstance(up, numbers.Integral) or not isinstance(down, numbers.Integral):
        return None
    if up < 1 or down < 1 or not applies(x, fu, fd, b) or not _init():
        return None
    if (fu is not None and fu.ndim != 1) or (fd is not None and fd.ndim != 1):
        return None
    up, down = int(up), int(down)
    px0, px1, py0, py1 = padding
    gu = _axis_taps(fu, up**2, flip_filter) if fu is not None else torch.full([1], float(up))
    gd = _axis_taps(fd, 1, flip_filter) if fd is not None else torch.ones([1])
    N, C, H, W = x.shape
    tmp_w = W * up + px0 + px1 - gu.numel() + 1
    tmp_h = H * up + py0 + py1 - gu.numel() + 1
    if min(tmp_w, tmp_h) < gd.numel():
        return None  # The reference raises the size error.
    b = b.to(torch.float32) if b is not None else torch.empty([0])
    scale = scale.to(torch.float32).reshape(N * C) if scale is not None else torch.empty([0])
    dtype = x.dtype
    with torch.profiler.record_function("fast_cpu::filtered_lrelu"):
        y = _plugin.filtered_lrelu(
            x.to(torch.float32), gu, gd, b, scale, up, down, px0, px1, py0, py1,
            float(gain), float(slope), -1.0 if clamp is None else float(clamp),
        )  # fmt: skip
    return y.to(dtype)


def bias_act(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None):
    """Fast `bias_act.bias_act` (same arguments) for the "linear" and "lrelu" activations. Returns None when it does
    not apply, and the caller then runs the reference path."""
    if act not in ("linear", "lrelu") or x.ndim == 0 or not applies(x, b) or not _init():
        return None
    if b is not None and b.dtype != torch.float32 and b.dtype != x.dtype:
        return None
    is_lrelu = act == "lrelu"
    alpha = float(alpha if alpha is not None else (0.2 if is_lrelu else 0))
    gain = float(gain if gain is not None else (np.sqrt(2) if is_lrelu else 1))
    b = b if b is not None else torch.empty([0])
    with torch.profiler.record_function("fast_cpu::bias_act"):
        return _plugin.bias_act(x, b, int(dim) % x.ndim, is_lrelu, alpha, gain, -1.0 if clamp is None else float(clamp))


# ----------------------------------------------------------------------------
# Modulated convolutions.

_conv_dtype = torch.float32  # Storage type of the modulated convolutions' operands (set_conv_dtype).
_CHUNK_BYTES = 64 * 2**20  # Input bytes per convolution call of modulated_conv2d (at least one sample).
_weight_cache = dict()  # id(weight) -> (weakref to weight, key, prepared tensors), for inference.


def get_conv_dtype() -> torch.dtype:
    """Dtype in which the fast modulated convolutions multiply (float32 unless set_conv_dtype changed it)."""
    return _conv_dtype


def set_conv_dtype(dtype: torch.dtype) -> None:
    """Run the fast modulated convolutions with bfloat16 (or float32) operands; activations stay float32.

    bfloat16 halves the cost of the convolutions on CPUs with native bfloat16 dot products (avx512_bf16, amx_bf16);
    see `bf16_support()`. Weights and styles are prepared in float32 and rounded once; every convolution accumulates
    in float32 and returns float32 activations.
    """
    global _conv_dtype
    if dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"dtype must be torch.float32 or torch.bfloat16, got {dtype}")
    _conv_dtype = dtype


@contextlib.contextmanager
def conv_dtype(dtype: torch.dtype):
    """Context manager for `set_conv_dtype`.

    Example: `with fast_cpu.conv_dtype(torch.bfloat16): video = G(...)`.
    """
    previous = _conv_dtype
    set_conv_dtype(dtype)
    try:
        yield
    finally:
        set_conv_dtype(previous)


def cpu_flags() -> set:
    """The instruction-set flags of this CPU as /proc/cpuinfo lists them (empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def bf16_support() -> tuple:
    """`(ok, reason)`: whether this CPU computes bfloat16 convolutions natively (faster than float32).

    Example: `ok, why = fast_cpu.bf16_support(); if not ok: raise SystemExit(why)`.
    """
    flags = cpu_flags()
    native = sorted(flags & {"avx512_bf16", "amx_bf16"})
    if native:
        return True, f"native bfloat16: {', '.join(native)}"
    capability = str(torch.backends.cpu.get_cpu_capability())
    return False, (
        f"this CPU has no native bfloat16 arithmetic (neither avx512_bf16 nor amx_bf16 in /proc/cpuinfo; torch "
        f"capability {capability}), so bfloat16 would be slower than float32; use float32"
    )


def require_bf16(device: torch.device) -> None:
    """Raise ValueError (saying why) unless bfloat16 convolutions can speed up inference on `device`.

    Example, in a script: `fast_cpu.require_bf16(device); fast_cpu.set_conv_dtype(torch.bfloat16)`.
    """
    if torch.device(device).type != "cpu":
        raise ValueError(f"bfloat16 convolutions are a CPU inference mode, got device {str(device)!r}")
    if not _enabled:
        raise ValueError("bfloat16 convolutions need the fast CPU paths, which LVG_FAST_CPU=0 switched off")
    ok, reason = bf16_support()
    if not ok:
        raise ValueError(reason)


def _cached(weight: torch.Tensor, tag: str, make):
    """Inference-time cache of tensors derived from a weight, refreshed when the weight changes in place.

    The key includes the weight's version counter (bumped by in-place updates such as optimizer steps or
    load_state_dict), its data pointer, dtype and the conv dtype.
    """
    key = (tag, weight._version, weight.data_ptr(), weight.dtype, _conv_dtype)
    entry = _weight_cache.get(id(weight))
    if entry is None or entry[0]() is not weight or entry[1] != key:
        ident = id(weight)
        # The entry goes when the weight is garbage collected (ids are reused afterwards).
        ref = weakref.ref(weight, lambda _: _weight_cache.pop(ident, None))
        entry = (ref, key, make())
        _weight_cache[ident] = entry
    return entry[2]


def _mul_into(x: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`(x * scale).to(dtype)` in one pass."""
    out = torch.empty(x.shape, dtype=dtype)
    return torch.mul(x, scale, out=out)


def modulated_conv2d(
    x: torch.Tensor,  # Input activations [N, I, H, W].
    weight: torch.Tensor,  # Weights [O, I, k, k].
    styles: torch.Tensor,  # Styles [N, I].
    demodulate: bool = True,  # Normalize each output channel's weights to unit norm.
    padding: int = 0,  # Zero padding on every side.
    input_gain: torch.Tensor = None,  # Scalar (or [I] / [N, I]) gain of the input channels.
) -> torch.Tensor:
    """generator_sres.modulated_conv2d (StyleGAN3 form) as one shared-weight convolution of the whole batch.

    Equal to the grouped per-sample form up to rounding: `conv(x, w * s[n] * d[n] * g) = d[n] * conv(x * s[n] * g, w)`
    because the styles and the input gain scale input channels and the demodulation scales output channels. Returns
    `[N, O, H', W']` in the dtype of `x`.
    """
    N, I = styles.shape
    out_dtype = x.dtype
    cdtype = _conv_dtype if x.dtype == torch.float32 else x.dtype

    # Weight pre-normalization and squared norms depend on the weight only: prepared once per weight version.
    def prepare():
        wf = weight.detach().to(torch.float32)
        wn = wf * wf.square().mean(dim=[1, 2, 3], keepdim=True).rsqrt()
        return wn.to(cdtype), wn.square().sum(dim=[2, 3]).t().contiguous()  # [O, I, k, k], [I, O]

    w_conv, w_sq = (
        _cached(weight, f"modconv2d_demod_{demodulate}", prepare) if demodulate else (weight.to(cdtype), None)
    )

    # Styles: pre-normalized over the whole batch as in the reference; demodulation coefficients as a matrix product.
    s = styles.to(torch.float32)
    dcoefs = None
    if demodulate:
        s = s * s.square().mean().rsqrt()
        dcoefs = (s.square() @ w_sq + 1e-8).rsqrt()  # [N, O]: rsqrt(sum_{i,a,b} (w[o,i,a,b] s[n,i])^2 + 1e-8)

    # Modulate the activations, convolve with the shared weight, demodulate the outputs: in chunks of samples, so that
    # the temporaries (modulated input, convolution output, the convolution's own layout copies) stay small.
    in_scale = s if input_gain is None else s * input_gain.to(torch.float32).expand(N, I)  # [N, I]
    in_scale = in_scale.to(x.dtype).reshape(N, I, 1, 1)
    O, k = weight.shape[0], weight.shape[-1]
    out_h, out_w = x.shape[2] + 2 * padding - k + 1, x.shape[3] + 2 * padding - k + 1
    y = torch.empty([N, O, out_h, out_w], dtype=out_dtype)
    chunk = max(1, _CHUNK_BYTES // (x[0].numel() * x.element_size()))
    for n0 in range(0, N, chunk):
        n1 = min(N, n0 + chunk)
        xc = _mul_into(x[n0:n1], in_scale[n0:n1], cdtype)  # [n, I, H, W]
        yc = F.conv2d(xc, w_conv, padding=padding)  # [n, O, H', W']
        if dcoefs is not None:
            torch.mul(yc, dcoefs[n0:n1].reshape(n1 - n0, O, 1, 1), out=y[n0:n1])
        else:
            y[n0:n1].copy_(yc)
    return y


def temporal_modulated_conv3d(x, weight, styles, padding, input_gain, demodulate):
    """generator_lres.temporal_modulated_conv3d with the input gain folded into the per-frame styles (one pass over x
    instead of two) and the weight normalization prepared once per weight version.

    Arguments as the reference `temporal_modulated_conv3d`; returns `[N, Co, T, H, W]` in the dtype of `x`.
    """
    N, Ci, T, H, W = x.shape
    Co, _, kt, kh, kw = weight.shape
    out_dtype = x.dtype
    cdtype = _conv_dtype if x.dtype == torch.float32 else x.dtype

    def prepare():
        wf = weight.detach()
        if demodulate:
            wf = wf / wf.abs().amax(dim=[1, 2, 3, 4], keepdim=True)
        wf = wf / np.sqrt(Ci * kt * kh * kw)
        wsq = wf.float().square().sum(dim=[2, 3, 4]) if demodulate else None  # [Co, Ci]
        return wf.to(cdtype), wsq

    w_conv, wsq = _cached(weight, f"modconv3d_demod_{demodulate}", prepare)

    dcoefs = None
    if demodulate:
        styles = styles / styles.abs().amax(dim=[1, 2], keepdim=True)
        dcoefs = (torch.einsum("oi,nit->not", wsq, styles.float().square()) + 1e-8).rsqrt()  # [N, Co, T]

    in_scale = styles.float() if input_gain is None else styles.float() * input_gain.float()  # [N, Ci, T]
    x = _mul_into(x, in_scale.to(x.dtype)[..., None, None], cdtype)  # [N, Ci, T, H, W]
    x = F.conv3d(x, w_conv, padding=tuple(padding))  # [N, Co, T, H, W]
    if dcoefs is not None:
        d = dcoefs[..., None, None]  # float32
        x = x.mul_(d.to(x.dtype)) if x.dtype == out_dtype else _mul_into(x, d, out_dtype)
    elif x.dtype != out_dtype:
        x = x.to(out_dtype)
    return x


# ----------------------------------------------------------------------------
