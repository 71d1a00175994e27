"""Drop-in `conv2d` / `conv_transpose2d` with the switches that StyleGAN-family code expects.

Older PyTorch releases (before 1.11) lacked efficient double backward for convolutions on CUDA, which the R1
penalty needs; the original release shipped a replacement for that case only. On the PyTorch versions this project
supports, the built-in convolutions already provide every derivative order, so both functions here call them
directly and the module flags are kept for the network sources that set or read them:

* `enabled`: whether the replacement may be used (False by default; the original release never enables it).
* `weight_gradients_disabled`, `no_weight_gradients()`: a request to skip weight gradients, honoured only by the
  replacement path, hence without effect here, as in the original on current PyTorch.

Example:

    from torch_utils.ops import conv2d_gradfix
    y = conv2d_gradfix.conv2d(x, w, padding=1)      # identical to torch.nn.functional.conv2d
"""

import contextlib

import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------

enabled = False  # Allow the replacement path (never taken on PyTorch >= 1.11, see the module docstring).
weight_gradients_disabled = False  # Set inside no_weight_gradients(); read only by the replacement path.


@contextlib.contextmanager
def no_weight_gradients(disable: bool = True):
    """Context in which `weight_gradients_disabled` is True (when `disable`); restores the previous value on exit.

    Example:

        with conv2d_gradfix.no_weight_gradients():
            (r1_grads,) = torch.autograd.grad(outputs=[scores.sum()], inputs=[reals], create_graph=True)
    """
    global weight_gradients_disabled
    old = weight_gradients_disabled
    if disable:
        weight_gradients_disabled = True
    try:
        yield
    finally:
        weight_gradients_disabled = old


# ----------------------------------------------------------------------------


def conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
) -> torch.Tensor:
    """Same arguments and result as `torch.nn.functional.conv2d` (correlation, weight `[O, I/groups, kh, kw]`)."""
    return F.conv2d(
        input=input, weight=weight, bias=bias, stride=stride, padding=padding, dilation=dilation, groups=groups
    )


def conv_transpose2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor = None,
    stride=1,
    padding=0,
    output_padding=0,
    groups: int = 1,
    dilation=1,
) -> torch.Tensor:
    """Same arguments and result as `torch.nn.functional.conv_transpose2d` (weight `[I, O/groups, kh, kw]`)."""
    return F.conv_transpose2d(
        input=input,
        weight=weight,
        bias=bias,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        groups=groups,
        dilation=dilation,
    )


# ----------------------------------------------------------------------------
