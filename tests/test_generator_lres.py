"""Tests of the low-res video generator (long_video_gan/generator_lres.py): layout, bookkeeping and properties."""

import math
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F

from long_video_gan import generator_lres
from long_video_gan.discriminator_lres import TINY_KWARGS as D_TINY_KWARGS
from long_video_gan.discriminator_lres import VideoDiscriminator
from long_video_gan.generator_lres import (
    TINY_KWARGS,
    BlurredNoise,
    LinearResample,
    MagnitudeEMA,
    SpatialBilinearUpsample,
    TemporalKaiserDownsample,
    TemporalLinearUpsample,
    VideoGenerator,
    temporal_modulated_conv3d,
)
from tests.reference_data import read_state_dict_table, state_dict_layout

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_G(seed: int = 0, **overrides) -> VideoGenerator:
    torch.manual_seed(seed)
    return VideoGenerator(**{**TINY_KWARGS, **overrides})


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py: one intra-op thread for tiny tensors


@pytest.fixture(scope="module")
def default_G():
    torch.manual_seed(0)
    return VideoGenerator()


# ----------------------------------------------------------------------------
# Default configuration: layout and fixed buffers.


def test_default_state_dict_matches_reference(default_G):
    assert state_dict_layout(default_G) == read_state_dict_table("lres_G.tsv")
    assert sum(p.numel() for p in default_G.parameters()) == 83_215_939
    # The original's weights load strictly.
    default_G.load_state_dict({k: v.clone() for k, v in default_G.state_dict().items()}, strict=True)


def test_default_fixed_buffers(default_G):
    emb = default_G.temporal_emb
    assert emb.blur_filters.shape == (128, 1, 5000)
    # The original release's values: 7.755 for the 125-tap filter, 49.12 for the 5000-tap one.
    assert emb.output_scale[0, 0, 0].item() == pytest.approx(7.755, abs=1e-3)
    assert emb.output_scale[0, -1, 0].item() == pytest.approx(49.12, abs=1e-2)
    taps = (emb.blur_filters[:, 0] != 0).int().argmax(dim=1)  # First non-zero tap of every row.
    assert 5000 - taps[0].item() == 125 and taps[-1].item() == 0
    assert torch.all(taps[1:] <= taps[:-1])  # Longer filters for higher sampling rates.

    kaiser = default_G.temporal_downsample_latent.filter
    half = torch.tensor([-1.4423e-6, -1.8817e-4, 2.6559e-3, 3.9198e-2, 1.5849e-1, 2.9985e-1])
    torch.testing.assert_close(kaiser, torch.cat([half, half.flip(0)]), rtol=1e-4, atol=1e-9)
    assert kaiser.sum().item() == pytest.approx(1.0, abs=1e-6)

    linear = torch.tensor([0.125, 0.375, 0.375, 0.125])
    for name, buf in default_G.named_buffers():
        if name.endswith("upsample.filter"):
            assert torch.equal(buf, linear), name
    torch.testing.assert_close(LinearResample(4).filter, torch.tensor([1.0, 3, 5, 7, 7, 5, 3, 1]) / 32)
    assert all(buf.item() == 1.0 for name, buf in default_G.named_buffers() if name.endswith("magnitude_ema"))
    assert sum(name.endswith("magnitude_ema") for name, _ in default_G.named_buffers()) == 21


def test_default_layer_table(default_G):
    blocks = list(default_G.temporal_layers) + list(default_G.spatial_layers)
    assert [b.temporal_up for b in blocks] == [True] * 5 + [False] * 5
    assert [b.spatial_up for b in blocks] == [False, True, False, True, False, False, True, False, True, False]
    assert [(b.out_height, b.out_width) for b in blocks] == [(3, 4), (5, 8), (5, 8), (9, 16), (9, 16), (9, 16)] + [
        (18, 32),
        (18, 32),
        (36, 64),
        (36, 64),
    ]
    assert default_G.total_temporal_scale == 32 and default_G.total_spatial_scale == 16
    assert default_G.num_layers == 11


@pytest.mark.slow
def test_default_forward_shape(default_G):
    with torch.no_grad():
        video = default_G(1, 16, generator_emb=_gen(0))
    assert video.shape == (1, 3, 16, 36, 64) and video.dtype == torch.float32
    assert torch.isfinite(video).all()
    assert video.abs().max().item() <= 64


# ----------------------------------------------------------------------------
# Sequence-length bookkeeping.


def test_seq_lengths_paper_examples():
    G = _tiny_G()
    assert G.compute_seq_lengths(128) == (20, [24, 32, 48, 80, 144, 128])
    assert G.compute_latent_lengths(128) == [20, 20, 24, 32, 48, 80, 144, 128, 128, 128, 128, 128]
    assert G.compute_latent_lengths(100) == [20, 20, 23, 29, 41, 66, 116, 100, 100, 100, 100, 100]
    for L in (1, 17, 301):
        expected = [math.ceil(L / 2**k) + 16 for k in (4, 3, 2, 1, 0)] + [L]
        assert G.compute_seq_lengths(L) == (math.ceil(L / 32) + 16, expected)
    with pytest.raises(ValueError, match="seq_length"):
        G.compute_seq_lengths(0)


@pytest.mark.parametrize("seq_length", [1, 17, 301])
def test_tiny_forward_other_lengths(seq_length):
    G = _tiny_G()
    with torch.no_grad():
        emb = G.sample_temporal_emb(1, seq_length, generator=_gen(1))
        assert emb.shape == (1, 32, 32 * G.compute_seq_lengths(seq_length)[0])
        latent_ws = G.compute_latent_ws(emb, seq_length)
        assert [w.shape[2] for w in latent_ws] == G.compute_latent_lengths(seq_length)
        video = G(1, seq_length, emb=emb)
    assert video.shape == (1, 3, seq_length, 36, 64)
    assert torch.isfinite(video).all()


def test_latent_crops_use_floor_rule():
    G = _tiny_G()
    with torch.no_grad():
        emb = G.sample_temporal_emb(1, 17, generator=_gen(2))
        full_rate = G.latent_mapping(emb)  # [N, S, 544]
        latent_ws = G.compute_latent_ws(emb, 17)
    assert full_rate.shape[2] == 544
    for w in latent_ws[7:]:  # Spatial layers and ToRGB: cropped to 17 starting at 263.
        assert torch.equal(w, full_rate[:, :, 263:280])
    # Layer T5 (input length L + 16 = 33) reads the full-rate sequence; T4 reads it at half rate.
    assert torch.equal(latent_ws[6], full_rate[:, :, (544 - 33) // 2 : (544 - 33) // 2 + 33])
    half_rate = G.temporal_downsample_latent(full_rate)
    assert torch.equal(latent_ws[5], half_rate[:, :, (272 - 25) // 2 : (272 - 25) // 2 + 25])
    assert torch.equal(latent_ws[0], latent_ws[1])  # w_input is a copy of layer 0's latent.


# ----------------------------------------------------------------------------
# Properties at the tiny configuration.


def test_same_seed_same_video():
    G = _tiny_G()
    with torch.no_grad():
        a = G(2, 16, generator_emb=_gen(3))
        b = G(2, 16, generator_emb=_gen(3))
        c = G(2, 16, generator_emb=_gen(4))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_batch_of_two_equals_two_batches_of_one():
    G = _tiny_G()
    with torch.no_grad():
        emb = G.sample_temporal_emb(2, 16, generator=_gen(5))
        both = G(2, 16, emb=emb)
        first = G(1, 16, emb=emb[:1])
        second = G(1, 16, emb=emb[1:])
    torch.testing.assert_close(both, torch.cat([first, second]), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="emb"):
        G(3, 16, emb=emb)


def test_sample_video_segments_is_lazy_and_equals_forward():
    G = _tiny_G()
    with torch.no_grad():
        reference = G(1, 20, generator_emb=_gen(6))
        gen = _gen(6)
        state = gen.get_state()
        segments = G.sample_video_segments(1, 20, segment_length=8, generator_emb=gen)
        assert torch.equal(gen.get_state(), state)  # Nothing drawn yet.
        parts = list(segments)
        assert [p.shape[2] for p in parts] == [8, 8, 4]
        assert torch.equal(torch.cat(parts, dim=2), reference)

        # A draw in between shifts the noise: the result then equals forward from the shifted state.
        gen = _gen(6)
        segments = G.sample_video_segments(1, 20, segment_length=8, generator_emb=gen)
        torch.randn([3], generator=gen)
        shifted = torch.cat(list(segments), dim=2)
        gen_ref = _gen(6)
        torch.randn([3], generator=gen_ref)
        assert torch.equal(shifted, G(1, 20, generator_emb=gen_ref))
        assert not torch.equal(shifted, reference)


def test_pickle_round_trip_keeps_outputs():
    G = _tiny_G()
    G2 = pickle.loads(pickle.dumps(G))
    assert type(G2).__name__ == "VideoGenerator" and G2 is not G
    assert dict(G2.init_kwargs) == TINY_KWARGS
    with torch.no_grad():
        assert torch.equal(G(1, 16, generator_emb=_gen(7)), G2(1, 16, generator_emb=_gen(7)))


def test_pickles_load_without_package(tmp_path):
    """G and D pickles carry their source, which needs only torch_utils, dnnlib and third-party packages."""
    G = _tiny_G()
    torch.manual_seed(0)
    D = VideoDiscriminator(seq_length=4, max_edge=64, **D_TINY_KWARGS)
    with torch.no_grad():
        video = G(1, 4, generator_emb=_gen(8))
        expected = dict(video=video, logits=D(video))
    root = tmp_path / "root"
    for package in ("torch_utils", "dnnlib"):
        shutil.copytree(os.path.join(REPO_ROOT, package), root / package, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "nets.pkl").write_bytes(pickle.dumps(dict(G=G, D=D)))
    torch.save(expected, root / "expected.pt")
    script = (
        "import importlib.util, pickle, torch\n"
        "assert importlib.util.find_spec('long_video_gan') is None\n"
        "nets = pickle.load(open('nets.pkl', 'rb'))\n"
        "expected = torch.load('expected.pt')\n"
        "with torch.no_grad():\n"
        "    video = nets['G'](1, 4, generator_emb=torch.Generator().manual_seed(8))\n"
        "    assert torch.equal(video, expected['video']), 'G outputs differ'\n"
        "    assert torch.equal(nets['D'](video), expected['logits']), 'D outputs differ'\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_init_draw_order():
    """Every weight is one N(0, 1) draw of its full shape from the global RNG, in the original's order (below)."""
    G = _tiny_G(seed=9)
    torch.manual_seed(9)
    blocks = list(G.temporal_layers) + list(G.spatial_layers)
    expected = []
    for block in blocks:
        for p in (block.affine_0.weight, block.affine_1.weight, block.weight_0, block.weight_1, block.weight_skip):
            expected.append((p, torch.randn(p.shape)))
    expected.append((G.to_rgb.affine.weight, torch.randn(G.to_rgb.affine.weight.shape)))
    expected.append((G.to_rgb.weight, torch.randn(G.to_rgb.weight.shape)))
    expected.append((G.spatial_input, torch.randn(G.spatial_input.shape)))
    for layer in (G.latent_mapping.layer_0, G.latent_mapping.layer_1):
        expected.append((layer.weight, torch.randn(layer.weight.shape) / 0.01))
    expected.append((G.w_to_temp_input.weight, torch.randn(G.w_to_temp_input.weight.shape)))
    for param, draw in expected:
        assert torch.equal(param.detach(), draw)
    for block in blocks:
        assert torch.all(block.affine_0.bias == 1) and torch.all(block.bias_0 == 0) and torch.all(block.bias_1 == 0)


def test_magnitude_ema_semantics():
    ema = MagnitudeEMA()
    x = torch.full([2, 3, 4], 3.0)  # mean(x^2) = 9
    gain = ema(x, beta=1.0)
    assert ema.magnitude_ema.item() == 1.0 and gain.item() == 1.0
    gain = ema(x, beta=0.75)
    assert ema.magnitude_ema.item() == pytest.approx(1 + 0.25 * (9 - 1))  # = 3
    assert gain.item() == pytest.approx(1 / math.sqrt(3))  # The value after the update is used.

    # In a whole generator: beta = 1 leaves every buffer bit-identical, even in train mode; beta < 1 updates all
    # 21 EMAs, even in eval mode.
    G = _tiny_G()
    before = {k: v.clone() for k, v in G.named_buffers()}
    with torch.no_grad():
        G.train()(2, 8, generator_emb=_gen(10))
    assert all(torch.equal(before[k], v) for k, v in G.named_buffers())
    with torch.no_grad():
        G.eval()(2, 8, magnitude_ema_beta=0.999, generator_emb=_gen(10))
    changed = [k for k, v in G.named_buffers() if not torch.equal(before[k], v)]
    assert len(changed) == 21 and all(k.endswith("magnitude_ema") for k in changed)


def test_magnitude_ema_averages_across_ranks(monkeypatch):
    """With world size > 1 the measured mean(x^2) is all-reduced (summed) and divided by the world size."""

    def fake_all_reduce(tensor):  # Pretend the other rank measured 5.
        tensor.add_(5.0)

    monkeypatch.setattr(generator_lres.distributed, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.distributed, "all_reduce", fake_all_reduce)
    ema = MagnitudeEMA()
    ema(torch.full([4], 3.0), beta=0.5)  # Global mean (9 + 5) / 2 = 7; EMA 1 + 0.5 * (7 - 1) = 4.
    assert ema.magnitude_ema.item() == pytest.approx(4.0)
    unsynced = MagnitudeEMA(dist_sync=False)
    unsynced(torch.full([4], 3.0), beta=0.5)
    assert unsynced.magnitude_ema.item() == pytest.approx(5.0)


def test_finite_gradients():
    G = _tiny_G()
    video = G(2, 16, generator_emb=_gen(11))
    assert video.shape == (2, 3, 16, 36, 64)
    video.square().mean().backward()
    for name, p in G.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert G.spatial_input.grad.abs().sum() > 0


def test_fp16_flags_ignored_on_cpu():
    G32 = _tiny_G(seed=12)
    G16 = _tiny_G(seed=12, num_fp16_layers=11)
    assert all(b.use_float16 for b in list(G16.temporal_layers) + list(G16.spatial_layers) + [G16.to_rgb])
    assert not G32.to_rgb.use_float16
    with torch.no_grad():
        assert torch.equal(G32(1, 8, generator_emb=_gen(13)), G16(1, 8, generator_emb=_gen(13)))


@pytest.mark.gpu
def test_fp16_close_to_fp32_on_cuda():
    G = _tiny_G(seed=12).cuda()
    G16 = _tiny_G(seed=12, num_fp16_layers=5).cuda()
    with torch.no_grad():
        emb = G.sample_temporal_emb(1, 16, generator=torch.Generator("cuda").manual_seed(0))
        a = G(1, 16, emb=emb)
        b = G16(1, 16, emb=emb)
    assert b.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=0, atol=2e-2 * a.abs().max().item())


def test_large_tensor_chunking_is_neutral(monkeypatch):
    G = _tiny_G()
    with torch.no_grad():
        reference = G(1, 8, generator_emb=_gen(14))
        monkeypatch.setattr(generator_lres, "_BIAS_ACT_MAX_NUMEL", 5000)
        monkeypatch.setattr(generator_lres, "_UPSAMPLE_MAX_NUMEL", 5000)
        chunked = G(1, 8, generator_emb=_gen(14))
    torch.testing.assert_close(chunked, reference, rtol=1e-6, atol=1e-7)


def test_constructor_errors_name_the_argument():
    with pytest.raises(ValueError, match="temporal_channels"):
        VideoGenerator(**{**TINY_KWARGS, "temporal_channels": (8, 8)})
    with pytest.raises(ValueError, match="spatial_channels"):
        VideoGenerator(**{**TINY_KWARGS, "spatial_channels": (8,)})
    with pytest.raises(ValueError, match="embedding_kwargs"):
        VideoGenerator(**{**TINY_KWARGS, "embedding_kwargs": dict(channels=64)})
    with pytest.raises(ValueError, match="out_height"):
        VideoGenerator(**{**TINY_KWARGS, "out_height": 36, "out_width": 256})
    with pytest.raises(ValueError, match="channels"):
        BlurredNoise(channels=30, blur_widths=8)


# ----------------------------------------------------------------------------
# Building blocks against explicit formulas.


def _direct_modconv3d(x, weight, styles, padding, input_gain=None, demodulate=True):
    """temporal_modulated_conv3d written out: explicit sums over kernel offsets of the zero-padded input, no conv."""
    x, weight, styles = x.double(), weight.double(), styles.double()
    N, Ci, T, H, W = x.shape
    Co, _, kt, kh, kw = weight.shape
    if demodulate:
        weight = weight / weight.abs().amax(dim=[1, 2, 3, 4], keepdim=True)
        styles = styles / styles.abs().amax(dim=[1, 2], keepdim=True)
    weight = weight / math.sqrt(Ci * kt * kh * kw)
    if input_gain is not None:
        x = x * input_gain
    xs = x * styles[:, :, :, None, None]
    pt, ph, pw = padding
    xp = F.pad(xs, [pw, pw, ph, ph, pt, pt])
    out = torch.zeros([N, Co, T, H, W], dtype=torch.float64)
    for z in range(kt):
        for y in range(kh):
            for v in range(kw):
                window = xp[:, :, z : z + T, y : y + H, v : v + W]
                out += torch.einsum("oi,nithw->nothw", weight[:, :, z, y, v], window)
    if demodulate:
        d = torch.einsum("oi,nit->not", weight.square().sum(dim=[2, 3, 4]), styles.square())
        out = out / torch.sqrt(d + 1e-8)[:, :, :, None, None]
    return out


@pytest.mark.parametrize("demodulate", [True, False])
def test_temporal_modulated_conv3d_matches_formula(demodulate):
    g = _gen(15)
    x = torch.randn([2, 3, 5, 4, 6], generator=g)
    weight = torch.randn([4, 3, 3, 3, 3], generator=g)
    styles = torch.randn([2, 3, 5], generator=g)
    gain = torch.tensor(0.7)
    out = temporal_modulated_conv3d(x, weight, styles, (1, 1, 1), input_gain=gain, demodulate=demodulate)
    expected = _direct_modconv3d(x, weight, styles, (1, 1, 1), input_gain=0.7, demodulate=demodulate)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-6)


def test_blurred_noise_right_aligned_cross_correlation():
    noise_module = BlurredNoise(channels=6, blur_widths=3, min_sampling_rate=20, max_sampling_rate=40)
    K, L = noise_module.kernel_size, 7
    assert K == 20
    filters = noise_module.blur_filters[:, 0].numpy()  # [B, K]
    rates = np.clip(np.logspace(np.log2(20), np.log2(40), 3, base=2), 20, 40)
    for b, rate in enumerate(rates):
        taps = scipy.signal.firwin(math.ceil(rate / 2), cutoff=2.0, width=12.0, fs=rate).astype(np.float32)
        assert np.all(filters[b, : K - len(taps)] == 0)  # Zeros on the left.
        np.testing.assert_allclose(filters[b, K - len(taps) :], taps, rtol=1e-6, atol=1e-8)
        expected_scale = 1 / np.sqrt(np.sum(taps.astype(np.float64) ** 2))
        assert noise_module.output_scale[0, b, 0].item() == pytest.approx(expected_scale, rel=1e-5)

    out = noise_module(2, L, generator=_gen(16)).numpy()
    noise = torch.randn([2, 2, L + K - 1], generator=_gen(16)).numpy().astype(np.float64)
    scale = noise_module.output_scale[0, :, 0].numpy()
    expected = np.zeros([2, 6, L])
    for n in range(2):
        for c in range(2):
            for b in range(3):
                for t in range(L):
                    expected[n, c * 3 + b, t] = scale[b] * np.sum(filters[b] * noise[n, c, t : t + K])
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_temporal_linear_upsample_weights():
    x = torch.randn([1, 2, 5, 3, 4], generator=_gen(17))
    y = TemporalLinearUpsample(2)(x)
    assert y.shape == (1, 2, 10, 3, 4)
    xp = F.pad(x, [0, 0, 0, 0, 1, 1])  # Zero frames x[-1] and x[T].
    for i in range(5):
        torch.testing.assert_close(y[:, :, 2 * i], 0.25 * xp[:, :, i] + 0.75 * xp[:, :, i + 1])
        torch.testing.assert_close(y[:, :, 2 * i + 1], 0.75 * xp[:, :, i + 1] + 0.25 * xp[:, :, i + 2])


def test_spatial_bilinear_upsample_weights():
    x = torch.randn([1, 2, 3, 4, 5], generator=_gen(18))
    y = SpatialBilinearUpsample(2)(x)
    assert y.shape == (1, 2, 3, 8, 10)
    # Interior samples equal half-pixel-centred bilinear interpolation (align_corners=False).
    ref = F.interpolate(x.flatten(1, 2), scale_factor=2, mode="bilinear", align_corners=False).reshape(1, 2, 3, 8, 10)
    torch.testing.assert_close(y[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1])
    # Borders: zero extension attenuates the outermost samples (weight 0.75 on the first input row).
    torch.testing.assert_close(y[..., 0, 1:-1], 0.75 * ref[..., 0, 1:-1])


def test_temporal_kaiser_downsample_alignment():
    x = torch.randn([2, 3, 16], generator=_gen(19))
    down = TemporalKaiserDownsample(2)
    y = down(x)
    assert y.shape == (2, 3, 8)
    f = down.filter.double()
    xp = F.pad(x.double(), [5, 5])
    expected = torch.stack([(xp[:, :, 2 * j : 2 * j + 12] * f).sum(-1) for j in range(8)], dim=-1)
    torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="multiple of 2"):
        down(x[:, :, :15])
