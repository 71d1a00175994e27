"""Tests for torch_utils.ops.upfirdn2d: reference path against a direct loop evaluation, sizes,
derivatives, helpers and errors."""

import numpy as np
import pytest
import torch

from tests.op_utils import slow_upfirdn2d
from torch_utils.ops import upfirdn2d as U

# ----------------------------------------------------------------------------

pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py: one intra-op thread for tiny tensors


def _rand(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64)


# (up, down, padding, filter shape or None, flip_filter, gain)
CASES = [
    (1, 1, [1, 1, 1, 1], (3, 3), False, 1.0),
    (1, 1, [2, 0, 0, 1], (2, 3), True, 1.5),
    (2, 1, [2, 1, 2, 1], (4,), False, 4.0),
    (1, 2, [1, 1, 1, 1], (4, 4), True, 1.0),
    (4, 1, [5, 2, 5, 2], (8,), False, 16.0),
    (1, 4, [3, 2, 1, 4], (5,), False, 1.0),
    (2, 3, [-1, 2, 3, -2], (5, 4), False, 2.0),
    ([2, 1], [1, 2], [0, 3, 1, 0], (3, 2), True, 1.0),
    ([1, 3], [2, 1], [2, 2, -1, 1], (4, 3), False, 1.0),
    (3, 2, [-2, -1, -1, -3], (5,), True, 0.5),
    ([1, 4], [3, 1], [2, 0, -1, 4], None, False, 2.0),
    (1, 1, [-1, -2, 0, -1], None, False, 1.0),
    (2, 2, [1, 2, 2, 1], (6, 6), True, 4.0),
]


@pytest.mark.parametrize("up,down,padding,fshape,flip_filter,gain", CASES)
def test_reference_matches_loops(up, down, padding, fshape, flip_filter, gain):
    x = _rand([2, 3, 5, 6], seed=1)
    f = None if fshape is None else _rand(fshape, seed=2)
    y = U.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain, impl="ref")
    f_np = None if f is None else f.numpy()
    expected = slow_upfirdn2d(x.numpy(), f_np, up, down, padding, flip_filter, gain)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_default_impl_on_cpu_is_reference():
    x = _rand([1, 2, 4, 4], seed=3).float()
    f = U.setup_filter([1, 3, 3, 1])
    assert torch.equal(
        U.upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1]), U.upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1], impl="ref")
    )


def test_float32_filter_is_cast_to_input_dtype():
    x = _rand([1, 1, 3, 3], seed=4)
    f = torch.tensor([[0.25, 0.5], [0.125, 0.125]], dtype=torch.float32)
    y = U.upfirdn2d(x, f, padding=1, impl="ref")
    assert y.dtype == torch.float64
    np.testing.assert_allclose(
        y.numpy(), slow_upfirdn2d(x.numpy(), f.double().numpy(), padding=(1, 1, 1, 1)), atol=1e-12
    )


# ----------------------------------------------------------------------------
# Wrappers: padding formulas of filter2d, upsample2d and downsample2d, against the loop evaluation.


@pytest.mark.parametrize("ftaps", [[1, 2, 1], [1, 3, 3, 1], [1, 2, 3, 4, 4, 3, 2, 1]])
@pytest.mark.parametrize("flip_filter", [False, True])
def test_filter2d_upsample2d_downsample2d(ftaps, flip_filter):
    x = _rand([1, 2, 6, 8], seed=5)
    f = U.setup_filter(ftaps).double()
    fw, fh = U._get_filter_size(f)
    f_np = f.numpy()

    y = U.filter2d(x, f, padding=[1, 0, 0, 2], flip_filter=flip_filter, gain=2, impl="ref")
    p = (1 + fw // 2, (fw - 1) // 2, fh // 2, 2 + (fh - 1) // 2)
    np.testing.assert_allclose(y.numpy(), slow_upfirdn2d(x.numpy(), f_np, 1, 1, p, flip_filter, 2), atol=1e-12)

    y = U.upsample2d(x, f, up=[2, 4], flip_filter=flip_filter, impl="ref")
    assert y.shape == (1, 2, 24, 16)
    p = ((fw + 1) // 2, (fw - 2) // 2, (fh + 3) // 2, (fh - 4) // 2)
    np.testing.assert_allclose(y.numpy(), slow_upfirdn2d(x.numpy(), f_np, (2, 4), 1, p, flip_filter, 8), atol=1e-12)

    y = U.downsample2d(x, f, down=2, padding=1, flip_filter=flip_filter, impl="ref")
    assert y.shape == (1, 2, 4, 5)
    p = tuple(1 + v for v in ((fw - 1) // 2, (fw - 2) // 2, (fh - 1) // 2, (fh - 2) // 2))
    np.testing.assert_allclose(y.numpy(), slow_upfirdn2d(x.numpy(), f_np, 1, 2, p, flip_filter, 1), atol=1e-12)


def test_filter2d_keeps_size_for_even_and_odd_filters():
    x = _rand([1, 1, 7, 9], seed=6)
    for taps in ([1, 1], [1, 2, 1], [1, 3, 3, 1], [1, 4, 6, 4, 1]):
        assert U.filter2d(x, U.setup_filter(taps), impl="ref").shape == x.shape


def test_upsample2d_bilinear_is_half_pixel_linear_interpolation():
    # With [1, 3, 3, 1] the x2 up-sampler gives 0.25/0.75 weights, with zero outside the image.
    x = _rand([1, 1, 1, 4], seed=7)
    y = U.upsample2d(x, U.setup_filter([[1, 3, 3, 1]]), up=[2, 1], impl="ref")[0, 0, 0]  # 1x4 filter
    xv = np.concatenate([[0.0], x[0, 0, 0].numpy(), [0.0]])
    expected = np.stack([0.25 * xv[:-2] + 0.75 * xv[1:-1], 0.75 * xv[1:-1] + 0.25 * xv[2:]], axis=1).reshape(-1)
    np.testing.assert_allclose(y.numpy(), expected, atol=1e-12)


# ----------------------------------------------------------------------------


def test_output_size_formula():
    f_cache = {}
    for H, W in [(5, 7), (8, 8)]:
        for up in (1, 2, 3):
            for down in (1, 2, 4):
                for taps in (1, 2, 5):
                    for p0, p1 in [(0, 0), (3, -1), (-1, 2)]:
                        f = f_cache.setdefault(taps, torch.ones(taps, taps))
                        out_w = (W * up + p0 + p1 - taps) // down + 1
                        out_h = (H * up + p1 + p0 - taps) // down + 1
                        if out_w < 1 or out_h < 1:
                            continue
                        x = torch.zeros(1, 1, H, W)
                        y = U.upfirdn2d(x, f, up=up, down=down, padding=[p0, p1, p1, p0], impl="ref")
                        assert y.shape == (1, 1, out_h, out_w), (H, W, up, down, taps, p0, p1)


# ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "up,down,padding,fshape,flip_filter",
    [
        (2, 1, [2, 1, 2, 1], (4,), False),
        (1, 2, [1, 1, 1, 1], (3, 4), True),
        ([2, 1], [1, 2], [-1, 2, 1, -1], (3, 2), False),
    ],
)
def test_gradcheck_and_gradgradcheck(up, down, padding, fshape, flip_filter):
    x = _rand([1, 2, 3, 4], seed=8).requires_grad_(True)
    f = _rand(fshape, seed=9)

    def fn(x):
        return U.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=1.5, impl="ref")

    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


# ----------------------------------------------------------------------------


def test_setup_filter():
    f = U.setup_filter(None)
    assert f.shape == (1, 1) and f.item() == 1 and f.dtype == torch.float32

    f = U.setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4)
    np.testing.assert_allclose(f.numpy(), np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64, atol=1e-7)

    f8 = U.setup_filter(np.arange(1, 9))  # 8 taps stay separable
    assert f8.shape == (8,) and abs(float(f8.sum()) - 1) < 1e-6
    assert U.setup_filter([1, 2, 1], separable=True).shape == (3,)
    assert U.setup_filter(np.arange(1, 9), separable=False).shape == (8, 8)

    f = U.setup_filter([[1, 2], [3, 4]], normalize=False, flip_filter=True, gain=3)
    np.testing.assert_allclose(f.numpy(), 3 * np.array([[4, 3], [2, 1]]), atol=1e-6)
    f = U.setup_filter([1, 3], gain=4, separable=True)  # 1-D: scaled by sqrt(gain)
    np.testing.assert_allclose(f.numpy(), [0.5, 1.5], atol=1e-7)
    f = U.setup_filter(torch.tensor([1.0, 1.0]), gain=4)  # outer product: scaled by gain
    np.testing.assert_allclose(f.numpy(), np.full((2, 2), 1.0), atol=1e-7)

    with pytest.raises(ValueError, match="f must"):
        U.setup_filter(np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="separable"):
        U.setup_filter(np.ones((2, 2)), separable=True)


def test_parse_helpers():
    assert U._parse_scaling(2) == (2, 2)
    assert U._parse_scaling([3, 1]) == (3, 1)
    assert U._parse_padding(1) == (1, 1, 1, 1)
    assert U._parse_padding([2, -1]) == (2, 2, -1, -1)
    assert U._parse_padding((1, 2, 3, 4)) == (1, 2, 3, 4)
    assert U._get_filter_size(None) == (1, 1)
    assert U._get_filter_size(torch.ones(5)) == (5, 5)
    assert U._get_filter_size(torch.ones(3, 4)) == (4, 3)


def test_bad_input_errors_name_the_argument():
    x = torch.zeros(1, 1, 4, 4)
    f = torch.ones(2, 2)
    with pytest.raises(ValueError, match="x must have 4 dimensions"):
        U.upfirdn2d(torch.zeros(1, 4, 4), f)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        U.upfirdn2d(np.zeros((1, 1, 4, 4)), f)
    with pytest.raises(TypeError, match="f must be a torch.Tensor"):
        U.upfirdn2d(x, [[1, 1], [1, 1]])
    with pytest.raises(ValueError, match="f must be a non-empty"):
        U.upfirdn2d(x, torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match="padding"):
        U.upfirdn2d(x, f, padding=[1, 2, 3])
    with pytest.raises(ValueError, match="down factors must be >= 1"):
        U.upfirdn2d(x, f, down=0)
    with pytest.raises(ValueError, match="up must be an int"):
        U.upfirdn2d(x, f, up=1.5)
    with pytest.raises(ValueError, match="impl"):
        U.upfirdn2d(x, f, impl="triton")
    with pytest.raises(ValueError, match="smaller than the filter"):
        U.upfirdn2d(x, torch.ones(6, 6))
    with pytest.raises(ValueError, match="down factors must be >= 1"):
        U.downsample2d(x, f, down=[2, 0])
    with pytest.raises(ValueError, match="up must be"):
        U.upsample2d(x, f, up=[2, 2, 2])
