"""Model-agnostic PyTorch helpers: cached constants, shape asserts, seeds and RNG states, seeded resumable data
loading, parameter copying, rank-consistency checks, module summaries.

Embedded network sources of the original release call `constant`, `assert_shape`, `profiled_function` and
`suppress_tracer_warnings` by these names, and the original module also offered `InfiniteSampler` and
`check_ddp_consistency`: these names stay, with the original's signatures, so original pickles and code written
against the original find them.
"""

import contextlib
import functools
import hashlib
import math
import random
import re
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

import dnnlib

from . import distributed

# ----------------------------------------------------------------------------

_constant_cache = dict()


def constant(
    value: Any,
    shape: Any = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    memory_format: torch.memory_format | None = None,
) -> torch.Tensor:
    """Tensor for a numpy-able value, optionally broadcast to `shape`, created once per distinct request.

    Defaults: the torch default dtype, CPU, contiguous format. Do not modify the result in place: it is shared.

    Example:
        >>> gain = constant(np.sqrt(2), device=x.device)
        >>> eye = constant(np.eye(3), dtype=torch.float32, device=x.device)
    """
    value = np.asarray(value)
    if shape is not None:
        shape = tuple(shape)
    if dtype is None:
        dtype = torch.get_default_dtype()
    device = torch.device("cpu") if device is None else torch.device(device)
    if memory_format is None:
        memory_format = torch.contiguous_format

    key = (value.shape, value.dtype, value.tobytes(), shape, dtype, device, memory_format)
    tensor = _constant_cache.get(key, None)
    if tensor is None:
        tensor = torch.as_tensor(value.copy(), dtype=dtype, device=device)
        if shape is not None:
            tensor, _ = torch.broadcast_tensors(tensor, torch.empty(shape, device=device))
        tensor = tensor.contiguous(memory_format=memory_format)
        _constant_cache[key] = tensor
    return tensor


# ----------------------------------------------------------------------------


def nan_to_num(
    input: torch.Tensor,
    nan: float = 0.0,
    posinf: float | None = None,
    neginf: float | None = None,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """`torch.nan_to_num` (kept as a name for code written against older torch versions)."""
    return torch.nan_to_num(input, nan=nan, posinf=posinf, neginf=neginf, out=out)


symbolic_assert = torch._assert  # Assert that torch.jit tracing records instead of evaluating once.


# ----------------------------------------------------------------------------


@contextlib.contextmanager
def suppress_tracer_warnings() -> Iterator[None]:
    """Silence `torch.jit.TracerWarning` inside the block (shape checks that are constant under tracing).

    Example:
        >>> with suppress_tracer_warnings():
        ...     assert x.shape[1] == 3
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        yield


# ----------------------------------------------------------------------------


def assert_shape(tensor: torch.Tensor, ref_shape: list | tuple) -> None:
    """Raise AssertionError unless `tensor` has `len(ref_shape)` dims and each non-None entry matches.

    Example:
        >>> assert_shape(video, [None, 3, 16, 36, 64])  # [N, C, T, H, W]
    """
    if tensor.ndim != len(ref_shape):
        raise AssertionError(f"Wrong number of dimensions: got {tensor.ndim}, expected {len(ref_shape)}")
    for idx, (size, ref_size) in enumerate(zip(tensor.shape, ref_shape)):
        if ref_size is None:
            pass
        elif isinstance(ref_size, torch.Tensor):
            with suppress_tracer_warnings():
                symbolic_assert(torch.equal(torch.as_tensor(size), ref_size), f"Wrong size for dimension {idx}")
        elif isinstance(size, torch.Tensor):
            with suppress_tracer_warnings():
                symbolic_assert(
                    torch.equal(size, torch.as_tensor(ref_size)),
                    f"Wrong size for dimension {idx}: expected {ref_size}",
                )
        elif size != ref_size:
            raise AssertionError(f"Wrong size for dimension {idx}: got {size}, expected {ref_size}")


# ----------------------------------------------------------------------------


def profiled_function(fn: Callable) -> Callable:
    """Decorator: run `fn` inside `torch.autograd.profiler.record_function(fn.__name__)` so profiles name it."""

    @functools.wraps(fn)
    def decorator(*args, **kwargs):
        with torch.autograd.profiler.record_function(fn.__name__):
            return fn(*args, **kwargs)

    return decorator


# ----------------------------------------------------------------------------


class InfiniteSampler(torch.utils.data.Sampler):
    """Endless index stream over a dataset, split across ranks, reshuffled gradually as it loops.

    The original's sampler, kept for its API. Training uses `SeededInfiniteSampler` / `InfiniteLoader`, whose order
    can be resumed from a count of items consumed.

    With shuffling, each yielded position is swapped with a random earlier one inside a window of
    `window_size * len(dataset)` items, so later passes see a different order without epoch boundaries.

    Example:
        >>> sampler = InfiniteSampler(dataset, rank=rank, num_replicas=world_size, seed=seed)
        >>> loader = iter(torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=batch_gpu))
    """

    def __init__(
        self,
        dataset: Any,  # Anything with __len__.
        rank: int = 0,  # Index of this process among num_replicas.
        num_replicas: int = 1,  # Number of processes sharing the stream.
        shuffle: bool = True,  # False = dataset order, repeated.
        seed: int = 0,  # Seed of the shuffle (same on all ranks so they partition one stream).
        window_size: float = 0.5,  # Fraction of the dataset in which items keep being reshuffled; 0 = fixed order.
    ):
        if len(dataset) <= 0:
            raise ValueError(f"InfiniteSampler: dataset must be non-empty, got length {len(dataset)}")
        if num_replicas <= 0:
            raise ValueError(f"InfiniteSampler: num_replicas must be positive, got {num_replicas}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"InfiniteSampler: rank must be in [0, {num_replicas}), got {rank}")
        if not 0 <= window_size <= 1:
            raise ValueError(f"InfiniteSampler: window_size must be in [0, 1], got {window_size}")
        super().__init__()
        self.dataset = dataset
        self.rank = rank
        self.num_replicas = num_replicas
        self.shuffle = shuffle
        self.seed = seed
        self.window_size = window_size

    def __iter__(self) -> Iterator[int]:
        order = np.arange(len(self.dataset))
        rnd = None
        window = 0
        if self.shuffle:
            rnd = np.random.RandomState(self.seed)
            rnd.shuffle(order)
            window = int(np.rint(order.size * self.window_size))

        idx = 0
        while True:
            i = idx % order.size
            if idx % self.num_replicas == self.rank:
                yield int(order[i])
            if window >= 2:
                j = (i - rnd.randint(window)) % order.size
                order[i], order[j] = order[j], order[i]
            idx += 1


# ----------------------------------------------------------------------------
# Precision flags.


def set_precision_flags(allow_tf32: bool = False, allow_fp16_reduce: bool = False, benchmark: bool = False) -> None:
    """Process-wide arithmetic settings. The defaults are the original's strict fp32: no TF32 in CUDA matmuls or cuDNN
    convolutions, no reduced-precision reductions in fp16 matmuls, and no cuDNN autotuning (whose algorithm choice
    can differ between runs and break exact reproducibility)."""
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = allow_fp16_reduce
    torch.backends.cudnn.benchmark = benchmark


# ----------------------------------------------------------------------------
# Seeds and RNG states (so that a resumed run continues the exact random streams).


def rank_seed(seed: int, rank: int, world_size: int) -> int:
    """Per-rank seed `rank + seed * world_size`, as the original: distinct across ranks and across run seeds."""
    return rank + seed * world_size


def seed_all(seed: int) -> None:
    """Seed torch (CPU and every CUDA device), numpy and Python `random` with `seed`."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def get_rng_state(device: torch.device) -> dict:
    """Global torch CPU RNG (plus the CUDA one of `device`), numpy and Python `random` states."""
    state = {"torch_cpu": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["torch_cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restore what `get_rng_state` returned (for a CUDA `device`, the state must hold its CUDA generator)."""
    torch.set_rng_state(state["torch_cpu"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if device.type == "cuda":
        if "torch_cuda" not in state:
            raise ValueError("the checkpoint's RNG state has no CUDA generator state (it was saved by a CPU run)")
        torch.cuda.set_rng_state(state["torch_cuda"], device)


# ----------------------------------------------------------------------------
# Seeded, resumable, infinite data loading.


class SeededItems(torch.utils.data.Dataset):
    """Wraps a dataset that draws from the global torch RNG, so that item `(index, seed)` is read with that RNG seeded
    by `seed`. The caller's RNG state is restored afterwards, so this also works without worker processes."""

    def __init__(self, dataset: torch.utils.data.Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


def item_seed(seed: int, rank: int, position: int) -> int:
    """A 63-bit seed for the `position`-th item that rank `rank` reads in a run with seed `seed`."""
    words = np.random.SeedSequence([seed, rank, position]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


class SeededInfiniteSampler(torch.utils.data.Sampler):
    """Endless `(index, item_seed)` keys for `SeededItems`: reshuffled epochs split across ranks.

    Each epoch e is a permutation of all items drawn from a generator seeded with `(seed, e)`, padded by wrapping
    to a multiple of the world size; rank r takes positions r, r + W, r + 2W, ... (like `DistributedSampler`).
    Starting at `start` reproduces exactly the keys a sampler started at 0 yields from its `start`-th key on, so
    resuming needs only the number of items consumed.
    """

    def __init__(self, num_items: int, seed: int = 0, rank: int = 0, world_size: int = 1, start: int = 0):
        if num_items < 1:
            raise ValueError(f"num_items must be positive, got {num_items}")
        self.num_items = num_items
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start = start
        self.per_rank = math.ceil(num_items / world_size)

    def _permutation(self, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0]))
        return torch.randperm(self.num_items, generator=gen)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        position = self.start
        epoch, perm = None, None
        while True:
            e, j = divmod(position, self.per_rank)
            if e != epoch:
                epoch, perm = e, self._permutation(e)
            index = int(perm[(j * self.world_size + self.rank) % self.num_items])
            yield index, item_seed(self.seed, self.rank, position)
            position += 1


class InfiniteLoader:
    """Endless iterator of batches over `dataset` that knows how many batches it has handed out (`position`).

    Rebuilding it with the same arguments and `start_batches=position` continues the exact same batch sequence,
    whatever the number of worker processes.
    """

    def __init__(
        self,
        dataset: torch.utils.data.Dataset,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_batches: int = 0,
        num_workers: int = 2,
        prefetch_factor: int = 2,
        pin_memory: bool = False,
    ):
        self.batch_size = batch_size
        self.position = start_batches
        sampler = SeededInfiniteSampler(len(dataset), seed, rank, world_size, start=start_batches * batch_size)
        kwargs = dict(num_workers=num_workers, pin_memory=pin_memory)
        if num_workers > 0:
            kwargs.update(prefetch_factor=prefetch_factor, persistent_workers=True)
        # A private generator for the workers' base seed: otherwise creating the iterator draws from the global RNG,
        # which would shift the training's random stream between a fresh and a resumed run.
        kwargs.update(generator=torch.Generator().manual_seed(seed))
        self._loader = torch.utils.data.DataLoader(SeededItems(dataset), batch_size, sampler=sampler, **kwargs)
        self._iter = None

    def __iter__(self):
        return self

    def __next__(self):
        if self._iter is None:
            self._iter = iter(self._loader)
        batch = next(self._iter)
        self.position += 1
        return batch


# ----------------------------------------------------------------------------


def params_and_buffers(module: torch.nn.Module) -> list[torch.Tensor]:
    """All parameters, then all buffers, in registration order."""
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"params_and_buffers: module must be a torch.nn.Module, got {type(module).__name__}")
    return list(module.parameters()) + list(module.buffers())


def named_params_and_buffers(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """All (name, tensor) pairs: parameters, then buffers, in registration order."""
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"named_params_and_buffers: module must be a torch.nn.Module, got {type(module).__name__}")
    return list(module.named_parameters()) + list(module.named_buffers())


@torch.no_grad()
def copy_params_and_buffers(
    src_module: torch.nn.Module, dst_module: torch.nn.Module, require_all: bool = False
) -> None:
    """Copy values of same-named parameters and buffers from `src_module` into `dst_module` (any devices).

    Example:
        >>> copy_params_and_buffers(resume_data["G"], G, require_all=True)
    """
    if not isinstance(src_module, torch.nn.Module):
        raise TypeError(
            f"copy_params_and_buffers: src_module must be a torch.nn.Module, got {type(src_module).__name__}"
        )
    if not isinstance(dst_module, torch.nn.Module):
        raise TypeError(
            f"copy_params_and_buffers: dst_module must be a torch.nn.Module, got {type(dst_module).__name__}"
        )
    src_tensors = dict(named_params_and_buffers(src_module))
    for name, tensor in named_params_and_buffers(dst_module):
        if name not in src_tensors:
            if require_all:
                raise KeyError(f"copy_params_and_buffers: src_module has no parameter or buffer named {name!r}")
            continue
        src = src_tensors[name]
        if src.shape != tensor.shape:
            raise ValueError(
                f"copy_params_and_buffers: {name!r} has shape {list(src.shape)} in src_module but "
                f"{list(tensor.shape)} in dst_module"
            )
        tensor.copy_(src.detach())


# ----------------------------------------------------------------------------


@contextlib.contextmanager
def ddp_sync(module: torch.nn.Module, sync: bool) -> Iterator[None]:
    """Inside the block, skip DDP gradient all-reduce when `sync` is False (for all but the last accumulation round).

    Example:
        >>> for round_idx in range(grad_accum):
        ...     with ddp_sync(D, sync=(round_idx == grad_accum - 1)):
        ...         loss.backward()
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"ddp_sync: module must be a torch.nn.Module, got {type(module).__name__}")
    if sync or not isinstance(module, torch.nn.parallel.DistributedDataParallel):
        yield
    else:
        with module.no_sync():
            yield


# ----------------------------------------------------------------------------


def check_ddp_consistency(module: torch.nn.Module, ignore_regex: str | None = None) -> None:
    """Assert that every parameter and buffer equals rank 0's copy (NaNs count as equal). No-op without a process
    group. `ignore_regex` is matched against '<ClassName>.<tensor name>'.

    The original's tensor-by-tensor check, kept for its API; training uses `check_rank_consistency` (one digest
    per module and rank, which checkpoints also record).

    Example:
        >>> check_ddp_consistency(G_ema, ignore_regex=r".*\\.[^.]+_(avg|ema)")
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"check_ddp_consistency: module must be a torch.nn.Module, got {type(module).__name__}")
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    for name, tensor in named_params_and_buffers(module):
        fullname = type(module).__name__ + "." + name
        if ignore_regex is not None and re.fullmatch(ignore_regex, fullname):
            continue
        tensor = tensor.detach()
        if tensor.is_floating_point():
            tensor = nan_to_num(tensor)
        other = tensor.clone()
        torch.distributed.broadcast(tensor=other, src=0)
        if not (tensor == other).all():
            raise AssertionError(f"check_ddp_consistency: {fullname} differs from rank 0")


# ----------------------------------------------------------------------------
# Fingerprints (to check that all ranks hold identical networks).


def module_digest(*modules: torch.nn.Module) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of every parameter and buffer of `modules`."""
    h = hashlib.sha256()
    for module in modules:
        tensors = list(module.named_parameters()) + list(module.named_buffers())
        for name, t in tensors:
            t = t.detach().cpu().contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def check_rank_consistency(modules: dict[str, torch.nn.Module]) -> list[str]:
    """Gather every rank's digest of `modules` and raise RuntimeError naming a module that differs between ranks.

    Returns the per-rank digests of all modules together (rank order), which checkpoints record.
    """
    digests = {name: module_digest(m) for name, m in modules.items()}
    all_digests = distributed.all_gather_objects(digests)
    for name in modules:
        values = [d[name] for d in all_digests]
        if len(set(values)) != 1:
            bad = [r for r, v in enumerate(values) if v != values[0]]
            raise RuntimeError(f"{name} differs between rank 0 and ranks {bad}")
    return [hashlib.sha256("".join(d[name] for name in modules).encode()).hexdigest() for d in all_digests]


def combined_digest(modules: dict[str, torch.nn.Module]) -> str:
    """The value `check_rank_consistency` reports for one rank holding `modules`."""
    return hashlib.sha256("".join(module_digest(m) for m in modules.values()).encode()).hexdigest()


# ----------------------------------------------------------------------------


def print_module_summary(
    module: torch.nn.Module,
    inputs: list | tuple,
    max_nesting: int = 3,
    skip_redundant: bool = True,
    **kwargs,
) -> Any:
    """Run `module(*inputs, **kwargs)` once and print one row per submodule: parameter and buffer counts, output
    shape and dtype, and output statistics (mean, std, min|x|, max|x|, in fp32). Returns the module's outputs.

    `max_nesting` limits the depth of rows (the top level is depth 0); `skip_redundant` drops rows that add no new
    parameters, buffers or outputs.

    Example:
        >>> img = print_module_summary(G, [z, c])
    """
    if not isinstance(module, torch.nn.Module) or isinstance(module, torch.jit.ScriptModule):
        raise TypeError(
            f"print_module_summary: module must be a (non-script) torch.nn.Module, got {type(module).__name__}"
        )
    if not isinstance(inputs, (tuple, list)):
        raise TypeError(f"print_module_summary: inputs must be a tuple or list, got {type(inputs).__name__}")

    # Register hooks that record each submodule's outputs.
    entries = []
    nesting = [0]

    def pre_hook(_mod, _inputs):
        nesting[0] += 1

    def post_hook(mod, _inputs, outputs):
        nesting[0] -= 1
        if nesting[0] <= max_nesting:
            outputs = list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
            outputs = [t for t in outputs if isinstance(t, torch.Tensor)]
            entries.append(dnnlib.EasyDict(mod=mod, outputs=outputs))

    hooks = [mod.register_forward_pre_hook(pre_hook) for mod in module.modules()]
    hooks += [mod.register_forward_hook(post_hook) for mod in module.modules()]

    # Run the module.
    try:
        outputs = module(*inputs, **kwargs)
    finally:
        for hook in hooks:
            hook.remove()

    # Attribute each tensor to the first (innermost) row that produced or owns it.
    tensors_seen = set()
    for e in entries:
        e.unique_params = [t for t in e.mod.parameters() if id(t) not in tensors_seen]
        e.unique_buffers = [t for t in e.mod.buffers() if id(t) not in tensors_seen]
        e.unique_outputs = [t for t in e.outputs if id(t) not in tensors_seen]
        tensors_seen |= {id(t) for t in e.unique_params + e.unique_buffers + e.unique_outputs}
    if skip_redundant:
        entries = [e for e in entries if len(e.unique_params) or len(e.unique_buffers) or len(e.unique_outputs)]

    # Build the table.
    header = ["Module", "Parameters", "Buffers", "Output shape", "Datatype", "Mean", "Std", "Min|x|", "Max|x|"]
    rows = [header, ["---"] * len(header)]
    param_total = 0
    buffer_total = 0
    submodule_names = {mod: name for name, mod in module.named_modules()}
    for e in entries:
        name = "<top-level>" if e.mod is module else submodule_names[e.mod]
        param_size = sum(t.numel() for t in e.unique_params)
        buffer_size = sum(t.numel() for t in e.unique_buffers)
        output_shapes = [str(list(t.shape)) for t in e.outputs]
        output_dtypes = [str(t.dtype).split(".")[-1] for t in e.outputs]
        output_stats = [_tensor_stats(t) for t in e.outputs]
        first = ["-"] * 4 if len(e.outputs) == 0 else None
        rows.append(
            [
                name + (":0" if len(e.outputs) >= 2 else ""),
                str(param_size) if param_size else "-",
                str(buffer_size) if buffer_size else "-",
                (output_shapes + ["-"])[0],
                (output_dtypes + ["-"])[0],
                *(first if first is not None else output_stats[0]),
            ]
        )
        for idx in range(1, len(e.outputs)):
            rows.append([name + f":{idx}", "-", "-", output_shapes[idx], output_dtypes[idx], *output_stats[idx]])
        param_total += param_size
        buffer_total += buffer_size
    rows.append(["---"] * len(header))
    rows.append(["Total", str(param_total), str(buffer_total), "-", "-", "-", "-", "-", "-"])

    # Print the table.
    widths = [max(len(cell) for cell in column) for column in zip(*rows)]
    print()
    for row in rows:
        print("  ".join(cell + " " * (width - len(cell)) for cell, width in zip(row, widths)).rstrip())
    print()
    return outputs


def _tensor_stats(t: torch.Tensor) -> list[str]:
    """Mean, std, min|x|, max|x| of a tensor in fp32, formatted for the summary table."""
    if t.numel() == 0 or not (t.is_floating_point() or t.dtype in (torch.uint8, torch.int32, torch.int64)):
        return ["-"] * 4
    x = t.detach().float()
    std = x.std().item() if x.numel() > 1 else 0.0
    return [f"{v:.3g}" for v in (x.mean().item(), std, x.abs().min().item(), x.abs().max().item())]


# ----------------------------------------------------------------------------
