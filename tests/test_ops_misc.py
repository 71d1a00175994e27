"""Tests for the small ops: conv2d_gradfix, grid_sample_gradfix (double backward for R1 through ADA) and fma."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from torch_utils import custom_ops
from torch_utils.ops import (
    bias_act,
    conv2d_gradfix,
    conv2d_resample,
    filtered_lrelu,
    fma,
    grid_sample_gradfix,
    upfirdn2d,
)

# ----------------------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py: one intra-op thread for tiny tensors


def _rand(shape, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64) * scale


# ----------------------------------------------------------------------------
# conv2d_gradfix


def test_conv2d_gradfix_flags_and_context():
    assert conv2d_gradfix.enabled is False
    assert conv2d_gradfix.weight_gradients_disabled is False
    with conv2d_gradfix.no_weight_gradients():
        assert conv2d_gradfix.weight_gradients_disabled is True
        with conv2d_gradfix.no_weight_gradients(disable=False):
            assert conv2d_gradfix.weight_gradients_disabled is True  # disable=False leaves the flag as it is
    assert conv2d_gradfix.weight_gradients_disabled is False
    with pytest.raises(RuntimeError, match="inside"):
        with conv2d_gradfix.no_weight_gradients():
            raise RuntimeError("inside")
    assert conv2d_gradfix.weight_gradients_disabled is False  # restored after an exception too


def test_conv2d_gradfix_equals_torch():
    x = _rand([2, 4, 6, 5], seed=1)
    w = _rand([6, 2, 3, 2], seed=2)
    b = _rand([6], seed=3)
    y = conv2d_gradfix.conv2d(x, w, b, stride=2, padding=[1, 0], dilation=1, groups=2)
    assert torch.equal(y, F.conv2d(x, w, b, stride=2, padding=[1, 0], groups=2))
    wt = _rand([4, 3, 3, 3], seed=4)
    y = conv2d_gradfix.conv_transpose2d(x, wt, None, stride=2, padding=1, output_padding=1, groups=2)
    assert torch.equal(y, F.conv_transpose2d(x, wt, None, stride=2, padding=1, output_padding=1, groups=2))


def test_conv2d_gradfix_gradgradcheck():
    x = _rand([1, 2, 4, 4], seed=5).requires_grad_(True)
    w = _rand([3, 2, 3, 3], seed=6).requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda x, w: conv2d_gradfix.conv2d(x, w, padding=1), (x, w))
    wt = _rand([2, 3, 3, 3], seed=7).requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda x, w: conv2d_gradfix.conv_transpose2d(x, w, stride=2), (x, wt))


# ----------------------------------------------------------------------------
# grid_sample_gradfix


def _grid(n, h, w, seed):
    """Sampling positions slightly beyond [-1, 1] (to reach the zero padding), kept off the pixel-centre lattice."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand([n, h, w, 2], generator=g, dtype=torch.float64) * 2.4 - 1.2


def slow_bilinear(img, grid):
    """Bilinear sampling with zeros outside, align_corners=False, one output sample at a time."""
    N, C, H, W = img.shape
    _, Ho, Wo, _ = grid.shape
    out = np.zeros((N, C, Ho, Wo))
    for n in range(N):
        for i in range(Ho):
            for j in range(Wo):
                px = ((grid[n, i, j, 0] + 1) * W - 1) / 2  # pixel coordinates: centres at integers
                py = ((grid[n, i, j, 1] + 1) * H - 1) / 2
                x0, y0 = int(np.floor(px)), int(np.floor(py))
                for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
                    for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
                        if 0 <= yy < H and 0 <= xx < W:
                            out[n, :, i, j] += wy * wx * img[n, :, yy, xx]
    return out


@pytest.mark.parametrize("enabled", [False, True])
def test_grid_sample_values(monkeypatch, enabled):
    monkeypatch.setattr(grid_sample_gradfix, "enabled", enabled)
    img = _rand([2, 3, 4, 5], seed=8)
    grid = _grid(2, 3, 4, seed=9)
    y = grid_sample_gradfix.grid_sample(img, grid)
    np.testing.assert_allclose(y.numpy(), slow_bilinear(img.numpy(), grid.numpy()), atol=1e-12)
    expected = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    assert torch.equal(y, expected)


def test_grid_sample_flag_default_and_custom_function_used(monkeypatch):
    assert grid_sample_gradfix.enabled is False
    img = _rand([1, 1, 3, 3], seed=10).requires_grad_(True)
    grid = _grid(1, 2, 2, seed=11)
    assert "GridSample2d" not in type(grid_sample_gradfix.grid_sample(img, grid).grad_fn).__name__
    monkeypatch.setattr(grid_sample_gradfix, "enabled", True)
    assert "GridSample2d" in type(grid_sample_gradfix.grid_sample(img, grid).grad_fn).__name__


@pytest.mark.parametrize("grad_input,grad_grid", [(True, False), (False, True), (True, True)])
def test_grid_sample_gradcheck_and_gradgradcheck(monkeypatch, grad_input, grad_grid):
    monkeypatch.setattr(grid_sample_gradfix, "enabled", True)
    img = _rand([1, 2, 3, 4], seed=12).requires_grad_(grad_input)
    grid = _grid(1, 2, 3, seed=13).requires_grad_(grad_grid)
    assert torch.autograd.gradcheck(grid_sample_gradfix.grid_sample, (img, grid))
    assert torch.autograd.gradgradcheck(grid_sample_gradfix.grid_sample, (img, grid))


def test_grid_sample_r1_through_augmentation(monkeypatch):
    # R1 as in training: the gradient of D(augment(reals)) w.r.t. the reals, then its squared norm differentiated
    # w.r.t. D's weights. The custom function must give what PyTorch's own double backward gives.
    img = _rand([2, 3, 5, 5], seed=14)
    grid = _grid(2, 4, 4, seed=15)
    weight = _rand([4, 3, 3, 3], seed=16)

    def r1_and_weight_grad():
        reals = img.clone().requires_grad_(True)
        w = weight.clone().requires_grad_(True)
        scores = torch.tanh(F.conv2d(grid_sample_gradfix.grid_sample(reals, grid), w)).sum()
        (r1_grads,) = torch.autograd.grad(scores, reals, create_graph=True)
        penalty = r1_grads.square().sum()
        (w_grad,) = torch.autograd.grad(penalty, w)
        return r1_grads.detach(), w_grad

    monkeypatch.setattr(grid_sample_gradfix, "enabled", False)
    r1_native, w_grad_native = r1_and_weight_grad()
    monkeypatch.setattr(grid_sample_gradfix, "enabled", True)
    r1_custom, w_grad_custom = r1_and_weight_grad()
    assert w_grad_custom.abs().max() > 0
    assert torch.allclose(r1_custom, r1_native, atol=1e-12)
    assert torch.allclose(w_grad_custom, w_grad_native, atol=1e-12)


def test_grid_sample_bad_input_errors_name_the_argument():
    img = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="input must have 4 dimensions"):
        grid_sample_gradfix.grid_sample(torch.zeros(3, 4, 4), torch.zeros(2, 2, 2, 2))
    with pytest.raises(ValueError, match="grid must have shape"):
        grid_sample_gradfix.grid_sample(img, torch.zeros(2, 2, 2, 3))
    with pytest.raises(ValueError, match="grid must have shape"):
        grid_sample_gradfix.grid_sample(img, torch.zeros(1, 2, 2, 2))
    with pytest.raises(TypeError, match="grid must have the dtype of input"):
        grid_sample_gradfix.grid_sample(img, torch.zeros(2, 2, 2, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match="grid must be a torch.Tensor"):
        grid_sample_gradfix.grid_sample(img, np.zeros((2, 2, 2, 2)))


# ----------------------------------------------------------------------------
# fma


def test_fma_values_and_broadcast_gradients():
    a = _rand([2, 3, 4], seed=17).requires_grad_(True)
    b = _rand([3, 1], seed=18).requires_grad_(True)
    c = _rand([1, 4], seed=19).requires_grad_(True)
    y = fma.fma(a, b, c)
    assert torch.allclose(y, a * b + c, atol=1e-15)
    grads = torch.autograd.grad(y.square().sum(), (a, b, c))
    expected = torch.autograd.grad((a * b + c).square().sum(), (a, b, c))
    for g, e, t in zip(grads, expected, (a, b, c)):
        assert g.shape == t.shape
        assert torch.allclose(g, e, atol=1e-12)


@pytest.mark.parametrize("shapes", [([2, 3], [2, 3], [2, 3]), ([3, 1], [1, 4], [4]), ([1], [2, 1, 3], [2, 1])])
def test_fma_gradcheck_and_gradgradcheck(shapes):
    a, b, c = (_rand(s, seed=20 + i).requires_grad_(True) for i, s in enumerate(shapes))
    assert torch.autograd.gradcheck(fma.fma, (a, b, c))
    assert torch.autograd.gradgradcheck(fma.fma, (a, b, c))


def test_fma_bad_input():
    with pytest.raises(TypeError, match="b must be a torch.Tensor"):
        fma.fma(torch.zeros(2), 2.0, torch.zeros(2))


# ----------------------------------------------------------------------------
# Kernel dispatch: _init() and the CUDA fallback.


@pytest.mark.parametrize("module", [bias_act, upfirdn2d, filtered_lrelu], ids=lambda m: m.__name__.split(".")[-1])
def test_init_looks_for_sources_once_and_falls_back(monkeypatch, module):
    calls = []
    monkeypatch.setattr(custom_ops, "try_get_plugin", lambda **kwargs: calls.append(kwargs))  # a failed build
    monkeypatch.setattr(module, "_plugin", None)
    monkeypatch.setattr(module, "_plugin_checked", False)
    monkeypatch.setattr(module, "_plugin_sources", ["no_such_source.cu"])
    assert module._init() is False and calls == []  # kernel sources missing: no build attempted

    monkeypatch.setattr(module, "_plugin_checked", False)
    monkeypatch.setattr(module.os.path, "isfile", lambda path: True)  # pretend the sources exist
    assert module._init() is False
    assert [c["module_name"] for c in calls] == [module.__name__.split(".")[-1] + "_plugin"]
    assert "--use_fast_math" in calls[0]["extra_cuda_cflags"]
    assert module._init() is False and len(calls) == 1  # looked only once per process


@pytest.mark.gpu
def test_ops_on_cuda_match_cpu():
    # Not yet checked on GPU: no device was available while this was written.
    device = torch.device("cuda")
    x = _rand([2, 4, 8, 8], seed=30).float()
    b = _rand([4], seed=31).float()
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    w = _rand([6, 4, 3, 3], seed=32).float()
    grid = _grid(2, 5, 5, seed=33).float()
    cases = [
        lambda x, b, f, w, g: bias_act.bias_act(x, b, act="lrelu", clamp=1.0),
        lambda x, b, f, w, g: upfirdn2d.upsample2d(x, f, up=2),
        lambda x, b, f, w, g: upfirdn2d.downsample2d(x, f, down=2),
        lambda x, b, f, w, g: filtered_lrelu.filtered_lrelu(x, f, f, b, up=2, down=2, padding=[2, 1, 2, 1], clamp=1),
        lambda x, b, f, w, g: conv2d_resample.conv2d_resample(x, w, f, down=2, padding=1),
        lambda x, b, f, w, g: conv2d_resample.conv2d_resample(x, w, f, up=2, padding=1),
        lambda x, b, f, w, g: grid_sample_gradfix.grid_sample(x, g),
    ]
    allow_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # strict fp32 convolutions, to compare with the CPU
    try:
        for i, fn in enumerate(cases):
            expected = fn(x, b, f, w, grid)
            got = fn(x.to(device), b.to(device), f.to(device), w.to(device), grid.to(device))
            assert got.device.type == "cuda", i
            assert torch.allclose(got.cpu(), expected, atol=1e-5, rtol=1e-5), i
    finally:
        torch.backends.cudnn.allow_tf32 = allow_tf32
