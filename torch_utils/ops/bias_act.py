"""Fused bias add, activation, gain and clamp, the per-layer nonlinearity of StyleGAN-family networks and of
LongVideoGAN (SPEC §8.4).

`bias_act(x, b, act=..., gain=..., clamp=...)` computes `clamp(act(x + b) * gain, -clamp, clamp)` with `b` broadcast
along dimension `dim`. `activation_funcs` names the supported activations and their default slope (`def_alpha`,
used by lrelu only) and gain (`def_gain`, chosen to keep unit variance for N(0, 1) inputs where that is the custom).

Example, the "lrelu" of the paper (slope 0.2, gain sqrt(2)) with a bias over channels and clamping at 256:

    y = bias_act(x, b, act="lrelu", clamp=256)      # x [N, C, ...], b [C]

`impl="cuda"` uses the compiled kernel for CUDA tensors when it is available and the pure-PyTorch reference path
otherwise; `impl="ref"` always uses the reference path, which supports gradients of any order.
"""

import numbers
import os

import numpy as np
import torch
import torch.nn.functional as F

import dnnlib

from . import fast_cpu

# ---------------------------------------------------------------------------------------------------------------------
# Activations. `alpha` is the negative slope of lrelu and is ignored by the others. `cuda_idx` is the activation's
# number in the compiled kernel; `ref` says which tensor the kernel's backward pass reads to get the derivative
# ("x": the input, "y": the output, "": none needed); `has_2nd_grad` says whether the second derivative is nonzero
# anywhere (piecewise-linear activations have none).


def _linear(x, alpha=0):
    return x


def _relu(x, alpha=0):
    return F.relu(x)


def _lrelu(x, alpha=0.2):
    return F.leaky_relu(x, alpha)


def _tanh(x, alpha=0):
    return torch.tanh(x)


def _sigmoid(x, alpha=0):
    return torch.sigmoid(x)


def _elu(x, alpha=0):
    return F.elu(x)


def _selu(x, alpha=0):
    return F.selu(x)


def _softplus(x, alpha=0):
    return F.softplus(x)


def _swish(x, alpha=0):
    return torch.sigmoid(x) * x


activation_funcs = {
    "linear": dnnlib.EasyDict(func=_linear, def_alpha=0, def_gain=1, cuda_idx=1, ref="", has_2nd_grad=False),
    "relu": dnnlib.EasyDict(func=_relu, def_alpha=0, def_gain=np.sqrt(2), cuda_idx=2, ref="y", has_2nd_grad=False),
    "lrelu": dnnlib.EasyDict(func=_lrelu, def_alpha=0.2, def_gain=np.sqrt(2), cuda_idx=3, ref="y", has_2nd_grad=False),
    "tanh": dnnlib.EasyDict(func=_tanh, def_alpha=0, def_gain=1, cuda_idx=4, ref="y", has_2nd_grad=True),
    "sigmoid": dnnlib.EasyDict(func=_sigmoid, def_alpha=0, def_gain=1, cuda_idx=5, ref="y", has_2nd_grad=True),
    "elu": dnnlib.EasyDict(func=_elu, def_alpha=0, def_gain=1, cuda_idx=6, ref="y", has_2nd_grad=True),
    "selu": dnnlib.EasyDict(func=_selu, def_alpha=0, def_gain=1, cuda_idx=7, ref="y", has_2nd_grad=True),
    "softplus": dnnlib.EasyDict(func=_softplus, def_alpha=0, def_gain=1, cuda_idx=8, ref="y", has_2nd_grad=True),
    "swish": dnnlib.EasyDict(func=_swish, def_alpha=0, def_gain=np.sqrt(2), cuda_idx=9, ref="x", has_2nd_grad=True),
}

# ---------------------------------------------------------------------------------------------------------------------

_plugin = None  # Compiled kernel module, once loaded.
_plugin_checked = False  # True once _init() has looked for the kernel (it looks only once per process).
_plugin_sources = ["bias_act.cpp", "bias_act.cu"]
_plugin_headers = ["bias_act.h"]


def _init() -> bool:
    """Load the compiled bias_act kernel on first use; return True when it is available.

    Returns False (so callers use the reference path) when the kernel sources are not in this directory or the build
    fails; a failed build warns once.
    """
    global _plugin, _plugin_checked
    if not _plugin_checked:
        _plugin_checked = True
        source_dir = os.path.dirname(os.path.abspath(__file__))
        names = _plugin_sources + _plugin_headers
        if all(os.path.isfile(os.path.join(source_dir, name)) for name in names):
            # Imported here, not at module import, so that CPU-only use never touches the extension builder.
            from torch_utils import custom_ops

            # On a failed build this warns once and returns None, so the reference path is used.
            _plugin = custom_ops.try_get_plugin(
                module_name="bias_act_plugin",
                sources=_plugin_sources,
                headers=_plugin_headers,
                source_dir=source_dir,
                extra_cuda_cflags=["--use_fast_math", "--allow-unsupported-compiler"],
            )
    return _plugin is not None


# ---------------------------------------------------------------------------------------------------------------------


def _check_args(x, b, dim, act, clamp, impl) -> int:
    """Validate the arguments of bias_act and return `dim` as a non-negative index."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not isinstance(dim, numbers.Integral) or isinstance(dim, bool) or not -x.ndim <= dim < max(x.ndim, 1):
        raise ValueError(f"dim must be an int in [0, {x.ndim}) for x of shape {list(x.shape)}, got {dim!r}")
    dim = int(dim) % max(x.ndim, 1)
    if b is not None:
        if not isinstance(b, torch.Tensor):
            raise TypeError(f"b must be a torch.Tensor or None, got {type(b).__name__}")
        if x.ndim == 0 or b.ndim != 1 or b.shape[0] != x.shape[dim]:
            expected = f"[{x.shape[dim]}] (x.shape[{dim}])" if x.ndim > 0 else "nothing: x is a scalar"
            raise ValueError(f"b must have shape {expected} for x of shape {list(x.shape)}, got {list(b.shape)}")
    if act not in activation_funcs:
        raise ValueError(f"act: unknown activation {act!r}; valid: {', '.join(activation_funcs)}")
    if clamp is not None and not clamp >= 0:
        raise ValueError(f"clamp must be None or >= 0, got {clamp!r}")
    if impl not in ("cuda", "ref"):
        raise ValueError(f"impl must be 'cuda' or 'ref', got {impl!r}")
    return dim


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float = None,
    gain: float = None,
    clamp: float = None,
    impl: str = "cuda",
) -> torch.Tensor:
    """Return `clamp(act(x + b, alpha) * gain, -clamp, clamp)`.

    Args:
        x: input tensor of any shape.
        b: bias `[x.shape[dim]]`, broadcast along `dim`; None for no bias.
        dim: the dimension of `x` that `b` runs along.
        act: activation name, a key of `activation_funcs`.
        alpha: negative slope for "lrelu"; None means the activation's `def_alpha`. Ignored by other activations.
        gain: scale after the activation; None means the activation's `def_gain`.
        clamp: clip the result to `[-clamp, clamp]` after the gain; None for no clipping.
        impl: "cuda" (compiled kernel for CUDA tensors when available) or "ref" (reference path).

    Returns a tensor of the shape of `x`.
    """
    dim = _check_args(x, b, dim, act, clamp, impl)
    if impl == "cuda" and x.device.type == "cuda" and _init():
        return _bias_act_cuda(dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp).apply(x, b)
    if impl == "cuda" and x.device.type == "cpu":
        # CPU inference: one fused pass for linear / lrelu (torch_utils/ops/fast_cpu.py); None = not handled.
        y = fast_cpu.bias_act(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
        if y is not None:
            return y
    return _bias_act_ref(x=x, b=b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)


def _bias_act_ref(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None) -> torch.Tensor:
    """Reference implementation from differentiable torch ops (so every derivative order is available)."""
    dim = _check_args(x, b, dim, act, clamp, "ref")
    spec = activation_funcs[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)

    # Add the bias along dim.
    if b is not None:
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])

    # Activation, gain, clamp.
    x = spec.func(x, alpha=alpha)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-float(clamp), float(clamp))
    return x


def _bias_act_cuda(dim=1, act="linear", alpha=None, gain=None, clamp=None):
    """Autograd function around the compiled kernel; written by the CUDA-kernel issue together with its sources.

    `_init()` returns True only once those sources exist, so this is never reached before then.
    """
    raise NotImplementedError("bias_act: the CUDA kernel wrapper is not implemented yet; use impl='ref'")


# ---------------------------------------------------------------------------------------------------------------------
