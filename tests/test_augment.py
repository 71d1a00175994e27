"""Tests of the ADA video augmentation pipe and its p controller (long_video_gan/augment.py)."""

import copy
import math
import pickle

import numpy as np
import pytest
import torch

from long_video_gan import augment
from long_video_gan.augment import AdaController, AugmentPipe

# ----------------------------------------------------------------------------


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def smooth_video(batch_size: int = 8, frames: int = 3, height: int = 18, width: int = 32, seed: int = 0):
    """Band-limited random content in [-1, 1] (bilinear up-sampling of coarse noise), different per frame."""
    coarse = torch.rand([batch_size, 3 * frames, height // 3, width // 4], generator=gen(seed)) * 2 - 1
    fine = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return fine.reshape(batch_size, 3, frames, height, width)


def per_video_change(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs().amax(dim=[1, 2, 3, 4])


# ----------------------------------------------------------------------------


def test_p_zero_is_near_identity():
    video = torch.rand([2, 3, 8, 36, 64], generator=gen(0)) * 2 - 1
    pipe = augment.ada_pipe()
    assert float(pipe.p) == 0
    out = pipe(video, generator=gen(1))
    assert (out - video).abs().max() < 1e-4  # The geometric pass still runs (the original's max error: about 5e-5).
    in_pipe = augment.in_augment_pipe()
    in_pipe.p.zero_()
    assert (in_pipe(video, generator=gen(1)) - video).abs().max() < 1e-4


@pytest.mark.parametrize("op", list(augment.ADA_KWARGS) + ["noise", "cutout"])
def test_each_op_changes_the_video_at_p_one(op):
    video = smooth_video()
    pipe = AugmentPipe(**{op: 1})
    assert (pipe(video, generator=gen(2)) - video).abs().max() < 1e-4  # p = 0: off.
    pipe.p.fill_(1)
    out = pipe(video, generator=gen(2))
    assert out.shape == video.shape
    assert per_video_change(out, video).max() > 0.05, op


@pytest.mark.parametrize("op", list(augment.ADA_KWARGS))
def test_one_transform_per_video_for_all_frames(op):
    still = smooth_video(frames=1).expand(-1, -1, 3, -1, -1).contiguous()  # All frames identical.
    pipe = AugmentPipe(**{op: 1})
    pipe.p.fill_(1)
    out = pipe(still, generator=gen(4))
    torch.testing.assert_close(out[:, :, 1:], out[:, :, :1].expand(-1, -1, 2, -1, -1), rtol=0, atol=1e-6)


def plane_gradients(video: torch.Tensor, border: int = 8) -> torch.Tensor:
    """Mean finite-difference gradient (d/dx, d/dy) of each video's first channel and frame, away from the borders."""
    interior = video[:, 0, 0, border:-border, border:-border]
    gx = (interior[:, :, 1:] - interior[:, :, :-1]).mean(dim=[1, 2])
    gy = (interior[:, 1:, :] - interior[:, :-1, :]).mean(dim=[1, 2])
    return torch.stack([gx, gy], dim=1)  # [N, 2]


def test_pixel_blitting_maps_planes_to_flipped_and_rotated_planes():
    # Content a * x + b * y: flips and rotations by 90 degrees turn its gradient accordingly (the residual filter of
    # the pass has unit DC gain, so a plane stays a plane with the same gradient away from the borders).
    a, b = 0.03, 0.05
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    plane = (a * (xs - 15.5) + b * (ys - 15.5)).expand(8, 3, 2, 32, 32).contiguous()

    pipe = AugmentPipe(xflip=1)
    pipe.p.fill_(1)
    grads = plane_gradients(pipe(plane, generator=gen(0)))
    flipped = (grads - torch.tensor([-a, b])).abs().max(dim=1).values < 1e-4
    kept = (grads - torch.tensor([a, b])).abs().max(dim=1).values < 1e-4
    assert bool((flipped ^ kept).all()) and 0 < int(flipped.sum()) < 8

    pipe = AugmentPipe(rotate90=1)
    pipe.p.fill_(1)
    grads = plane_gradients(pipe(plane, generator=gen(0)))
    rotations = torch.tensor([[a, b], [-b, a], [-a, -b], [b, -a]])
    matches = (grads.unsqueeze(1) - rotations.unsqueeze(0)).abs().max(dim=2).values < 1e-4  # [N, 4]
    assert bool((matches.sum(dim=1) == 1).all()) and int(matches.any(dim=0).sum()) > 2


# The geometric pass against an independent float64 statement of the original's (issue 20): reflect
# padding of the transformed corners plus twice the filter support; 2x up-sampling (true convolution with the
# symlet); bilinear sampling with zeros outside on the 2x grid of the image plus 3 pixels per side, where output
# sample (x, y) in up-sampled units, centred, reads T(-1/2) S(2) T(pad shift) G S(1/2) T(1/2) (x, y); 2x
# down-sampling (correlation) and cropping.

GEOMETRY_OPS = dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1)


def reference_geometry(image: np.ndarray, g_inv: np.ndarray, half_sample_shift: float = 0.5) -> np.ndarray:
    """One image [C, H, W] through the original's geometric pass, in float64 with explicit loops over axes."""
    f = np.asarray(augment.SYM6_COEFFS, dtype=np.float64)
    f = f / f.sum()
    taps = len(f)
    pad = taps // 4
    channels, height, width = image.shape
    cx, cy = (width - 1) / 2, (height - 1) / 2

    corners = g_inv @ np.array([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]], dtype=np.float64).T
    x0 = np.ceil(np.clip(np.max(-corners[0]) - cx + 2 * pad, 0, width - 1))
    x1 = np.ceil(np.clip(np.max(corners[0]) - cx + 2 * pad, 0, width - 1))
    y0 = np.ceil(np.clip(np.max(-corners[1]) - cy + 2 * pad, 0, height - 1))
    y1 = np.ceil(np.clip(np.max(corners[1]) - cy + 2 * pad, 0, height - 1))
    x0, x1, y0, y1 = int(x0), int(x1), int(y0), int(y1)
    padded = np.pad(image, [(0, 0), (y0, y1), (x0, x1)], mode="reflect")

    def up(a, axis):  # Zero insertion and true convolution with 2 f; sample j sits at input position j / 2 - 1/4.
        a = np.moveaxis(a, axis, -1)
        u = np.zeros(a.shape[:-1] + (2 * a.shape[-1],))
        u[..., ::2] = a
        full = np.apply_along_axis(lambda r: np.convolve(r, 2 * f), -1, u)
        return np.moveaxis(full[..., taps // 2 - 1 : taps // 2 - 1 + u.shape[-1]], -1, axis)

    upsampled = up(up(padded, 1), 2)  # [C, 2 Hp, 2 Wp]
    up_h, up_w = upsampled.shape[1:]

    # Sample positions, in up-sampled samples relative to the padded image's centre.
    out_h, out_w = 2 * (height + 2 * pad), 2 * (width + 2 * pad)
    oy, ox = np.meshgrid(np.arange(out_h) - (out_h - 1) / 2, np.arange(out_w) - (out_w - 1) / 2, indexing="ij")
    s = half_sample_shift
    px, py = (ox + s) / 2, (oy + s) / 2  # Output, in input pixels (centred).
    qx = g_inv[0, 0] * px + g_inv[0, 1] * py + g_inv[0, 2] + (x0 - x1) / 2
    qy = g_inv[1, 0] * px + g_inv[1, 1] * py + g_inv[1, 2] + (y0 - y1) / 2
    ix, iy = 2 * qx - s + (up_w - 1) / 2, 2 * qy - s + (up_h - 1) / 2  # Up-sampled sample indices.

    # Bilinear, zeros outside.
    sampled = np.zeros((channels, out_h, out_w))
    fx, fy = np.floor(ix).astype(int), np.floor(iy).astype(int)
    for dy in (0, 1):
        for dx in (0, 1):
            xx, yy = fx + dx, fy + dy
            weight = (1 - np.abs(ix - xx)) * (1 - np.abs(iy - yy))
            inside = (xx >= 0) & (xx < up_w) & (yy >= 0) & (yy < up_h)
            sampled += np.where(inside, upsampled[:, yy.clip(0, up_h - 1), xx.clip(0, up_w - 1)], 0) * weight

    def down(a, axis):  # Correlation with f, keeping the samples that belong to the image's pixels.
        a = np.moveaxis(a, axis, -1)
        n = a.shape[-1] // 2 - 2 * pad
        out = np.stack([(a[..., 2 * m + 1 : 2 * m + 1 + taps] * f).sum(-1) for m in range(n)], axis=-1)
        return np.moveaxis(out, -1, axis)

    return down(down(sampled, 1), 2)


def draw_geometry(pipe: AugmentPipe, video: torch.Tensor, seed: int) -> torch.Tensor:
    """The inverse transforms [N, 3, 3] the pipe's forward draws first from `gen(seed)`."""
    generator = gen(seed)
    batch_size, _, _, height, width = video.shape
    p = pipe.p.to(torch.float32)
    rand = lambda *shape: torch.rand([batch_size, *shape], generator=generator)
    randn = lambda *shape: torch.randn([batch_size, *shape], generator=generator)
    gate = lambda m, value, identity: torch.where(rand() < m * p, value, torch.full_like(value, identity))
    return pipe._draw_geometry(rand, randn, gate, batch_size, width, height, torch.device("cpu"))


def test_geometry_at_p_03_equals_the_original_positions():
    video = torch.rand([12, 3, 2, 18, 32], generator=gen(11)) * 2 - 1
    pipe = AugmentPipe(**GEOMETRY_OPS)
    pipe.p.fill_(0.3)
    out = pipe(video, generator=gen(3))
    g_inv = draw_geometry(pipe, video, 3).double().numpy()
    assert (np.abs(g_inv - np.eye(3)).max(axis=(1, 2)) > 1e-6).sum() >= 6  # Most videos transformed.
    images = video.reshape(12, 6, 18, 32).double().numpy()
    ours = out.reshape(12, 6, 18, 32).double().numpy()
    expected = np.stack([reference_geometry(image, g) for image, g in zip(images, g_inv)])
    assert np.abs(ours - expected).max() < 1e-4
    # Without the half-sample shift the same draws land elsewhere (what the pass did before issue 20).
    unshifted = np.stack([reference_geometry(image, g, half_sample_shift=0) for image, g in zip(images, g_inv)])
    assert np.abs(ours - unshifted).max() > 0.1


def test_p_zero_is_identity_to_float_rounding():
    video = torch.rand([2, 3, 8, 36, 64], generator=gen(0)) * 2 - 1
    for pipe in [augment.ada_pipe(), augment.in_augment_pipe()]:
        pipe.p.zero_()
        assert (pipe(video, generator=gen(1)) - video).abs().max() < 3e-5


def sample_indices(pipe: AugmentPipe, g_inv: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Where the pass reads, as indices of the up-sampled image without its padding: [N, 2 (H + 6), 2 (W + 6), xy]."""
    (mx0, mx1, my0, my1), grid = pipe._geometry_grid(g_inv, height, width, torch.device("cpu"))
    size = torch.tensor([2 * (width + mx0 + mx1), 2 * (height + my0 + my1)], dtype=torch.float32)
    return ((grid + 1) * size - 1) / 2 - torch.tensor([2 * mx0, 2 * my0])


def pixel_transform(name: str, batch_size: int = 1) -> torch.Tensor:
    ones = torch.ones([batch_size])
    if name == "xflip":
        return augment.scale2d_inv(-ones, ones, batch_size, "cpu")
    if name == "rotate90":
        return augment.rotate2d_inv(-np.pi / 2 * ones, batch_size, "cpu")
    return augment.translate2d_inv(ones, 0 * ones, batch_size, "cpu")  # One pixel to the right.


def test_flip_applied_twice_is_the_identity():
    pipe = AugmentPipe(xflip=1)
    flip = pixel_transform("xflip")
    # Sample positions: a flip reads up-sampled samples exactly, and reading them twice returns to the start.
    idx = sample_indices(pipe, flip, 16, 24)[0]  # [H2, W2, 2]
    identity = sample_indices(pipe, torch.eye(3)[None], 16, 24)[0]
    assert (idx - idx.round()).abs().max() < 1e-4 and (idx != identity).any()
    assert torch.equal(idx[:, :, 1], identity[:, :, 1])
    # Output sample k sits at identity[k]; read where the flip reads, then where the flip reads from there (the
    # last sample's first read lies one sample beyond the grid: the half-sample shift).
    first = (idx[0, :, 0] - identity[0, 0, 0]).round().long()
    valid = (first >= 0) & (first < idx.shape[1])
    assert int(valid.sum()) == idx.shape[1] - 1
    torch.testing.assert_close(idx[0, first[valid], 0], identity[0, valid, 0], rtol=0, atol=1e-4)
    # Images: two flips composed into one pass are the identity to float rounding.
    video = smooth_video(batch_size=2)
    images = einops_flat(video)
    torch.testing.assert_close(pipe._apply_geometry(images, (flip @ flip).repeat(2, 1, 1)), images, rtol=0, atol=2e-5)
    # Two passes: up to the residual filter of the symlet (twice), small on smooth content.
    once = pipe._apply_geometry(images, flip.repeat(2, 1, 1))
    assert (pipe._apply_geometry(once, flip.repeat(2, 1, 1)) - images).abs().max() < 0.01
    assert (once - images.flip(3)).abs().max() < 0.1


def einops_flat(video: torch.Tensor) -> torch.Tensor:
    return video.reshape(video.shape[0], -1, *video.shape[3:])


def test_rotate90_of_a_symmetric_image_is_its_transpose():
    pipe = AugmentPipe(rotate90=1)
    rot = pixel_transform("rotate90")
    # Sample positions on a square: output sample (r, c) reads input row c (a transposition) and the column mirrored
    # from r, one up-sampled sample lower (the half-sample shift), exactly.
    idx = sample_indices(pipe, rot, 20, 20)[0]
    identity = sample_indices(pipe, torch.eye(3)[None], 20, 20)[0]
    assert (idx - idx.round()).abs().max() < 1e-4
    torch.testing.assert_close(idx[:, :, 1], identity[:, :, 0], rtol=0, atol=1e-4)
    torch.testing.assert_close(idx[:, :, 0], identity[:, :, 1].flip(0) - 1, rtol=0, atol=1e-4)
    # Images: content symmetric under x-flips rotated by 90 degrees is its transpose, up to the residual filter.
    video = smooth_video(batch_size=2, height=24, width=24)
    images = einops_flat(video)
    images = (images + images.flip(3)) / 2
    out = pipe._apply_geometry(images, rot.repeat(2, 1, 1))
    assert (out - images.transpose(2, 3)).abs().max() < 0.1


def test_translation_by_one_pixel_moves_the_grid_by_one():
    pipe = AugmentPipe(xint=1)
    shift = pixel_transform("xint")
    idx = sample_indices(pipe, shift, 16, 24)[0]
    identity = sample_indices(pipe, torch.eye(3)[None], 16, 24)[0]
    torch.testing.assert_close(idx[..., 0] - identity[..., 0], torch.full_like(idx[..., 0], -2), rtol=0, atol=1e-4)
    torch.testing.assert_close(idx[..., 1], identity[..., 1], rtol=0, atol=1e-4)
    # Images: an exact shift by one pixel (the column that enters is the reflection of the border).
    images = torch.rand([2, 6, 16, 24], generator=gen(2)) * 2 - 1
    out = pipe._apply_geometry(images, shift.repeat(2, 1, 1))
    torch.testing.assert_close(out[:, :, :, 1:], images[:, :, :, :-1], rtol=0, atol=2e-5)
    torch.testing.assert_close(out[:, :, :, 0], images[:, :, :, 1], rtol=0, atol=2e-5)


def test_colour_ops_follow_their_definitions():
    video = smooth_video()
    luma = lambda v: v.mean(dim=1, keepdim=True)  # Projection onto (1, 1, 1) / sqrt(3) gives the RGB mean.

    def run(**kwargs):
        pipe = AugmentPipe(**kwargs)
        pipe.p.fill_(1)
        return pipe(video, generator=gen(5))

    # Brightness adds one value to every RGB component of a video.
    delta = run(brightness=1) - video
    assert (delta - delta[:, :1, :1, :1, :1]).abs().max() < 1e-5 and delta.abs().max() > 0.01
    # Contrast multiplies by one factor per video.
    out = run(contrast=1)
    factor = (out * video).sum(dim=[1, 2, 3, 4]) / video.square().sum(dim=[1, 2, 3, 4])
    torch.testing.assert_close(out, video * factor.reshape(-1, 1, 1, 1, 1), rtol=0, atol=1e-5)
    assert (factor - 1).abs().max() > 0.05
    # Luma flip reflects through the plane orthogonal to the luma axis: v - 2 * mean, or v.
    out = run(lumaflip=1)
    flipped = (out - (video - 2 * luma(video))).abs().amax(dim=[1, 2, 3, 4]) < 1e-5
    kept = (out - video).abs().amax(dim=[1, 2, 3, 4]) < 1e-5
    assert bool((flipped ^ kept).all()) and 0 < int(flipped.sum()) < 8
    # Hue rotation and saturation keep the luma and change the chroma; hue keeps the chroma norm.
    for op in ["hue", "saturation"]:
        out = run(**{op: 1})
        torch.testing.assert_close(luma(out), luma(video), rtol=0, atol=1e-5)
        assert (out - video).abs().max() > 0.05
    chroma_norm = lambda v: (v - luma(v)).norm(dim=1)
    torch.testing.assert_close(chroma_norm(run(hue=1)), chroma_norm(video), rtol=0, atol=1e-5)


def test_gating_probability():
    video = smooth_video(batch_size=200, frames=1, height=12, width=16)
    pipe = AugmentPipe(brightness=1)
    pipe.p.fill_(0.3)
    changed = per_video_change(pipe(video, generator=gen(0)), video) > 0
    assert 0.2 < changed.float().mean() < 0.4
    # Each rotation is gated with 1 - sqrt(1 - p), so that some rotation happens with probability p.
    pipe = AugmentPipe(rotate=1)
    pipe.p.fill_(0.3)
    changed = per_video_change(pipe(video, generator=gen(0)), video) > 1e-3
    assert 0.2 < changed.float().mean() < 0.4


def test_draws_follow_the_generator():
    video = smooth_video()
    pipe = augment.ada_pipe()
    pipe.p.fill_(0.5)
    a = pipe(video, generator=gen(7))
    b = pipe(video, generator=gen(7))
    c = pipe(video, generator=gen(8))
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 0.05


def test_in_augment_configuration():
    pipe = augment.in_augment_pipe()
    assert float(pipe.p) == augment.IN_AUGMENT_P == 0.5
    enabled = [name for name in augment._OP_NAMES if getattr(pipe, name) > 0]
    assert enabled == ["scale", "rotate", "aniso", "xfrac", "noise"]
    assert (pipe.scale_std, pipe.rotate_max, pipe.aniso_std, pipe.xfrac_std, pipe.noise_std) == (
        0.08,
        0.016,
        0.08,
        0.016,
        0.08,
    )
    video = smooth_video()
    out = pipe(video, generator=gen(0))
    assert torch.isfinite(out).all() and 0 < (out - video).abs().max() < 1.5


def test_pickle_round_trip_keeps_p_and_outputs():
    pipe = augment.ada_pipe()
    pipe.p.fill_(0.25)
    video = smooth_video()
    for clone in [pickle.loads(pickle.dumps(pipe)), copy.deepcopy(pipe)]:
        assert float(clone.p) == 0.25 and type(clone).__name__ == "AugmentPipe"
        assert torch.equal(clone(video, generator=gen(1)), pipe(video, generator=gen(1)))
    torch.testing.assert_close(pipe.Hz_geom.sum(), torch.tensor(1.0))
    torch.testing.assert_close(pipe.Hz_geom.square().sum(), torch.tensor(0.5))  # Orthonormal wavelet / sqrt(2)^2.


def test_bad_inputs_name_the_argument():
    pipe = augment.ada_pipe()
    with pytest.raises(ValueError, match="video must be a tensor"):
        pipe(torch.zeros([2, 3, 8, 8]))
    with pytest.raises(ValueError, match="colour augmentation needs 3 channels"):
        pipe(torch.zeros([2, 1, 2, 8, 8]))
    with pytest.raises(ValueError, match="interval"):
        AdaController(interval=0)


# ----------------------------------------------------------------------------


def test_controller_moves_p_toward_the_target():
    pipe = augment.ada_pipe()
    ada = AdaController()
    assert [ada.should_update(step) for step in range(6)] == [True, False, False, False, True, False]

    # D always right on reals (sign +1 > 0.6): p rises by 0.0005 per update, up to 0.5.
    for _ in range(3):
        ada.accumulate(torch.ones([16, 1]))
        ada.update(pipe)
    assert math.isclose(float(pipe.p), 3 * 0.0005, rel_tol=1e-5)
    pipe.p.fill_(0.4999)
    ada.accumulate(torch.ones([4]))
    assert ada.update(pipe) == 0.5

    # D always wrong (sign -1): p falls, down to 0.
    pipe.p.fill_(0.0007)
    ada.accumulate(-torch.ones([16]))
    ada.update(pipe)
    assert math.isclose(float(pipe.p), 0.0002, rel_tol=1e-4)
    ada.accumulate(-torch.ones([16]))
    assert ada.update(pipe) == 0

    # The mean over all values since the last update counts; exactly the target counts as "too high".
    ada.accumulate(torch.tensor([1.0, 1, 1, 1, 1, 1, 1, 1]))
    ada.accumulate(torch.tensor([-1.0, -1]))  # Mean 0.6.
    assert ada.update(pipe) == pytest.approx(0.0005)
    ada.accumulate(torch.tensor([1.0, 1, -1, -1]))  # Mean 0 < 0.6.
    assert ada.update(pipe) == 0

    # Nothing accumulated: p stays.
    pipe.p.fill_(0.1)
    assert ada.update(pipe) == pytest.approx(0.1)
