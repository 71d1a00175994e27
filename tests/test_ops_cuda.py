"""Tests for the compiled kernels of torch_utils.ops (bias_act, upfirdn2d, filtered_lrelu) against their reference
paths.

Three groups:
- CPU, fast: dispatch rules, the fallback warning, and the adjoint-padding formula the upfirdn2d gradient uses.
- CPU, slow ("host loop"): each plugin's .cpp built without CUDA runs the kernels' per-element code (the same
  `__host__ __device__` functions as the CUDA kernels) in a loop over CPU tensors, under the unchanged autograd
  wrappers. This checks the kernels' index arithmetic, roundings, stage codes and gradient structure on machines
  without a GPU. The first run compiles three small C++ extensions (cached in the torch extensions directory).
- GPU (@pytest.mark.gpu): the CUDA kernels against the reference path on the same device, over grids of shapes,
  factors, paddings, gains, clamps and dtypes, forward and first and second derivatives. Not yet run on a GPU: no
  device was available while they were written.
"""

import contextlib
import itertools
import os
import shutil
import warnings

import numpy as np
import pytest
import torch

from torch_utils import custom_ops
from torch_utils.ops import bias_act, filtered_lrelu, standin, upfirdn2d

OPS = {"bias_act": bias_act, "upfirdn2d": upfirdn2d, "filtered_lrelu": filtered_lrelu}
ACTS = list(bias_act.activation_funcs)

# ----------------------------------------------------------------------------
# Helpers.


def _rand(shape, seed, dtype=torch.float64, device="cpu", scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(device=device, dtype=dtype)


def _taps(n, seed):
    """Positive, asymmetric 1-D taps (asymmetric so that a wrong flip shows)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand([n], generator=g, dtype=torch.float32) + 0.1


def _away_from_kinks(x, margin=0.05):
    """Move values away from 0, where relu/lrelu/elu/selu have kinks (numerical derivatives break there)."""
    return torch.where(x >= 0, x + margin, x - margin)


_TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 8e-2}


def _assert_close(got, expected, dtype, what=""):
    """Compare relative to the largest magnitude (the kernels accumulate in another order than cuDNN/numpy)."""
    assert got.shape == expected.shape, (what, list(got.shape), list(expected.shape))
    assert got.dtype == expected.dtype, (what, got.dtype, expected.dtype)
    got, expected = got.double().cpu(), expected.double().cpu()
    scale = 1 + expected.abs().max().item()
    err = (got - expected).abs().max().item()
    assert err <= _TOLERANCE[dtype] * scale, f"{what}: max abs error {err:.3g} (scale {scale:.3g}, dtype {dtype})"


def _grads(fn, inputs, dy, create_graph=False):
    """Gradients of fn(*inputs) with upstream dy for the inputs that require grad (zeros for unused ones)."""
    wrt = [t for t in inputs if t is not None and t.requires_grad]
    y = fn(*inputs)
    grads = torch.autograd.grad(y, wrt, dy, create_graph=create_graph, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(wrt, grads)]


def _second_grads(fn, inputs, dy, w):
    """d/d(inputs, dy) of sum(w * d fn/d inputs[0]): the double backward (R1-style) through fn."""
    dy = dy.detach().requires_grad_()
    wrt = [t for t in inputs if t is not None and t.requires_grad] + [dy]
    (gx,) = torch.autograd.grad(fn(*inputs), [inputs[0]], dy, create_graph=True)
    if not gx.requires_grad:
        return [torch.zeros_like(t) for t in wrt]
    grads = torch.autograd.grad((gx * w).sum(), wrt, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(wrt, grads)]


@contextlib.contextmanager
def _plugin_set_to(module, plugin):
    saved = module._plugin, module._plugin_checked
    module._plugin, module._plugin_checked = plugin, True
    try:
        yield
    finally:
        module._plugin, module._plugin_checked = saved


# ----------------------------------------------------------------------------
# CPU, fast: dispatch and fallback.


def test_cpu_tensors_never_look_for_the_kernel(monkeypatch):
    for module in OPS.values():
        monkeypatch.setattr(module, "_init", lambda: pytest.fail("_init() called for CPU tensors"))
    x = _rand([1, 2, 6, 6], seed=1, dtype=torch.float32)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    bias_act.bias_act(x, act="lrelu")
    upfirdn2d.upsample2d(x, f)
    filtered_lrelu.filtered_lrelu(x, f, f, up=2, down=2, padding=2)


@pytest.mark.parametrize("name", list(OPS))
def test_failed_build_warns_once_and_falls_back(monkeypatch, name):
    # A machine without a usable CUDA tool chain: the real custom_ops.try_get_plugin must give one warning line that
    # names the plugin and the reason, and _init() must report no kernel, so the ops use the reference path.
    module = OPS[name]
    monkeypatch.setattr(custom_ops, "_cached_plugins", {})
    monkeypatch.setattr(custom_ops, "_failed_plugins", {})
    monkeypatch.setattr(custom_ops.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(module, "_plugin", None)
    monkeypatch.setattr(module, "_plugin_checked", False)
    with pytest.warns(RuntimeWarning) as record:
        assert module._init() is False
    messages = [str(w.message) for w in record]
    assert len(messages) == 1 and "\n" not in messages[0], messages
    assert f'"{name}_plugin"' in messages[0] and "reference implementation" in messages[0], messages[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Looked only once: no second warning.
        assert module._init() is False


def test_plugin_sources_exist_and_build_flags():
    for name, module in OPS.items():
        names = module._plugin_sources + module._plugin_headers
        assert any(n.endswith(".cu") for n in module._plugin_sources), name
        for n in names:
            assert os.path.isfile(os.path.join(os.path.dirname(module.__file__), n)), n
        assert "--use_fast_math" in module._plugin_build_kwargs["extra_cuda_cflags"], name
        assert "-DLVG_WITH_CUDA" in module._plugin_build_kwargs["extra_cflags"], name


def test_cuda_supported_rules():
    x = _rand([1, 2, 8, 8], seed=2, dtype=torch.float32)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    assert upfirdn2d._cuda_supported(x, f, 2, 1, 1)
    assert upfirdn2d._cuda_supported(x.double(), None, 1, 2, 0)
    assert not upfirdn2d._cuda_supported(x.to(torch.int32), f, 2, 1, 1)  # dtype
    assert not upfirdn2d._cuda_supported(x, f.clone().requires_grad_(), 2, 1, 1)  # filter gradient
    assert not upfirdn2d._cuda_supported(x, f.half(), 2, 1, 1)  # filter dtype
    assert not upfirdn2d._cuda_supported(x, torch.ones([65, 65]), 1, 1, 40)  # too many taps for shared memory
    assert not upfirdn2d._cuda_supported(x, f, 1, 1, -3)  # padded size below the filter: the reference raises
    b = torch.zeros([2])
    assert bias_act._cuda_supported(x, b) and bias_act._cuda_supported(x, None)
    assert not bias_act._cuda_supported(x.half(), b)  # b's dtype differs: the reference promotes
    assert filtered_lrelu._cuda_supported(x, f, f, b, 2, 2, 2)
    assert not filtered_lrelu._cuda_supported(x.half(), f, f, b, 2, 2, 2)
    assert not filtered_lrelu._cuda_supported(x, f, f.clone().requires_grad_(), b, 2, 2, 2)
    assert not filtered_lrelu._cuda_supported(x, f, torch.ones([20]), b, 1, 1, -4)  # intermediate below fd


@pytest.mark.parametrize("seed", range(6))
def test_adjoint_padding_gives_the_reference_gradient(seed):
    # The upfirdn2d kernel's gradient is upfirdn2d(dy) with up/down swapped, the filter reversed and
    # _adjoint_padding; check that formula with the reference path against autograd.
    rng = np.random.default_rng(seed)
    up = [int(v) for v in rng.integers(1, 4, size=2)]
    down = [int(v) for v in rng.integers(1, 4, size=2)]
    padding = [int(v) for v in rng.integers(-2, 5, size=4)]
    flip_filter = bool(seed % 2)
    f = _taps(int(rng.integers(1, 6)), seed=seed).double()
    if seed % 3 == 0:
        f = torch.outer(f, _taps(3, seed=seed + 10).double())  # 2-D, different width and height
    fw, fh = upfirdn2d._get_filter_size(f)
    x = _rand([1, 2, 7, 6], seed=seed).requires_grad_()
    y = upfirdn2d._upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=3.0)
    dy = _rand(y.shape, seed=seed + 1)
    (expected,) = torch.autograd.grad(y, x, dy)
    qx = upfirdn2d._adjoint_padding(x.shape[3], y.shape[3], up[0], down[0], fw, padding[0])
    qy = upfirdn2d._adjoint_padding(x.shape[2], y.shape[2], up[1], down[1], fh, padding[2])
    got = upfirdn2d._upfirdn2d_ref(dy, f, up=down, down=up, padding=[*qx, *qy], flip_filter=not flip_filter, gain=3.0)
    assert got.shape == x.shape
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------
# CPU, slow: the kernels' per-element code in the plugins' host loops.


@pytest.fixture(scope="module")
def host_plugins():
    """The three plugins built from their .cpp files only (no CUDA): name -> extension module."""
    from torch.utils import cpp_extension

    try:
        cpp_extension.verify_ninja_availability()
    except RuntimeError:
        pytest.skip("ninja is not available")
    if shutil.which("c++") is None:
        pytest.skip("no C++ compiler")
    return standin.host_plugins()


def _check_against_reference(fn, ref, inputs, dtype, what, grads=True, second=True, seed=0):
    """Forward always; for float64 also first derivatives and the double backward."""
    y, y_ref = fn(*inputs), ref(*inputs)
    _assert_close(y, y_ref, dtype, what + " forward")
    if dtype != torch.float64 or not grads:
        return
    dy = _rand(y_ref.shape, seed=seed + 100, dtype=dtype, device=y_ref.device)
    for g, g_ref in zip(_grads(fn, inputs, dy), _grads(ref, inputs, dy)):
        _assert_close(g, g_ref, dtype, what + " grad")
    if second:
        w = _rand(inputs[0].shape, seed=seed + 200, dtype=dtype, device=y_ref.device)
        for g, g_ref in zip(_second_grads(fn, inputs, dy, w), _second_grads(ref, inputs, dy, w)):
            _assert_close(g, g_ref, dtype, what + " second derivative")


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_host_bias_act_matches_reference(host_plugins, dtype):
    with _plugin_set_to(bias_act, host_plugins["bias_act"]):
        for i, (act, clamp, (shape, dim)) in enumerate(
            itertools.product(ACTS, [None, 0.8], [([2, 3, 4, 5], 1), ([2, 3, 4, 5], 3), ([3, 4, 2, 2, 3], 2)])
        ):
            x = _away_from_kinks(_rand(shape, seed=i)).to(dtype).requires_grad_()
            b = _rand([shape[dim]], seed=i + 50, dtype=dtype, scale=0.1).requires_grad_()
            kwargs = dict(dim=dim, act=act, clamp=clamp)
            fn = lambda x, b: bias_act._bias_act_cuda(**kwargs).apply(x, b)  # noqa: E731
            ref = lambda x, b: bias_act._bias_act_ref(x, b, **kwargs)  # noqa: E731
            _check_against_reference(fn, ref, (x, b), dtype, f"{act} clamp={clamp} dim={dim}", seed=i)


@pytest.mark.slow
def test_host_bias_act_layouts_and_gradchecks(host_plugins):
    with _plugin_set_to(bias_act, host_plugins["bias_act"]):
        b = _rand([3], seed=1, dtype=torch.float32)
        layouts = [  # (x, dense)
            (_rand([2, 3, 4, 5], seed=2, dtype=torch.float32).to(memory_format=torch.channels_last), True),
            (_rand([2, 5, 4, 3], seed=3, dtype=torch.float32).transpose(1, 3), True),  # permuted
            (_rand([2, 6, 4, 5], seed=4, dtype=torch.float32)[:, ::2], False),
        ]
        for x, dense in layouts:
            y = bias_act._bias_act_cuda(dim=1, act="lrelu").apply(x, b)
            torch.testing.assert_close(y, bias_act._bias_act_ref(x, b, dim=1, act="lrelu"), rtol=0, atol=0)
            if dense:
                assert y.stride() == x.stride()  # layout kept, like the reference's elementwise ops
        for act in ["lrelu", "tanh", "swish"]:
            x = _away_from_kinks(_rand([1, 2, 3, 3], seed=5)).requires_grad_()
            bb = _rand([2], seed=6, scale=0.01).requires_grad_()
            fn = lambda x, b: bias_act._bias_act_cuda(dim=1, act=act, clamp=2.0).apply(x, b)  # noqa: E731
            assert torch.autograd.gradcheck(fn, (x, bb))
            assert torch.autograd.gradgradcheck(fn, (x, bb))
        # Third order is not implemented by the kernel: it must say so instead of returning wrong numbers.
        x = _rand([1, 2, 3], seed=7).requires_grad_()
        y = bias_act._bias_act_cuda(dim=1, act="tanh").apply(x, None)
        (g1,) = torch.autograd.grad(y.sum(), x, create_graph=True)
        (g2,) = torch.autograd.grad(g1.sum(), x, create_graph=True)
        with pytest.raises(NotImplementedError, match="third order.*impl='ref'"):
            torch.autograd.grad(g2.sum(), x)


_UPFIRDN_CASES = list(
    itertools.product(
        [None, "1d4", "1d8", "2d"],  # filter
        [1, 2, [3, 1]],  # up
        [1, 2, [1, 3]],  # down
        [0, [2, 1, -1, 3], [-2, 1]],  # padding
        [False, True],  # flip_filter
        [1, 2.5],  # gain
    )
)


def _filter(kind, seed, dtype=torch.float32, device="cpu"):
    if kind is None:
        return None
    if kind == "2d":
        f = torch.outer(_taps(3, seed), _taps(2, seed + 1))  # [3, 2]: height != width
    else:
        f = _taps(int(kind[2:]), seed)
    return f.to(device=device, dtype=dtype)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16], ids=str)
def test_host_upfirdn2d_matches_reference(host_plugins, dtype):
    with _plugin_set_to(upfirdn2d, host_plugins["upfirdn2d"]):
        for i, (kind, up, down, padding, flip_filter, gain) in enumerate(_UPFIRDN_CASES):
            if dtype != torch.float64 and i % 3:
                continue  # Forward-only dtypes: a third of the grid is enough.
            x = _rand([1, 2, 7, 6], seed=i, dtype=dtype).requires_grad_()
            f = _filter(kind, seed=i)
            if not upfirdn2d._cuda_supported(x, f, up, down, padding):
                continue
            kwargs = dict(up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
            fn = lambda x: upfirdn2d._upfirdn2d_cuda(**kwargs).apply(x, f)  # noqa: E731
            ref = lambda x: upfirdn2d._upfirdn2d_ref(x, f, **kwargs)  # noqa: E731
            what = f"f={kind} {kwargs}"
            _check_against_reference(fn, ref, (x,), dtype, what, grads=i % 3 == 0, second=i % 15 == 0, seed=i)


@pytest.mark.slow
def test_host_upfirdn2d_gradchecks_and_strided_input(host_plugins):
    with _plugin_set_to(upfirdn2d, host_plugins["upfirdn2d"]):
        for i, (kind, up, down, padding) in enumerate([("1d4", 2, 1, [2, 1, 2, 1]), ("2d", [1, 2], [2, 1], -1)]):
            f = _filter(kind, seed=i).double()
            x = _rand([1, 1, 5, 4], seed=i).requires_grad_()
            fn = lambda x: upfirdn2d._upfirdn2d_cuda(up=up, down=down, padding=padding).apply(x, f)  # noqa: E731
            assert torch.autograd.gradcheck(fn, (x,))
            assert torch.autograd.gradgradcheck(fn, (x,))
        f = _filter("1d4", seed=3)
        for x in [
            _rand([2, 3, 7, 9], seed=4, dtype=torch.float32).to(memory_format=torch.channels_last),
            _rand([2, 3, 7, 18], seed=5, dtype=torch.float32)[..., ::2],
        ]:
            got = upfirdn2d._upfirdn2d_cuda(up=2, down=1, padding=[2, 1, 2, 1]).apply(x, f)
            torch.testing.assert_close(got, upfirdn2d._upfirdn2d_ref(x, f, up=2, padding=[2, 1, 2, 1]))


_FILTERED_LRELU_CASES = list(
    itertools.product(
        [None, "1d4", "2d", "1d8"],  # fu
        [None, "1d3", "1d8"],  # fd
        [1, 2, 4],  # up
        [1, 2],  # down
        [0, [2, 1, -1, 3]],  # padding
        [False, True],  # flip_filter
        [None, 0.5],  # clamp
        [(np.sqrt(2), 0.2), (1.0, 1.0)],  # (gain, slope): the default layer, and the linear ToRGB form
    )
)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16], ids=str)
def test_host_filtered_lrelu_matches_reference(host_plugins, dtype):
    with _plugin_set_to(filtered_lrelu, host_plugins["filtered_lrelu"]):
        for i, (fu_kind, fd_kind, up, down, padding, flip_filter, clamp, (gain, slope)) in enumerate(
            _FILTERED_LRELU_CASES
        ):
            if dtype != torch.float64 and i % 4:
                continue  # Forward-only dtypes: a quarter of the grid is enough.
            x = _rand([1, 2, 5, 6], seed=i, dtype=dtype).requires_grad_()
            b = _rand([2], seed=i + 1, dtype=dtype).requires_grad_() if i % 2 else None
            fu, fd = _filter(fu_kind, seed=i + 2), _filter(fd_kind, seed=i + 3)
            if not filtered_lrelu._cuda_supported(x, fu, fd, b, up, down, padding):
                continue
            kwargs = dict(
                up=up, down=down, padding=padding, gain=gain, slope=slope, clamp=clamp, flip_filter=flip_filter
            )
            fn = lambda x, b: filtered_lrelu._filtered_lrelu_cuda(**kwargs).apply(x, fu, fd, b)  # noqa: E731
            ref = lambda x, b: filtered_lrelu._filtered_lrelu_ref(x, fu, fd, b, **kwargs)  # noqa: E731
            what = f"fu={fu_kind} fd={fd_kind} {kwargs}"
            _check_against_reference(fn, ref, (x, b), dtype, what, grads=i % 8 == 0, second=i % 24 == 0, seed=i)


@pytest.mark.slow
def test_host_filtered_lrelu_gradchecks(host_plugins):
    with _plugin_set_to(filtered_lrelu, host_plugins["filtered_lrelu"]):
        fu, fd = _filter("1d4", seed=1).double(), _filter("2d", seed=2).double()
        x = _away_from_kinks(_rand([1, 1, 4, 5], seed=3)).requires_grad_()
        b = _rand([1], seed=4, scale=0.01).requires_grad_()
        kwargs = dict(up=2, down=2, padding=[3, 2, 3, 2], clamp=2.0)
        fn = lambda x, b: filtered_lrelu._filtered_lrelu_cuda(**kwargs).apply(x, fu, fd, b)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x, b))
        assert torch.autograd.gradgradcheck(fn, (x, b))


@pytest.mark.slow
def test_host_plugin_errors_name_the_bad_input(host_plugins):
    x = torch.zeros([1, 2, 4, 4])
    fl = host_plugins["filtered_lrelu"]
    with pytest.raises(RuntimeError, match="codes must be a contiguous int32 \\[2\\]"):
        fl.filtered_pass(x, None, None, torch.zeros([1, 2, 4, 4], dtype=torch.uint8), 1, 1, 1, 1, 1, 0, 0, 4, 4,
                         False, 1.0, 0.2, 1.0, -1.0, True, True)  # fmt: skip
    with pytest.raises(RuntimeError, match="f must be float32 or float64"):
        host_plugins["upfirdn2d"].upfirdn2d_pass(x, torch.ones([2, 2], dtype=torch.float16), 1, 1, 1, 1, 0, 0, 3, 3,
                                                 False, 1.0)  # fmt: skip
    with pytest.raises(RuntimeError, match="b must have shape \\[2\\]"):
        host_plugins["bias_act"].bias_act(x, torch.zeros([3]), None, None, 1, 3, 0, 0.2, 1.0, -1.0, True)


# ----------------------------------------------------------------------------
# GPU: the CUDA kernels. Not yet run on a GPU (none was available while this was written).


@pytest.fixture(scope="module")
def cuda_kernels():
    """Build (or load) the three CUDA plugins; a failed build fails the tests instead of silently using the
    reference path. The first build compiles for the visible GPU and takes a few minutes."""
    allow_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # Exact fp32 convolutions in the reference path.
    for name, module in OPS.items():
        assert module._init(), f"{name}: the CUDA plugin did not build; see the warning above"
    yield torch.device("cuda")
    torch.backends.cudnn.allow_tf32 = allow_tf32


_GPU_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", _GPU_DTYPES, ids=str)
def test_gpu_bias_act_matches_reference(cuda_kernels, dtype):
    device = cuda_kernels
    shapes = [([2, 3, 4, 5], 1), ([4, 8, 3, 16, 16], 1), ([4, 8, 3, 16, 16], 2), ([64, 512], 1), ([1000, 7, 33], 2)]
    for i, (act, clamp, gain, (shape, dim)) in enumerate(
        itertools.product(ACTS, [None, 0.5, 256], [None, 1.7], shapes)
    ):
        x = _away_from_kinks(_rand(shape, seed=i)).to(device=device, dtype=dtype).requires_grad_()
        b = _rand([shape[dim]], seed=i + 1, dtype=dtype, device=device, scale=0.1).requires_grad_()
        kwargs = dict(dim=dim, act=act, gain=gain, clamp=clamp)
        fn = lambda x, b: bias_act.bias_act(x, b, **kwargs)  # noqa: E731
        ref = lambda x, b: bias_act.bias_act(x, b, **kwargs, impl="ref")  # noqa: E731
        assert "BiasActCuda" in type(fn(x, b).grad_fn).__name__  # The kernel ran, not the fallback.
        _check_against_reference(fn, ref, (x, b), dtype, f"{act} {kwargs} {shape}", seed=i)
        if dtype == torch.float32 and clamp is None and i % 5 == 0:  # fp32 gradients (away from clamp edges)
            dy = _rand(x.shape, seed=i + 2, dtype=dtype, device=device)
            for g, g_ref in zip(_grads(fn, (x, b), dy), _grads(ref, (x, b), dy)):
                _assert_close(g, g_ref, dtype, f"{act} {kwargs} grad")


@pytest.mark.gpu
def test_gpu_bias_act_layouts_no_bias_and_gradcheck(cuda_kernels):
    device = cuda_kernels
    b = _rand([3], seed=1, dtype=torch.float32, device=device)
    for x in [
        _rand([2, 3, 8, 8], seed=2, dtype=torch.float32, device=device).to(memory_format=torch.channels_last),
        _rand([2, 6, 8, 8], seed=3, dtype=torch.float32, device=device)[:, ::2],
        _rand([0, 3, 4], seed=4, dtype=torch.float32, device=device),
    ]:
        torch.testing.assert_close(
            bias_act.bias_act(x, b, act="lrelu"), bias_act.bias_act(x, b, act="lrelu", impl="ref")
        )
    x = _rand([4, 5], seed=5, dtype=torch.float16, device=device)
    torch.testing.assert_close(bias_act.bias_act(x, act="swish"), bias_act.bias_act(x, act="swish", impl="ref"))
    for act in ["lrelu", "softplus", "selu"]:
        x = _away_from_kinks(_rand([2, 3, 4], seed=6, device=device)).requires_grad_()
        bb = _rand([3], seed=7, device=device, scale=0.01).requires_grad_()
        fn = lambda x, b: bias_act.bias_act(x, b, act=act, clamp=2.0)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x, bb))
        assert torch.autograd.gradgradcheck(fn, (x, bb))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", _GPU_DTYPES, ids=str)
def test_gpu_upfirdn2d_matches_reference(cuda_kernels, dtype):
    device = cuda_kernels
    for i, (kind, up, down, padding, flip_filter, gain) in enumerate(_UPFIRDN_CASES):
        x = _rand([3, 5, 17, 23], seed=i, dtype=dtype, device=device).requires_grad_()
        f = _filter(kind, seed=i, device=device)
        if not upfirdn2d._cuda_supported(x, f, up, down, padding):
            continue
        kwargs = dict(up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
        fn = lambda x: upfirdn2d.upfirdn2d(x, f, **kwargs)  # noqa: E731
        ref = lambda x: upfirdn2d.upfirdn2d(x, f, **kwargs, impl="ref")  # noqa: E731
        assert "Upfirdn2dCuda" in type(fn(x).grad_fn).__name__
        _check_against_reference(fn, ref, (x,), dtype, f"f={kind} {kwargs}", second=i % 4 == 0, seed=i)
        if dtype == torch.float32:
            dy = _rand(fn(x).shape, seed=i + 1, dtype=dtype, device=device)
            _assert_close(_grads(fn, (x,), dy)[0], _grads(ref, (x,), dy)[0], dtype, f"f={kind} {kwargs} grad")


@pytest.mark.gpu
def test_gpu_upfirdn2d_network_shapes_and_helpers(cuda_kernels):
    # The resampling calls of the networks and the augmentation, at realistic sizes, through the public helpers.
    device = cuda_kernels
    f4 = upfirdn2d.setup_filter([1, 3, 3, 1], device=device)
    sym6 = upfirdn2d.setup_filter(_taps(12, seed=1).tolist(), device=device)  # 1-D, separable, asymmetric
    f_time = upfirdn2d.setup_filter([1, 3, 3, 1], device=device, separable=True).unsqueeze(1)  # [4, 1]
    for dtype in [torch.float32, torch.float16]:
        x = _rand([4, 64, 36, 64], seed=2, dtype=dtype, device=device)
        cases = [
            lambda x, impl: upfirdn2d.upsample2d(x, f4, up=2, impl=impl),
            lambda x, impl: upfirdn2d.downsample2d(x, f4, down=2, impl=impl),
            lambda x, impl: upfirdn2d.downsample2d(x, f_time, down=[1, 2], impl=impl),
            lambda x, impl: upfirdn2d.upsample2d(x, f4, up=[1, 2], impl=impl),
            lambda x, impl: upfirdn2d.upsample2d(x, sym6, up=2, impl=impl),
            lambda x, impl: upfirdn2d.downsample2d(x, sym6, down=2, flip_filter=True, impl=impl),
            lambda x, impl: upfirdn2d.filter2d(x, f4, padding=1, impl=impl),
            lambda x, impl: upfirdn2d.downsample2d(x, f4, down=4, padding=-4, impl=impl),
        ]
        for k, case in enumerate(cases):
            _assert_close(case(x, "cuda"), case(x, "ref"), dtype, f"case {k} {dtype}")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", _GPU_DTYPES, ids=str)
def test_gpu_filtered_lrelu_matches_reference(cuda_kernels, dtype):
    device = cuda_kernels
    for i, (fu_kind, fd_kind, up, down, padding, flip_filter, clamp, (gain, slope)) in enumerate(_FILTERED_LRELU_CASES):
        x = _rand([2, 3, 11, 13], seed=i, dtype=dtype, device=device).requires_grad_()
        b = _rand([3], seed=i + 1, dtype=dtype, device=device).requires_grad_() if i % 2 else None
        fu, fd = _filter(fu_kind, seed=i + 2, device=device), _filter(fd_kind, seed=i + 3, device=device)
        if not filtered_lrelu._cuda_supported(x, fu, fd, b, up, down, padding):
            continue
        kwargs = dict(up=up, down=down, padding=padding, gain=gain, slope=slope, clamp=clamp, flip_filter=flip_filter)
        fn = lambda x, b: filtered_lrelu.filtered_lrelu(x, fu, fd, b, **kwargs)  # noqa: E731
        ref = lambda x, b: filtered_lrelu.filtered_lrelu(x, fu, fd, b, **kwargs, impl="ref")  # noqa: E731
        assert "FilteredLRelu" in type(fn(x, b).grad_fn).__name__
        _check_against_reference(
            fn, ref, (x, b), dtype, f"fu={fu_kind} fd={fd_kind} {kwargs}", second=i % 3 == 0, seed=i
        )


@pytest.mark.gpu
def test_gpu_filtered_lrelu_synthesis_layer_shapes(cuda_kernels):
    # Layers of the super-res generator (144x256 table): 12-tap filters at 2x and 4x the sampling rate, fp16 and
    # fp32, with the clamp of 256, forward and the input/bias gradients.
    device = cuda_kernels
    fu12, fd12, fu24 = [(f / f.sum()).to(device) for f in (_taps(12, seed=1), _taps(12, seed=2), _taps(24, seed=3))]
    layers = [  # (input [N, C, H, W], fu, up, output H x W)
        ([2, 64, 31, 38], fu12, 2, (29, 36)),
        ([2, 64, 31, 38], fu24, 4, (38, 52)),
        ([1, 32, 166, 278], fu12, 2, (164, 276)),
    ]
    for dtype in [torch.float32, torch.float16]:
        for k, (shape, fu, up, (out_h, out_w)) in enumerate(layers):
            H, W = shape[2:]
            pad_w = out_w * 2 - W * up + (fu.numel() - 1) + (fd12.numel() - 1) - 1  # total padding for out_w
            pad_h = out_h * 2 - H * up + (fu.numel() - 1) + (fd12.numel() - 1) - 1
            padding = [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2]
            x = _rand(shape, seed=k, dtype=dtype, device=device, scale=10).requires_grad_()
            b = _rand([shape[1]], seed=k + 1, dtype=dtype, device=device).requires_grad_()
            kwargs = dict(up=up, down=2, padding=padding, clamp=256)
            y = filtered_lrelu.filtered_lrelu(x, fu, fd12, b, **kwargs)
            y_ref = filtered_lrelu.filtered_lrelu(x, fu, fd12, b, **kwargs, impl="ref")
            assert y.shape[2:] == (out_h, out_w)
            _assert_close(y, y_ref, dtype, f"layer {k} {dtype}")
            dy = _rand(y.shape, seed=k + 2, dtype=dtype, device=device)
            got = torch.autograd.grad(y, [x, b], dy)
            expected = torch.autograd.grad(y_ref, [x, b], dy)
            for g, g_ref in zip(got, expected):
                _assert_close(g, g_ref, dtype, f"layer {k} {dtype} grad")


@pytest.mark.gpu
def test_gpu_filtered_lrelu_gradchecks(cuda_kernels):
    device = cuda_kernels
    fu, fd = _taps(8, seed=1).double().to(device), _taps(4, seed=2).double().to(device)
    x = _away_from_kinks(_rand([1, 2, 5, 6], seed=3, device=device)).requires_grad_()
    b = _rand([2], seed=4, device=device, scale=0.01).requires_grad_()
    fn = lambda x, b: filtered_lrelu.filtered_lrelu(x, fu, fd, b, up=2, down=2, padding=5, clamp=3.0)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


@pytest.mark.gpu
def test_gpu_ops_on_other_streams_and_second_device(cuda_kernels):
    # Kernels launch on the current stream of the input's device.
    device = cuda_kernels
    f = upfirdn2d.setup_filter([1, 3, 3, 1], device=device)
    x = _rand([2, 4, 16, 16], seed=1, dtype=torch.float32, device=device)
    expected = upfirdn2d.upsample2d(x, f, impl="ref")
    stream = torch.cuda.Stream(device=device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        got = upfirdn2d.upsample2d(x, f)
    torch.cuda.current_stream(device).wait_stream(stream)
    _assert_close(got, expected, torch.float32, "side stream")
    if torch.cuda.device_count() > 1:
        x1, f1 = x.to("cuda:1"), f.to("cuda:1")
        _assert_close(upfirdn2d.upsample2d(x1, f1), expected, torch.float32, "cuda:1")


def check_64bit_test_values(x, b, y):
    """The checks of test_gpu_bias_act_64bit_indexing (also run on the CPU by tests/test_gpu_path.py): the first rows
    hold lrelu(-1 + 0.5) with slope 0.2, which is float16(-0.1), the last row 3.5."""
    assert y[0, 0].item() == torch.tensor(-0.1, dtype=torch.float16).item() and y[-1, -1].item() == 3.5
    assert torch.all(y[-2:] == bias_act.bias_act(x[-2:], b, act="lrelu", gain=1.0, impl="ref")).item()


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_bias_act_64bit_indexing(cuda_kernels):
    # More than 2**31 elements takes the kernel's 64-bit index path (about 9 GB of GPU memory in fp16).
    device = cuda_kernels
    numel = 2**31 + 4096
    if torch.cuda.get_device_properties(device).total_memory < 3 * 2 * numel:
        pytest.skip("not enough GPU memory")
    x = torch.full([numel // 1024, 1024], -1.0, dtype=torch.float16, device=device)
    x[-1] = 3.0
    b = torch.full([1024], 0.5, dtype=torch.float16, device=device)
    y = bias_act.bias_act(x, b, act="lrelu", gain=1.0)
    check_64bit_test_values(x, b, y)
    del x, y
    torch.cuda.empty_cache()
