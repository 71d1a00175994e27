"""Tests of the super-resolution discriminator (long_video_gan/discriminator_sres.py): layout against the original's
state dict, input handling (the up-sampled lr clip and the hr clip stacked in channels), conv semantics, and
properties of a tiny configuration (incl. R1 through the ADA pipe)."""

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F

from long_video_gan import augment, discriminator_sres
from long_video_gan.discriminator_sres import TINY_KWARGS, VideoDiscriminator
from tests.reference_data import read_state_dict_table, state_dict_layout
from torch_utils.ops import grid_sample_gradfix

# ----------------------------------------------------------------------------


def tiny_D(seed: int = 0, **kwargs) -> VideoDiscriminator:
    torch.manual_seed(seed)
    D = VideoDiscriminator(**{**TINY_KWARGS, **kwargs})
    with torch.no_grad():
        for name, tensor in D.named_parameters():
            if name.endswith("bias"):
                tensor.normal_(0, 0.1)
    return D


def clips(batch_size: int = 2, seed: int = 0, hr=(36, 64), lr=(9, 16), frames: int = 4):
    g = torch.Generator().manual_seed(seed)
    lr_video = torch.rand([batch_size, 3, frames, *lr], generator=g) * 2 - 1
    hr_video = torch.rand([batch_size, 3, frames, *hr], generator=g) * 2 - 1
    return lr_video, hr_video


# ----------------------------------------------------------------------------
# Default (training) configuration.


def test_default_state_dict_matches_reference():
    torch.manual_seed(0)
    D = VideoDiscriminator()
    assert state_dict_layout(D) == read_state_dict_table("sres_D.tsv")
    assert sum(p.numel() for p in D.parameters()) == 23_997_825
    assert D.block_resolutions == [256, 128, 64, 32, 16, 8]
    assert [getattr(D, f"b{r}").use_fp16 for r in D.block_resolutions] == [True] * 4 + [False] * 2
    assert D.b256.fromrgb.in_channels == 24 and D.b4.mbstd is None
    assert D.b256.conv0.resample_filter.shape == (4, 4)
    torch.testing.assert_close(D.b256.resample_filter, torch.outer(*[torch.tensor([1.0, 3, 3, 1]) / 8] * 2))
    torch.testing.assert_close(D.upsample.filter, torch.tensor([1.0, 3, 5, 7, 7, 5, 3, 1]) / 32)


@pytest.mark.slow
def test_default_forward_shape():
    torch.manual_seed(0)
    D = VideoDiscriminator()
    lr_video, hr_video = clips(batch_size=1, hr=(144, 256), lr=(36, 64))
    with torch.no_grad():
        logits = D(lr_video, hr_video)
    assert logits.shape == (1, 1) and logits.dtype == torch.float32 and torch.isfinite(logits).all()


# ----------------------------------------------------------------------------
# Building blocks.


def test_bilinear_upsample_x4():
    up = discriminator_sres.SpatialBilinearUpsample(scale=4)
    ones = torch.ones([1, 1, 2, 5, 6])
    out = up(ones)
    assert out.shape == (1, 1, 2, 20, 24)
    torch.testing.assert_close(out[0, 0, 0, 10, :3], torch.tensor([0.625, 0.875, 1.0]))
    torch.testing.assert_close(out[0, 0, 1, 0, 0], torch.tensor(0.390625))
    # Interior equals half-pixel-centred bilinear interpolation.
    x = torch.rand([1, 3, 2, 5, 6], generator=torch.Generator().manual_seed(0))
    ref = F.interpolate(x.flatten(1, 2), scale_factor=4, mode="bilinear", align_corners=False)
    torch.testing.assert_close(up(x).flatten(1, 2)[:, :, 2:-2, 2:-2], ref[:, :, 2:-2, 2:-2])


def test_conv2d_layer_down2_matches_spec():
    torch.manual_seed(0)
    x = torch.randn([2, 3, 8, 8])
    f = torch.outer(*[torch.tensor([1.0, 3, 3, 1]) / 8] * 2)

    # 3x3 with down 2: zero-pad 2, 4x4 FIR, then stride-2 conv without padding; lrelu gain sqrt(2), clamp.
    layer = discriminator_sres.Conv2dLayer(3, 4, 3, activation="lrelu", down=2, conv_clamp=256)
    w = layer.weight / 27**0.5
    y = F.conv2d(F.pad(x, [2, 2, 2, 2]), f.expand(3, 1, 4, 4), groups=3)
    ref = F.leaky_relu(F.conv2d(y, w, bias=layer.bias, stride=2), 0.2) * 2**0.5
    torch.testing.assert_close(layer(x), ref)

    # 1x1 skip with down 2: zero-pad 1, 4x4 FIR with stride 2, then the 1x1 conv.
    skip = discriminator_sres.Conv2dLayer(3, 4, 1, bias=False, down=2)
    y = F.conv2d(F.pad(x, [1, 1, 1, 1]), f.expand(3, 1, 4, 4), groups=3, stride=2)
    torch.testing.assert_close(skip(x), F.conv2d(y, skip.weight / 3**0.5))

    # No resampling: plain correlation with padding k // 2.
    plain = discriminator_sres.Conv2dLayer(3, 4, 3)
    torch.testing.assert_close(plain(x), F.conv2d(x, plain.weight / 27**0.5, plain.bias, padding=1))


def test_input_is_padded_and_folded():
    D = tiny_D()
    lr_video, hr_video = clips(batch_size=1)
    seen = []
    D.b64.fromrgb.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    D(lr_video, hr_video)
    img = seen[0]  # [1, 24, 64, 64]: 14 zero rows above and below, channel c * T + t.
    assert img.shape == (1, 24, 64, 64)
    assert img[:, :, :14].abs().max() == 0 and img[:, :, 50:].abs().max() == 0
    up = D.upsample(lr_video)
    for c in range(3):
        for t in range(4):
            assert torch.equal(img[0, c * 4 + t, 14:50], up[0, c, t])
            assert torch.equal(img[0, 12 + c * 4 + t, 14:50], hr_video[0, c, t])


def test_minibatch_std_layer():
    x = torch.randn([4, 6, 4, 4], generator=torch.Generator().manual_seed(0))
    layer = discriminator_sres.MinibatchStdLayer(group_size=2, num_channels=2)
    out = layer(x)
    assert out.shape == (4, 8, 4, 4)
    # Sample n is in group n mod 2: groups {0, 2} and {1, 3}; slice f covers channels 3f .. 3f + 2.
    for n, group in [(0, [0, 2]), (1, [1, 3]), (2, [0, 2]), (3, [1, 3])]:
        for f in range(2):
            members = x[group][:, 3 * f : 3 * f + 3]
            ref = (members.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
            torch.testing.assert_close(out[n, 6 + f], ref.expand(4, 4))
    D = tiny_D(minibatch_std_num_channels=1)
    assert D.b4.conv.in_channels == 17
    assert D(*clips(batch_size=4)).shape == (4, 1)


# ----------------------------------------------------------------------------
# Tiny-configuration properties.


def test_tiny_shapes_determinism_and_batch_independence():
    D = tiny_D()
    lr_video, hr_video = clips(batch_size=2)
    with torch.no_grad():
        logits = D(lr_video, hr_video)
        again = D(lr_video, hr_video)
        single = torch.cat([D(lr_video[i : i + 1], hr_video[i : i + 1]) for i in range(2)])
        # Conditioning given at high resolution is used as is.
        at_hr = D(D.upsample(lr_video), hr_video)
    assert logits.shape == (2, 1) and logits.dtype == torch.float32
    assert torch.equal(logits, again)
    torch.testing.assert_close(logits, single, rtol=0, atol=1e-5)
    torch.testing.assert_close(logits, at_hr, rtol=0, atol=1e-6)
    assert (logits[0] - logits[1]).abs() > 1e-4


def test_pickle_round_trip_keeps_outputs():
    D = tiny_D()
    lr_video, hr_video = clips()
    D2 = pickle.loads(pickle.dumps(D))
    D3 = copy.deepcopy(D)
    with torch.no_grad():
        ref = D(lr_video, hr_video)
        assert torch.equal(D2(lr_video, hr_video), ref)
        assert torch.equal(D3(lr_video, hr_video), ref)
    assert type(D2).__name__ == "VideoDiscriminator"


def test_r1_double_backward_through_ada():
    D = tiny_D()
    pipe = augment.ada_pipe()
    pipe.p.fill_(0.5)
    lr_video, hr_video = clips(batch_size=2, seed=3)
    previous = grid_sample_gradfix.enabled
    grid_sample_gradfix.enabled = True
    try:
        hr_video.requires_grad_(True)
        # Same transform for lr (up-sampled) and hr: concatenated along time, as the sres training step does.
        both = pipe(torch.cat([D.upsample(lr_video), hr_video], dim=2), generator=torch.Generator().manual_seed(0))
        logits = D(both[:, :, :4], both[:, :, 4:])
        (grad,) = torch.autograd.grad(logits.sum(), hr_video, create_graph=True)
        penalty = grad.square().sum(dim=[1, 2, 3, 4]).mean()
        penalty.backward()
    finally:
        grid_sample_gradfix.enabled = previous
    assert torch.isfinite(penalty) and penalty > 0
    # The output bias does not enter the input gradient (no R1 gradient at all); the other biases enter only through
    # the piecewise-constant lrelu slopes (zero R1 gradient); every weight gets a non-zero, finite one.
    grads = {name: p.grad for name, p in D.named_parameters()}
    assert [name for name, g in grads.items() if g is None] == ["b4.out.bias"]
    assert all(torch.isfinite(g).all() for g in grads.values() if g is not None)
    assert all(g.abs().sum() > 0 for name, g in grads.items() if name.endswith("weight"))


def test_bad_inputs_name_the_argument():
    D = tiny_D()
    lr_video, hr_video = clips()
    with pytest.raises(ValueError, match="hr_video must be"):
        D(lr_video, hr_video[:, :, :3])
    with pytest.raises(ValueError, match="lr_video must be 9x16 or 36x64, got 10x16"):
        D(clips(lr=(10, 16))[0], hr_video)
    with pytest.raises(ValueError, match="seq_length"):
        VideoDiscriminator(**{**TINY_KWARGS, "seq_length": 0})
    with pytest.raises(ValueError, match="pool_mode"):
        VideoDiscriminator(**{**TINY_KWARGS, "pool_mode": "mean"})
    with pytest.raises(ValueError, match="power of two"):
        VideoDiscriminator(**{**TINY_KWARGS, "hr_width": 48, "lr_width": 12})


@pytest.mark.gpu
def test_fp16_close_to_fp32_on_cuda():
    D = tiny_D().cuda()
    lr_video, hr_video = [x.cuda() for x in clips()]
    with torch.no_grad():
        out16 = D(lr_video, hr_video)
        out32 = D(lr_video, hr_video, force_fp32=True)
    assert out16.dtype == torch.float32
    assert (out16 - out32).abs().max() < 0.05 * out32.abs().max() + 1e-3
