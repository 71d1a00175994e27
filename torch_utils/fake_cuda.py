"""Run CUDA code without a GPU: data-less tensors that report the device `cuda:0`.

`fake_cuda()` is a context in which the networks, training steps, generation and metric feature passes run with
every tensor on "cuda" on a CPU-only machine, for tests and `benchmarks/gpu_check.py --fake`. Inside it:

- Every tensor placed on "cuda" (`device=` arguments, `.to("cuda")`, `.cuda()`, `Module.to`) is a `meta`
  tensor: shapes, dtypes and strides are computed, no data. Its `.device` reads `cuda:0` and `.is_cuda` True, so the
  code takes its CUDA branches (fp16 layers, the compiled ops' kernel paths, pinned memory...).
- Mixing it with a CPU tensor raises as on a GPU, and more strictly than `FakeTensorMode`, which accepts a 0-dim CPU
  tensor in `torch.stack` where real CUDA refuses it. Reading a value (`.item()`, `.tolist()`, `bool(t)`, `int(t)`,
  `.numpy()`), a host sync on a GPU, raises HostReadError, except at the few places that need it as the original does
  (`ALLOWED_HOST_READS`: a random draw that decides an output size), where it reads zeros. Convolutions and matrix
  products refuse operands of different dtypes (as cuDNN and cuBLAS do; meta kernels alone would promote), so an
  fp16/fp32 mismatch fails.
- The compiled ops run their CUDA paths (autograd Functions, derivatives) with shape-only plugins
  (torch_utils/ops/standin.py); `torch.cuda.is_available()` is True and the memory and synchronisation calls of
  `torch.cuda` answer as an idle GPU would; `torch.Generator(device="cuda")` gives a CPU generator reporting cuda.

Why meta tensors and not `torch._subclasses.fake_tensor.FakeTensorMode` with CUDA fakes: with a CPU-only torch build
(what CPU machines install) autograd aborts the process on a CUDA fake (its input metadata asks for the CUDA device
guard, which such a build does not have), and so do the Python bindings of indexing and `.contiguous()`.

Example:

    with fake_cuda():
        G = VideoGenerator(**kwargs).to("cuda")
        video = G(1, 16)          # a data-less [1, 3, 16, 36, 64] float32 tensor; video.device == cuda:0
"""

import contextlib
import os

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

CUDA = torch.device("cuda", 0)
META = torch.device("meta")

# Operations whose CUDA kernels require all floating operands to have one dtype.
_SAME_DTYPE_FUNCS = {
    F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d, F.linear,
    torch.conv1d, torch.conv2d, torch.conv3d, torch.conv_transpose1d, torch.conv_transpose2d, torch.conv_transpose3d,
    torch.matmul, torch.mm, torch.bmm, torch.addmm, torch.baddbmm, torch.einsum,
    torch.Tensor.matmul, torch.Tensor.__matmul__, torch.Tensor.__rmatmul__, torch.Tensor.mm, torch.Tensor.bmm,
}  # fmt: skip


# Host reads of a device value that the code needs and the original has too: the value decides an output size (the
# reflect padding of ADA's geometry, the clip length of the temporal scale augmentation) or the ADA probability.
# Under fake_cuda they read 0; a host read anywhere else raises. (file name, function) of the calling frame.
ALLOWED_HOST_READS = {
    ("augment.py", "_geometry_grid"),
    ("diff_augment.py", "temporal_scale_augment"),
    ("augment.py", "update"),  # The ADA controller's adjustment, every ada_interval steps (the original's too).
}

_HOST_READS = {
    torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.__int__, torch.Tensor.__float__,
    torch.Tensor.__bool__, torch.Tensor.__index__,
}  # fmt: skip


class HostReadError(RuntimeError):
    """A value of a (fake) CUDA tensor was read on the host: a host sync on a GPU."""


def _caller() -> tuple:
    """(file name, function, line) of the innermost frame outside torch and this module."""
    import sys

    frame = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename
        if not (path == __file__ or f"{os.sep}torch{os.sep}" in path):
            return os.path.basename(path), frame.f_code.co_name, frame.f_lineno
        frame = frame.f_back
    return "?", "?", 0


def _host_read(func, t: torch.Tensor):
    """A placeholder value (zeros) for an allowed host read of a meta tensor; HostReadError for any other."""
    name, function, line = _caller()
    if (name, function) not in ALLOWED_HOST_READS:
        raise HostReadError(
            f"{getattr(func, '__name__', func)} of a CUDA tensor in {name}:{line} ({function}): a host sync on a GPU"
        )
    zeros = torch.zeros(t.shape, dtype=t.dtype)
    return func(zeros)


def _to_meta(device):
    """A device argument with "cuda" (any index) replaced by "meta"."""
    if device is None:
        return None
    if isinstance(device, int):  # A bare index means a CUDA device.
        return META
    device = torch.device(device)
    return META if device.type == "cuda" else device


class _MetaAsCuda(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        owner = getattr(func, "__self__", None)  # Property getters arrive as the descriptor's __get__.
        if owner is torch._C.TensorBase.device:
            device = func(*args)
            return CUDA if device.type == "meta" else device
        if owner is torch._C.TensorBase.is_cuda:
            return args[0].is_meta or func(*args)
        if func is torch.Tensor.to:
            t = args[0]
            device, dtype, non_blocking, memory_format = torch._C._nn._parse_to(
                *args[1:], **{k: v for k, v in kwargs.items() if k != "copy"}
            )
            to_kwargs = dict(non_blocking=non_blocking, copy=bool(kwargs.get("copy", False)))
            if device is not None:
                to_kwargs["device"] = _to_meta(device)
            if dtype is not None:
                to_kwargs["dtype"] = dtype
            if memory_format is not None:
                to_kwargs["memory_format"] = memory_format
            return func(t, **to_kwargs)
        if func is torch.Tensor.cuda:
            return args[0].to(META)
        if func is torch.Tensor.pin_memory:
            return args[0]
        if func in _HOST_READS and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            return _host_read(func, args[0])
        if func in _SAME_DTYPE_FUNCS:
            tensors = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)]
            dtypes = {t.dtype for t in tensors if t.is_floating_point()}
            if len(dtypes) > 1:
                names = sorted(str(d).replace("torch.", "") for d in dtypes)
                raise RuntimeError(f"{getattr(func, '__name__', func)}: operands must have one dtype, got {names}")
        if "device" in kwargs:
            kwargs["device"] = _to_meta(kwargs["device"])
        return func(*args, **kwargs)


_RealGenerator = torch.Generator


class _Generator(_RealGenerator):
    """`torch.Generator` inside `fake_cuda()`: one for "cuda" is a CPU generator that reports `cuda:0` (random
    functions accept a CPU generator for meta tensors; a CPU-only torch build has no CUDA generators)."""

    def __new__(cls, device="cpu"):
        return super().__new__(cls)

    def __init__(self, device="cpu"):
        super().__init__()
        self._device = CUDA if _to_meta(device) == META else torch.device(device)

    @property
    def device(self):
        return self._device


@contextlib.contextmanager
def _patched(obj, name, value):
    saved = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, saved)


@contextlib.contextmanager
def fake_cuda(shape_kernels: bool = True):
    """The fake-CUDA context (module docstring); `shape_kernels=False` leaves the compiled ops' plugins alone."""
    from torch_utils import training_stats
    from torch_utils.ops import standin

    with contextlib.ExitStack() as stack:
        for name, value in [
            ("is_available", lambda: True),
            ("device_count", lambda: 1),
            ("current_device", lambda: 0),
            ("synchronize", lambda device=None: None),
            ("empty_cache", lambda: None),
            ("max_memory_allocated", lambda device=None: 0),
            ("reset_peak_memory_stats", lambda device=None: None),
            ("manual_seed", lambda seed: None),
            ("manual_seed_all", lambda seed: None),
        ]:
            stack.enter_context(_patched(torch.cuda, name, value))
        stack.enter_context(_patched(torch, "Generator", _Generator))
        stack.enter_context(_patched(training_stats, "_counters", {}))  # Its accumulators would outlive the context.
        if shape_kernels:
            stack.enter_context(standin.shape_kernels())
        stack.enter_context(_MetaAsCuda())
        yield


@contextlib.contextmanager
def build_without_data():
    """Modules built inside get data-less (meta) parameters and buffers: paper-size networks in a second instead of
    the time their random initialisation takes. For use inside `fake_cuda()`, where the networks are then moved to
    "cuda" (still meta). Persistent classes skip their pickle check of the constructor arguments (meta tensors cannot
    be pickled)."""
    from torch_utils import persistence

    with _patched(persistence, "_check_pickleable", lambda obj: None), torch.device(META), _AllOnMeta():
        yield


class _AllOnMeta(TorchFunctionMode):
    """Every explicit device (CPU included) becomes meta, for `build_without_data`."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.to:
            device, dtype = torch._C._nn._parse_to(*args[1:], **{k: v for k, v in kwargs.items() if k != "copy"})[:2]
            return func(args[0], device=META, dtype=dtype) if dtype is not None else func(args[0], device=META)
        if "device" in kwargs:
            kwargs["device"] = META
        return func(*args, **kwargs)


def move_to_cuda(module: torch.nn.Module) -> torch.nn.Module:
    """Move `module`'s parameters and buffers to (fake) "cuda" in place, also for modules that `Module.to` refuses to
    convert to meta (plain tensors registered as parameters, TorchScript modules); use inside `fake_cuda()`."""
    for m in module.modules():
        for name, p in list(m._parameters.items()):
            if p is not None:
                moved = p.detach().to(CUDA)
                m._parameters[name] = (
                    torch.nn.Parameter(moved, p.requires_grad) if isinstance(p, torch.nn.Parameter) else moved
                )
        for name, b in list(m._buffers.items()):
            if b is not None:
                m._buffers[name] = b.to(CUDA)
    return module
