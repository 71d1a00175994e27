"""FIR up-sampling, filtering and down-sampling of images ("upfirdn"), the resampling primitive of StyleGAN-family
networks and of LongVideoGAN's resamplers (generator_lres.py's Kaiser filters, the [1, 3, 3, 1] filters).

The operation, per channel and per axis (x = width, y = height):

1. Insert `up - 1` zeros after every input sample.
2. Pad with zeros by `(p0, p1)` up-sampled pixels (a negative amount crops).
3. Convolve with the FIR filter `f` over the valid region only (a true convolution, so the filter is
   flipped; `flip_filter=True` gives correlation instead).
4. Keep samples 0, down, 2*down, ...

Output size per axis: `(in * up + p0 + p1 - taps) // down + 1`.

Example, bilinear 2x up-sampling of a batch of images:

    f = setup_filter([1, 3, 3, 1])                  # normalised 4x4 outer product
    y = upsample2d(x, f, up=2)                      # [N, C, 2H, 2W]

Every function takes `impl`: "cuda" uses the compiled kernel for CUDA tensors when it is available and the
pure-PyTorch reference path otherwise; "ref" always uses the reference path. The reference path supports
gradients of any order.
"""

import numbers
import os

import numpy as np
import torch
import torch.nn.functional as F

from . import fast_cpu, kernel_check

# ----------------------------------------------------------------------------

_plugin = None  # Compiled kernel module, once loaded.
_plugin_checked = False  # True once _init() has looked for the kernel (it looks only once per process).
_kernel_device_types = ("cuda",)  # Devices whose tensors go to the kernel (tests add "cpu" with a host-loop plugin).
_plugin_sources = ["upfirdn2d.cpp", "upfirdn2d.cu"]
_plugin_headers = ["upfirdn2d.h"]
_plugin_build_kwargs = dict(
    extra_cflags=["-DLVG_WITH_CUDA"],  # upfirdn2d.cpp then calls the CUDA launcher of upfirdn2d.cu.
    extra_cuda_cflags=["--use_fast_math", "--allow-unsupported-compiler"],
)


def _init() -> bool:
    """Load the compiled upfirdn2d kernel on first use; return True when it is available.

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
            module_name="upfirdn2d_plugin",
            sources=_plugin_sources,
            headers=_plugin_headers,
            source_dir=os.path.dirname(os.path.abspath(__file__)),
            **_plugin_build_kwargs,
        )
    return _plugin is not None


# ----------------------------------------------------------------------------


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _parse_scaling(scaling, name: str = "scaling") -> tuple:
    """Return `(sx, sy)` from an int or an `[x, y]` pair; every factor must be an int >= 1.

    Example: `_parse_scaling(2) == (2, 2)`, `_parse_scaling([4, 1]) == (4, 1)`.
    """
    if _is_int(scaling):
        scaling = [scaling, scaling]
    if not isinstance(scaling, (list, tuple)) or len(scaling) != 2 or not all(_is_int(s) for s in scaling):
        raise ValueError(f"{name} must be an int or a list of two ints [x, y], got {scaling!r}")
    sx, sy = int(scaling[0]), int(scaling[1])
    if sx < 1 or sy < 1:
        raise ValueError(f"{name} factors must be >= 1, got {scaling!r}")
    return sx, sy


def _parse_padding(padding, name: str = "padding") -> tuple:
    """Return `(x0, x1, y0, y1)` from an int, an `[x, y]` pair or a 4-list; negative values crop.

    Example: `_parse_padding(1) == (1, 1, 1, 1)`, `_parse_padding([2, 0]) == (2, 2, 0, 0)`.
    """
    if _is_int(padding):
        padding = [padding, padding]
    if not isinstance(padding, (list, tuple)) or not all(_is_int(p) for p in padding):
        raise ValueError(f"{name} must be an int or a list of 2 or 4 ints, got {padding!r}")
    if len(padding) == 2:
        px, py = padding
        padding = [px, px, py, py]
    if len(padding) != 4:
        raise ValueError(f"{name} must be an int or a list of 2 ([x, y]) or 4 ([x0, x1, y0, y1]) ints, got {padding!r}")
    return tuple(int(p) for p in padding)


def _check_filter(f, name: str = "f") -> None:
    """Raise if `f` is neither None nor a non-empty floating-point tensor with 1 or 2 dimensions."""
    if f is None:
        return
    if not isinstance(f, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor or None (use setup_filter() to make one), got {type(f).__name__}"
        )
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D [taps] or 2-D [fh, fw] tensor, got shape {list(f.shape)}")
    if not f.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {f.dtype}")


def _get_filter_size(f) -> tuple:
    """Return `(fw, fh)`, the filter width and height in taps; `(1, 1)` for None, `(n, n)` for a 1-D filter."""
    _check_filter(f)
    if f is None:
        return 1, 1
    fw = int(f.shape[-1])
    fh = int(f.shape[0])
    return fw, fh


def _check_image(x, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name} must have 4 dimensions [N, C, H, W], got shape {list(x.shape)}")


def _check_impl(impl) -> None:
    if impl not in ("cuda", "ref"):
        raise ValueError(f"impl must be 'cuda' or 'ref', got {impl!r}")


# ----------------------------------------------------------------------------


def setup_filter(
    f,
    device: torch.device = torch.device("cpu"),
    normalize: bool = True,
    flip_filter: bool = False,
    gain: float = 1,
    separable: bool = None,
) -> torch.Tensor:
    """Turn filter taps (list, numpy array, tensor or None) into a float32 filter tensor for `upfirdn2d`.

    `None` means `[1]`. A 1-D input stays 1-D (separable) only when `separable=True`, or when `separable=None` and it
    has at least 8 taps; otherwise it becomes its outer product `[fh, fw]`. The result is normalised to sum 1
    (`normalize`), flipped along every axis (`flip_filter`) and finally scaled by `gain ** (ndim / 2)`, so a
    separable filter applied along both axes has total gain `gain`.

    Example:

        f = setup_filter([1, 3, 3, 1])              # [4, 4], sums to 1
        f = setup_filter([1, 2, 1], gain=4)         # [3, 3], sums to 4
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim == 0:
        f = f[np.newaxis]
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f"f must be a scalar, a non-empty 1-D or a 2-D filter, got shape {list(f.shape)}")
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)  # [fh, fw]
    if f.ndim != (1 if separable else 2):
        raise ValueError(f"separable=True needs a 1-D filter, got shape {list(f.shape)}")

    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


# ----------------------------------------------------------------------------


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor,
    up=1,
    down=1,
    padding=0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "cuda",
) -> torch.Tensor:
    """Zero-insert by `up`, pad by `padding`, FIR-filter with `f`, then keep every `down`-th sample (module docstring).

    Args:
        x: images `[N, C, H, W]`.
        f: float filter, 1-D `[taps]` (applied along width, then height, each time scaled by `sqrt(gain)`), 2-D
            `[fh, fw]` (scaled by `gain`), or None for a single tap of 1. Taps are used as given (no normalisation).
        up: up-sampling factor, int or `[x, y]`.
        down: down-sampling factor, int or `[x, y]`.
        padding: zeros added in up-sampled pixels, int, `[x, y]` or `[x0, x1, y0, y1]`; negative values crop.
        flip_filter: False for a true convolution, True for correlation (the filter not flipped).
        gain: overall scale of the filter.
        impl: "cuda" (compiled kernel for CUDA tensors when available) or "ref" (reference path).

    Returns `[N, C, (H*upy + y0 + y1 - fh) // downy + 1, (W*upx + x0 + x1 - fw) // downx + 1]`.
    """
    _check_image(x)
    _check_filter(f)
    _check_impl(impl)
    if (
        impl == "cuda"
        and x.device.type in _kernel_device_types
        and _cuda_supported(x, f, up, down, padding)
        and _init()
        and _kernel_check.trusted(x)
    ):
        return _upfirdn2d_cuda(up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain).apply(x, f)
    if impl == "cuda" and x.device.type == "cpu":
        # CPU inference: polyphase kernel for separable filters (torch_utils/ops/fast_cpu.py); None = not handled.
        y = fast_cpu.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
        if y is not None:
            return y
    return _upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)


def _self_check(device, dtype, errors=None):
    """Compare the kernel with the reference path on a small input of `device` and `dtype` (kernel_check.py): a
    separable up-sampling and a 2-D filter with decimation, asymmetric taps and padding; forward and the x gradient."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn([2, 3, 7, 6], generator=g).to(device=device, dtype=dtype).requires_grad_()
    f1 = (torch.rand([4], generator=g) + 0.1).to(device)
    f2 = (torch.rand([3, 2], generator=g) + 0.1).to(device)
    cases = [(f1, dict(up=2, padding=[2, 1, 2, 1], gain=4)), (f2, dict(down=2, padding=[1, 0, 0, 1], flip_filter=True))]
    for f, kwargs in cases:
        problem = kernel_check.compare(
            lambda x: _upfirdn2d_cuda(**kwargs).apply(x, f),
            lambda x: _upfirdn2d_ref(x, f.double(), **kwargs),
            [x],
            dtype,
            errors=errors,
        )
        if problem is not None:
            return f"{f.ndim}-D filter {kwargs}: {problem}"
    return None


_kernel_check = kernel_check.KernelCheck("upfirdn2d", _self_check)


def _upfirdn2d_ref(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1) -> torch.Tensor:
    """Reference implementation from torch ops (zero insertion, padding, depthwise conv2d, strided slicing)."""
    _check_image(x)
    _check_filter(f)
    upx, upy = _parse_scaling(up, "up")
    downx, downy = _parse_scaling(down, "down")
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    N, C, H, W = x.shape
    padded_w = W * upx + px0 + px1
    padded_h = H * upy + py0 + py1
    if padded_w < fw or padded_h < fh:
        raise ValueError(
            f"upfirdn2d: up-sampled and padded size {padded_w}x{padded_h} (WxH) is smaller than the filter "
            f"{fw}x{fh}; input {W}x{H}, up {(upx, upy)}, padding {(px0, px1, py0, py1)}"
        )

    # Insert up-1 zeros after each sample.
    if upx > 1 or upy > 1:
        x = x.reshape(N, C, H, 1, W, 1)
        x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])  # [N, C, H, upy, W, upx]
        x = x.reshape(N, C, H * upy, W * upx)  # [N, C, H, W] up-sampled

    # Pad with zeros; negative amounts crop.
    if px0 or px1 or py0 or py1:
        x = F.pad(x, [px0, px1, py0, py1])

    # Valid convolution with the filter: conv2d correlates, so flip the filter for a true convolution.
    if f is None:
        if gain != 1:
            x = x * gain
    else:
        f = (f * (gain ** (f.ndim / 2))).to(x.dtype)
        if not flip_filter:
            f = f.flip(list(range(f.ndim)))
        if f.ndim == 2:
            x = F.conv2d(x, f[np.newaxis, np.newaxis].repeat([C, 1, 1, 1]), groups=C)
        else:
            x = F.conv2d(x, f.reshape(1, 1, 1, fw).repeat([C, 1, 1, 1]), groups=C)  # along width
            x = F.conv2d(x, f.reshape(1, 1, fh, 1).repeat([C, 1, 1, 1]), groups=C)  # along height

    # Keep every down-th sample.
    if downx > 1 or downy > 1:
        x = x[:, :, ::downy, ::downx]
    return x


_cuda_dtypes = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_cuda_max_taps = 4096  # kMaxTaps in upfirdn2d.h: the kernel keeps the taps in shared memory.
_cuda_max_size = 2**30  # The kernel uses 32-bit sizes and window coordinates.
_upfirdn2d_cuda_cache = dict()  # (up, down, padding, flip_filter, gain) -> autograd Function class


def _cuda_filter_supported(x, f) -> bool:
    """True when the kernel can use filter `f` (None, or float32/float64 taps on x's device needing no gradient)."""
    if f is None:
        return True
    return (
        isinstance(f, torch.Tensor)
        and not f.requires_grad
        and f.device == x.device
        and f.dtype in (torch.float32, torch.float64)
        and f.ndim in (1, 2)
        and 1 <= f.numel() <= _cuda_max_taps
    )


def _cuda_supported(x, f, up, down, padding) -> bool:
    """True when the kernel computes what the reference path would; otherwise the reference path runs (and raises
    for bad arguments). Filters that need a gradient, unusual dtypes and oversized tensors stay on the reference path.
    """
    if x.dtype not in _cuda_dtypes or any(size >= _cuda_max_size for size in x.shape):
        return False
    if not _cuda_filter_supported(x, f):
        return False
    upx, upy = _parse_scaling(up, "up")
    downx, downy = _parse_scaling(down, "down")
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    padded_w = x.shape[3] * upx + px0 + px1
    padded_h = x.shape[2] * upy + py0 + py1
    return fw <= padded_w < _cuda_max_size and fh <= padded_h < _cuda_max_size


def _kernel_passes(pass_fn, x, f, up, down, pad0, out_size, flip_filter, gain) -> torch.Tensor:
    """Run one upfirdn2d as kernel passes: one pass for a 2-D filter (or none), width then height for a 1-D filter.

    `pass_fn(x, f2d, upx, upy, downx, downy, padx0, pady0, out_w, out_h, flip, fgain, first, last)` runs one pass;
    `first`/`last` tell the caller's stages (bias, activation) where they belong. `up`, `down`, `pad0` (leading
    padding) and `out_size` are `(x, y)` pairs. As in the reference path, a 1-D filter gets `sqrt(gain)` per axis.
    """
    upx, upy = up
    downx, downy = down
    px0, py0 = pad0
    out_w, out_h = out_size
    flip = not flip_filter  # The kernel correlates; a true convolution reads the taps reversed.
    if f is not None:
        f = f.contiguous()
    if f is None or f.ndim == 2:
        return pass_fn(x, f, upx, upy, downx, downy, px0, py0, out_w, out_h, flip, float(gain), True, True)
    axis_gain = float(gain ** (f.ndim / 2))
    x = pass_fn(x, f.reshape(1, -1), upx, 1, downx, 1, px0, 0, out_w, x.shape[2], flip, axis_gain, True, False)
    return pass_fn(x, f.reshape(-1, 1), 1, upy, 1, downy, 0, py0, out_w, out_h, flip, axis_gain, False, True)


def _adjoint_padding(in_size, out_size, up, down, taps, p0) -> tuple:
    """Padding `(p0', p1')` along one axis for the gradient of upfirdn2d, which is upfirdn2d of the output gradient
    with up and down swapped and the filter reversed (flip_filter negated).

    Forward: `y[o] = sum_k w[k] X[o*down + k - p0]` with `X` the input up-sampled by `up`. Each input sample `i`
    meets output `o` through tap `k = i*up + p0 - o*down`; writing the reversed taps as `w'[K-1-k]` gives
    `dx[i] = sum_k' w'[k'] DY[i*up + k' - (K-1-p0)]` with `DY` the output gradient up-sampled by `down`: upfirdn
    with leading padding `K-1-p0`. The end padding makes the output exactly `in_size` long.
    """
    q0 = taps - 1 - p0
    q1 = (in_size - 1) * up + taps - out_size * down - q0
    return q0, q1


def _upfirdn2d_cuda(up=1, down=1, padding=0, flip_filter=False, gain=1):
    """Return the autograd Function (cached per configuration) that runs upfirdn2d with the compiled kernel.

    The gradient is the same op with up and down swapped, the filter reversed and the padding of
    `_adjoint_padding`, so gradients of any order use the kernel. The filter gets no gradient (filters that need one
    take the reference path).
    """
    upx, upy = _parse_scaling(up, "up")
    downx, downy = _parse_scaling(down, "down")
    px0, px1, py0, py1 = _parse_padding(padding)
    key = (upx, upy, downx, downy, px0, px1, py0, py1, bool(flip_filter), float(gain))
    if key in _upfirdn2d_cuda_cache:
        return _upfirdn2d_cuda_cache[key]

    def pass_fn(x, f, upx, upy, downx, downy, padx0, pady0, out_w, out_h, flip, fgain, first, last):
        return _plugin.upfirdn2d_pass(x, f, upx, upy, downx, downy, padx0, pady0, out_w, out_h, flip, fgain)

    class Upfirdn2dCuda(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, f):
            fw, fh = _get_filter_size(f)
            N, C, H, W = x.shape
            out_w = (W * upx + px0 + px1 - fw) // downx + 1
            out_h = (H * upy + py0 + py1 - fh) // downy + 1
            y = _kernel_passes(pass_fn, x, f, (upx, upy), (downx, downy), (px0, py0), (out_w, out_h), flip_filter, gain)
            ctx.save_for_backward(f)
            ctx.x_shape = x.shape
            assert y.shape == (N, C, out_h, out_w), (list(y.shape), out_h, out_w)
            return y  # [N, C, out_h, out_w]

        @staticmethod
        def backward(ctx, dy):
            (f,) = ctx.saved_tensors
            if not ctx.needs_input_grad[0]:
                return None, None
            fw, fh = _get_filter_size(f)
            _, _, H, W = ctx.x_shape
            _, _, out_h, out_w = dy.shape
            qx0, qx1 = _adjoint_padding(W, out_w, upx, downx, fw, px0)
            qy0, qy1 = _adjoint_padding(H, out_h, upy, downy, fh, py0)
            adjoint = _upfirdn2d_cuda(
                up=[downx, downy], down=[upx, upy], padding=[qx0, qx1, qy0, qy1], flip_filter=not flip_filter, gain=gain
            )
            dx = adjoint.apply(dy, f)
            assert dx.shape == ctx.x_shape, (list(dx.shape), list(ctx.x_shape))
            return dx, None

    _upfirdn2d_cuda_cache[key] = Upfirdn2dCuda
    return Upfirdn2dCuda


# ----------------------------------------------------------------------------


def filter2d(x: torch.Tensor, f: torch.Tensor, padding=0, flip_filter: bool = False, gain: float = 1, impl="cuda"):
    """Filter `x` with `f`, keeping its size (plus `padding`, int, `[x, y]` or `[x0, x1, y0, y1]`).

    Pads `(fw // 2, (fw - 1) // 2)` on width and likewise `fh` on height before the valid convolution.

    Example: `y = filter2d(x, setup_filter([1, 2, 1]))` blurs `x` with a normalised 3x3 binomial filter.
    """
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(
    x: torch.Tensor, f: torch.Tensor, up=2, padding=0, flip_filter: bool = False, gain: float = 1, impl="cuda"
):
    """Up-sample `x` by `up` (int or `[x, y]`) with the interpolation filter `f`, keeping the image centred.

    Pads `((fw + upx - 1) // 2, (fw - upx) // 2)` on width (likewise height) on top of `padding`, and multiplies the
    gain by `upx * upy` to make up for the inserted zeros.

    Example: `y = upsample2d(x, setup_filter([1, 3, 3, 1]))` gives `[N, C, 2H, 2W]`.
    """
    upx, upy = _parse_scaling(up, "up")
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [
        px0 + (fw + upx - 1) // 2,
        px1 + (fw - upx) // 2,
        py0 + (fh + upy - 1) // 2,
        py1 + (fh - upy) // 2,
    ]
    return upfirdn2d(x, f, up=up, padding=p, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(
    x: torch.Tensor, f: torch.Tensor, down=2, padding=0, flip_filter: bool = False, gain: float = 1, impl="cuda"
):
    """Down-sample `x` by `down` (int or `[x, y]`) after low-pass filtering with `f`, keeping the image centred.

    Pads `((fw - downx + 1) // 2, (fw - downx) // 2)` on width (likewise height) on top of `padding`.

    Example: `y = downsample2d(x, setup_filter([1, 3, 3, 1]))` gives `[N, C, H/2, W/2]`.
    """
    downx, downy = _parse_scaling(down, "down")
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [
        px0 + (fw - downx + 1) // 2,
        px1 + (fw - downx) // 2,
        py0 + (fh - downy + 1) // 2,
        py1 + (fh - downy) // 2,
    ]
    return upfirdn2d(x, f, down=down, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


# ----------------------------------------------------------------------------
