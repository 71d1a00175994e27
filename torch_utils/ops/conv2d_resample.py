"""2-D convolution combined with FIR up-/down-sampling, as used by StyleGAN2-style layers such as LongVideoGAN's
super-resolution discriminator (long_video_gan/discriminator_sres.py).

`conv2d_resample(x, w, f, up, down, padding)` computes, per axis:

1. if `up > 1`: `upfirdn2d(x, f, up=up, padding=P, gain=up**2)` (zero insertion, padding, FIR);
   elif `down > 1`: `upfirdn2d(x, f, padding=P)` (padding, FIR); else pad `x` by `P`;
2. a valid convolution with `w` (correlation when `flip_weight=True`);
3. if `down > 1`: keep every `down`-th sample (after another unpadded FIR with `f` when `up > 1` as well).

`P` is the user padding plus `((fw + up - 1) // 2, (fw - up) // 2)` when up-sampling and plus
`((fw - down + 1) // 2, (fw - down) // 2)` when down-sampling (likewise `fh` for height). The computation is
reordered into the cheapest equivalent form (branches a-f in the code below), e.g. a transposed convolution with
stride `up` in place of zero insertion followed by a convolution.

Example, a 3x3 convolution followed by 2x down-sampling with the `[1, 3, 3, 1]` filter:

    y = conv2d_resample(x, w, f=setup_filter([1, 3, 3, 1]), down=2, padding=1)   # [N, O, H/2, W/2]
"""

import numbers

import torch

from . import conv2d_gradfix
from .upfirdn2d import _check_filter, _check_image, _get_filter_size, _parse_padding, upfirdn2d

# ----------------------------------------------------------------------------


def _get_weight_shape(w: torch.Tensor) -> list:
    """Return `[out_channels, in_channels_per_group, kh, kw]` as ints."""
    return [int(size) for size in w.shape]


def _conv2d_wrapper(x, w, stride=1, padding=0, groups=1, transpose=False, flip_weight=True) -> torch.Tensor:
    """conv2d (or conv_transpose2d when `transpose`) that flips the kernel spatially unless `flip_weight`."""
    _out_channels, _in_channels_per_group, kh, kw = _get_weight_shape(w)
    if not flip_weight and (kw > 1 or kh > 1):
        w = w.flip([2, 3])
    op = conv2d_gradfix.conv_transpose2d if transpose else conv2d_gradfix.conv2d
    return op(x, w, stride=stride, padding=padding, groups=groups)


# ----------------------------------------------------------------------------


def _check_args(x, w, f, up, down, groups) -> None:
    _check_image(x)
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"w must be a torch.Tensor, got {type(w).__name__}")
    if w.ndim != 4:
        raise ValueError(f"w must have 4 dimensions [O, I/groups, kh, kw], got shape {list(w.shape)}")
    if w.dtype != x.dtype:
        raise TypeError(f"w must have the dtype of x ({x.dtype}), got {w.dtype}")
    _check_filter(f)
    for name, value in (("up", up), ("down", down), ("groups", groups)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if w.shape[0] % groups != 0:
        raise ValueError(f"w.shape[0] (output channels, {w.shape[0]}) must be a multiple of groups ({groups})")
    if x.shape[1] != w.shape[1] * groups:
        raise ValueError(
            f"x.shape[1] must equal w.shape[1] * groups = {w.shape[1]} * {groups} = {w.shape[1] * groups}, "
            f"got {x.shape[1]} (x {list(x.shape)}, w {list(w.shape)})"
        )


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: torch.Tensor = None,
    up: int = 1,
    down: int = 1,
    padding=0,
    groups: int = 1,
    flip_weight: bool = True,
    flip_filter: bool = False,
) -> torch.Tensor:
    """Convolution with optional FIR up-/down-sampling (module docstring).

    Args:
        x: images `[N, C, H, W]`.
        w: weight `[O, C/groups, kh, kw]`, same dtype as `x`.
        f: FIR filter prepared by `upfirdn2d.setup_filter` (1-D or 2-D), or None (single tap; no resampling filter).
        up: up-sampling factor (int).
        down: down-sampling factor (int).
        padding: padding in up-sampled pixels: int, `[x, y]` or `[x0, x1, y0, y1]`; negative values crop.
        groups: convolution groups.
        flip_weight: True for correlation with `w` (like torch conv2d), False for true convolution.
        flip_filter: False for true convolution with `f`, True for correlation.

    Returns `[N, O, out_h, out_w]`.
    """
    _check_args(x, w, f, up, down, groups)
    up, down, groups = int(up), int(down), int(groups)
    out_channels, in_channels_per_group, kh, kw = _get_weight_shape(w)
    fw, fh = _get_filter_size(f)
    px0, px1, py0, py1 = _parse_padding(padding)

    # Padding that keeps the resampled image centred.
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2

    # (a) 1x1 kernel, down-sampling only: decimate first so the conv sees fewer pixels.
    if kw == 1 and kh == 1 and (down > 1 and up == 1):
        x = upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv2d_wrapper(x, w, groups=groups, flip_weight=flip_weight)

    # (b) 1x1 kernel, up-sampling only: convolve first, on fewer pixels.
    if kw == 1 and kh == 1 and (up > 1 and down == 1):
        x = _conv2d_wrapper(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up**2, flip_filter=flip_filter)

    # (c) Down-sampling only: FIR filter, then a strided conv (decimation folded into the stride).
    if down > 1 and up == 1:
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv2d_wrapper(x, w, stride=down, groups=groups, flip_weight=flip_weight)

    # (d) Up-sampling: a transposed conv with stride `up` does the zero insertion and the conv in one go.
    if up > 1:
        if groups == 1:
            w = w.transpose(0, 1)  # [C, O, kh, kw]
        else:
            w = w.reshape(groups, out_channels // groups, in_channels_per_group, kh, kw)
            w = w.transpose(1, 2)  # [groups, C/groups, O/groups, kh, kw]
            w = w.reshape(groups * in_channels_per_group, out_channels // groups, kh, kw)  # [C, O/groups, kh, kw]
        # The full transposed conv already extends the image by (kw - 1, kw - up); crop what the padding does not
        # want inside the transposed conv (t) and the rest in the FIR stage.
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        x = _conv2d_wrapper(
            x, w, stride=up, padding=[pyt, pxt], groups=groups, transpose=True, flip_weight=(not flip_weight)
        )
        x = upfirdn2d(x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up**2, flip_filter=flip_filter)
        if down > 1:
            x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
        return x

    # (e) No resampling, symmetric non-negative padding: a plain conv.
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv2d_wrapper(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)

    # (f) No resampling, asymmetric or negative padding: pad/crop first, then an unpadded conv.
    x = upfirdn2d(x, None, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
    return _conv2d_wrapper(x, w, groups=groups, flip_weight=flip_weight)


# ----------------------------------------------------------------------------
