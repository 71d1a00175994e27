"""Fused multiply-add `a * b + c` with broadcasting, whose gradients are reduced back to each operand's shape
(not used by the LongVideoGAN networks, kept for code written against the StyleGAN-family API).

Example:

    from torch_utils.ops.fma import fma
    y = fma(x, scale, shift)                        # x [N, C, H, W], scale [N, C, 1, 1], shift [C, 1, 1]
"""

import torch

# ----------------------------------------------------------------------------


def fma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Return `a * b + c` (broadcast); first and higher derivatives are supported."""
    for name, t in (("a", a), ("b", b), ("c", c)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    return _FusedMultiplyAdd.apply(a, b, c)


def _unbroadcast(x: torch.Tensor, shape) -> torch.Tensor:
    """Sum `x` over the dimensions that broadcasting added or stretched, giving a tensor of `shape`."""
    extra_dims = x.ndim - len(shape)
    assert extra_dims >= 0, (list(x.shape), list(shape))
    dims = [i for i in range(x.ndim) if i < extra_dims or (shape[i - extra_dims] == 1 and x.shape[i] != 1)]
    if dims:
        x = x.sum(dim=dims, keepdim=True)
    if extra_dims:
        x = x.reshape(shape)  # drop the leading size-1 dimensions
    assert x.shape == shape, (list(x.shape), list(shape))
    return x


class _FusedMultiplyAdd(torch.autograd.Function):
    """`torch.addcmul` forward; the backward is built from differentiable ops on the saved operands."""

    @staticmethod
    def forward(ctx, a, b, c):
        out = torch.addcmul(c, a, b)
        ctx.save_for_backward(a, b)
        ctx.c_shape = c.shape
        return out

    @staticmethod
    def backward(ctx, dout):
        a, b = ctx.saved_tensors
        da = db = dc = None
        if ctx.needs_input_grad[0]:
            da = _unbroadcast(dout * b, a.shape)
        if ctx.needs_input_grad[1]:
            db = _unbroadcast(dout * a, b.shape)
        if ctx.needs_input_grad[2]:
            dc = _unbroadcast(dout, ctx.c_shape)
        return da, db, dc


# ----------------------------------------------------------------------------
