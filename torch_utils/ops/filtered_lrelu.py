"""Alias-free leaky ReLU: bias, FIR up-sampling, leaky ReLU, clamp and FIR down-sampling in one op, the nonlinearity
of StyleGAN3 synthesis layers used by LongVideoGAN's super-resolution generator (paper Sec. 3.2).

Stages, per channel:

1. Add the bias `b` (no activation).
2. `upfirdn2d(x, fu, up=up, padding=padding, gain=up**2)`: zero-insert, pad, filter with the up-sampling filter.
3. Leaky ReLU with negative slope `slope`, times `gain`, then clip to `[-clamp, clamp]`.
4. `upfirdn2d(x, fd, down=down)`: filter with the down-sampling filter (no padding) and decimate.

Output size per axis: `(in * up + p0 + p1 - (fu_taps - 1) - (fd_taps - 1) + (down - 1)) // down`.

Example, a 3x3-conv layer's nonlinearity at 2x the sampling rate (filters from a Kaiser design):

    y = filtered_lrelu(x, fu=up_filter, fd=down_filter, b=bias, up=2, down=2, padding=[px0, px1, py0, py1],
                       clamp=256)

`impl="cuda"` uses the compiled kernel for CUDA tensors when it is available and the pure-PyTorch reference path
otherwise; `impl="ref"` always uses the reference path, which supports gradients of any order.
"""

import numbers
import os

import numpy as np
import torch

from . import bias_act, fast_cpu, kernel_check, upfirdn2d

# ----------------------------------------------------------------------------

_plugin = None  # Compiled kernel module, once loaded.
_plugin_checked = False  # True once _init() has looked for the kernel (it looks only once per process).
_kernel_device_types = ("cuda",)  # Devices whose tensors go to the kernel (tests add "cpu" with a host-loop plugin).
_plugin_sources = ["filtered_lrelu.cpp", "filtered_lrelu.cu"]
_plugin_headers = ["upfirdn2d.h"]  # The FIR pass kernel, shared with the upfirdn2d plugin.
_plugin_build_kwargs = dict(
    extra_cflags=["-DLVG_WITH_CUDA"],  # filtered_lrelu.cpp then calls the CUDA launcher of filtered_lrelu.cu.
    extra_cuda_cflags=["--use_fast_math", "--allow-unsupported-compiler"],
)


def _init() -> bool:
    """Load the compiled filtered_lrelu kernel on first use; return True when it is available.

    Returns False (so callers use the reference path) when the kernel sources are not in this directory or the build
    fails; a failed build warns once.
    """
    global _plugin, _plugin_checked
    if not _plugin_checked:
        _plugin_checked = True
        # Imported here, not at module import, so that CPU-only use never touches the extension builder. Missing
        # sources give None quietly; a failed build warns once and gives None, so the reference path is used.
        from torch_utils import custom_ops

        _plugin = custom_ops.try_get_plugin_if_present(
            module_name="filtered_lrelu_plugin",
            sources=_plugin_sources,
            headers=_plugin_headers,
            source_dir=os.path.dirname(os.path.abspath(__file__)),
            **_plugin_build_kwargs,
        )
    return _plugin is not None


# ----------------------------------------------------------------------------


def _check_args(x, fu, fd, b, up, down, padding, gain, slope, clamp, impl) -> tuple:
    """Validate the arguments of filtered_lrelu; return `(up, down, (px0, px1, py0, py1))`."""
    upfirdn2d._check_image(x)
    upfirdn2d._check_filter(fu, "fu")
    upfirdn2d._check_filter(fd, "fd")
    if b is not None:
        if not isinstance(b, torch.Tensor):
            raise TypeError(f"b must be a torch.Tensor or None, got {type(b).__name__}")
        if b.ndim != 1 or b.shape[0] != x.shape[1]:
            raise ValueError(f"b must have shape [{x.shape[1]}] (the channels of x), got {list(b.shape)}")
    for name, value in (("up", up), ("down", down)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    padding = upfirdn2d._parse_padding(padding)
    if not np.isfinite(float(gain)):
        raise ValueError(f"gain must be a finite number, got {gain!r}")
    if not np.isfinite(float(slope)):
        raise ValueError(f"slope must be a finite number, got {slope!r}")
    if clamp is not None and not clamp >= 0:
        raise ValueError(f"clamp must be None or >= 0, got {clamp!r}")
    if impl not in ("cuda", "ref"):
        raise ValueError(f"impl must be 'cuda' or 'ref', got {impl!r}")
    return int(up), int(down), padding


def _output_size(in_size: int, up: int, down: int, p0: int, p1: int, fu_taps: int, fd_taps: int) -> int:
    """Output samples along one axis: the up-sampled, padded length less both filters' spans, then decimated."""
    return (in_size * up + p0 + p1 - (fu_taps - 1) - (fd_taps - 1) + (down - 1)) // down


def filtered_lrelu(
    x: torch.Tensor,
    fu: torch.Tensor = None,
    fd: torch.Tensor = None,
    b: torch.Tensor = None,
    up: int = 1,
    down: int = 1,
    padding=0,
    gain: float = np.sqrt(2),
    slope: float = 0.2,
    clamp: float = None,
    flip_filter: bool = False,
    impl: str = "cuda",
) -> torch.Tensor:
    """Bias, up-sample, leaky ReLU, clamp, down-sample (module docstring).

    Args:
        x: images `[N, C, H, W]`.
        fu: up-sampling filter, 1-D (separable) or 2-D `[fh, fw]`; None for a single tap of 1.
        fd: down-sampling filter, 1-D or 2-D; None for a single tap of 1.
        b: bias `[C]`; None for no bias.
        up: up-sampling factor (int).
        down: down-sampling factor (int).
        padding: zeros added before the up-sampling filter, in up-sampled pixels: int, `[x, y]` or
            `[x0, x1, y0, y1]`; negative values crop.
        gain: scale after the leaky ReLU.
        slope: negative slope of the leaky ReLU (1 makes the op linear).
        clamp: clip to `[-clamp, clamp]` after the gain; None for no clipping.
        flip_filter: False for true convolution with both filters, True for correlation.
        impl: "cuda" (compiled kernel for CUDA tensors when available) or "ref" (reference path).

    Returns `[N, C, out_h, out_w]` with the sizes of the module docstring.
    """
    _check_args(x, fu, fd, b, up, down, padding, gain, slope, clamp, impl)
    if (
        impl == "cuda"
        and x.device.type in _kernel_device_types
        and _cuda_supported(x, fu, fd, b, up, down, padding)
        and _init()
        and _kernel_check.trusted(x)
    ):
        return _filtered_lrelu_cuda(
            up=up, down=down, padding=padding, gain=gain, slope=slope, clamp=clamp, flip_filter=flip_filter
        ).apply(x, fu, fd, b, _needs_codes(x, b))
    if impl == "cuda" and x.device.type == "cpu":
        # CPU inference: fused polyphase kernel (torch_utils/ops/fast_cpu.py); None = not handled.
        y = fast_cpu.filtered_lrelu(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter)
        if y is not None:
            return y
        # CPU training: the kernel's autograd structure with polyphase passes; it keeps one uint8 code per
        # intermediate sample for the backward pass instead of the reference path's float intermediates.
        if fast_cpu.is_enabled() and _cuda_supported(x, fu, fd, b, up, down, padding):
            return _filtered_lrelu_cpu(
                up=up, down=down, padding=padding, gain=gain, slope=slope, clamp=clamp, flip_filter=flip_filter
            ).apply(x, fu, fd, b, _needs_codes(x, b))
    return _filtered_lrelu_ref(
        x, fu=fu, fd=fd, b=b, up=up, down=down, padding=padding, gain=gain, slope=slope, clamp=clamp,
        flip_filter=flip_filter,
    )  # fmt: skip


def _filtered_lrelu_ref(
    x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=np.sqrt(2), slope=0.2, clamp=None, flip_filter=False
) -> torch.Tensor:
    """Reference implementation as the composition of bias_act and upfirdn2d reference paths (any-order gradients)."""
    up, down, (px0, px1, py0, py1) = _check_args(x, fu, fd, b, up, down, padding, gain, slope, clamp, "ref")
    fu_w, fu_h = upfirdn2d._get_filter_size(fu)
    fd_w, fd_h = upfirdn2d._get_filter_size(fd)
    N, C, H, W = x.shape
    out_w = _output_size(W, up, down, px0, px1, fu_w, fd_w)
    out_h = _output_size(H, up, down, py0, py1, fu_h, fd_h)

    # Bias.
    if b is not None:
        x = bias_act._bias_act_ref(x, b, dim=1, act="linear")

    # Up-sample; the gain up**2 makes up for the inserted zeros.
    x = upfirdn2d._upfirdn2d_ref(
        x, fu, up=up, padding=[px0, px1, py0, py1], flip_filter=flip_filter, gain=up**2
    )  # [N, C, H*up + py0 + py1 - fu_h + 1, ...]

    # Leaky ReLU, gain, clamp.
    x = bias_act._bias_act_ref(x, act="lrelu", alpha=slope, gain=gain, clamp=clamp)

    # Down-sample.
    x = upfirdn2d._upfirdn2d_ref(x, fd, down=down, flip_filter=flip_filter)  # [N, C, out_h, out_w]

    assert x.shape == (N, C, out_h, out_w), (list(x.shape), out_h, out_w)
    return x


def _self_check(device, dtype, errors=None):
    """Compare the kernel with the reference path on a small input of `device` and `dtype` (kernel_check.py): a
    synthesis-layer-like call (bias, 1-D filters, up 2, down 2, asymmetric padding, a clamp some values reach);
    forward and the gradients of x and b."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn([1, 3, 6, 7], generator=g).to(device=device, dtype=dtype).requires_grad_()
    b = (torch.randn([3], generator=g) * 0.2).to(device=device, dtype=dtype).requires_grad_()
    fu = (torch.rand([6], generator=g) + 0.1).to(device)
    fd = (torch.rand([4], generator=g) + 0.1).to(device)
    kwargs = dict(up=2, down=2, padding=[4, 3, 3, 4], gain=np.sqrt(2), slope=0.2, clamp=1.0)
    return kernel_check.compare(
        lambda x, b: _filtered_lrelu_cuda(**kwargs).apply(x, fu, fd, b, True),
        lambda x, b: _filtered_lrelu_ref(x, fu.double(), fd.double(), b, **kwargs),
        [x, b],
        dtype,
        errors=errors,
    )


_kernel_check = kernel_check.KernelCheck("filtered_lrelu", _self_check)


def _needs_codes(x, b) -> bool:
    """Whether this call can be differentiated: only then does the kernel keep its per-sample codes."""
    return torch.is_grad_enabled() and (x.requires_grad or (b is not None and b.requires_grad))


_pass_modes = dict(plain=0, lrelu=1, mask=2)  # The kernel's Mode numbers (upfirdn2d.h).
_filtered_lrelu_function_cache = dict()  # (backend, up, down, padding, gain, slope, clamp, flip) -> autograd Function
_cpu_chunk_samples = 2**25  # CPU backend: intermediate samples per channel chunk (128 MB of float32 at a time).


def _cuda_supported(x, fu, fd, b, up, down, padding) -> bool:
    """True when the kernel computes what the reference path would; otherwise the reference path runs (and raises
    for bad sizes). Filters that need a gradient, a bias of another dtype than x, unusual dtypes and oversized
    tensors stay on the reference path.
    """
    if x.dtype not in upfirdn2d._cuda_dtypes or any(size >= upfirdn2d._cuda_max_size for size in x.shape):
        return False
    if not (upfirdn2d._cuda_filter_supported(x, fu) and upfirdn2d._cuda_filter_supported(x, fd)):
        return False
    if b is not None and (b.dtype != x.dtype or b.device != x.device):
        return False
    px0, px1, py0, py1 = upfirdn2d._parse_padding(padding)
    fu_w, fu_h = upfirdn2d._get_filter_size(fu)
    fd_w, fd_h = upfirdn2d._get_filter_size(fd)
    mid_w = x.shape[3] * up + px0 + px1 - fu_w + 1
    mid_h = x.shape[2] * up + py0 + py1 - fu_h + 1
    return fd_w <= mid_w < upfirdn2d._cuda_max_size and fd_h <= mid_h < upfirdn2d._cuda_max_size


def _filtered_lrelu_cuda(up=1, down=1, padding=0, gain=np.sqrt(2), slope=0.2, clamp=None, flip_filter=False):
    """The autograd Function that runs filtered_lrelu with the compiled CUDA kernel (`_filtered_lrelu_function`)."""
    return _filtered_lrelu_function("cuda", up, down, padding, gain, slope, clamp, flip_filter)


def _filtered_lrelu_cpu(up=1, down=1, padding=0, gain=np.sqrt(2), slope=0.2, clamp=None, flip_filter=False):
    """The autograd Function that runs filtered_lrelu on the CPU with gradients (`_filtered_lrelu_function`): the
    kernel's structure, each pass an `upfirdn2d` call (polyphase on the CPU, torch_utils/ops/fast_cpu.py) plus the
    pass's bias or activation in torch ops. It keeps a uint8 code per intermediate sample for the backward pass where
    the reference path keeps several float tensors of that size (with `up` = 4, each 16x the input), and it works
    through the channels in chunks so that the float intermediates it needs at a time stay small."""
    return _filtered_lrelu_function("cpu", up, down, padding, gain, slope, clamp, flip_filter)


def _filtered_lrelu_function(backend, up, down, padding, gain, slope, clamp, flip_filter):
    """Return the autograd Function (cached per backend and configuration) that runs filtered_lrelu as kernel passes:
    `backend` "cuda" with the compiled kernel, "cpu" with `_torch_pass`.

    Forward: one kernel pass (two for a 1-D filter) of the up-sampling filter that adds the bias to its input and
    applies leaky ReLU, gain and clamp to its output, storing a code per intermediate sample (positive, negative or
    clamped: 2 bits each in the kernel, one uint8 each on the CPU backend, at the up-sampled resolution; only when the
    call can be differentiated, `keep_codes`);
    then the down-sampling filter's pass(es). Every pass computes in float32 (float64 for float64 inputs) and writes
    float32 intermediates, and only the result is rounded to the input dtype: the original's fused kernel's
    precision for float16 (a NaN in the clamp stage becomes -clamp there, as in the original).
    Backward: the adjoint passes in reverse order (upfirdn2d with up and down swapped and the filters reversed); the
    adjoint of the down-sampling stage multiplies its output by the derivative the codes record. Given the codes, the
    backward pass is linear in the output gradient and the op is piecewise linear in x (zero second derivative, as in
    the reference path), so its derivative is the forward structure with the codes' factors in place of the
    activation: gradients of any order use the passes. The filters get no gradient (filters that need one take the
    reference path). Only the codes and filters are saved for backward, never the float intermediates.
    """
    px0, px1, py0, py1 = upfirdn2d._parse_padding(padding)
    up, down = int(up), int(down)
    gain, slope = float(gain), float(slope)
    clamp = float(clamp) if clamp is not None else -1.0
    key = (backend, up, down, px0, px1, py0, py1, gain, slope, clamp, bool(flip_filter))
    if key in _filtered_lrelu_function_cache:
        return _filtered_lrelu_function_cache[key]
    if backend not in ("cuda", "cpu"):
        raise ValueError(f"backend must be 'cuda' or 'cpu', got {backend!r}")

    at_limit = bias_act._clamp_grad_at_limit()

    def make_pass_fn(b=None, codes=None, mode="plain"):
        """A pass function for upfirdn2d._kernel_passes: the bias goes on the first pass, the stage on the last."""

        def pass_fn(x, f, upx, upy, downx, downy, padx0, pady0, out_w, out_h, flip, fgain, first, last):
            run = _plugin.filtered_pass if backend == "cuda" else _torch_pass
            return run(
                x, f, b if first else None, codes if last else None, _pass_modes[mode] if last else 0,
                upx, upy, downx, downy, padx0, pady0, out_w, out_h, flip, fgain, slope, gain, clamp, at_limit, True,
            )  # fmt: skip

        return pass_fn

    def sizes(H, W, fu, fd):
        """(mid_h, mid_w, out_h, out_w): the up-sampled intermediate and the output."""
        fu_w, fu_h = upfirdn2d._get_filter_size(fu)
        fd_w, fd_h = upfirdn2d._get_filter_size(fd)
        mid_w = W * up + px0 + px1 - fu_w + 1
        mid_h = H * up + py0 + py1 - fu_h + 1
        return mid_h, mid_w, (mid_h - fd_h) // down + 1, (mid_w - fd_w) // down + 1

    def up_stage(x, fu, mid_h, mid_w, pass_fn):  # [N, C, H, W] -> [N, C, mid_h, mid_w]
        return upfirdn2d._kernel_passes(
            pass_fn, x, fu, (up, up), (1, 1), (px0, py0), (mid_w, mid_h), flip_filter, up**2
        )  # fmt: skip

    def down_stage(t, fd, out_h, out_w):  # [N, C, mid_h, mid_w] -> [N, C, out_h, out_w]
        if fd is None and down == 1:
            return t  # The identity.
        return upfirdn2d._kernel_passes(
            make_pass_fn(), t, fd, (1, 1), (down, down), (0, 0), (out_w, out_h), flip_filter, 1
        )  # fmt: skip

    def down_adjoint(dy, fd, codes, mid_h, mid_w):  # [N, C, out_h, out_w] -> [N, C, mid_h, mid_w], times the codes
        fd_w, fd_h = upfirdn2d._get_filter_size(fd)
        pass_fn = make_pass_fn(codes=codes, mode="mask")
        return upfirdn2d._kernel_passes(
            pass_fn, dy, fd, (down, down), (1, 1), (fd_w - 1, fd_h - 1), (mid_w, mid_h), not flip_filter, 1
        )  # fmt: skip

    def up_adjoint(dt, fu, H, W):  # [N, C, mid_h, mid_w] -> [N, C, H, W]
        if fu is None and up == 1 and px0 == px1 == py0 == py1 == 0:
            return dt  # The identity.
        fu_w, fu_h = upfirdn2d._get_filter_size(fu)
        return upfirdn2d._kernel_passes(
            make_pass_fn(), dt, fu, (1, 1), (up, up), (fu_w - 1 - px0, fu_h - 1 - py0), (W, H), not flip_filter, up**2
        )  # fmt: skip

    def new_codes(N, C, mid_h, mid_w, device):
        """The kernel packs 2 bits per intermediate sample, 16 to an int32 word (zeros before the forward pass); the
        CPU backend keeps one uint8 per sample, [N, C, mid_h, mid_w], which it slices by channel chunks."""
        if backend == "cuda":
            return torch.zeros([(N * C * mid_h * mid_w + 15) // 16], dtype=torch.int32, device=device)
        return torch.empty([N, C, mid_h, mid_w], dtype=torch.uint8, device=device)

    def channel_chunks(N, C, mid_h, mid_w):
        """Channel slices processed one after another: all at once on CUDA, bounded intermediates on the CPU."""
        if backend == "cuda":
            return [slice(None)]
        step = max(1, _cpu_chunk_samples // max(N * mid_h * mid_w, 1))
        return [slice(c, min(c + step, C)) for c in range(0, C, step)]

    def by_chunks(fn, x, codes, mid_h, mid_w):
        """`fn(x_chunk, codes_chunk, channels)` over the channel chunks (`codes` may be None), concatenated along the
        channels and rounded to x's dtype (the passes return float32 for float16/bfloat16)."""
        N, C = x.shape[:2]
        chunks = channel_chunks(N, C, mid_h, mid_w)
        if len(chunks) == 1:
            return fn(x, codes, chunks[0]).to(x.dtype)
        return torch.cat([fn(x[:, cs], None if codes is None else codes[:, cs], cs).to(x.dtype) for cs in chunks], 1)

    class FilteredLRelu(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, fu, fd, b, keep_codes=True):
            N, C, H, W = x.shape
            mid_h, mid_w, out_h, out_w = sizes(H, W, fu, fd)
            codes = None
            if keep_codes:  # Not without gradients: the original keeps them only when they are needed.
                codes = new_codes(N, C, mid_h, mid_w, x.device)

            def chunk(x, codes, cs):
                pass_fn = make_pass_fn(b=None if b is None else b[cs], codes=codes, mode="lrelu")
                return down_stage(up_stage(x, fu, mid_h, mid_w, pass_fn), fd, out_h, out_w)

            y = by_chunks(chunk, x, codes, mid_h, mid_w)
            ctx.keep_codes = keep_codes
            ctx.save_for_backward(fu, fd, codes)
            ctx.x_shape = x.shape
            assert y.shape == (N, C, out_h, out_w), (list(y.shape), out_h, out_w)
            return y  # [N, C, out_h, out_w]

        @staticmethod
        def backward(ctx, dy):
            fu, fd, codes = ctx.saved_tensors
            if not ctx.keep_codes:
                raise RuntimeError("filtered_lrelu: called with keep_codes=False, so it cannot be differentiated")
            _, _, H, W = ctx.x_shape
            dx = FilteredLReluAdjoint.apply(dy, fu, fd, codes, H, W)  # [N, C, H, W]
            db = dx.sum([0, 2, 3]) if ctx.needs_input_grad[3] else None
            return (dx if ctx.needs_input_grad[0] else None), None, None, db, None

    class FilteredLReluAdjoint(torch.autograd.Function):
        """dy -> dx for the stored codes; a linear map of dy whose adjoint is FilteredLReluMasked."""

        @staticmethod
        def forward(ctx, dy, fu, fd, codes, H, W):
            mid_h, mid_w, _, _ = sizes(H, W, fu, fd)
            dx = by_chunks(
                lambda dy, codes, cs: up_adjoint(down_adjoint(dy, fd, codes, mid_h, mid_w), fu, H, W),
                dy, codes, mid_h, mid_w,
            )  # fmt: skip
            ctx.save_for_backward(fu, fd, codes)
            return dx

        @staticmethod
        def backward(ctx, ddx):
            fu, fd, codes = ctx.saved_tensors
            ddy = FilteredLReluMasked.apply(ddx, fu, fd, codes) if ctx.needs_input_grad[0] else None
            return ddy, None, None, None, None, None

    class FilteredLReluMasked(torch.autograd.Function):
        """x -> the op's linearisation at the stored codes: the forward passes with the codes' factors as activation."""

        @staticmethod
        def forward(ctx, x, fu, fd, codes):
            N, C, H, W = x.shape
            mid_h, mid_w, out_h, out_w = sizes(H, W, fu, fd)

            def chunk(x, codes, cs):
                return down_stage(
                    up_stage(x, fu, mid_h, mid_w, make_pass_fn(codes=codes, mode="mask")), fd, out_h, out_w
                )

            y = by_chunks(chunk, x, codes, mid_h, mid_w)
            ctx.save_for_backward(fu, fd, codes)
            ctx.x_shape = x.shape
            return y

        @staticmethod
        def backward(ctx, dy):
            fu, fd, codes = ctx.saved_tensors
            _, _, H, W = ctx.x_shape
            dx = FilteredLReluAdjoint.apply(dy, fu, fd, codes, H, W) if ctx.needs_input_grad[0] else None
            return dx, None, None, None

    _filtered_lrelu_function_cache[key] = FilteredLRelu
    return FilteredLRelu


def _torch_pass(x, f, b, codes, mode, upx, upy, downx, downy, padx0, pady0, out_w, out_h, flip, fgain, slope, gain,
                clamp, at_limit, fp32_inside=True):  # fmt: skip
    """One kernel pass (the compiled `filtered_pass`, same arguments and modes) from torch ops, for the CPU backend.

    The filtering is an `upfirdn2d` call (the polyphase CPU kernel where it applies; these passes run without
    gradient recording); `b` is added to the input first, and the epilogue of mode 1 (leaky ReLU, gain, clamp,
    writing `codes` unless None) or mode 2 (multiply by the factor that `codes` records) follows. `codes` may be a
    channel slice. With `fp32_inside` float16/bfloat16 inputs are computed and returned in float32, as the kernel does.
    """
    if fp32_inside and x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    if b is not None:
        x = x + b.to(x.dtype)[None, :, None, None]
    fw, fh = upfirdn2d._get_filter_size(f)
    px1 = (out_w - 1) * downx + fw - x.shape[3] * upx - padx0  # Trailing padding giving exactly out_w samples.
    py1 = (out_h - 1) * downy + fh - x.shape[2] * upy - pady0
    y = upfirdn2d.upfirdn2d(
        x, f, up=[upx, upy], down=[downx, downy], padding=[padx0, px1, pady0, py1], flip_filter=not flip, gain=fgain
    )  # The kernel correlates when `flip` is False, which upfirdn2d calls flip_filter=True.
    if mode == _pass_modes["lrelu"]:
        negative = y <= 0  # Code 1 (slope); leaky_relu's gradient takes the slope at exactly 0, as the kernel does.
        y = torch.where(negative, y * slope, y)
        if gain != 1:
            y = y * gain
        if codes is not None:
            codes.copy_(negative)
        if clamp >= 0:
            # A NaN counts as outside (code 2) and becomes -clamp, as in the kernel.
            outside = ~(y.abs() <= clamp) if at_limit else ~(y.abs() < clamp)
            y = y.clamp(-clamp, clamp).nan_to_num(nan=-clamp)  # After the clamp no infinities are left.
            if codes is not None:
                codes.masked_fill_(outside, 2)
    elif mode == _pass_modes["mask"]:
        factors = torch.tensor([gain, gain * slope, 0.0], dtype=torch.float64).to(y.dtype)  # Per code 0, 1, 2.
        y = y * torch.where(codes == 0, factors[0], torch.where(codes == 1, factors[1], factors[2]))
    return y


# ----------------------------------------------------------------------------
