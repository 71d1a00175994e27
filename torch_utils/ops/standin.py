"""Stand-ins for the compiled CUDA plugins, so that the CUDA code paths of the ops run on a machine without a GPU.

Two kinds, for tests and for `benchmarks/gpu_check.py --fake`:

- Host-loop plugins (`host_plugins()`): each plugin's .cpp built without CUDA. Their functions run the CUDA
  kernels' per-element code (the same `__host__ __device__` functions) in a loop over CPU tensors. Under
  `kernels_on_cpu(plugins)`, CPU tensors take the ops' CUDA path (autograd Functions, derivatives, the first-use
  self-check, dtype handling) with these plugins as the kernels, so the numbers can be compared with the reference.
- Shape plugins (`ShapePlugin`): the plugins' functions with their argument checks (devices, dtypes, shapes, as the
  C++ side checks them) that return empty tensors of the right shape, dtype and device. Under `shape_kernels()`
  and `torch._subclasses.fake_tensor.FakeTensorMode`, tensors on "cuda" take the ops' CUDA path without a GPU:
  shapes, devices and dtypes only.

Example:

    with standin.kernels_on_cpu(standin.host_plugins()):
        y = bias_act.bias_act(x_cpu, b_cpu, act="lrelu")   # the kernel's code, on the CPU
"""

import contextlib
import os

import torch

from . import bias_act, filtered_lrelu, upfirdn2d

OPS = {"bias_act": bias_act, "upfirdn2d": upfirdn2d, "filtered_lrelu": filtered_lrelu}


def host_plugins() -> dict:
    """The three plugins built from their .cpp files only (no CUDA): name -> extension module. The first call
    compiles them (a minute or two; cached in the torch extensions directory, keyed by the sources)."""
    from torch_utils import custom_ops

    plugins = {}
    for name, module in OPS.items():
        plugins[name] = custom_ops.get_plugin(
            module_name=f"{name}_host_plugin",
            sources=[s for s in module._plugin_sources if s.endswith(".cpp")],
            headers=module._plugin_headers,
            source_dir=os.path.dirname(os.path.abspath(module.__file__)),
        )
    return plugins


@contextlib.contextmanager
def plugins_installed(plugins: dict, device_types: tuple):
    """Install `plugins` (name -> plugin) as the ops' kernels for tensors of `device_types`, with fresh function and
    self-check caches; everything is restored on exit."""
    saved = {}
    for name, module in OPS.items():
        if name in plugins:
            saved[name] = (module._plugin, module._plugin_checked, module._kernel_device_types)
            module._plugin, module._plugin_checked = plugins[name], True
            module._kernel_device_types = tuple(device_types)
            module._kernel_check.reset()
    try:
        yield
    finally:
        for name, (plugin, checked, types) in saved.items():
            module = OPS[name]
            module._plugin, module._plugin_checked, module._kernel_device_types = plugin, checked, types
            module._kernel_check.reset()


def kernels_on_cpu(plugins: dict):
    """CPU tensors (and CUDA ones) take the ops' kernel paths with the host-loop `plugins` (`host_plugins()`)."""
    return plugins_installed(plugins, ("cuda", "cpu"))


def shape_kernels():
    """CUDA (fake) tensors take the ops' kernel paths with shape-only plugins (`ShapePlugin`)."""
    return plugins_installed({name: ShapePlugin(name) for name in OPS}, ("cuda",))


# ----------------------------------------------------------------------------


class ShapePlugin:
    """The functions of one compiled plugin, checking their arguments as the C++ side does and returning empty
    outputs of the right shape, dtype and device (for fake tensors: no numbers are computed)."""

    _float_dtypes = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

    def __init__(self, name: str):
        self.name = name
        self.calls = 0

    def _check(self, cond: bool, *message) -> None:
        if not cond:
            raise RuntimeError(f"{self.name} (shape stand-in): " + "".join(str(m) for m in message))

    def _check_like(self, t, x, what, dtype=None, shape=None) -> None:
        self._check(t.device == x.device, what, " must be on ", x.device, ", got ", t.device)
        self._check(t.dtype == (dtype or x.dtype), what, " must have dtype ", dtype or x.dtype, ", got ", t.dtype)
        if shape is not None:
            self._check(list(t.shape) == list(shape), what, " must have shape ", list(shape), ", got ", list(t.shape))

    def bias_act(self, x, b, m1, m2, dim, act, mode, alpha, gain, clamp, clamp_grad_at_limit):
        self.calls += 1
        self._check(x.dtype in self._float_dtypes, "x must be a float tensor, got ", x.dtype)
        if b is not None:
            self._check_like(b, x, "b", shape=[x.shape[dim]])
        if mode >= 1:
            self._check_like(m1, x, "m1", shape=x.shape)
        if mode == 2:
            self._check_like(m2, x, "m2", shape=x.shape)
        return torch.empty_like(x)

    def _pass(self, x, f, b, codes, mode, out_w, out_h, fp32_inside):
        self.calls += 1
        self._check(x.dtype in self._float_dtypes and x.ndim == 4, "x must be a 4-D float tensor")
        if f is not None:
            self._check(f.ndim == 2 and f.dtype in (torch.float32, torch.float64), "f must be float32/64 [fh, fw]")
            self._check(f.device == x.device, "f must be on ", x.device, ", got ", f.device)
        if b is not None:
            self._check_like(b, x, "b", shape=[x.shape[1]])
        shape = [x.shape[0], x.shape[1], out_h, out_w]
        self._check(mode != 2 or codes is not None, "mode 2 needs codes")
        if codes is not None and mode != 0:  # 2 bits per output sample, 16 to an int32 word
            words = (shape[0] * shape[1] * shape[2] * shape[3] + 15) // 16
            self._check_like(codes, x, "codes", dtype=torch.int32, shape=[words])
        dtype = torch.promote_types(x.dtype, torch.float32) if fp32_inside else x.dtype
        return torch.empty(shape, dtype=dtype, device=x.device)

    def upfirdn2d_pass(self, x, f, upx, upy, downx, downy, padx0, pady0, out_w, out_h, flip, fgain):
        return self._pass(x, f, None, None, 0, out_w, out_h, False)

    def filtered_pass(self, x, f, b, codes, mode, upx, upy, downx, downy, padx0, pady0, out_w, out_h, flip, fgain,
                      slope, act_gain, clamp, clamp_grad_at_limit, fp32_inside):  # fmt: skip
        return self._pass(x, f, b, codes, mode, out_w, out_h, fp32_inside)
