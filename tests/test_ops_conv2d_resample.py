"""Tests for torch_utils.ops.conv2d_resample: every branch (a-f in conv2d_resample) against an unfused loop evaluation,
the sres discriminator's cases, derivatives and errors."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.op_utils import slow_upfirdn2d
from torch_utils.ops import conv2d_resample as CR
from torch_utils.ops import upfirdn2d as U

# ----------------------------------------------------------------------------

pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py: one intra-op thread for tiny tensors


def slow_conv2d(x, w, groups, flip_weight):
    """Valid grouped convolution, one output pixel at a time (correlation when flip_weight, as torch conv2d)."""
    N, C, H, W = x.shape
    O, Cg, kh, kw = w.shape
    if not flip_weight:
        w = w[:, :, ::-1, ::-1]
    out = np.zeros((N, O, H - kh + 1, W - kw + 1))
    for o in range(O):
        g = o // (O // groups)
        xg = x[:, g * Cg : (g + 1) * Cg]
        for i in range(out.shape[2]):
            for j in range(out.shape[3]):
                out[:, o, i, j] = np.einsum("ncab,cab->n", xg[:, :, i : i + kh, j : j + kw], w[o])
    return out


def slow_conv2d_resample(x, w, f, up, down, padding, groups, flip_weight, flip_filter):
    """The unfused definition: [zero insertion +] padding + FIR, valid conv, [FIR +] decimation."""
    fh, fw = (1, 1) if f is None else ((f.shape[0], f.shape[0]) if f.ndim == 1 else f.shape)
    x0, x1, y0, y1 = padding
    if up > 1:
        x0, x1, y0, y1 = x0 + (fw + up - 1) // 2, x1 + (fw - up) // 2, y0 + (fh + up - 1) // 2, y1 + (fh - up) // 2
    if down > 1:
        x0, x1 = x0 + (fw - down + 1) // 2, x1 + (fw - down) // 2
        y0, y1 = y0 + (fh - down + 1) // 2, y1 + (fh - down) // 2
    if up > 1:
        y = slow_upfirdn2d(x, f, up=up, padding=(x0, x1, y0, y1), flip_filter=flip_filter, gain=up * up)
    elif down > 1:
        y = slow_upfirdn2d(x, f, padding=(x0, x1, y0, y1), flip_filter=flip_filter)
    else:
        y = slow_upfirdn2d(x, None, padding=(x0, x1, y0, y1))
    y = slow_conv2d(y, w, groups, flip_weight)
    if down > 1 and up > 1:
        y = slow_upfirdn2d(y, f, down=down, flip_filter=flip_filter)
    elif down > 1:
        y = y[:, :, ::down, ::down]
    return y


def _rand(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64)


# (branch, kh, kw, up, down, padding, groups, flip_weight, flip_filter, filter: taps list, shape or None)
CASES = [
    ("a", 1, 1, 1, 2, 0, 1, True, False, [1, 3, 3, 1]),
    ("a", 1, 1, 1, 2, [1, 0, 0, 2], 2, False, True, (3, 4)),
    ("b", 1, 1, 2, 1, 0, 1, True, False, [1, 3, 3, 1]),
    ("b", 1, 1, 2, 1, [0, 1, 1, 0], 2, False, True, (4, 3)),
    ("c", 3, 3, 1, 2, 1, 1, True, False, [1, 3, 3, 1]),
    ("c", 2, 3, 1, 2, [0, 1, 2, 0], 2, False, True, (3, 4)),
    ("c", 3, 3, 1, 4, 2, 1, True, False, (8,)),
    ("d", 3, 3, 2, 1, 1, 1, True, False, [1, 3, 3, 1]),
    ("d", 3, 2, 2, 2, [1, 0, 2, 1], 2, False, True, (4, 3)),
    ("d", 3, 3, 2, 1, -3, 1, True, False, [1, 3, 3, 1]),  # crops inside the transposed conv (t > 0)
    ("d", 3, 3, 4, 1, 0, 1, False, False, (8,)),
    ("d", 2, 2, 3, 2, [-1, 2, 0, -2], 1, True, True, (5, 5)),
    ("e", 3, 3, 1, 1, 1, 2, True, False, None),
    ("e", 3, 2, 1, 1, [0, 0, 2, 2], 1, False, False, [1, 3, 3, 1]),
    ("f", 3, 3, 1, 1, [2, 0, 1, 1], 1, True, False, None),
    ("f", 3, 3, 1, 1, -1, 2, False, False, None),
]


@pytest.mark.parametrize("branch,kh,kw,up,down,padding,groups,flip_weight,flip_filter,ftaps", CASES)
def test_reference_matches_loops(branch, kh, kw, up, down, padding, groups, flip_weight, flip_filter, ftaps):
    x = _rand([2, 4, 5, 6], seed=1)
    w = _rand([6, 4 // groups, kh, kw], seed=2)
    if ftaps is None:
        f = None
    elif isinstance(ftaps, list):
        f = U.setup_filter(ftaps).double()
    else:
        f = _rand(ftaps, seed=3)
    y = CR.conv2d_resample(
        x, w, f, up=up, down=down, padding=padding, groups=groups, flip_weight=flip_weight, flip_filter=flip_filter
    )
    p = tuple(padding) if isinstance(padding, list) else (padding,) * 4
    expected = slow_conv2d_resample(
        x.numpy(), w.numpy(), None if f is None else f.numpy(), up, down, p, groups, flip_weight, flip_filter
    )
    assert y.shape == expected.shape
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-11, atol=1e-11)


def test_sres_discriminator_forms():
    # discriminator_sres: 3x3 /2 = FIR, padding 2, then a stride-2 conv; 1x1 /2 = FIR-decimate, padding 1, then conv.
    x = _rand([1, 3, 8, 8], seed=4)
    f = U.setup_filter([1, 3, 3, 1]).double()
    w3 = _rand([5, 3, 3, 3], seed=5)
    w1 = _rand([5, 3, 1, 1], seed=6)
    y3 = CR.conv2d_resample(x, w3, f, down=2, padding=1)
    assert torch.allclose(y3, F.conv2d(U.upfirdn2d(x, f, padding=2), w3, stride=2), atol=1e-12)
    y1 = CR.conv2d_resample(x, w1, f, down=2)
    assert torch.allclose(y1, F.conv2d(U.upfirdn2d(x, f, down=2, padding=1), w1), atol=1e-12)
    y = CR.conv2d_resample(x, w3, f, padding=1)
    assert torch.equal(y, F.conv2d(x, w3, padding=1))
    assert y3.shape == y1.shape == (1, 5, 4, 4)


# ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kh,kw,up,down,padding,groups",
    [(3, 3, 1, 2, 1, 1), (3, 2, 2, 1, [1, 0, 1, 1], 2), (3, 3, 2, 2, 0, 1), (3, 3, 1, 1, [1, 0, 0, 1], 1)],
)
def test_gradcheck_and_gradgradcheck(kh, kw, up, down, padding, groups):
    x = _rand([1, 2, 4, 4], seed=7).requires_grad_(True)
    w = _rand([2, 2 // groups, kh, kw], seed=8).requires_grad_(True)
    f = _rand([3, 4], seed=9)

    def fn(x, w):
        return CR.conv2d_resample(x, w, f, up=up, down=down, padding=padding, groups=groups, flip_weight=False)

    assert torch.autograd.gradcheck(fn, (x, w))
    assert torch.autograd.gradgradcheck(fn, (x, w))


# ----------------------------------------------------------------------------


def test_bad_input_errors_name_the_argument():
    x = torch.zeros(1, 4, 6, 6)
    w = torch.zeros(2, 4, 3, 3)
    f = U.setup_filter([1, 3, 3, 1])
    with pytest.raises(ValueError, match="x must have 4 dimensions"):
        CR.conv2d_resample(torch.zeros(4, 6, 6), w)
    with pytest.raises(TypeError, match="w must be a torch.Tensor"):
        CR.conv2d_resample(x, np.zeros((2, 4, 3, 3)))
    with pytest.raises(ValueError, match="w must have 4 dimensions"):
        CR.conv2d_resample(x, torch.zeros(2, 4, 3))
    with pytest.raises(TypeError, match="w must have the dtype of x"):
        CR.conv2d_resample(x, w.double())
    with pytest.raises(TypeError, match="f must be a torch.Tensor"):
        CR.conv2d_resample(x, w, f=[1, 3, 3, 1], down=2)
    with pytest.raises(ValueError, match="down must be an int >= 1"):
        CR.conv2d_resample(x, w, f, down=0)
    with pytest.raises(ValueError, match="up must be an int >= 1"):
        CR.conv2d_resample(x, w, f, up=[2, 2])
    with pytest.raises(ValueError, match="padding"):
        CR.conv2d_resample(x, w, f, padding=[1, 1, 1])
    with pytest.raises(ValueError, match="x.shape\\[1\\] must equal w.shape\\[1\\] \\* groups"):
        CR.conv2d_resample(x, w, groups=2)
    with pytest.raises(ValueError, match="groups"):
        CR.conv2d_resample(x, torch.zeros(3, 2, 3, 3), groups=2)
