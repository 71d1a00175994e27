"""Tests for the fast CPU inference paths (torch_utils/ops/fast_cpu.py): every fast op and both generators
equal their reference paths within 1e-4 (float32), the switches select the reference path, and bf16 stays close."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from long_video_gan import generator_lres, generator_sres
from torch_utils.ops import bias_act, fast_cpu, filtered_lrelu, upfirdn2d

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ----------------------------------------------------------------------------


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def kernels():
    """The compiled kernels (built on first use, about a minute on 2 busy cores, then cached)."""
    if not fast_cpu._init():
        pytest.skip("the fast_cpu C++ kernels could not be built here (see the custom_ops warning)")
    return fast_cpu._plugin


def assert_close(fast, ref, atol=1e-4, rtol=1e-5):
    assert fast.shape == ref.shape, (fast.shape, ref.shape)
    assert fast.dtype == ref.dtype, (fast.dtype, ref.dtype)
    torch.testing.assert_close(fast, ref, atol=atol, rtol=rtol)


# ----------------------------------------------------------------------------
# Ops.


def _random_upfirdn_cases(num_cases: int, seed: int):
    """Random (x, f, up, down, padding, flip, gain) with up or down per axis, including crops and odd sizes."""
    g = gen(seed)

    def rint(lo, hi):
        return int(torch.randint(lo, hi + 1, [1], generator=g))

    cases = []
    while len(cases) < num_cases:
        H, W, K = rint(1, 19), rint(1, 19), rint(1, 13)
        up, down = [rint(1, 4), rint(1, 4)], [rint(1, 3), rint(1, 3)]
        for axis in range(2):  # The fast kernel handles up or down per axis; both at once falls back.
            if rint(0, 1):
                up[axis] = 1
            else:
                down[axis] = 1
        padding = [rint(-4, 7) for _ in range(4)]
        kind = rint(0, 3)
        f = [torch.randn([K], generator=g), torch.randn([K, 1], generator=g), torch.randn([1, K], generator=g), None][
            kind
        ]
        fw, fh = upfirdn2d._get_filter_size(f)
        if W * up[0] + padding[0] + padding[1] < fw or H * up[1] + padding[2] + padding[3] < fh:
            continue
        if (
            W * up[0] + min(padding[0], 0) + min(padding[1], 0) <= 0
            or H * up[1] + min(padding[2], 0) + min(padding[3], 0) <= 0
        ):
            continue
        x = torch.randn([2, 3, H, W], generator=g)
        cases.append((x, f, up, down, padding, bool(rint(0, 1)), 0.5 + 2 * float(torch.rand([1], generator=g))))
    return cases


def test_upfirdn2d_matches_reference(kernels):
    for x, f, up, down, padding, flip, gain in _random_upfirdn_cases(150, seed=0):
        ref = upfirdn2d._upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain)
        fast = fast_cpu.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain)
        assert fast is not None, (list(x.shape), up, down, padding)
        assert_close(fast, ref, atol=1e-5 * max(1.0, ref.abs().max().item()))
        # The public op takes the fast path by default on CPU and the reference path with impl="ref".
        public = upfirdn2d.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain)
        assert_close(public, ref, atol=1e-5 * max(1.0, ref.abs().max().item()))


def test_upfirdn2d_unsupported_arguments_fall_back(kernels):
    x = torch.randn([1, 2, 6, 7], generator=gen(1))
    assert fast_cpu.upfirdn2d(x, torch.ones([3]), up=[2, 1], down=[2, 1]) is None  # Up and down on one axis.
    assert fast_cpu.upfirdn2d(x, torch.ones([3, 3]), padding=1) is None  # 2-D non-separable filter.
    assert fast_cpu.upfirdn2d(x.double(), torch.ones([3]), padding=1) is None  # float64.
    assert fast_cpu.upfirdn2d(x, torch.ones([3]), up=0) is None  # Bad arguments: the reference path raises.
    # Through the public op they still give the reference result.
    f = torch.randn([3, 3], generator=gen(2))
    assert_close(upfirdn2d.upfirdn2d(x, f, padding=1), upfirdn2d._upfirdn2d_ref(x, f, padding=1))


def test_upfirdn2d_generator_resamplers_match_reference(kernels):
    # The resamplers of both generators: Kaiser conditioning (sres), temporal [K, 1] and bilinear filters (lres).
    g = gen(3)
    cond = torch.randn([2, 27, 84, 84], generator=g)
    for module in [
        generator_sres.KaiserDownsample(4),
        generator_sres.KaiserUpsample(2),
        generator_sres.KaiserUpsample(4),
    ]:
        with torch.no_grad():
            fast = module(cond)
            with fast_cpu.disabled():
                ref = module(cond)
        assert_close(fast, ref, atol=1e-5)
    video = torch.randn([1, 4, 5, 3, 4], generator=g)
    for module in [generator_lres.TemporalLinearUpsample(2), generator_lres.SpatialBilinearUpsample(2)]:
        with torch.no_grad():
            fast = module(video)
            with fast_cpu.disabled():
                ref = module(video)
        assert_close(fast, ref, atol=1e-6)
    latent = torch.randn([2, 8, 40], generator=g)
    module = generator_lres.TemporalKaiserDownsample(2)
    with torch.no_grad():
        fast = module(latent)
        with fast_cpu.disabled():
            ref = module(latent)
    assert_close(fast, ref, atol=1e-6)


def _sres_layer_configs():
    """(in size, up, down, padding, fu taps, fd taps) of the 144x256 super-res layers, channels cut to 3."""
    return [
        ((36, 29), 2, 2, [9, 8, 9, 8], 12, 12),
        ((36, 29), 4, 2, [-6, -9, -6, -9], 24, 12),
        ((148, 92), 2, 2, [9, 8, 9, 8], 12, 12),
        ((276, 164), 2, 2, [-11, -12, -11, -12], 12, 12),
    ]


def test_filtered_lrelu_matches_reference(kernels):
    g = gen(4)
    cases = []
    for (w, h), up, down, padding, taps_u, taps_d in _sres_layer_configs():
        x = torch.randn([2, 3, h + 2, w + 2], generator=g) * 20  # Conv outputs are (W + 2) x (H + 2); clamp engages.
        cases.append((x, torch.rand([taps_u], generator=g), torch.rand([taps_d], generator=g), up, down, padding))
    for _ in range(60):  # Random small configurations, including no filters and crops.
        up, down = int(torch.randint(1, 5, [1], generator=g)), int(torch.randint(1, 4, [1], generator=g))
        fu = torch.randn([int(torch.randint(1, 5, [1], generator=g)) * up], generator=g) if up > 1 else None
        fd = torch.randn([int(torch.randint(1, 5, [1], generator=g)) * down], generator=g) if down > 1 else None
        padding = [int(v) for v in torch.randint(-3, 9, [4], generator=g)]
        height, width = [int(v) for v in torch.randint(4, 20, [2], generator=g)]
        x = torch.randn([2, 3, height, width], generator=g) * 5
        cases.append((x, fu, fd, up, down, padding))
    num_checked = 0
    for x, fu, fd, up, down, padding in cases:
        b = torch.randn([3], generator=g)
        for gain, slope, clamp in [(math.sqrt(2), 0.2, 256.0), (math.sqrt(2), 0.2, 2.0), (1.0, 1.0, None)]:
            kwargs = dict(b=b, up=up, down=down, padding=padding, gain=gain, slope=slope, clamp=clamp)
            try:
                ref = filtered_lrelu._filtered_lrelu_ref(x, fu, fd, **kwargs)
            except (ValueError, RuntimeError):
                continue  # The configuration crops everything away; the reference raises.
            fast = fast_cpu.filtered_lrelu(x, fu, fd, **kwargs)
            assert_close(fast, ref, atol=1e-5 * max(1.0, ref.abs().max().item()))
            assert_close(
                filtered_lrelu.filtered_lrelu(x, fu, fd, **kwargs), ref, atol=1e-5 * max(1.0, ref.abs().max().item())
            )
            num_checked += 1
    assert num_checked > 100


def test_filtered_lrelu_scale_folds_a_per_plane_factor(kernels):
    g = gen(5)
    x = torch.randn([2, 3, 12, 10], generator=g)
    scale = torch.rand([2, 3], generator=g) + 0.5
    fu, fd, b = torch.rand([12], generator=g), torch.rand([12], generator=g), torch.randn([3], generator=g)
    ref = filtered_lrelu._filtered_lrelu_ref(x * scale[:, :, None, None], fu, fd, b, up=2, down=2, padding=[9, 8, 9, 8])
    fast = fast_cpu.filtered_lrelu(x, fu, fd, b, up=2, down=2, padding=[9, 8, 9, 8], scale=scale)
    assert_close(fast, ref, atol=1e-5)


@pytest.mark.parametrize("act", ["linear", "lrelu"])
def test_bias_act_matches_reference(kernels, act):
    g = gen(6)
    x = torch.randn([2, 5, 3, 4, 6], generator=g) * 100
    for dim, clamp, gain, alpha in [
        (1, 256.0, None, None),
        (1, None, None, None),
        (2, 10.0, 0.5, 0.1),
        (4, 1.0, 2, 0.3),
    ]:
        b = torch.randn([x.shape[dim]], generator=g)
        kwargs = dict(dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
        ref = bias_act._bias_act_ref(x, b, **kwargs)
        assert_close(fast_cpu.bias_act(x, b, **kwargs), ref, atol=1e-5, rtol=0)
        assert_close(bias_act.bias_act(x, b, **kwargs), ref, atol=1e-5, rtol=0)
    # bfloat16 storage, float32 arithmetic: within bf16 rounding of the float32 result.
    b = torch.randn([5], generator=g)
    x16 = x.bfloat16()
    ref = bias_act._bias_act_ref(x16.float(), b, act=act, clamp=256)
    fast = fast_cpu.bias_act(x16, b, act=act, clamp=256)
    assert fast.dtype == torch.bfloat16
    torch.testing.assert_close(fast.float(), ref, rtol=2**-8, atol=0)
    # Activations without a fast kernel are left to the reference path.
    assert fast_cpu.bias_act(x, b, act="tanh") is None


# ----------------------------------------------------------------------------
# Modulated convolutions.


def test_modulated_conv2d_matches_reference():
    g = gen(7)
    x = torch.randn([3, 6, 9, 7], generator=g)
    w = torch.randn([5, 6, 3, 3], generator=g)
    s = torch.randn([3, 6], generator=g)  # Different styles per sample: the grouped reference applies.
    for demodulate, padding, gain in [(True, 2, torch.tensor(0.6)), (True, 0, None), (False, 0, torch.tensor(1.7))]:
        kernel = w if demodulate else w[:, :, :1, :1]
        with torch.no_grad():
            fast = generator_sres.modulated_conv2d(
                x, kernel, s, demodulate=demodulate, padding=padding, input_gain=gain
            )
            with fast_cpu.disabled():
                ref = generator_sres.modulated_conv2d(
                    x, kernel, s, demodulate=demodulate, padding=padding, input_gain=gain
                )
        assert_close(fast, ref, atol=1e-5)


def test_temporal_modulated_conv3d_matches_reference():
    g = gen(8)
    x = torch.randn([2, 4, 5, 3, 6], generator=g)
    w = torch.randn([6, 4, 3, 3, 3], generator=g)
    s = torch.randn([2, 4, 5], generator=g)
    for demodulate, gain in [(True, None), (True, torch.tensor(0.8)), (False, torch.tensor(1.3))]:
        kwargs = dict(padding=(1, 1, 1), input_gain=gain, demodulate=demodulate)
        with torch.no_grad():
            fast = generator_lres.temporal_modulated_conv3d(x, w, s, **kwargs)
            with fast_cpu.disabled():
                ref = generator_lres.temporal_modulated_conv3d(x, w, s, **kwargs)
        assert_close(fast, ref, atol=1e-5)


def test_weight_cache_follows_in_place_updates():
    g = gen(9)
    x = torch.randn([2, 3, 6, 6], generator=g)
    w = torch.nn.Parameter(torch.randn([4, 3, 3, 3], generator=g))
    s = torch.randn([2, 3], generator=g)
    with torch.no_grad():
        first = fast_cpu.modulated_conv2d(x, w, s, padding=1)
        w.mul_(-1.0).add_(0.5)  # In place, as an optimizer step or load_state_dict does.
        fast = fast_cpu.modulated_conv2d(x, w, s, padding=1)
        with fast_cpu.disabled():
            ref = generator_sres.modulated_conv2d(x, w, s, padding=1)
    assert not torch.allclose(first, fast)
    assert_close(fast, ref, atol=1e-5)


# ----------------------------------------------------------------------------
# Generators (tiny configurations), fast against reference.


def _perturb_buffers(G: torch.nn.Module, seed: int) -> None:
    """Non-trivial magnitude EMAs and biases, so that every fused gain and bias is exercised."""
    g = gen(seed)
    with torch.no_grad():
        for name, tensor in list(G.named_parameters()) + list(G.named_buffers()):
            if "magnitude_ema" in name:
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=g))
            elif name.endswith("bias") and "affine" not in name:
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=g))


def test_sres_generator_fast_equals_reference():
    torch.manual_seed(0)
    G = generator_sres.VideoGenerator(**generator_sres.TINY_KWARGS).eval().requires_grad_(False)
    _perturb_buffers(G, seed=10)
    g = gen(11)
    lr = torch.randn([2, 3, 2 + 8, G.lr_height, G.lr_width], generator=g).clamp(-1, 1)
    z = torch.randn([2, G.latent_z_dim], generator=g)
    with torch.no_grad():
        fast = G.SG3(z, lr)
        with fast_cpu.disabled():
            ref = G.SG3(z, lr)
    assert fast.abs().max() > 1e-3
    assert_close(fast, ref, atol=1e-4, rtol=0)


def test_lres_generator_fast_equals_reference():
    torch.manual_seed(0)
    G = generator_lres.VideoGenerator(**generator_lres.TINY_KWARGS).eval().requires_grad_(False)
    _perturb_buffers(G, seed=12)
    with torch.no_grad():
        fast = G(2, 20, generator_emb=gen(13))
        with fast_cpu.disabled():
            ref = G(2, 20, generator_emb=gen(13))
    assert fast.abs().max() > 1e-3
    assert_close(fast, ref, atol=1e-4, rtol=0)


def test_training_keeps_the_reference_path():
    # With gradients the fused inference kernels stay off; filtered_lrelu takes its training path (its polyphase passes
    # run without gradient recording), whose gradients equal the reference (tests/test_generator_sres.py).
    G = generator_sres.VideoGenerator(**generator_sres.TINY_KWARGS)
    lr = torch.randn([1, 3, 1 + 8, G.lr_height, G.lr_width], generator=gen(14))
    assert not fast_cpu.applies(lr, getattr(G.SG3.synthesis, G.SG3.synthesis.layer_names[0]).weight)
    out = G(lr, generator_z=gen(15))
    out.square().mean().backward()
    assert getattr(G.SG3.synthesis, G.SG3.synthesis.layer_names[0]).weight.grad is not None


# ----------------------------------------------------------------------------
# Switches, bf16 and errors.


def test_switches_select_the_reference_path(monkeypatch):
    x = torch.randn([1, 2, 5, 5], generator=gen(16))
    f = torch.ones([2])
    calls = []
    monkeypatch.setattr(fast_cpu, "upfirdn2d", lambda *args, **kwargs: calls.append(1))
    upfirdn2d.upfirdn2d(x, f, up=2)
    assert len(calls) == 1
    upfirdn2d.upfirdn2d(x, f, up=2, impl="ref")  # impl="ref" never asks the fast path.
    assert len(calls) == 1
    assert fast_cpu.is_enabled()
    with fast_cpu.disabled():
        assert not fast_cpu.is_enabled() and not fast_cpu.applies(x)
    assert fast_cpu.is_enabled() and fast_cpu.applies(x)
    assert not fast_cpu.applies(x.double()) and not fast_cpu.applies(x.requires_grad_())
    with pytest.raises(TypeError, match="enabled"):
        fast_cpu.set_enabled(1)


def test_environment_variable_disables_fast_paths():
    code = "from torch_utils.ops import fast_cpu; print(fast_cpu.is_enabled())"
    env = dict(os.environ, LVG_FAST_CPU="0")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_conv_dtype_errors_and_restores():
    with pytest.raises(ValueError, match="dtype"):
        fast_cpu.set_conv_dtype(torch.float16)
    with fast_cpu.conv_dtype(torch.bfloat16):
        assert fast_cpu.get_conv_dtype() == torch.bfloat16
    assert fast_cpu.get_conv_dtype() == torch.float32
    ok, reason = fast_cpu.bf16_support()
    assert isinstance(ok, bool) and ("bfloat16" in reason)


def test_bf16_convolutions_stay_close_to_fp32():
    torch.manual_seed(0)
    G = generator_sres.VideoGenerator(**generator_sres.TINY_KWARGS).eval().requires_grad_(False)
    lr = torch.randn([1, 3, 1 + 8, G.lr_height, G.lr_width], generator=gen(17)).clamp(-1, 1)
    z = torch.randn([1, G.latent_z_dim], generator=gen(18))
    with torch.no_grad():
        ref = G.SG3(z, lr)
        with fast_cpu.conv_dtype(torch.bfloat16):
            out = G.SG3(z, lr)
    assert out.dtype == torch.float32
    psnr = 10 * np.log10((ref.max() - ref.min()).item() ** 2 / (out - ref).square().mean().item())
    assert psnr > 35, psnr


# ----------------------------------------------------------------------------
# Command lines: --dtype bf16.


@pytest.fixture
def restore_conv_dtype():
    """generate.py / calc_metrics.py set the conv dtype for their process; restore it for the next tests."""
    yield
    fast_cpu.set_conv_dtype(torch.float32)


def test_generate_dtype_bf16(tmp_path, restore_conv_dtype):
    from click.testing import CliRunner

    import generate
    from torch_utils import persistence

    torch.manual_seed(0)
    G_sres = generator_sres.VideoGenerator(**generator_sres.TINY_KWARGS).eval()
    kwargs = {**generator_lres.TINY_KWARGS, "out_height": G_sres.lr_height, "out_width": G_sres.lr_width}
    persistence.save(generator_lres.VideoGenerator(**kwargs).eval(), tmp_path / "lres.pkl")
    persistence.save(G_sres, tmp_path / "sres.pkl")
    args = [f"--outdir={tmp_path / 'out'}", "--seed=0", f"--lres={tmp_path / 'lres.pkl'}", "--len=3", "--device=cpu"]
    args += [f"--sres={tmp_path / 'sres.pkl'}", "--dtype=bf16"]
    ok, reason = fast_cpu.bf16_support()
    result = CliRunner().invoke(generate.main, args)
    if ok:
        assert result.exit_code == 0, result.output
        assert (tmp_path / "out" / "seed=0_len=3_sres.mp4").is_file()
        assert fast_cpu.get_conv_dtype() == torch.float32  # bf16 acted during the generation only (dtype=bf16).
    else:
        assert result.exit_code != 0 and "--dtype bf16" in result.output and "avx512_bf16" in result.output
    # Without the fast paths, bf16 is refused before any work, naming the option and the switch.
    with fast_cpu.disabled():
        result = CliRunner().invoke(generate.main, args[:-1] + ["--dtype=bf16", f"--outdir={tmp_path / 'out2'}"])
    assert result.exit_code != 0 and "--dtype bf16" in result.output
    assert not (tmp_path / "out2").exists() or list((tmp_path / "out2").iterdir()) == []


def test_calc_metrics_dtype_bf16_refuses_cuda(tmp_path, restore_conv_dtype):
    from click.testing import CliRunner

    import calc_metrics

    args = [f"--dataset={tmp_path}", f"--lres={tmp_path / 'missing.pkl'}", "--device=cuda", "--dtype=bf16"]
    result = CliRunner().invoke(calc_metrics.main, args)
    assert result.exit_code != 0 and "--dtype bf16" in result.output and "CPU" in result.output


@pytest.mark.slow
def test_bench_speed_smoke(tmp_path):
    # The benchmark end to end on the tiny networks (the release sizes take many minutes): figures, equality, JSON.
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "bench_speed.py"), "--tiny", "--sres-frames=1"]
    cmd += ["--lres-lengths=20", "--repeats=1", "--rss-segment=1", "--no-bf16", f"--json={tmp_path / 'r.json'}"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    for text in ["CPU:", "avx512f=", "Matmul peak: fp32", "x floor", "x faster than ref", "peak RSS", "Summary"]:
        assert text in out.stdout, text
    with open(tmp_path / "r.json") as f:
        results = json.load(f)
    assert results["sres"]["repeats"][0]["max_abs_diff"] < 1e-4
    assert results["lres"][0]["repeats"][0]["max_abs_diff"] < 1e-4
    assert results["sres_segment_rss"]["peak_rss_gib"] > 0


_AVX2_CHECK = """
import torch
from long_video_gan import generator_sres
from torch_utils.ops import bias_act, fast_cpu, filtered_lrelu, upfirdn2d

assert str(torch.backends.cpu.get_cpu_capability()) == "AVX2", torch.backends.cpu.get_cpu_capability()
assert fast_cpu._init(), "the AVX2 build of the fast_cpu kernels failed"
assert "avx2" in fast_cpu._plugin.__name__, fast_cpu._plugin.__name__
g = torch.Generator().manual_seed(0)
x = torch.randn([2, 5, 23, 31], generator=g)
f = torch.randn([12], generator=g)
b = torch.randn([5], generator=g)
worst = 0.0
for up, down, pad in [(2, 2, [11, 10, 11, 10]), (4, 2, [23, 22, 23, 22]), (1, 2, [-1, 3, 2, 0])]:
    kw = dict(up=up, down=down, padding=pad, clamp=2.0)
    y = filtered_lrelu.filtered_lrelu(x, f, f, b, **kw)
    worst = max(worst, (y - filtered_lrelu.filtered_lrelu(x, f, f, b, impl="ref", **kw)).abs().max().item())
    y = upfirdn2d.upfirdn2d(x, f, up=up, padding=pad, gain=up**2)
    worst = max(worst, (y - upfirdn2d.upfirdn2d(x, f, up=up, padding=pad, gain=up**2, impl="ref")).abs().max().item())
y = bias_act.bias_act(x, b, act="lrelu", clamp=1.5)
worst = max(worst, (y - bias_act.bias_act(x, b, act="lrelu", clamp=1.5, impl="ref")).abs().max().item())
torch.manual_seed(1)
G = generator_sres.VideoGenerator(**generator_sres.TINY_KWARGS)
lr = torch.rand([1, 3, 10, G.lr_height, G.lr_width], generator=g) * 2 - 1
with torch.no_grad():
    fast = G(lr, generator_z=torch.Generator().manual_seed(2))
    with fast_cpu.disabled():
        ref = G(lr, generator_z=torch.Generator().manual_seed(2))
worst = max(worst, (fast - ref).abs().max().item())
print("max abs diff", worst)
assert worst < 1e-4, worst
"""


@pytest.mark.slow
@pytest.mark.skipif("avx2" not in fast_cpu.cpu_flags(), reason="this CPU has no AVX2")
def test_avx2_build_matches_reference():
    # Machines differ (AVX-512 or AVX2 only); torch can be told to dispatch as an AVX2 machine, which makes fast_cpu
    # build and use its AVX2 variant here too, so that variant is checked even on an AVX-512 machine.
    env = dict(os.environ, ATEN_CPU_CAPABILITY="avx2", OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", _AVX2_CHECK], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=900)  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "max abs diff" in out.stdout
