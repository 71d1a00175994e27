"""Trust a freshly compiled kernel only after it has matched the reference path.

Each compiled op (bias_act, upfirdn2d, filtered_lrelu) owns one `KernelCheck`. The first time the op would run its
kernel on a device and dtype, the check runs the kernel and the reference path on a small random input of that
device and dtype and compares the forward result and the input gradients. On a mismatch it warns once, naming the op,
the device, the dtype and the error, and the op uses its reference path for that device and dtype from then on. A
kernel that failed to build already falls back (torch_utils/custom_ops.py); this catches one that builds but computes
wrong numbers (a broken tool chain, an unsupported GPU).

Example (inside an op):

    _kernel_check = kernel_check.KernelCheck("bias_act", _self_check)
    if x.device.type == "cuda" and _init() and _kernel_check.trusted(x):
        ...  # the kernel
"""

import warnings

import torch

# Tolerance per dtype, relative to 1 + the largest reference magnitude. float16/bfloat16 kernels compute in float32 and
# round their outputs, so they sit within a few units in the last place of the float64 reference.
TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 4e-3, torch.bfloat16: 3e-2}


def _is_fake(x: torch.Tensor) -> bool:
    """True for tensors without data (meta, or FakeTensorMode's fakes): nothing can be compared on them."""
    if x.is_meta:  # (Not x.device: torch_utils/fake_cuda.py makes meta tensors report "cuda".)
        return True
    from torch._subclasses.fake_tensor import is_fake

    return is_fake(x)


def max_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest absolute difference relative to 1 + the largest magnitude of `expected` (compared in float64)."""
    got, expected = got.detach().double().cpu(), expected.detach().double().cpu()
    if got.shape != expected.shape:
        return float("inf")
    scale = 1.0 + (expected.abs().max().item() if expected.numel() else 0.0)
    return ((got - expected).abs().max().item() if got.numel() else 0.0) / scale


def compare(kernel_fn, ref_fn, inputs: list, dtype: torch.dtype, seed: int = 0, errors: list | None = None):
    """Run `kernel_fn(*inputs)` and `ref_fn` on float64 copies of the inputs; compare the outputs and the gradients of
    `sum(y * dy)` for the inputs that require grad. Returns None when they agree, else what disagreed. Each relative
    error (`max_error`) is also appended to `errors` when given (benchmarks/gpu_check.py reports them)."""
    tol = TOLERANCE.get(dtype, 1e-4)
    errors = [] if errors is None else errors
    with torch.inference_mode(False), torch.enable_grad():
        wide = [None if t is None else t.detach().double().requires_grad_(t.requires_grad) for t in inputs]
        y = kernel_fn(*inputs)
        y_ref = ref_fn(*wide)
        err = max_error(y, y_ref)
        errors.append(err)
        if not err <= tol:
            return f"forward error {err:.3g} > {tol:g}"
        g = torch.Generator().manual_seed(seed)
        dy = torch.randn(y_ref.shape, generator=g, dtype=torch.float64)
        wrt = [i for i, t in enumerate(inputs) if t is not None and t.requires_grad]
        got = torch.autograd.grad(y, [inputs[i] for i in wrt], dy.to(device=y.device, dtype=y.dtype))
        expected = torch.autograd.grad(y_ref, [wide[i] for i in wrt], dy.to(y_ref.device))
        for i, a, b in zip(wrt, got, expected):
            err = max_error(a, b)
            errors.append(err)
            if not err <= tol:
                return f"gradient of input {i}: error {err:.3g} > {tol:g}"
    return None


class KernelCheck:
    """The verdicts of one op's self-check, per (device, dtype).

    `check_fn(device, dtype)` returns None when the kernel agrees with the reference path on that device and dtype,
    else a short description of the disagreement; an exception it raises counts as a disagreement too.
    """

    def __init__(self, op_name: str, check_fn):
        self.op_name = op_name
        self.check_fn = check_fn
        self.verdicts = {}  # (device str, dtype) -> True (trusted) / False (use the reference path)

    def trusted(self, x: torch.Tensor) -> bool:
        """Whether the kernel may run on `x`'s device and dtype; checks it the first time. Fake and meta tensors carry
        no numbers, so they are trusted without a check (and without recording a verdict)."""
        if _is_fake(x):
            return True
        key = (str(x.device), x.dtype)
        verdict = self.verdicts.get(key)
        if verdict is None:
            self.verdicts[key] = True  # While checking: the check itself calls the kernel directly, not the op.
            try:
                with torch.inference_mode(False), torch.enable_grad():  # The first call may come without grad.
                    problem = self.check_fn(x.device, x.dtype)
            except Exception as e:  # noqa: BLE001 - any failure of the kernel means it is not to be trusted.
                problem = f"{type(e).__name__}: {e}".splitlines()[0]
            verdict = problem is None
            self.verdicts[key] = verdict
            if not verdict:
                warnings.warn(
                    f"{self.op_name}: the compiled kernel disagrees with the reference implementation on {x.device} "
                    f"{str(x.dtype).replace('torch.', '')} ({problem}); using the reference implementation there",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return verdict

    def reset(self) -> None:
        """Forget every verdict (tests, or after replacing the plugin)."""
        self.verdicts.clear()
