"""Fused bias add, activation, gain and clamp, the per-layer nonlinearity of StyleGAN-family networks and of
LongVideoGAN.

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

from . import fast_cpu, kernel_check

# ----------------------------------------------------------------------------
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

# ----------------------------------------------------------------------------

_plugin = None  # Compiled kernel module, once loaded.
_plugin_checked = False  # True once _init() has looked for the kernel (it looks only once per process).
_kernel_device_types = ("cuda",)  # Devices whose tensors go to the kernel (tests add "cpu" with a host-loop plugin).
_plugin_sources = ["bias_act.cpp", "bias_act.cu"]
_plugin_headers = ["bias_act.h"]
_plugin_build_kwargs = dict(
    extra_cflags=["-DLVG_WITH_CUDA"],  # bias_act.cpp then calls the CUDA launcher of bias_act.cu.
    extra_cuda_cflags=["--use_fast_math", "--allow-unsupported-compiler"],
)


def _init() -> bool:
    """Load the compiled bias_act kernel on first use; return True when it is available.

    Returns False (so callers use the reference path) when the kernel sources are not in this directory or the build
    fails; a failed build warns once.
    """
    global _plugin, _plugin_checked
    if not _plugin_checked:
        _plugin_checked = True
        # Imported here, not at module import, so that CPU-only use never touches the extension builder. Missing
        # sources give None quietly; a failed build warns once and gives None, so the reference path is used.
        from torch_utils import custom_ops

        _plugin = custom_ops.try_get_plugin_if_present(
            module_name="bias_act_plugin",
            sources=_plugin_sources,
            headers=_plugin_headers,
            source_dir=os.path.dirname(os.path.abspath(__file__)),
            **_plugin_build_kwargs,
        )
    return _plugin is not None


# ----------------------------------------------------------------------------


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
    if (
        impl == "cuda"
        and x.device.type in _kernel_device_types
        and _cuda_supported(x, b)
        and _init()
        and _kernel_check.trusted(x)
    ):
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


_cuda_dtypes = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_cuda_modes = dict(forward=0, grad=1, grad2=2)  # The kernel's Mode numbers (bias_act.h).
_bias_act_cuda_cache = dict()  # (dim, act, alpha, gain, clamp) -> autograd Function class
_clamp_grad_at_limit_cache = None


def _clamp_grad_at_limit() -> bool:
    """Whether torch.clamp's gradient passes for a value exactly at a limit: it does up to torch 2.13 and does not
    from torch 2.14. The kernels follow the running torch, so that they equal the reference path on such ties too
    (common in fp16, where `v * slope * gain` often rounds to exactly the clamp).
    """
    global _clamp_grad_at_limit_cache
    if _clamp_grad_at_limit_cache is None:
        # The first call may come under no_grad or inference_mode (generation, metrics, the module summary) or under
        # a fake-tensor or other dispatch mode: probe in plain eager mode with gradients on, on a real CPU tensor.
        from torch.utils._python_dispatch import _disable_current_modes

        with _disable_current_modes(), torch.inference_mode(False), torch.enable_grad():
            x = torch.ones([1], dtype=torch.float64, device="cpu", requires_grad=True)
            (grad,) = torch.autograd.grad(x.clamp(-1, 1).sum(), x)
            _clamp_grad_at_limit_cache = bool(grad.item() != 0)
    return _clamp_grad_at_limit_cache


def _cuda_supported(x, b) -> bool:
    """True when the kernel computes exactly what the reference path would; otherwise the reference path runs.

    The kernel handles the floating dtypes with `b` of the same dtype and device. A `b` of another dtype is left to
    the reference path, whose `x + b` follows torch's type promotion.
    """
    if x.dtype not in _cuda_dtypes:
        return False
    return b is None or (b.dtype == x.dtype and b.device == x.device)


def _self_check(device, dtype, errors=None):
    """Compare the kernel with the reference path on a small input of `device` and `dtype` (kernel_check.py): lrelu
    and tanh with a bias, gain and a clamp that some values reach; forward and the gradients of x and b."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn([2, 5, 3, 4], generator=g).to(device=device, dtype=dtype).requires_grad_()
    b = (torch.randn([5], generator=g) * 0.2).to(device=device, dtype=dtype).requires_grad_()
    for act in ("lrelu", "tanh"):
        kwargs = dict(dim=1, act=act, gain=1.5, clamp=1.25)
        problem = kernel_check.compare(
            lambda x, b: _bias_act_cuda(**kwargs).apply(x, b),
            lambda x, b: _bias_act_ref(x, b, **kwargs),
            [x, b],
            dtype,
            errors=errors,
        )
        if problem is not None:
            return f"act={act}: {problem}"
    return None


_kernel_check = kernel_check.KernelCheck("bias_act", _self_check)


def _bias_act_cuda(dim=1, act="linear", alpha=None, gain=None, clamp=None):
    """Return the autograd Function (cached per configuration) that runs bias_act with the compiled kernel.

    Derivatives: the first derivative is the kernel's `grad` mode (`dy * act'(v) * gain`, 0 where clamped), which is
    itself differentiable: with respect to `dy` by the same kernel, with respect to `x` and `b` by the `grad2` mode
    (`ddx * dy * act''(v) * gain`; skipped for piecewise-linear activations, whose second derivative is zero). Third
    and higher derivatives with respect to `x` are not implemented by the kernel and raise; use impl='ref'.
    The kernel recomputes `v = x + b` from the saved input in the backward pass rather than saving the output.
    """
    spec = activation_funcs[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    clamp = float(clamp if clamp is not None else -1)
    key = (dim, act, alpha, gain, clamp)
    if key in _bias_act_cuda_cache:
        return _bias_act_cuda_cache[key]

    at_limit = _clamp_grad_at_limit()

    def run(mode, x, b, m1=None, m2=None):
        return _plugin.bias_act(x, b, m1, m2, dim, spec.cuda_idx, _cuda_modes[mode], alpha, gain, clamp, at_limit)

    def bias_grad(dx, b):
        return dx.sum([i for i in range(dx.ndim) if i != dim]) if dx.ndim > 1 else dx

    class BiasActCuda(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, b):
            ctx.save_for_backward(x, b)
            return run("forward", x, b)

        @staticmethod
        def backward(ctx, dy):
            x, b = ctx.saved_tensors
            dx = BiasActGradCuda.apply(dy, x, b)
            db = bias_grad(dx, b) if ctx.needs_input_grad[1] else None
            return (dx if ctx.needs_input_grad[0] else None), db

    class BiasActGradCuda(torch.autograd.Function):
        @staticmethod
        def forward(ctx, dy, x, b):
            ctx.save_for_backward(dy, x, b)
            return run("grad", x, b, dy)

        @staticmethod
        def backward(ctx, d_dx):
            dy, x, b = ctx.saved_tensors
            d_dy = BiasActGradCuda.apply(d_dx, x, b) if ctx.needs_input_grad[0] else None
            d_x = d_b = None
            if spec.has_2nd_grad and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
                d_v = BiasActGrad2Cuda.apply(d_dx, dy, x, b)
                d_x = d_v if ctx.needs_input_grad[1] else None
                d_b = bias_grad(d_v, b) if ctx.needs_input_grad[2] else None
            return d_dy, d_x, d_b

    class BiasActGrad2Cuda(torch.autograd.Function):
        @staticmethod
        def forward(ctx, d_dx, dy, x, b):
            return run("grad2", x, b, d_dx, dy)

        @staticmethod
        def backward(ctx, grad):
            raise NotImplementedError(
                f"bias_act: derivatives of third order of act={act!r} are not implemented by the CUDA kernel; "
                "use impl='ref'"
            )

    _bias_act_cuda_cache[key] = BiasActCuda
    return BiasActCuda


# ----------------------------------------------------------------------------
