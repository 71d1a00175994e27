"""Tests of the ADA video augmentation pipe and its p controller (long_video_gan/augment.py, SPEC §4.9)."""

import copy
import math
import pickle

import pytest
import torch

from long_video_gan import augment
from long_video_gan.augment import AdaController, AugmentPipe

# ----------------------------------------------------------------------------------------------------------------------


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def smooth_video(batch_size: int = 8, frames: int = 3, height: int = 18, width: int = 32, seed: int = 0):
    """Band-limited random content in [-1, 1] (bilinear up-sampling of coarse noise), different per frame."""
    coarse = torch.rand([batch_size, 3 * frames, height // 3, width // 4], generator=gen(seed)) * 2 - 1
    fine = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return fine.reshape(batch_size, 3, frames, height, width)


def per_video_change(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs().amax(dim=[1, 2, 3, 4])


# ----------------------------------------------------------------------------------------------------------------------


def test_p_zero_is_near_identity():
    video = torch.rand([2, 3, 8, 36, 64], generator=gen(0)) * 2 - 1
    pipe = augment.ada_pipe()
    assert float(pipe.p) == 0
    out = pipe(video, generator=gen(1))
    assert (out - video).abs().max() < 1e-4  # The geometric pass still runs (SPEC: max error about 5e-5).
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
    # Content a * x + b * y: flips and rotations by 90 degrees turn its gradient accordingly. (Values shift by a
    # constant: the symlet's phase puts the geometric pass's flips about 0.4 px off centre, as the filter demands.)
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


# ----------------------------------------------------------------------------------------------------------------------


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
