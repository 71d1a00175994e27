"""Tests of the super-resolution generator (long_video_gan/generator_sres.py): layout against the original's state
dict, the original release's 144x256 layer table, and properties of a tiny configuration."""

import contextlib
import copy
import pickle

import numpy as np
import pytest
import scipy.signal
import torch

from long_video_gan import generator_sres
from long_video_gan.generator_sres import TINY_KWARGS, VideoGenerator
from tests.reference_data import read_state_dict_table, state_dict_layout

# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_G():
    torch.manual_seed(0)
    return VideoGenerator()


def tiny_G(seed: int = 0) -> VideoGenerator:
    torch.manual_seed(seed)
    G = VideoGenerator(**TINY_KWARGS)
    # Random magnitude EMAs and biases so that the properties are not tested at a trivial point.
    with torch.no_grad():
        for name, tensor in G.named_parameters():
            if name.endswith(".bias") and "affine" not in name and "mapping" not in name:
                tensor.normal_(0, 0.1)
    return G


def lr_clip(batch_size: int = 1, frames: int = 12, seed: int = 1, height: int = 9, width: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand([batch_size, 3, frames, height, width], generator=g) * 2 - 1


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------
# Default (training) configuration.


def test_default_state_dict_matches_reference(default_G):
    assert state_dict_layout(default_G) == read_state_dict_table("sres_G.tsv")
    assert sum(p.numel() for p in default_G.parameters()) == 27_169_940


def test_default_layer_table(default_G):
    synthesis = default_G.SG3.synthesis
    expected = [
        # name, in W, in H, in ch, up, down, padding, fp16
        ("L0_36_29_512", 36, 29, 27, 2, 2, [9, 8, 9, 8], False),
        ("L1_36_29_512", 36, 29, 539, 2, 2, [9, 8, 9, 8], False),
        ("L2_36_29_512", 36, 29, 539, 2, 2, [9, 8, 9, 8], False),
        ("L3_52_38_512", 36, 29, 539, 4, 2, [-6, -9, -6, -9], True),
        ("L4_52_38_512", 52, 38, 539, 2, 2, [9, 8, 9, 8], True),
        ("L5_84_56_512", 52, 38, 539, 4, 2, [-6, -9, -6, -9], True),
        ("L6_84_56_512", 84, 56, 539, 2, 2, [9, 8, 9, 8], True),
        ("L7_148_92_512", 84, 56, 539, 4, 2, [-6, -9, -6, -9], True),
        ("L8_148_92_512", 148, 92, 539, 2, 2, [9, 8, 9, 8], True),
        ("L9_148_92_362", 148, 92, 539, 2, 2, [9, 8, 9, 8], True),
        ("L10_276_164_256", 148, 92, 389, 4, 2, [-6, -9, -6, -9], True),
        ("L11_276_164_181", 276, 164, 283, 2, 2, [9, 8, 9, 8], True),
        ("L12_276_164_128", 276, 164, 208, 2, 2, [9, 8, 9, 8], True),
        ("L13_256_144_128", 276, 164, 155, 2, 2, [-11, -12, -11, -12], True),
        ("L14_256_144_3", 256, 144, 155, 1, 1, [0, 0, 0, 0], True),
    ]
    assert synthesis.layer_names == [row[0] for row in expected]
    for name, in_w, in_h, in_ch, up, down, padding, fp16 in expected:
        layer = getattr(synthesis, name)
        assert layer.in_size == [in_w, in_h], name
        assert layer.in_channels == in_ch, name
        assert (layer.up_factor, layer.down_factor) == (up, down), name
        assert layer.padding == padding, name
        assert layer.use_fp16 == fp16, name
    assert synthesis.L14_256_144_3.is_torgb and synthesis.L14_256_144_3.conv_kernel == 1
    assert [getattr(synthesis, n).is_critically_sampled for n in synthesis.layer_names] == [False] * 12 + [True] * 3

    # The original release's schedules: stopbands, transition half-widths and sampling rates per layer.
    schedule = generator_sres.synthesis_schedule(256, 144, 3)
    f_t = [4.2871, 5.7891, 7.8173, 10.5561, 14.2544, 19.2484, 25.9921, 35.0984, 47.3951, 64, 86.4224, 116.7005]
    f_t += [157.5865] * 3
    f_h = [6, 5.1716, 4, 10.3431, 8, 20.6863, 16, 41.3726, 32, 18.7452, 64, 37.4903, 29.5865, 29.5865, 29.5865]
    np.testing.assert_allclose(schedule["stopbands"], f_t, atol=1e-4)
    np.testing.assert_allclose(schedule["half_widths"], f_h, atol=1e-4)
    assert schedule["sampling_rates"].tolist() == [16] * 3 + [32] * 2 + [64] * 2 + [128] * 3 + [256] * 5


def test_default_filters_match_firwin(default_G):
    synthesis = default_G.SG3.synthesis
    # (layer, up taps, up cutoff, up width, down taps, down cutoff, down width, tmp rate), as in the original release.
    rows = [
        (0, 12, 2, 12, 12, 2, 12, 32),
        (3, 24, 4, 8, 12, 5.6569, 20.6863, 64),
        (9, 12, 32, 64, 12, 45.2548, 37.4903, 256),
        (13, 12, 128, 59.1730, 12, 128, 59.1730, 512),
    ]
    for idx, up_taps, up_fc, up_w, down_taps, down_fc, down_w, fs in rows:
        layer = getattr(synthesis, synthesis.layer_names[idx])
        assert layer.tmp_sampling_rate == fs
        for filt, taps, fc, width in [
            (layer.up_filter, up_taps, up_fc, up_w),
            (layer.down_filter, down_taps, down_fc, down_w),
        ]:
            assert filt.shape == (taps,) and filt.dtype == torch.float32
            ref = scipy.signal.firwin(taps, cutoff=fc, width=width, fs=fs)
            np.testing.assert_allclose(filt.numpy(), ref, atol=1e-4)
    assert synthesis.L14_256_144_3.up_filter is None and synthesis.L14_256_144_3.down_filter is None

    # Conditioning resamplers: ÷4, ÷2, identity, ×2, ×4, with the 12-tap s=2 filter of the low-res Kaiser resamplers.
    kinds = [(type(m).__name__, getattr(m, "scale", 1)) for m in default_G.SG3.resamples]
    assert (
        kinds
        == [("KaiserDownsample", 4)] * 4
        + [("KaiserDownsample", 2)] * 2
        + [("Identity", 1)] * 2
        + [("KaiserUpsample", 2)] * 3
        + [("KaiserUpsample", 4)] * 4
    )
    half = [-1.4423e-6, -1.8817e-4, 2.6559e-3, 3.9198e-2, 1.5849e-1, 2.9985e-1]
    np.testing.assert_allclose(default_G.SG3.resamples[4].filter.numpy(), half + half[::-1], rtol=1e-3, atol=1e-9)


def test_default_conditioning_sizes(default_G):
    SG3 = default_G.SG3
    x = torch.zeros([1, 27, 84, 84])
    resampled = {idx: tuple(SG3.resamples[idx](x).shape[2:]) for idx in [0, 4, 6, 8, 11]}
    assert resampled == {0: (21, 21), 4: (42, 42), 6: (84, 84), 8: (168, 168), 11: (336, 336)}
    assert SG3.cond_sizes[0] == [36, 29] and SG3.cond_sizes[11] == [276, 164] and SG3.cond_sizes[14] == [256, 144]

    # Crops and replicate pads of the original's synthesis layers, checked on position-coded maps.
    def coded(size):
        ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        return (ys * 1000 + xs).to(torch.float32)[None, None]

    out = generator_sres._crop_or_pad(coded(168), 148, 92)
    assert out[0, 0, 0, 0] == 38 * 1000 + 10
    out = generator_sres._crop_or_pad(coded(336), 256, 144)
    assert out[0, 0, 0, 0] == 96 * 1000 + 40
    out = generator_sres._crop_or_pad(coded(42), 52, 38)  # y crop 2, x pad (5, 5)
    assert out.shape[2:] == (38, 52) and out[0, 0, 0, 5] == 2 * 1000 and out[0, 0, 0, 0] == 2 * 1000
    assert out[0, 0, 0, 51] == 2 * 1000 + 41
    out = generator_sres._crop_or_pad(coded(21), 36, 29)  # pad x (7, 8), y (4, 4)
    assert out[0, 0, 4, 7] == 0 and out[0, 0, 24, 27] == 20 * 1000 + 20 and out[0, 0, 28, 35] == 20 * 1000 + 20
    assert out[0, 0, 3, 6] == 0


def kaiser_1d_reference(row: np.ndarray, taps: np.ndarray, scale: int, up: bool) -> np.ndarray:
    """The Kaiser resamplers along one axis: replicate pad, zero insertion / padding, valid FIR, decimation."""
    if up:
        row = np.pad(row, 1, mode="edge")
        inserted = np.zeros(len(row) * scale)
        inserted[::scale] = row
        padded = np.pad(inserted, {2: (4, 3), 4: (9, 6)}[scale])
        return np.convolve(padded, taps * scale, mode="valid")
    padded = np.pad(np.pad(row, scale, mode="edge"), {2: 3, 4: 6}[scale])
    return np.convolve(padded, taps, mode="valid")[::scale]


@pytest.mark.parametrize("kind,scale,size", [("down", 4, 21), ("down", 2, 42), ("up", 2, 168), ("up", 4, 336)])
def test_kaiser_resamplers_match_definition(kind, scale, size):
    cls = generator_sres.KaiserUpsample if kind == "up" else generator_sres.KaiserDownsample
    resample = cls(scale=scale)
    taps = scipy.signal.firwin(6 * scale, cutoff=1.0, width=6.0, fs=4 * scale)
    np.testing.assert_allclose(resample.filter.numpy(), taps, rtol=1e-6, atol=1e-9)
    x = torch.rand([1, 2, 84, 84], generator=gen(0), dtype=torch.float64).to(torch.float32)
    out = resample(x)
    assert out.shape == (1, 2, size, size)
    ref = x[0, 1].double().numpy()
    ref = np.stack([kaiser_1d_reference(r, taps, scale, kind == "up") for r in ref])  # Along width.
    ref = np.stack([kaiser_1d_reference(c, taps, scale, kind == "up") for c in ref.T]).T  # Along height.
    np.testing.assert_allclose(out[0, 1].numpy(), ref, rtol=0, atol=1e-5)


def test_modulated_conv2d_matches_definition():
    g = gen(0)
    x = torch.randn([2, 3, 5, 6], generator=g)
    w = torch.randn([4, 3, 3, 3], generator=g)
    s = torch.randn([2, 3], generator=g)
    gain = torch.tensor(0.7)
    out = generator_sres.modulated_conv2d(x, w, s, demodulate=True, padding=2, input_gain=gain)
    assert out.shape == (2, 4, 7, 8)
    w1 = w / w.square().mean(dim=[1, 2, 3], keepdim=True).sqrt()
    s1 = s / s.square().mean().sqrt()  # Over the whole batch.
    for n in range(2):
        wn = w1 * s1[n].reshape(1, 3, 1, 1)
        wn = wn / (wn.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt() * gain
        patches = torch.nn.functional.unfold(torch.nn.functional.pad(x[n : n + 1], [2, 2, 2, 2]), 3)  # [1, 27, L]
        ref = (wn.reshape(4, 27) @ patches[0]).reshape(4, 7, 8)  # Correlation: no kernel flip.
        torch.testing.assert_close(out[n], ref, rtol=1e-5, atol=1e-5)
    # Without demodulation (ToRGB) the style is applied as is.
    out = generator_sres.modulated_conv2d(x, w[:, :, :1, :1], s, demodulate=False)
    ref = torch.einsum("oi,ni,nihw->nohw", w[:, :, 0, 0], s, x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_prep_cond_channel_order():
    G = tiny_G()
    lr = lr_clip(frames=10)  # Two output frames.
    # Tiny config: side 16, margin 4, so x is padded (4, 4) and y (7, 8) to 24x24; layer 0's resample is Identity.
    padded = torch.nn.functional.pad(lr.flatten(1, 2), [4, 4, 7, 8], mode="replicate").reshape(1, 3, 10, 24, 24)
    stacks = []
    G.SG3.resamples[0].register_forward_pre_hook(lambda module, args: stacks.append(args[0]))
    G.SG3.prep_cond(lr)
    stack = stacks[0]
    assert stack.shape == (2, 27, 24, 24)
    for t in range(2):
        for c in range(3):
            for k in range(9):
                assert torch.equal(stack[t, c * 9 + k], padded[0, c, t + k]), (t, c, k)


def test_default_forward_shape_on_meta_device():
    # Shapes only (no arithmetic): the full 4-frame default forward takes minutes on 2 CPU cores.
    with torch.device("meta"):
        G = VideoGenerator()
    out = G(torch.empty([1, 3, 4 + 8, 36, 64], device="meta"))
    assert out.shape == (1, 3, 4, 144, 256) and out.dtype == torch.float32
    segments = list(G.sample_video_segments(torch.empty([1, 3, 8 + 8, 36, 64], device="meta"), segment_length=4))
    assert [tuple(s.shape) for s in segments] == [(1, 3, 4, 144, 256)] * 2


@pytest.mark.slow
def test_default_forward_values(default_G):
    # One output frame (9 low-res frames) keeps this near a minute on 2 busy cores; the shapes for 4 frames are
    # checked on the meta device above.
    lr = lr_clip(frames=9, height=36, width=64)
    with torch.no_grad():
        out = default_G(lr, generator_z=gen(0))
    assert out.shape == (1, 3, 1, 144, 256) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.abs().max() <= 64 and out.std() > 1e-3


# ----------------------------------------------------------------------------
# Tiny-configuration properties.


def test_tiny_shapes_and_determinism():
    G = tiny_G()
    lr = lr_clip(batch_size=2)
    with torch.no_grad():
        a = G(lr, generator_z=gen(5))
        b = G(lr, generator_z=gen(5))
        c = G(lr, generator_z=gen(6))
    assert a.shape == (2, 3, 4, 36, 64) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3
    assert a.std() > 1e-3


def test_segments_equal_one_call():
    G = tiny_G()
    lr = lr_clip(batch_size=2, frames=14)  # Six output frames.
    with torch.no_grad():
        full = G(lr, generator_z=gen(3))
        segments = list(G.sample_video_segments(lr, segment_length=2, generator_z=gen(3)))
    assert len(segments) == 3 and all(s.shape == (2, 3, 2, 36, 64) for s in segments)
    torch.testing.assert_close(torch.cat(segments, dim=2), full, rtol=0, atol=1e-5)


def test_segments_checks_run_lazily():
    G = tiny_G()
    segments = G.sample_video_segments(lr_clip(frames=12), segment_length=3)
    with pytest.raises(ValueError, match="segment_length"):
        next(segments)


def test_batch_of_two_equals_two_batches_of_one():
    G = tiny_G()
    lr = lr_clip(batch_size=2)
    z = torch.randn([2, 16], generator=gen(7))
    with torch.no_grad():
        both = G.SG3(z, lr)
        single = torch.cat([G.SG3(z[i : i + 1], lr[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(both, single, rtol=0, atol=1e-5)


def test_output_depends_only_on_its_window():
    G = tiny_G()
    lr = lr_clip(frames=12)  # Output frame t reads lr frames t .. t + 8 (centre t + 4).
    z = torch.randn([1, 16], generator=gen(2))
    with torch.no_grad():
        base = G.SG3(z, lr)
        for frame in range(12):
            bumped = lr.clone()
            bumped[:, :, frame] += torch.rand(bumped[:, :, frame].shape, generator=gen(frame))
            out = G.SG3(z, bumped)
            for t in range(4):
                diff = (out[:, :, t] - base[:, :, t]).abs().max().item()
                if t <= frame <= t + 8:
                    assert diff > 1e-4, (frame, t)
                else:
                    assert diff < 1e-6, (frame, t)


def test_pickle_round_trip_keeps_outputs():
    G = tiny_G()
    lr = lr_clip()
    G2 = pickle.loads(pickle.dumps(G))
    G3 = copy.deepcopy(G)
    with torch.no_grad():
        ref = G(lr, generator_z=gen(1))
        assert torch.equal(G2(lr, generator_z=gen(1)), ref)
        assert torch.equal(G3(lr, generator_z=gen(1)), ref)
    assert type(G2).__name__ == "VideoGenerator"
    assert G2.init_kwargs == TINY_KWARGS


def test_emas_update_only_when_beta_below_one():
    G = tiny_G()
    lr = lr_clip()
    emas = lambda: [b.clone() for n, b in G.named_buffers() if n.endswith("magnitude_ema") or n.endswith("w_avg")]
    before = emas()
    with torch.no_grad():
        G(lr, generator_z=gen(0))
    assert all(torch.equal(a, b) for a, b in zip(before, emas()))
    with torch.no_grad():
        G(lr, generator_z=gen(0), magnitude_ema_beta=0.999)
    after = emas()
    assert all(not torch.equal(a, b) for a, b in zip(before, after))
    # Layer 0 reads the conditioning alone; its EMA moved from 1 by (1 - 0.999) * (mean square - 1).
    magnitude = G.SG3.prep_cond(lr)[0].square().mean()
    layer0 = getattr(G.SG3.synthesis, G.SG3.synthesis.layer_names[0])
    torch.testing.assert_close(layer0.magnitude_ema, 0.999 + 0.001 * magnitude)


def test_double_backward_through_filtered_lrelu():
    G = tiny_G()
    lr = lr_clip().requires_grad_(True)
    out = G(lr, generator_z=gen(0))
    (grad,) = torch.autograd.grad(out.square().sum(), lr, create_graph=True)
    grad.square().sum().backward()
    grads = [p.grad for p in G.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def test_cpu_training_path_gradients_equal_the_reference():
    # With gradients on the CPU, filtered_lrelu runs its memory-lean autograd path (uint8 codes saved for backward);
    # the reference ops (fast paths off) must give the same output, parameter gradients and double-backward result.
    from torch_utils.ops import fast_cpu

    G = tiny_G()
    lr = lr_clip()
    results = []
    for enabled in (True, False):
        G.zero_grad(set_to_none=True)
        lr_in = lr.clone().requires_grad_(True)
        with contextlib.nullcontext() if enabled else fast_cpu.disabled():
            out = G(lr_in, generator_z=gen(0))
            (grad_lr,) = torch.autograd.grad(out.square().sum(), lr_in, create_graph=True)
            (grad_lr.square().sum() + out.square().sum()).backward()
        kinds = {type(n).__name__ for n in _graph_nodes(out.grad_fn)}
        assert ("FilteredLReluBackward" in kinds) == enabled, kinds
        results.append([out.detach(), grad_lr.detach()] + [p.grad for p in G.parameters()])
    for fast, ref in zip(*results):
        torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-4 * max(ref.abs().max().item(), 1e-3))


def _graph_nodes(fn, seen=None) -> list:
    """Every node of an autograd graph."""
    seen = set() if seen is None else seen
    stack, nodes = [fn], []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        nodes.append(node)
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    return nodes


def test_bad_inputs_name_the_argument():
    G = tiny_G()
    with pytest.raises(ValueError, match="lr_video.*dimension 3"):
        G(lr_clip(height=10))
    with pytest.raises(ValueError, match=r"lr_video must have more than 2 \* temporal_context = 8 frames, got 8"):
        G(lr_clip(frames=8))
    with pytest.raises(ValueError, match="lr_video must be"):
        G(torch.zeros([3, 12, 9, 16]))
    with pytest.raises(ValueError, match="channel_base"):
        VideoGenerator(**{**TINY_KWARGS, "channel_base": 32})
    with pytest.raises(ValueError, match="hr_width"):
        VideoGenerator(**{**TINY_KWARGS, "hr_width": 0})
    with pytest.raises(ValueError, match="fourfeats"):
        VideoGenerator(**{**TINY_KWARGS, "fourfeats": True})


@pytest.mark.gpu
def test_fp16_close_to_fp32_on_cuda():
    G = tiny_G().cuda()
    lr = lr_clip(batch_size=2).cuda()
    z = torch.randn([2, 16], device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    with torch.no_grad():
        out16 = G.SG3(z, lr)
        out32 = G.SG3(z, lr, force_fp32=True)
    assert out16.dtype == torch.float32
    assert (out16 - out32).abs().max() < 0.05 * out32.abs().max()
