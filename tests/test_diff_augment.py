"""Tests for long_video_gan/diff_augment.py: DiffAugment ops against explicit formulas, temporal scale augmentation."""

import math

import pytest
import torch

from long_video_gan import diff_augment as da


def _video(n=3, c=3, t=4, h=12, w=20, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand([n, c, t, h, w], generator=gen) * 2 - 1


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------
# Color.


def test_brightness_matches_formula():
    x = _video()
    out = da.rand_brightness(x, generator=_gen(1))
    r = torch.rand([3], generator=_gen(1))
    assert torch.allclose(out, x + (r - 0.5).view(3, 1, 1, 1, 1), atol=0, rtol=0)


def test_saturation_matches_formula():
    x = _video()
    out = da.rand_saturation(x, generator=_gen(2))
    r = torch.rand([3], generator=_gen(2))
    for n in range(3):
        mean = x[n].mean(dim=0, keepdim=True)  # Mean over RGB, per pixel and frame.
        assert torch.allclose(out[n], (x[n] - mean) * (2 * r[n]) + mean, atol=1e-6)


def test_contrast_uses_mean_of_whole_clip():
    x = _video()
    out = da.rand_contrast(x, generator=_gen(3))
    r = torch.rand([3], generator=_gen(3))
    for n in range(3):
        m = x[n].mean()
        assert torch.allclose(out[n], (x[n] - m) * (r[n] + 0.5) + m, atol=1e-6)


# ----------------------------------------------------------------------------
# Translation and cutout.


def test_translation_reads_shifted_pixel_or_zero():
    x = _video(n=4, t=3, h=9, w=16)
    shift = round(0.25 * 16)  # From the long edge, used for both axes.
    out = da.rand_translation(x, generator=_gen(4))
    g = _gen(4)
    t_h = torch.randint(-shift, shift + 1, [4], generator=g)
    t_w = torch.randint(-shift, shift + 1, [4], generator=g)
    assert t_h.abs().max() > 0 and t_w.abs().max() > 0  # The seed exercises real shifts.
    expected = torch.zeros_like(x)
    for n in range(4):
        for y in range(9):
            for xx in range(16):
                sy, sx = y + int(t_h[n]), xx + int(t_w[n])
                if 0 <= sy < 9 and 0 <= sx < 16:
                    expected[n, :, :, y, xx] = x[n, :, :, sy, sx]
    assert torch.equal(out, expected)


def test_translation_range_is_16_px_for_36x64():
    x = torch.ones([64, 1, 1, 36, 64])
    out = da.rand_translation(x, generator=_gen(5))
    # Rows that survive a vertical shift of t_h: 36 - |t_h|, so at least 20 and sometimes exactly 20.
    rows_kept = (out[:, 0, 0].sum(dim=2) > 0).sum(dim=1)
    assert rows_kept.min() >= 36 - 16
    g = _gen(5)
    t_h = torch.randint(-16, 17, [64], generator=g)
    assert torch.equal(rows_kept, 36 - t_h.abs())


def test_cutout_box_matches_formula():
    h, w = 36, 64
    x = torch.ones([8, 3, 2, h, w])
    out = da.rand_cutout(x, generator=_gen(6))
    g = _gen(6)
    rows = torch.randint(0, h + 1, [8], generator=g)
    cols = torch.randint(0, w + 1, [8], generator=g)
    for n in range(8):
        expected = torch.ones([h, w])
        r, c = int(rows[n]), int(cols[n])
        expected[max(r - 9, 0) : min(r + 9, h), max(c - 16, 0) : min(c + 16, w)] = 0
        for ch in range(3):
            for t in range(2):
                assert torch.equal(out[n, ch, t], expected), (n, ch, t)


def test_cutout_box_is_18x32_when_inside():
    x = torch.ones([200, 1, 1, 36, 64])
    out = da.rand_cutout(x, generator=_gen(7))
    zeros = (out == 0).sum(dim=[1, 2, 3, 4])
    assert zeros.max() == 18 * 32  # A box fully inside the frame.
    assert zeros.min() < 18 * 32  # Some boxes are clipped at the border.


def test_same_transform_for_all_frames():
    frame = _video(n=2, t=1)
    x = frame.repeat(1, 1, 5, 1, 1)  # Five identical frames.
    out = da.diff_augment(x, generator=_gen(8))
    for t in range(1, 5):
        assert torch.equal(out[:, :, t], out[:, :, 0])


# ----------------------------------------------------------------------------
# Whole policy.


def test_policy_draw_order_is_color_translation_cutout():
    x = _video()
    out = da.diff_augment(x, "color,translation,cutout", generator=_gen(9))
    g = _gen(9)
    y = da.rand_brightness(x, generator=g)
    y = da.rand_saturation(y, generator=g)
    y = da.rand_contrast(y, generator=g)
    y = da.rand_translation(y, generator=g)
    y = da.rand_cutout(y, generator=g)
    assert torch.equal(out, y)


def test_fresh_draws_each_call_and_seeded_repeatable():
    x = _video()
    g = _gen(10)
    a, b = da.diff_augment(x, generator=g), da.diff_augment(x, generator=g)
    assert not torch.equal(a, b)
    assert torch.equal(a, da.diff_augment(x, generator=_gen(10)))


def test_unknown_policy_named():
    with pytest.raises(ValueError, match="'flip'"):
        da.diff_augment(_video(), "color,flip")


def test_bad_rank_named():
    with pytest.raises(ValueError, match="video"):
        da.diff_augment(torch.zeros(3, 8, 8))


def test_second_order_gradients_flow():
    x = _video(n=2).requires_grad_(True)
    weight = torch.randn([3, 4, 12, 20], generator=_gen(11), requires_grad=True)
    y = da.temporal_scale_augment(da.diff_augment(x, generator=_gen(12)), 4, generator=_gen(13))
    (grad,) = torch.autograd.grad((y * weight).sum(), x, create_graph=True)
    grad.square().sum().backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0
    assert torch.isfinite(weight.grad).all()


# ----------------------------------------------------------------------------
# Temporal scale augmentation.


def _reference_temporal_scale(clip, seq_length, gen):
    """Explicit per-frame version of temporal_scale_augment for one clip [C, T, H, W], drawn in the documented order."""
    c, t, h, w = clip.shape
    u = float(torch.rand([1], generator=gen) * 2 - 1)
    s = 2.0**u
    new_t = math.floor(t * s)
    frames = []
    if new_t == t:  # torch's interpolation copies when the size does not change, whatever the factor.
        frames = [clip[:, i] for i in range(t)]
    for i in range(new_t if new_t != t else 0):
        p = min(max((i + 0.5) / s - 0.5, 0.0), t - 1)
        i0 = math.floor(p)
        i1 = min(i0 + 1, t - 1)
        lam = p - i0
        frames.append(clip[:, i0] * (1 - lam) + clip[:, i1] * lam)
    out = torch.stack(frames, dim=1)
    # The original draws the padding offset for every clip, from U{0} when no padding is needed (issue 20).
    pad_before = int(torch.randint(0, max(seq_length - new_t, 0) + 1, [1], generator=gen))
    if new_t < seq_length:
        out = torch.cat(
            [torch.zeros(c, pad_before, h, w), out, torch.zeros(c, seq_length - new_t - pad_before, h, w)], 1
        )
    start = int(torch.randint(0, out.shape[1] - seq_length + 1, [1], generator=gen))
    return out[:, start : start + seq_length], new_t, pad_before


def test_temporal_scale_matches_reference():
    x = _video(n=6, t=16, h=3, w=5)
    out = da.temporal_scale_augment(x, 16, generator=_gen(14))
    assert out.shape == (6, 3, 16, 3, 5)
    g = _gen(14)
    lengths = []
    for n in range(6):
        ref, new_t, _ = _reference_temporal_scale(x[n], 16, g)
        lengths.append(new_t)
        assert torch.allclose(out[n], ref, atol=1e-5), n
    assert min(lengths) < 16 < max(lengths)  # The seed covers both slowing down and speeding up.
    assert all(8 <= n <= 32 for n in lengths)  # Within one octave.


def test_temporal_scale_pads_with_exact_zeros():
    x = torch.ones([20, 1, 16, 1, 1])
    out = da.temporal_scale_augment(x, 16, generator=_gen(15))
    g = _gen(15)
    for n in range(20):
        _, new_t, pad_before = _reference_temporal_scale(x[n], 16, g)
        frames = out[n, 0, :, 0, 0]
        if new_t < 16:
            assert torch.equal(frames[:pad_before], torch.zeros(pad_before))
            assert torch.allclose(frames[pad_before : pad_before + new_t], torch.ones(new_t))
            assert (frames == 0).sum() == 16 - new_t
        else:
            assert torch.allclose(frames, torch.ones(16))


def test_temporal_scale_off_is_identity():
    x = _video(t=8)
    assert da.temporal_scale_augment(x, 8, max_octaves=0) is x
    with pytest.raises(ValueError, match="seq_length"):
        da.temporal_scale_augment(x, 4, max_octaves=0)
