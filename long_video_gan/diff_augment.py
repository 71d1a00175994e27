"""Differentiable augmentation of whole video clips for the low-res discriminator of LongVideoGAN.

Two pieces, applied in this order to real, fake and R1 inputs alike, as in the original release:

* `diff_augment`: the "color,translation,cutout" policy of DiffAugment (Zhao et al., NeurIPS 2020) applied to
  videos, with one set of parameters per clip shared by all its frames.
* `temporal_scale_augment`: random speed-up or slow-down of each clip by up to one octave, followed by zero padding
  and a random window of the discriminator's clip length.

Every random draw is made per sample, on the clip's device, from the given `torch.Generator` (or that device's
default generator when None), in a fixed order, so a seeded generator reproduces the augmentation exactly. All ops
are differentiable to any order with respect to the input, which the R1 penalty needs.
"""

import math

import torch
import torch.nn.functional as F

DEFAULT_POLICY = "color,translation,cutout"

# ----------------------------------------------------------------------------


def _rand(n: int, video: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """`n` uniform draws in [0, 1) on the video's device, as float32."""
    return torch.rand([n], generator=generator, device=video.device, dtype=torch.float32)


def _randint(low: int, high: int, n: int, video: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """`n` integer draws uniform in [low, high] (inclusive) on the video's device."""
    return torch.randint(low, high + 1, [n], generator=generator, device=video.device, dtype=torch.int64)


def _check_video(video: torch.Tensor, name: str = "video") -> None:
    if not isinstance(video, torch.Tensor) or video.ndim != 5:
        got = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
        raise ValueError(f"{name} must be a [N, C, T, H, W] tensor, got {got}")


# ----------------------------------------------------------------------------


def rand_brightness(video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Adds one offset uniform in [-0.5, 0.5) to every pixel of each clip."""
    n = video.shape[0]
    offset = _rand(n, video, generator).to(video.dtype) - 0.5
    return video + offset.view(n, 1, 1, 1, 1)


def rand_saturation(video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Scales each pixel's deviation from its RGB mean by a factor uniform in [0, 2), one factor per clip."""
    n = video.shape[0]
    factor = _rand(n, video, generator).to(video.dtype) * 2
    mean = video.mean(dim=1, keepdim=True)  # [N, 1, T, H, W]
    return (video - mean) * factor.view(n, 1, 1, 1, 1) + mean


def rand_contrast(video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Scales each clip's deviation from its overall mean by a factor uniform in [0.5, 1.5)."""
    n = video.shape[0]
    factor = _rand(n, video, generator).to(video.dtype) + 0.5
    mean = video.mean(dim=[1, 2, 3, 4], keepdim=True)  # [N, 1, 1, 1, 1]
    return (video - mean) * factor.view(n, 1, 1, 1, 1) + mean


def rand_translation(
    video: torch.Tensor, ratio: float = 0.25, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Shifts each clip by whole pixels, filling with zeros.

    The shift range `round(ratio * max(H, W))` comes from the long edge and is used for both axes (as in the original),
    so a 36x64 clip moves by up to 16 px vertically too. Output pixel (y, x) reads input pixel (y + t_h, x + t_w).
    """
    n, c, t, h, w = video.shape
    shift = int(round(ratio * max(h, w)))
    t_h = _randint(-shift, shift, n, video, generator)
    t_w = _randint(-shift, shift, n, video, generator)

    # Pad by the largest shift, so every read lands inside the padded tensor and outside reads give exact zeros.
    x = video.reshape(n, c * t, h, w)  # [N, C*T, H, W]
    x = F.pad(x, [shift, shift, shift, shift])  # [N, C*T, H + 2s, W + 2s]
    rows = torch.arange(h, device=video.device)[None, :] + t_h[:, None] + shift  # [N, H]
    cols = torch.arange(w, device=video.device)[None, :] + t_w[:, None] + shift  # [N, W]
    batch = torch.arange(n, device=video.device)[:, None, None]
    x = x.permute(0, 2, 3, 1)  # [N, H + 2s, W + 2s, C*T]
    x = x[batch, rows[:, :, None], cols[:, None, :]]  # [N, H, W, C*T]
    x = x.permute(0, 3, 1, 2)  # [N, C*T, H, W]
    return x.reshape(n, c, t, h, w)  # [N, C, T, H, W]


def rand_cutout(video: torch.Tensor, ratio: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zeroes one rectangle of about half the frame size per clip, the same in every channel and frame.

    The box is `int(ratio*H + 0.5)` x `int(ratio*W + 0.5)` pixels (18x32 for 36x64); its centre row r is uniform in
    [0, H - size_h % 2] (so [0, H] for an even size), likewise the column c; rows `r - size_h//2` to
    `r - size_h//2 + size_h - 1` and the matching columns are cut, clipped to the frame.
    """
    n, c, t, h, w = video.shape
    size_h, size_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    row = _randint(0, h - size_h % 2, n, video, generator)
    col = _randint(0, w - size_w % 2, n, video, generator)

    ys = torch.arange(h, device=video.device)[None, :]  # [1, H]
    xs = torch.arange(w, device=video.device)[None, :]  # [1, W]
    top, left = row[:, None] - size_h // 2, col[:, None] - size_w // 2
    inside_h = (ys >= top) & (ys < top + size_h)  # [N, H]
    inside_w = (xs >= left) & (xs < left + size_w)  # [N, W]
    keep = ~(inside_h[:, :, None] & inside_w[:, None, :])  # [N, H, W]
    return video * keep.to(video.dtype).view(n, 1, 1, h, w)


AUGMENT_FNS = {
    "color": [rand_brightness, rand_saturation, rand_contrast],
    "translation": [rand_translation],
    "cutout": [rand_cutout],
}

# ----------------------------------------------------------------------------


def diff_augment(
    video: torch.Tensor, policy: str = DEFAULT_POLICY, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Applies the DiffAugment ops named in `policy` (comma separated, in that order) to `video` [N, C, T, H, W].

    Every op runs with probability 1 and draws fresh parameters per clip at each call, as in the original.
    """
    _check_video(video)
    names = [p.strip() for p in policy.split(",") if p.strip()]
    for name in names:
        if name not in AUGMENT_FNS:
            raise ValueError(f"policy: unknown DiffAugment op '{name}'; valid: {', '.join(AUGMENT_FNS)}")
    for name in names:
        for fn in AUGMENT_FNS[name]:
            video = fn(video, generator=generator)
    return video


# ----------------------------------------------------------------------------


def temporal_scale_augment(
    video: torch.Tensor,
    seq_length: int,
    max_octaves: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Resamples each clip in time by a random factor and returns a random window of `seq_length` frames.

    Per sample, in the original's order: `u ~ U(-max_octaves, max_octaves)` and factor `s = 2**u`; the clip is
    linearly resampled to `floor(T*s)` frames (output frame i reads source position `(i + 0.5)/s - 0.5`, clamped to
    the clip; no anti-alias filter when speeding up: frames are simply skipped); if shorter than
    `seq_length`, zeros are padded with `pad_before ~ U{0 .. seq_length - T'}` and the rest after (`pad_before` is drawn
    always, from U{0} when no padding is needed, as the original does); finally a window start
    `~ U{0 .. T'' - seq_length}` is drawn (always, even when it can only be 0) and `seq_length` frames taken.
    When `floor(T*s) == T` the clip is copied unchanged: torch's interpolation (which the original calls with these
    settings) short-circuits equal sizes. `max_octaves=0` returns the input unchanged, without any draw.
    """
    _check_video(video)
    n, c, t, h, w = video.shape
    if seq_length < 1:
        raise ValueError(f"seq_length must be positive, got {seq_length}")
    if max_octaves == 0:
        if t != seq_length:
            raise ValueError(f"video has {t} frames (dimension 2) but seq_length is {seq_length}")
        return video

    outputs = []
    for i in range(n):
        u = (_rand(1, video, generator) * 2 - 1) * max_octaves
        scale = 2.0 ** float(u)
        clip = video[i].reshape(1, c, t, h * w)  # [1, C, T, H*W]
        # Height/width folded into one axis with scale 1, so only time is resampled; align_corners=False and the
        # given (not recomputed) factor put output frame i at source (i + 0.5)/s - 0.5.
        clip = F.interpolate(clip, scale_factor=(scale, 1.0), mode="bilinear", align_corners=False)  # [1, C, T', H*W]
        new_t = clip.shape[2]
        assert new_t == math.floor(t * scale)
        # The padding offset is drawn for every clip (0 when no padding is needed), as the original does.
        pad_total = max(seq_length - new_t, 0)
        pad_before = int(_randint(0, pad_total, 1, video, generator))
        if pad_total > 0:
            clip = F.pad(clip, [0, 0, pad_before, pad_total - pad_before])  # [1, C, seq_length, H*W]
        start = int(_randint(0, clip.shape[2] - seq_length, 1, video, generator))
        clip = clip[:, :, start : start + seq_length]  # [1, C, seq_length, H*W]
        outputs.append(clip.reshape(c, seq_length, h, w))
    out = torch.stack(outputs)  # [N, C, seq_length, H, W]
    assert out.shape == (n, c, seq_length, h, w)
    return out
