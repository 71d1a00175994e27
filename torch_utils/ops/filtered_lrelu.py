"""Alias-free leaky ReLU: bias, FIR up-sampling, leaky ReLU, clamp and FIR down-sampling in one op, the nonlinearity
of StyleGAN3 synthesis layers used by LongVideoGAN's super-resolution generator (SPEC §8.4, §2.5).

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

from . import bias_act, fast_cpu, upfirdn2d

# ---------------------------------------------------------------------------------------------------------------------

_plugin = None  # Compiled kernel module, once loaded.
_plugin_checked = False  # True once _init() has looked for the kernel (it looks only once per process).
_plugin_sources = ["filtered_lrelu.cpp", "filtered_lrelu.cu"]
_plugin_headers = ["filtered_lrelu.h"]


def _init() -> bool:
    """Load the compiled filtered_lrelu kernel on first use; return True when it is available.

    Returns False (so callers use the reference path) when the kernel sources are not in this directory or the build
    fails; a failed build warns once.
    """
    global _plugin, _plugin_checked
    if not _plugin_checked:
        _plugin_checked = True
        source_dir = os.path.dirname(os.path.abspath(__file__))
        names = _plugin_sources + _plugin_headers
        if all(os.path.isfile(os.path.join(source_dir, name)) for name in names):
            # Imported here, not at module import, so that CPU-only use never touches the extension builder.
            from torch_utils import custom_ops

            # On a failed build this warns once and returns None, so the reference path is used.
            _plugin = custom_ops.try_get_plugin(
                module_name="filtered_lrelu_plugin",
                sources=_plugin_sources,
                headers=_plugin_headers,
                source_dir=source_dir,
                extra_cuda_cflags=["--use_fast_math", "--allow-unsupported-compiler"],
            )
    return _plugin is not None


# ---------------------------------------------------------------------------------------------------------------------


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
    """Output samples along one axis (SPEC §8.4)."""
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
    if impl == "cuda" and x.device.type == "cuda" and _init():
        return _filtered_lrelu_cuda(
            up=up, down=down, padding=padding, gain=gain, slope=slope, clamp=clamp, flip_filter=flip_filter
        ).apply(x, fu, fd, b)
    if impl == "cuda" and x.device.type == "cpu":
        # CPU inference: fused polyphase kernel (torch_utils/ops/fast_cpu.py); None = not handled.
        y = fast_cpu.filtered_lrelu(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter)
        if y is not None:
            return y
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


def _filtered_lrelu_cuda(up=1, down=1, padding=0, gain=np.sqrt(2), slope=0.2, clamp=None, flip_filter=False):
    """Autograd function around the compiled kernel; written by the CUDA-kernel issue together with its sources.

    `_init()` returns True only once those sources exist, so this is never reached before then.
    """
    raise NotImplementedError("filtered_lrelu: the CUDA kernel wrapper is not implemented yet; use impl='ref'")


# ---------------------------------------------------------------------------------------------------------------------
