"""Tests for torch_utils.ops.bias_act: reference path against per-element formulas, defaults, derivatives, errors."""

import math

import numpy as np
import pytest
import torch

from torch_utils.ops import bias_act as B

ACTS = ["linear", "relu", "lrelu", "tanh", "sigmoid", "elu", "selu", "softplus", "swish"]

# SELU constants (Klambauer et al. 2017).
_SELU_SCALE = 1.0507009873554804934193349852946
_SELU_ALPHA = 1.6732632423543772848170429916717


def slow_act(v: float, act: str, alpha: float) -> float:
    """One scalar at a time, from the textbook definitions."""
    if act == "linear":
        return v
    if act == "relu":
        return v if v > 0 else 0.0
    if act == "lrelu":
        return v if v > 0 else alpha * v
    if act == "tanh":
        return math.tanh(v)
    if act == "sigmoid":
        return 1 / (1 + math.exp(-v))
    if act == "elu":
        return v if v > 0 else math.exp(v) - 1
    if act == "selu":
        return _SELU_SCALE * (v if v > 0 else _SELU_ALPHA * (math.exp(v) - 1))
    if act == "softplus":
        return math.log1p(math.exp(v))
    if act == "swish":
        return v / (1 + math.exp(-v))
    raise AssertionError(act)


def slow_bias_act(x, b, dim, act, alpha, gain, clamp):
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    for idx in np.ndindex(*x.shape):
        v = x[idx] + (b[idx[dim]] if b is not None else 0.0)
        v = slow_act(v, act, alpha) * gain
        if clamp is not None:
            v = min(max(v, -clamp), clamp)
        out[idx] = v
    return out


def _rand(shape, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64) * scale


# ----------------------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py: one intra-op thread for tiny tensors


def test_activation_records():
    assert list(B.activation_funcs) == ACTS
    for name, spec in B.activation_funcs.items():
        assert set(spec) >= {"func", "def_alpha", "def_gain", "cuda_idx", "ref", "has_2nd_grad"}, name
    sqrt2 = np.sqrt(2)
    gains = {name: spec.def_gain for name, spec in B.activation_funcs.items()}
    assert gains == dict(linear=1, relu=sqrt2, lrelu=sqrt2, tanh=1, sigmoid=1, elu=1, selu=1, softplus=1, swish=sqrt2)
    assert B.activation_funcs["lrelu"].def_alpha == 0.2
    assert len({spec.cuda_idx for spec in B.activation_funcs.values()}) == len(ACTS)
    assert [name for name in ACTS if not B.activation_funcs[name].has_2nd_grad] == ["linear", "relu", "lrelu"]


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize(
    "dim,alpha,gain,clamp",
    [(1, None, None, None), (2, 0.3, 0.7, 0.9), (0, None, 2.0, 1.5), (-1, 0.05, None, 0.0)],
)
def test_reference_matches_formula(act, dim, alpha, gain, clamp):
    x = _rand([3, 4, 5], seed=1, scale=2.0)
    b = _rand([x.shape[dim]], seed=2)
    y = B.bias_act(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp, impl="ref")
    spec = B.activation_funcs[act]
    expected = slow_bias_act(
        x.numpy(),
        b.numpy(),
        dim % 3,
        act,
        spec.def_alpha if alpha is None else alpha,
        spec.def_gain if gain is None else gain,
        clamp,
    )
    assert y.shape == x.shape and y.dtype == x.dtype
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_no_bias_and_defaults():
    x = _rand([2, 3, 4, 4], seed=3)
    assert torch.equal(B.bias_act(x), x)  # linear, gain 1, no clamp
    y = B.bias_act(x, act="lrelu")
    np.testing.assert_allclose(y.numpy(), slow_bias_act(x.numpy(), None, 1, "lrelu", 0.2, np.sqrt(2), None), atol=1e-12)


def test_default_impl_on_cpu_is_reference():
    x = _rand([2, 3, 4], seed=4).float()
    b = _rand([3], seed=5).float()
    assert torch.equal(B.bias_act(x, b, act="lrelu", clamp=0.5), B.bias_act(x, b, act="lrelu", clamp=0.5, impl="ref"))


# ----------------------------------------------------------------------------


def _away_from_kinks(x, margin=0.1):
    """Move values at least `margin` away from 0, where relu/lrelu/elu/selu have kinks."""
    return torch.where(x >= 0, x + margin, x - margin)


@pytest.mark.parametrize("act", ACTS)
def test_gradcheck_and_gradgradcheck(act):
    x = _away_from_kinks(_rand([2, 3, 4], seed=6)).requires_grad_(True)
    b = torch.zeros(3, dtype=torch.float64, requires_grad=True)  # zero bias keeps x + b away from the kinks

    def fn(x, b):
        return B.bias_act(x, b, act=act, gain=1.3, impl="ref")

    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


def test_gradcheck_with_clamp():
    # Pre-clamp values lrelu(v)*sqrt(2) for v in the table are far from both 0 and the clamp level 1.
    x = torch.tensor([[-2.3, -0.7, 0.4, 1.9], [1.2, -1.5, 0.3, -0.2]], dtype=torch.float64).requires_grad_(True)
    b = torch.zeros(4, dtype=torch.float64, requires_grad=True)

    def fn(x, b):
        return B.bias_act(x, b, act="lrelu", clamp=1.0, impl="ref")

    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))
    (g,) = torch.autograd.grad(fn(x, b).sum(), x)
    assert g[0, 3] == 0 and g[1, 0] == 0  # clamped outputs pass no gradient


# ----------------------------------------------------------------------------


def test_bad_input_errors_name_the_argument():
    x = torch.zeros(2, 3, 4)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        B.bias_act(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="b must have shape"):
        B.bias_act(x, torch.zeros(4))
    with pytest.raises(ValueError, match="b must have shape"):
        B.bias_act(x, torch.zeros(3, 1))
    with pytest.raises(TypeError, match="b must be a torch.Tensor"):
        B.bias_act(x, [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="dim must be"):
        B.bias_act(x, torch.zeros(3), dim=3)
    with pytest.raises(ValueError, match="act: unknown activation 'gelu'"):
        B.bias_act(x, act="gelu")
    with pytest.raises(ValueError, match="clamp must be"):
        B.bias_act(x, clamp=-1)
    with pytest.raises(ValueError, match="impl"):
        B.bias_act(x, impl="fast")
