"""Tests of the low-res video discriminator (long_video_gan/discriminator_lres.py)."""

import pickle

import pytest
import torch
import torch.nn.functional as F

from long_video_gan.discriminator_lres import (
    TINY_KWARGS,
    Conv3dLayer,
    DiscriminatorEpilogue,
    Downsample3d,
    VideoDiscriminator,
    VideoMinibatchStdLayer,
)
from tests.reference_data import read_state_dict_table, state_dict_layout

pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py: one intra-op thread for tiny tensors


def _tiny_D(seed: int = 0, seq_length: int = 16, **overrides) -> VideoDiscriminator:
    torch.manual_seed(seed)
    return VideoDiscriminator(seq_length=seq_length, max_edge=64, **{**TINY_KWARGS, **overrides})


def _video(seed: int, n: int = 2, t: int = 16) -> torch.Tensor:
    return torch.randn([n, 3, t, 36, 64], generator=torch.Generator().manual_seed(seed))


def test_default_state_dict_matches_reference():
    torch.manual_seed(0)
    D = VideoDiscriminator(seq_length=128, max_edge=64)
    assert state_dict_layout(D) == read_state_dict_table("lres_D.tsv")
    assert sum(p.numel() for p in D.parameters()) == 46_424_609
    assert D.spatail_scale == 16 and D.temporal_scale == 8 and D.epilogue.in_seq_length == 16
    assert [(b.spatial_down, b.temporal_down) for b in D.blocks] == [(True, False)] + [(True, True)] * 3
    assert torch.equal(D.blocks[1].conv_1.downsample._downsample_filter, torch.tensor([1.0, 3, 3, 1]) / 8)
    # Every weight is N(0, 1), every bias zero.
    assert all(torch.all(p == 0) for name, p in D.named_parameters() if name.endswith("bias"))
    assert abs(D.epilogue.linear_0.weight.std().item() - 1) < 0.01


def test_tiny_output_shape_and_finite_gradients():
    D = _tiny_D()
    video = _video(1).requires_grad_(True)
    logits = D(video)
    assert logits.shape == (2, 1) and logits.dtype == torch.float32
    logits.sum().backward()
    assert torch.isfinite(video.grad).all() and video.grad.abs().sum() > 0
    for name, p in D.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_batch_independence_and_determinism():
    D = _tiny_D()
    video = _video(2)
    with torch.no_grad():
        both = D(video)
        assert torch.equal(both, D(video))
        torch.testing.assert_close(both, torch.cat([D(video[:1]), D(video[1:])]), rtol=1e-5, atol=1e-6)


def test_input_is_zero_padded_to_a_square():
    D = _tiny_D()
    video = _video(3)
    padded = F.pad(video, [0, 0, 14, 14])  # 36 -> 64 rows, 14 above and 14 below.
    with torch.no_grad():
        assert torch.equal(D(video), D(padded))
    with pytest.raises(ValueError, match="max_edge"):
        D(F.pad(video, [0, 2]))


@pytest.mark.parametrize("seq_length", [1, 2, 3, 4, 6, 8, 12, 16, 24, 128])
def test_allowed_seq_lengths(seq_length):
    D = _tiny_D(seq_length=seq_length)
    assert D.epilogue.in_seq_length * D.temporal_scale == seq_length
    assert D.epilogue.in_seq_length >= 1
    if seq_length <= 16:
        with torch.no_grad():
            assert D(_video(4, n=1, t=seq_length)).shape == (1, 1)


@pytest.mark.parametrize("seq_length", [5, 10, 20, 100])
def test_rejected_seq_lengths(seq_length):
    with pytest.raises(ValueError, match="seq_length"):
        _tiny_D(seq_length=seq_length)


def test_constructor_errors_name_the_argument():
    with pytest.raises(ValueError, match="seq_length"):
        _tiny_D(seq_length=0)
    with pytest.raises(ValueError, match="max_edge"):
        VideoDiscriminator(seq_length=16, max_edge=48, **TINY_KWARGS)
    with pytest.raises(ValueError, match="epilogue_kwargs"):
        VideoDiscriminator(seq_length=16, max_edge=64, epilogue_kwargs=dict(in_seq_length=3))
    with pytest.raises(ValueError, match="num_downsamples"):
        DiscriminatorEpilogue(num_downsamples=1)


def test_wrong_clip_length_is_rejected():
    D = _tiny_D()
    with pytest.raises(AssertionError, match="dimension 2"):
        D(_video(5, t=8))


def test_pickle_round_trip_keeps_outputs():
    D = _tiny_D()
    D2 = pickle.loads(pickle.dumps(D))
    assert type(D2).__name__ == "VideoDiscriminator" and D2 is not D
    assert D2.init_kwargs["seq_length"] == 16
    video = _video(6)
    with torch.no_grad():
        assert torch.equal(D(video), D2(video))


def test_fp16_flags_ignored_on_cpu():
    D32 = _tiny_D(seed=7)
    D16 = _tiny_D(seed=7, num_fp16_res=4)
    assert [b.use_fp16 for b in D16.blocks] == [True] * 4
    video = _video(8)
    with torch.no_grad():
        assert torch.equal(D32(video), D16(video))


@pytest.mark.gpu
def test_fp16_close_to_fp32_on_cuda():
    D32 = _tiny_D(seed=7).cuda()
    D16 = _tiny_D(seed=7, num_fp16_res=4).cuda()
    video = _video(8).cuda()
    with torch.no_grad():
        a, b = D32(video), D16(video)
    assert b.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=0, atol=2e-2 * max(a.abs().max().item(), 1))


def test_downsample3d_formula():
    x = torch.randn([1, 2, 6, 4, 8], generator=torch.Generator().manual_seed(9))
    f = torch.tensor([1.0, 3, 3, 1]) / 8

    def down_axis(v, dim):  # y[j] = sum_k f[k] v[2j + k - 1], zero outside.
        v = v.movedim(dim, -1)
        vp = F.pad(v, [1, 1])
        out = torch.stack([(vp[..., 2 * j : 2 * j + 4] * f).sum(-1) for j in range(v.shape[-1] // 2)], dim=-1)
        return out.movedim(-1, dim)

    torch.testing.assert_close(Downsample3d(False, True)(x), down_axis(x, 2))
    torch.testing.assert_close(Downsample3d(True, False)(x), down_axis(down_axis(x, 3), 4))
    torch.testing.assert_close(Downsample3d(True, True)(x), down_axis(down_axis(down_axis(x, 3), 4), 2))


def test_conv_layers_clamp_at_256():
    torch.manual_seed(10)
    skip = Conv3dLayer(4, 4, 1, 1, bias=False, conv_clamp=256)
    x = torch.full([1, 4, 2, 3, 3], 1000.0)
    assert skip(x).abs().max().item() == 256


def test_epilogue_flatten_order():
    """conv1d_0 input channel c*R*R + h*R + w; linear_0 input index c*T + t (channel-major)."""
    torch.manual_seed(11)
    ep = DiscriminatorEpilogue(in_res=2, in_seq_length=3, in_channels=2, channels=5, num_conv1d_layers=1)
    x = torch.randn([1, 2, 3, 2, 2], generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        ep.conv1d_0._bias.zero_()
        w = ep.conv1d_0.weight.zero_()
        w[4, 1 * 4 + 1 * 2 + 0, 0] = 1.0  # Output channel 4 reads input (c=1, h=1, w=0).
        ep.linear_0.weight.zero_()
        ep.linear_0.weight[0, 4 * 3 + 2] = 1.0  # Hidden unit 0 reads (channel 4, t=2).
        ep.linear_1.weight.zero_()
        ep.linear_1.weight[0, 0] = 1.0
        out = ep(x)
    lrelu = lambda v: F.leaky_relu(v, 0.2) * 2**0.5
    expected = lrelu(lrelu(x[0, 1, 2, 1, 0] / 8**0.5) / 15**0.5) / 5**0.5  # Equalized-lr gains.
    torch.testing.assert_close(out[0, 0], expected)


def test_video_mbstd_layer_per_frame_group_std():
    """Group n mod (N/G); population std over the group, averaged over each channel slice and H, W, kept per frame."""
    x = torch.randn([4, 6, 3, 2, 2], generator=torch.Generator().manual_seed(13))
    out = VideoMinibatchStdLayer(group_size=2, num_channels=2)(x)
    assert out.shape == (4, 8, 3, 2, 2)
    torch.testing.assert_close(out[:, :6], x)
    for n in range(4):
        pair = x[[n % 2, n % 2 + 2]]  # Videos 0 and 2 form one group, 1 and 3 the other.
        for f in range(2):
            std = (pair[:, 3 * f : 3 * f + 3].std(dim=0, unbiased=False).square() + 1e-8).sqrt()  # [3, T, H, W]
            expected = std.mean(dim=[0, 2, 3])  # [T]
            torch.testing.assert_close(out[n, 6 + f], expected[:, None, None].expand(3, 2, 2))
    # Identical videos: the appended maps are ~0 (only the 1e-8 floor); a batch that splits badly is refused.
    same = VideoMinibatchStdLayer(4)(x[:1].repeat(4, 1, 1, 1, 1))
    assert same[:, 6].max().item() < 1e-3
    with pytest.raises(ValueError, match="multiple of the mbstd group size"):
        VideoMinibatchStdLayer(4)(x[:3].repeat(2, 1, 1, 1, 1))


def test_mbstd_option_is_off_by_default_and_widens_only_conv1d_0():
    """Off: the release's layout. On: conv1d_0 reads (C + F) * 4 * 4 inputs and D's output depends on the batch."""
    plain = _tiny_D()
    assert plain.epilogue.mbstd is None
    with_mbstd = _tiny_D(epilogue_kwargs=dict(TINY_KWARGS["epilogue_kwargs"], mbstd_num_channels=1))
    diff = {k: (v.shape, with_mbstd.state_dict()[k].shape) for k, v in plain.state_dict().items()}
    changed = {k for k, (a, b) in diff.items() if a != b}
    assert changed == {"epilogue.conv1d_0.weight"}
    assert with_mbstd.state_dict()["epilogue.conv1d_0.weight"].shape[1] == (16 + 1) * 16
    video = _video(1, n=3)
    with torch.no_grad():
        # Video 0's logit moves with its group partner under mbstd; without it the batch does not matter.
        assert not torch.allclose(with_mbstd(video[[0, 1]])[0], with_mbstd(video[[0, 2]])[0])
        torch.testing.assert_close(plain(video[[0, 1]])[0], plain(video[[0, 2]])[0])
    with pytest.raises(ValueError, match="mbstd_num_channels"):
        DiscriminatorEpilogue(mbstd_num_channels=-1)
