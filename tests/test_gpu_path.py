"""The CUDA code paths of the ops and of training, checked without a GPU (issue 16).

- The ops' CUDA paths (dispatch, autograd Functions, first and second derivatives, caching, dtypes, the first-use
  self-check) with the host-loop stand-in plugins (torch_utils/ops/standin.py) taking the place of the CUDA kernels:
  CPU tensors run the kernels' per-element code. First calls are made in a fresh process under no_grad and under
  inference_mode, as generation, metrics and training's module summary make them.
- One test per finding of issue 16: the clamp-gradient probe under no_grad, the ADA statistics' devices, float16
  precision and NaN as the original's kernels, no code buffer without grad, distinct plugin symbols, the device under
  torchrun, the float16 comparison of the 64-bit-index GPU test.

The host-loop plugins are compiled once (about a minute per plugin on a busy 2-core machine; cached by source hash in
the torch extensions directory, shared with tests/test_ops_cuda.py).
"""

import os
import re
import shutil
import subprocess
import sys
import warnings

import pytest
import torch

from torch_utils.ops import bias_act, filtered_lrelu, standin, upfirdn2d

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPS_DIR = os.path.join(ROOT, "torch_utils", "ops")

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def host_plugins():
    from torch.utils import cpp_extension

    try:
        cpp_extension.verify_ninja_availability()
    except RuntimeError:
        pytest.skip("ninja is not available")
    if shutil.which("c++") is None:
        pytest.skip("no C++ compiler")
    return standin.host_plugins()


def _rand(shape, seed, dtype=torch.float32, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)


def _layer_filters(seed=0):
    g = torch.Generator().manual_seed(seed)
    fu = torch.rand([12], generator=g) + 0.1
    fd = torch.rand([12], generator=g) + 0.1
    return fu / fu.sum(), fd / fd.sum()


# ----------------------------------------------------------------------------
# Finding 1: the first call of a compiled op under no_grad / inference_mode.

_FIRST_CALL_SCRIPT = """
import torch, warnings
warnings.simplefilter("error")  # The self-check must pass silently too.
from torch_utils.ops import bias_act, filtered_lrelu, standin, upfirdn2d
plugins = standin.host_plugins()
x = torch.randn([2, 4, 9, 10])
b = torch.randn([4])
fu = upfirdn2d.setup_filter([1, 3, 3, 1])
with standin.kernels_on_cpu(plugins):
    with {mode}:
        y1 = bias_act.bias_act(x, b, act="lrelu", clamp=256)
        y2 = filtered_lrelu.filtered_lrelu(x, fu, fu, b, up=2, down=2, padding=3, clamp=256)
        y3 = upfirdn2d.upsample2d(x, fu)
    for module in (bias_act, filtered_lrelu, upfirdn2d):  # The kernels ran, checked first.
        assert module._kernel_check.verdicts == {{("cpu", torch.float32): True}}, module.__name__
    assert "BiasActCuda" in type(bias_act.bias_act(x.requires_grad_(), b, act="lrelu").grad_fn).__name__
torch.testing.assert_close(y1, bias_act.bias_act(x, b, act="lrelu", clamp=256, impl="ref"))
kwargs = dict(up=2, down=2, padding=3, clamp=256)
torch.testing.assert_close(y2, filtered_lrelu.filtered_lrelu(x, fu, fu, b, **kwargs, impl="ref"))
torch.testing.assert_close(y3, upfirdn2d.upsample2d(x, fu, impl="ref"))
print("first call ok")
"""


@pytest.mark.parametrize("mode", ["torch.no_grad()", "torch.inference_mode()"])
def test_first_kernel_call_without_grad_in_a_fresh_process(host_plugins, mode):
    # The clamp-gradient probe used torch.autograd.grad lazily at the first call: under no_grad it raised "element 0
    # of tensors does not require grad", so generation and metrics failed on a GPU (tests warmed the cache first).
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-c", _FIRST_CALL_SCRIPT.format(mode=mode)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "first call ok" in result.stdout


def test_clamp_probe_works_in_any_mode():
    for mode in [torch.no_grad, torch.inference_mode]:
        bias_act._clamp_grad_at_limit_cache = None
        with mode():
            value = bias_act._clamp_grad_at_limit()
        assert isinstance(value, bool)
    from torch._subclasses.fake_tensor import FakeTensorMode

    bias_act._clamp_grad_at_limit_cache = None
    with FakeTensorMode():
        assert bias_act._clamp_grad_at_limit() == value


# ----------------------------------------------------------------------------
# The CUDA paths through the public ops with the host-loop stand-ins: every derivative order the networks use.


def test_public_ops_take_the_kernel_path_with_the_standins(host_plugins):
    fu, fd = _layer_filters()
    x = _rand([1, 3, 10, 12], seed=1, dtype=torch.float64).requires_grad_()
    b = _rand([3], seed=2, dtype=torch.float64).requires_grad_()
    kwargs = dict(up=2, down=2, padding=[6, 5, 6, 5], clamp=1.5)
    with standin.kernels_on_cpu(host_plugins):
        y = filtered_lrelu.filtered_lrelu(x, fu, fd, b, **kwargs)
        z = bias_act.bias_act(y, act="lrelu", clamp=1.0)
        w = upfirdn2d.downsample2d(z, upfirdn2d.setup_filter([1, 3, 3, 1]))
        assert "Upfirdn2dCuda" in type(w.grad_fn).__name__
        assert "BiasActCuda" in type(z.grad_fn).__name__
        assert "FilteredLRelu" in type(y.grad_fn).__name__
        # R1-style double backward through all three kernels.
        (gx,) = torch.autograd.grad(w.square().sum(), x, create_graph=True)
        got = torch.autograd.grad(gx.square().sum(), [x, b])
    y = filtered_lrelu.filtered_lrelu(x, fu, fd, b, **kwargs, impl="ref")
    z = bias_act.bias_act(y, act="lrelu", clamp=1.0, impl="ref")
    w = upfirdn2d.downsample2d(z, upfirdn2d.setup_filter([1, 3, 3, 1]), impl="ref")
    (gx,) = torch.autograd.grad(w.square().sum(), x, create_graph=True)
    expected = torch.autograd.grad(gx.square().sum(), [x, b])
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-9)


def test_self_check_falls_back_once_on_a_wrong_kernel(host_plugins):
    # A kernel that builds but computes wrong numbers: warned once, naming the op, and the reference path runs.
    class Wrong:
        def bias_act(self, *args):
            return host_plugins["bias_act"].bias_act(*args) * 1.01

    x, b = _rand([2, 4, 5], seed=3), _rand([4], seed=4)
    with standin.kernels_on_cpu({**host_plugins, "bias_act": Wrong()}):
        with pytest.warns(RuntimeWarning, match=r"bias_act: the compiled kernel disagrees .* cpu float32"):
            y = bias_act.bias_act(x, b, act="lrelu")
        torch.testing.assert_close(y, bias_act.bias_act(x, b, act="lrelu", impl="ref"), rtol=0, atol=0)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Once only.
            bias_act.bias_act(x, b, act="lrelu")
        assert bias_act._kernel_check.verdicts == {("cpu", torch.float32): False}
        # Other dtypes are checked on their own: float64 runs the (wrong) plugin's check afresh, and fails too.
        with pytest.warns(RuntimeWarning, match="float64"):
            bias_act.bias_act(x.double(), b.double(), act="lrelu")


def test_self_check_trusts_the_right_kernels_per_device_and_dtype(host_plugins):
    fu, fd = _layer_filters()
    with standin.kernels_on_cpu(host_plugins), warnings.catch_warnings():
        warnings.simplefilter("error")
        for dtype in [torch.float32, torch.float64, torch.float16, torch.bfloat16]:
            x, b = _rand([1, 2, 8, 8], seed=5, dtype=dtype), _rand([2], seed=6, dtype=dtype)
            bias_act.bias_act(x, b, act="lrelu")
            upfirdn2d.upsample2d(x, fu)
            filtered_lrelu.filtered_lrelu(x, fu, fd, b, up=2, down=2, padding=11)
        for module in (bias_act, upfirdn2d, filtered_lrelu):
            assert len(module._kernel_check.verdicts) == 4 and all(module._kernel_check.verdicts.values())


# ----------------------------------------------------------------------------
# Finding 2: the ADA statistics on the device of the logits ("meta" stands in for CUDA: stack refuses mixed devices).


def test_ada_statistics_stay_on_the_logits_device():
    from long_video_gan import augment

    controller = augment.AdaController()
    controller.accumulate(torch.ones([4, 1], device="meta").sign())
    controller.accumulate(torch.ones([4, 1], device="meta").sign())
    assert controller._stats.device.type == "meta" and controller._stats.shape == (2,)


# ----------------------------------------------------------------------------
# Finding 3: float16 as the original's fused kernels: float32 inside, one rounding at the output, NaN clipped.


def _fp16_ulp_errors(got: torch.Tensor, exact: torch.Tensor) -> float:
    """Largest error of `got` (float16) from `exact` (float64), in units of float16's spacing at each value."""
    spacing = torch.finfo(torch.float16).eps * exact.abs().clamp_min(2.0**-14)
    return ((got.double() - exact).abs() / spacing).max().item()


def test_filtered_lrelu_fp16_rounds_only_its_output(host_plugins):
    # A synthesis layer's call in float16. Float32 inside with one rounding at the end stays within about half a unit
    # in the last place of the float64 result; rounding the up-sampled intermediate and the separable filter's width
    # pass to float16 (the old passes) is off by several units.
    fu, fd = _layer_filters(seed=1)
    x = _rand([1, 4, 20, 22], seed=7, scale=8).half()
    b = _rand([4], seed=8).half()
    kwargs = dict(up=2, down=2, padding=[11, 10, 11, 10], clamp=256)
    exact = filtered_lrelu.filtered_lrelu(x.double(), fu.double(), fd.double(), b.double(), **kwargs, impl="ref")
    with standin.kernels_on_cpu(host_plugins):
        got = filtered_lrelu.filtered_lrelu(x, fu, fd, b, **kwargs)
        assert got.dtype == torch.float16
        with torch.no_grad():
            assert torch.equal(filtered_lrelu.filtered_lrelu(x, fu, fd, b, **kwargs), got)
    assert _fp16_ulp_errors(got, exact) <= 0.51


def test_bias_act_fp16_rounds_only_its_output(host_plugins):
    x = _rand([3, 16, 40], seed=9, scale=30).half()
    b = _rand([16], seed=10).half()
    with standin.kernels_on_cpu(host_plugins):
        for act in ["lrelu", "linear"]:
            got = bias_act.bias_act(x, b, act=act, gain=1.7, clamp=256)
            exact = bias_act.bias_act(x.double(), b.double(), act=act, gain=1.7, clamp=256, impl="ref")
            assert _fp16_ulp_errors(got, exact) <= 0.5 + 1e-6, act


def test_nan_is_clipped_like_the_original(host_plugins):
    # The original's kernels clip a NaN (an fp16 overflow upstream) to -clamp and give it no gradient; torch.clamp,
    # and so the reference path, pass it on.
    fu, fd = _layer_filters(seed=2)
    x = _rand([1, 2, 12, 12], seed=11).requires_grad_(False)
    x[0, 1, 5, 6] = float("nan")
    b = _rand([2], seed=12)
    with standin.kernels_on_cpu(host_plugins):
        for dtype in [torch.float32, torch.float16]:
            xx = x.to(dtype).requires_grad_()
            y = bias_act.bias_act(xx, b.to(dtype), act="lrelu", clamp=256)
            assert y[0, 1, 5, 6].item() == -256 and torch.isfinite(y).all()
            (g,) = torch.autograd.grad(y.sum(), xx)
            assert g[0, 1, 5, 6].item() == 0 and torch.isfinite(g).all()
            kwargs = dict(up=2, down=2, padding=11, clamp=256)
            y = filtered_lrelu.filtered_lrelu(xx, fu, fd, b.to(dtype), **kwargs)
            assert torch.isfinite(y).all(), dtype
            clean = filtered_lrelu.filtered_lrelu(xx[:, :1], fu, fd, b[:1].to(dtype), **kwargs)  # Channel 0 only.
            assert y[:, :1].equal(clean)
            (g,) = torch.autograd.grad(y.sum(), xx)
            assert torch.isfinite(g).all()
    assert torch.isnan(bias_act.bias_act(x, b, act="lrelu", clamp=256, impl="ref")).any()


# ----------------------------------------------------------------------------
# Finding 4.


def _recording(plugin, calls):
    class Recording:
        def filtered_pass(self, *args):
            calls.append(args)
            return plugin.filtered_pass(*args)

    return Recording()


def test_filtered_lrelu_keeps_no_codes_without_grad(host_plugins):
    fu, fd = _layer_filters(seed=3)
    x, b = _rand([1, 2, 10, 10], seed=13), _rand([2], seed=14)
    kwargs = dict(up=2, down=2, padding=11, clamp=256)
    for context, needs_grad, want_codes in [
        (torch.no_grad, True, False),
        (torch.inference_mode, True, False),
        (torch.enable_grad, False, False),  # Nothing requires grad.
        (torch.enable_grad, True, True),
    ]:
        calls = []
        plugins = {**host_plugins, "filtered_lrelu": _recording(host_plugins["filtered_lrelu"], calls)}
        with standin.kernels_on_cpu(plugins):
            filtered_lrelu.filtered_lrelu(x, fu, fd, b, **kwargs)  # The first call also runs the self-check.
            calls.clear()
            with context():
                y = filtered_lrelu.filtered_lrelu(x.requires_grad_(needs_grad), fu, fd, b, **kwargs)
        lrelu_passes = [args for args in calls if args[4] == 1]  # mode 1: the leaky ReLU stage
        assert len(lrelu_passes) == 1
        assert (lrelu_passes[0][3] is not None) == want_codes, (context, needs_grad)
        torch.testing.assert_close(y, filtered_lrelu.filtered_lrelu(x.detach(), fu, fd, b, **kwargs, impl="ref"))


def test_filtered_lrelu_codes_take_two_bits_per_sample(host_plugins):
    # With gradients the kernel keeps 2 bits per up-sampled sample (16 per int32 word), as the original, instead of a
    # byte: a quarter of the memory, and the gradients still equal the reference path's.
    fu, fd = _layer_filters(seed=4)
    x = _rand([2, 3, 10, 11], seed=15, dtype=torch.float64).requires_grad_()
    b = _rand([3], seed=16, dtype=torch.float64).requires_grad_()
    kwargs = dict(up=2, down=2, padding=[11, 10, 11, 10], clamp=1.0)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with standin.kernels_on_cpu(host_plugins):
        filtered_lrelu.filtered_lrelu(x, fu, fd, b, **kwargs)  # The first call also runs the self-check.
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = filtered_lrelu.filtered_lrelu(x, fu, fd, b, **kwargs)
        dy = _rand(y.shape, seed=17, dtype=torch.float64)
        got = torch.autograd.grad(y, [x, b], dy)
    mid_h, mid_w = 10 * 2 + 21 - 11, 11 * 2 + 21 - 11  # in * up + padding - (taps - 1)
    codes = [t for t in saved if t.dtype == torch.int32]
    assert len(codes) == 1 and codes[0].numel() == -(-2 * 3 * mid_h * mid_w // 16)
    assert not any(t.dtype == torch.uint8 for t in saved)
    assert (codes[0] != 0).any()  # Some samples were negative or clamped.
    y_ref = filtered_lrelu.filtered_lrelu(x, fu, fd, b, **kwargs, impl="ref")
    expected = torch.autograd.grad(y_ref, [x, b], dy)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


def test_plugins_share_no_symbols(host_plugins):
    # upfirdn2d.h is compiled into two plugins, each with its own pass_cuda (different bodies): everything of the
    # header must live in a namespace of the plugin, or the loader may bind one plugin's calls to the other's code.
    names = {}
    for plugin in ("upfirdn2d", "filtered_lrelu"):
        for suffix in (".cpp", ".cu"):
            with open(os.path.join(OPS_DIR, plugin + suffix)) as f:
                source = f.read()
            found = re.findall(r"#define\s+LVG_PASS_NAMESPACE\s+(\w+)", source)
            assert len(found) == 1 and source.index("#define LVG_PASS_NAMESPACE") < source.index('"upfirdn2d.h"'), (
                plugin + suffix
            )
            names.setdefault(plugin, set()).add(found[0])
    assert len(names["upfirdn2d"]) == 1 and len(names["filtered_lrelu"]) == 1
    assert names["upfirdn2d"] != names["filtered_lrelu"]
    with open(os.path.join(OPS_DIR, "upfirdn2d.h")) as f:
        header = f.read()
    assert "namespace LVG_PASS_NAMESPACE {" in header and "namespace lvg_upfirdn2d {" not in header
    if shutil.which("nm") is None:
        pytest.skip("no nm")
    exported = []
    for plugin in ("upfirdn2d", "filtered_lrelu"):
        out = subprocess.run(
            ["nm", "-DC", "--defined-only", host_plugins[plugin].__file__], capture_output=True, text=True, check=True
        ).stdout
        exported.append({line.split(" ", 2)[2] for line in out.splitlines() if "lvg_" in line})
    assert exported[0] and exported[1] and not exported[0] & exported[1], sorted(exported[0] & exported[1])[:5]


def test_torchrun_puts_each_rank_on_its_own_gpu(monkeypatch):
    from torch_utils import distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert distributed.resolve_device("cuda:0") == torch.device("cuda", 3)
    assert distributed.resolve_device("cuda") == torch.device("cuda", 3)
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert distributed.resolve_device("cuda:1") == torch.device("cuda", 1)  # A plain launch keeps the chosen GPU.


def test_fp16_value_of_the_64bit_gpu_test(host_plugins):
    # The GPU test's element: lrelu(-1 + 0.5) in float16 is float16(-0.1) = -0.0999755859375, which the default
    # pytest.approx(-0.1) (1e-6 relative) rejects although the kernel is right. The test now asks for the float16 value.
    from tests import test_ops_cuda

    x = torch.full([4, 1024], -1.0, dtype=torch.float16)
    x[-1] = 3.0
    b = torch.full([1024], 0.5, dtype=torch.float16)
    with standin.kernels_on_cpu(host_plugins):
        y = bias_act.bias_act(x, b, act="lrelu", gain=1.0)
    assert y[0, 0].item() != pytest.approx(-0.1)
    test_ops_cuda.check_64bit_test_values(x, b, y)


def test_gpu_test_has_no_default_approx_on_fp16():
    with open(os.path.join(ROOT, "tests", "test_ops_cuda.py")) as f:
        source = f.read()
    assert "pytest.approx(-0.1)" not in source


@pytest.mark.slow
def test_cuda_sources_compile(tmp_path):
    # The CUDA side cannot run here, but nvcc (when installed) can compile it to PTX without a GPU; each plugin's
    # launcher must come out in its own namespace (the .cpp calls it there). About 40-60 s on 2 busy cores.
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("needs nvcc")
    import sysconfig

    from torch.utils import cpp_extension

    includes = [f"-I{p}" for p in cpp_extension.include_paths()] + [f"-I{sysconfig.get_paths()['include']}"]
    macros = os.path.join(cpp_extension.include_paths()[0], "c10", "cuda", "impl", "cuda_cmake_macros.h")
    if not os.path.isfile(macros):  # A CPU-only torch wheel lacks this generated header; its content is one macro.
        stub = tmp_path / "inc" / "c10" / "cuda" / "impl"
        stub.mkdir(parents=True)
        (stub / "cuda_cmake_macros.h").write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
        includes.insert(0, f"-I{tmp_path / 'inc'}")
    expected = {
        "bias_act": "lvg_bias_act::bias_act_cuda(",
        "upfirdn2d": "lvg_upfirdn2d_plugin::pass_cuda(",
        "filtered_lrelu": "lvg_filtered_lrelu_plugin::pass_cuda(",
    }
    jobs = {}
    for name, module in standin.OPS.items():
        (source,) = [s for s in module._plugin_sources if s.endswith(".cu")]
        obj = str(tmp_path / (source + ".o"))
        cmd = [nvcc, "-c", "-std=c++17", "-DTORCH_EXTENSION_NAME=check", "--expt-relaxed-constexpr", *includes,
               *module._plugin_build_kwargs["extra_cuda_cflags"], "-gencode", "arch=compute_80,code=compute_80",
               os.path.join(OPS_DIR, source), "-o", obj]  # fmt: skip
        jobs[name] = (subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), obj)
    for name, (proc, obj) in jobs.items():
        out = proc.communicate(timeout=900)[0]
        assert proc.returncode == 0, f"{name}.cu:\n{out[-3000:]}"
        defined = subprocess.run(["nm", "-C", "--defined-only", obj], capture_output=True, text=True).stdout
        assert expected[name] in defined, name
