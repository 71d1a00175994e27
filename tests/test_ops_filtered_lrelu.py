"""Tests for torch_utils.ops.filtered_lrelu: reference path against a direct loop evaluation of its stages, sizes,
derivatives and errors."""

import numpy as np
import pytest
import torch

from tests.op_utils import slow_upfirdn2d
from torch_utils.ops import filtered_lrelu as FL

# ----------------------------------------------------------------------------

pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py: one intra-op thread for tiny tensors


def slow_filtered_lrelu(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter):
    """filtered_lrelu stage by stage, with the nonlinearity applied one scalar at a time."""
    x = x + b[None, :, None, None]
    x = slow_upfirdn2d(x, fu, up=up, padding=padding, flip_filter=flip_filter, gain=up * up)
    y = np.empty_like(x)
    for idx in np.ndindex(*x.shape):
        v = x[idx]
        v = (v if v > 0 else slope * v) * gain
        y[idx] = v if clamp is None else min(max(v, -clamp), clamp)
    return slow_upfirdn2d(y, fd, down=down, flip_filter=flip_filter)


def _rand(shape, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64) * scale


# (up, down, padding, fu shape, fd shape, flip_filter, gain, slope, clamp)
CASES = [
    (1, 1, 0, None, None, False, 1.0, 1.0, 0.5),
    (2, 2, [3, 2, 3, 2], (6,), (6,), False, np.sqrt(2), 0.2, None),
    (2, 1, [1, 2, 2, 1], (4,), None, True, np.sqrt(2), 0.2, 0.5),
    (1, 2, [2, 2, 1, 1], None, (4, 3), False, 1.3, 0.1, 1.0),
    (4, 2, [5, 4, 3, 6], (8,), (5,), True, np.sqrt(2), 0.2, 2.0),
    (2, 4, [-1, 3, 2, -2], (3, 4), (8,), False, np.sqrt(2), 0.3, None),
    (3, 3, [1, 0, 0, 1], (5, 5), (3,), False, 1.0, 0.2, 0.7),
    (2, 2, -1, (4,), (4,), True, np.sqrt(2), 0.2, None),
]


@pytest.mark.parametrize("up,down,padding,fu_shape,fd_shape,flip_filter,gain,slope,clamp", CASES)
def test_reference_matches_loops(up, down, padding, fu_shape, fd_shape, flip_filter, gain, slope, clamp):
    x = _rand([2, 3, 5, 6], seed=1)
    b = _rand([3], seed=2, scale=0.5)
    fu = None if fu_shape is None else _rand(fu_shape, seed=3)
    fd = None if fd_shape is None else _rand(fd_shape, seed=4)
    y = FL.filtered_lrelu(
        x, fu, fd, b, up=up, down=down, padding=padding, gain=gain, slope=slope, clamp=clamp,
        flip_filter=flip_filter, impl="ref",
    )  # fmt: skip
    p = padding if isinstance(padding, list) else [padding] * 4
    expected = slow_filtered_lrelu(
        x.numpy(), None if fu is None else fu.numpy(), None if fd is None else fd.numpy(), b.numpy(),
        up, down, p, gain, slope, clamp, flip_filter,
    )  # fmt: skip
    assert y.shape == expected.shape
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_torgb_form_is_bias_and_clamp():
    # No filters, up = down = 1, slope 1, gain 1 reduces to clamp(x + b, +-256).
    x = _rand([2, 3, 4, 5], seed=5, scale=300.0)
    b = _rand([3], seed=6)
    y = FL.filtered_lrelu(x, b=b, gain=1, slope=1, clamp=256, impl="ref")
    assert torch.equal(y, (x + b[None, :, None, None]).clamp(-256, 256))


def test_default_impl_on_cpu_is_reference():
    x = _rand([1, 2, 6, 6], seed=7).float()
    f = _rand([4], seed=8).float()
    kwargs = dict(fu=f, fd=f, up=2, down=2, padding=[2, 1, 2, 1], clamp=0.5)
    # On CPU the default impl is the fast CPU kernel (torch_utils/ops/fast_cpu.py): the reference up to rounding.
    y = FL.filtered_lrelu(x, **kwargs)
    torch.testing.assert_close(y, FL.filtered_lrelu(x, **kwargs, impl="ref"), rtol=1e-5, atol=1e-6)


def test_output_size_formula():
    filters = {taps: torch.ones(taps) for taps in (1, 3, 4, 12)}
    for H, W in [(5, 7), (8, 8)]:
        for up in (1, 2, 4):
            for down in (1, 2, 4):
                for fu_taps, fd_taps in [(1, 1), (4, 12), (12, 3)]:
                    for p0, p1 in [(0, 0), (6, 5), (-2, 9)]:
                        size = lambda n, q0, q1: (n * up + q0 + q1 - (fu_taps - 1) - (fd_taps - 1) + (down - 1)) // down
                        out_w, out_h = size(W, p0, p1), size(H, p1, p0)
                        if out_w < 1 or out_h < 1 or min(W, H) * up + p0 + p1 < fu_taps:
                            continue
                        y = FL.filtered_lrelu(
                            torch.zeros(1, 1, H, W), filters[fu_taps], filters[fd_taps], up=up, down=down,
                            padding=[p0, p1, p1, p0], impl="ref",
                        )  # fmt: skip
                        assert y.shape == (1, 1, out_h, out_w), (H, W, up, down, fu_taps, fd_taps, p0, p1)


# ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "up,down,padding,fu_shape,fd_shape,clamp",
    [(2, 2, [2, 1, 2, 1], (4,), (4,), 0.8), (1, 2, [1, 2, 0, 1], (2, 3), (3,), None), (2, 1, 1, (3,), (2, 2), 1.5)],
)
def test_gradcheck_and_gradgradcheck(up, down, padding, fu_shape, fd_shape, clamp):
    x = _rand([1, 2, 3, 3], seed=9).requires_grad_(True)
    b = _rand([2], seed=10, scale=0.1).requires_grad_(True)
    fu = _rand(fu_shape, seed=11)
    fd = _rand(fd_shape, seed=12)
    gain = np.sqrt(2)

    # The leaky ReLU (at 0) and the clamp (at +-clamp) are kinks: check that no pre-activation value is near one.
    from torch_utils.ops import upfirdn2d

    pre = upfirdn2d.upfirdn2d(x.detach() + b.detach()[None, :, None, None], fu, up=up, padding=padding, gain=up**2)
    act = torch.where(pre > 0, pre, 0.2 * pre) * gain
    assert pre.abs().min() > 1e-3
    if clamp is not None:
        assert (act.abs() - clamp).abs().min() > 1e-3 and (act.abs() > clamp).any()

    def fn(x, b):
        return FL.filtered_lrelu(x, fu, fd, b, up=up, down=down, padding=padding, gain=gain, clamp=clamp, impl="ref")

    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


# ----------------------------------------------------------------------------


def test_bad_input_errors_name_the_argument():
    x = torch.zeros(1, 2, 6, 6)
    f = torch.ones(4)
    with pytest.raises(ValueError, match="x must have 4 dimensions"):
        FL.filtered_lrelu(torch.zeros(2, 6, 6))
    with pytest.raises(TypeError, match="fu must be a torch.Tensor"):
        FL.filtered_lrelu(x, fu=[1, 1])
    with pytest.raises(ValueError, match="fd must be a non-empty"):
        FL.filtered_lrelu(x, fd=torch.ones(2, 2, 2))
    with pytest.raises(ValueError, match="b must have shape"):
        FL.filtered_lrelu(x, b=torch.zeros(3))
    with pytest.raises(ValueError, match="up must be an int >= 1"):
        FL.filtered_lrelu(x, f, f, up=0)
    with pytest.raises(ValueError, match="down must be an int >= 1"):
        FL.filtered_lrelu(x, f, f, down=1.5)
    with pytest.raises(ValueError, match="padding"):
        FL.filtered_lrelu(x, f, f, padding=[1, 2, 3])
    with pytest.raises(ValueError, match="clamp must be"):
        FL.filtered_lrelu(x, clamp=-1)
    with pytest.raises(ValueError, match="impl"):
        FL.filtered_lrelu(x, impl="triton")


# ----------------------------------------------------------------------------
# CPU training path: the kernel's autograd structure with polyphase passes (what runs when gradients are needed).


def _saved_bytes(fn, *args) -> dict:
    """Bytes that autograd keeps for backward while `fn(*args)` runs, per dtype."""
    saved = {}

    def pack(t):
        saved[t.dtype] = saved.get(t.dtype, 0) + t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*args)
    return saved


@pytest.mark.parametrize("up,down,padding,fu_shape,fd_shape,flip_filter,gain,slope,clamp", CASES)
@pytest.mark.parametrize("chunked", [False, True], ids=["whole", "chunked"])
def test_cpu_training_path_equals_reference(
    monkeypatch, chunked, up, down, padding, fu_shape, fd_shape, flip_filter, gain, slope, clamp
):
    if chunked:
        monkeypatch.setattr(FL, "_cpu_chunk_samples", 1)  # One channel at a time.
    x = _rand([2, 3, 5, 6], seed=21).requires_grad_(True)
    b = _rand([3], seed=22, scale=0.5).requires_grad_(True)
    fu = None if fu_shape is None else _rand(fu_shape, seed=23)
    fd = None if fd_shape is None else _rand(fd_shape, seed=24)
    kwargs = dict(up=up, down=down, padding=padding, gain=gain, slope=slope, clamp=clamp, flip_filter=flip_filter)
    y = FL.filtered_lrelu(x, fu, fd, b, **kwargs)
    assert type(y.grad_fn).__name__ == "FilteredLReluBackward"  # Not the reference path's graph.
    y_ref = FL.filtered_lrelu(x, fu, fd, b, impl="ref", **kwargs)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)

    # First and second order: the gradient and its derivative w.r.t. the output gradient (R1-style double backward).
    dy = _rand(y.shape, seed=25).requires_grad_(True)
    dx, db = torch.autograd.grad(y, (x, b), dy, create_graph=True)
    dx_ref, db_ref = torch.autograd.grad(y_ref, (x, b), dy, create_graph=True)
    torch.testing.assert_close((dx, db), (dx_ref, db_ref), rtol=1e-12, atol=1e-12)
    h = _rand(dx.shape, seed=26)
    (ddy,) = torch.autograd.grad((dx * h).sum() + db.sum(), dy)
    (ddy_ref,) = torch.autograd.grad((dx_ref * h).sum() + db_ref.sum(), dy)
    torch.testing.assert_close(ddy, ddy_ref, rtol=1e-12, atol=1e-12)


def test_cpu_training_path_float32_gradcheck_and_switches():
    x = _rand([1, 2, 4, 5], seed=27).requires_grad_(True)
    b = _rand([2], seed=28, scale=0.01).requires_grad_(True)
    fu, fd = _rand([4], seed=29), _rand([3], seed=30)
    kwargs = dict(up=2, down=2, padding=[3, 2, 3, 2], clamp=2.0)

    def fn(x, b):
        return FL.filtered_lrelu(x, fu, fd, b, **kwargs)

    pre = torch.nn.functional.leaky_relu(x.detach(), 0.2)
    assert pre.abs().min() > 1e-3  # Away from the kink (the up-sampled values too, checked by gradcheck passing).
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))

    # float32 (what training uses) agrees with the reference up to rounding.
    x32, b32 = x.detach().float().requires_grad_(True), b.detach().float().requires_grad_(True)
    fu32, fd32 = fu.float(), fd.float()
    y = FL.filtered_lrelu(x32, fu32, fd32, b32, **kwargs)
    y_ref = FL.filtered_lrelu(x32, fu32, fd32, b32, impl="ref", **kwargs)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        torch.autograd.grad(y.sum(), (x32, b32)), torch.autograd.grad(y_ref.sum(), (x32, b32)), rtol=1e-5, atol=1e-5
    )

    # Filters that need a gradient, impl="ref" and LVG_FAST_CPU=0 keep the reference path.
    from torch_utils.ops import fast_cpu

    fu_grad = fu.clone().requires_grad_(True)
    assert type(FL.filtered_lrelu(x, fu_grad, fd, b, **kwargs).grad_fn).__name__ != "FilteredLReluBackward"
    assert type(FL.filtered_lrelu(x, fu, fd, b, impl="ref", **kwargs).grad_fn).__name__ != "FilteredLReluBackward"
    with fast_cpu.disabled():
        assert type(FL.filtered_lrelu(x, fu, fd, b, **kwargs).grad_fn).__name__ != "FilteredLReluBackward"


def test_cpu_training_path_float32_channel_chunks(monkeypatch):
    # float32 runs the passes through the polyphase kernel, here on channel slices (non-contiguous views).
    x = _rand([2, 6, 11, 13], seed=31).float().requires_grad_(True)
    b = _rand([6], seed=32).float().requires_grad_(True)
    f = _rand([8], seed=33).float()
    kwargs = dict(up=4, down=2, padding=[5, 4, 3, 6], clamp=1.0)

    def run():
        y = FL.filtered_lrelu(x, f, f, b, **kwargs)
        return (y,) + torch.autograd.grad(y, (x, b), _rand(y.shape, seed=34).float())

    whole = run()
    monkeypatch.setattr(FL, "_cpu_chunk_samples", 1)
    chunked = run()
    for a, c in zip(whole, chunked):
        assert torch.equal(a, c)
    torch.testing.assert_close(whole[0], FL.filtered_lrelu(x, f, f, b, impl="ref", **kwargs), rtol=1e-5, atol=1e-5)


def test_cpu_training_path_saves_codes_not_float_intermediates():
    # A synthesis layer's shape (generator_sres layer 7: 4x up, 2x down), scaled down: the reference path keeps float
    # tensors of the 4x up-sampled size for backward; the training path keeps one uint8 code per such sample.
    x = torch.randn([2, 8, 24, 24], requires_grad=True)
    b = torch.zeros([8], requires_grad=True)
    f = torch.ones([12]) / 12
    kwargs = dict(up=4, down=2, padding=[24, 23, 24, 23], clamp=256)
    mid = 2 * 8 * (24 * 4 + 47 - 11) ** 2  # Samples of the up-sampled intermediate.
    ref = _saved_bytes(lambda: FL.filtered_lrelu(x, f, f, b, impl="ref", **kwargs))
    lean = _saved_bytes(lambda: FL.filtered_lrelu(x, f, f, b, **kwargs))
    assert sum(ref.values()) > 3 * 4 * mid  # Several float32 intermediates of that size.
    assert lean.get(torch.uint8, 0) == mid
    assert sum(v for dtype, v in lean.items() if dtype != torch.uint8) < 1000  # The filters only.
