"""Process-group helpers for torchrun launches that also work as a plain single process (CPU or GPU).

Under `torchrun --nproc_per_node=K train_lres.py ...` every rank calls `init()`; without torchrun no process group
is created and the helpers below behave as for one rank (the original always created a process group; here a
CPU-only, single-process run needs no networking).

Example:
    device = distributed.init()                 # cuda:LOCAL_RANK, or cpu
    distributed.print0(f"world size {distributed.get_world_size()}")
    seed = distributed.broadcast_object(random.randrange(2**31) if distributed.get_rank() == 0 else None)
    distributed.barrier()
"""

import math
import os
from collections.abc import Iterable
from typing import Any

import torch

# ----------------------------------------------------------------------------


def _is_initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def get_local_rank() -> int:
    """Rank of this process on its node (`$LOCAL_RANK`, default 0)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def resolve_device(device: str | None) -> torch.device:
    """This rank's device for a `--device` value: `None` means CUDA when available, else CPU; a bare "cuda" becomes
    "cuda:LOCAL_RANK". Under torchrun (WORLD_SIZE > 1) every CUDA device becomes "cuda:LOCAL_RANK", "cuda:N"
    included: each rank drives its own GPU, as in the original, instead of all ranks piling onto GPU N."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device must be cpu, cuda or cuda:N, got '{device}'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device '{device}' requested but CUDA is not available")
        if dev.index is None or int(os.environ.get("WORLD_SIZE", "1")) > 1:
            dev = torch.device("cuda", get_local_rank())
    elif dev.type != "cpu":
        raise ValueError(f"device must be cpu, cuda or cuda:N, got '{device}'")
    return dev


def get_rank() -> int:
    """Global rank (0 without a process group)."""
    return torch.distributed.get_rank() if _is_initialized() else 0


def get_world_size() -> int:
    """Number of processes (1 without a process group). Embedded network sources call this by name."""
    return torch.distributed.get_world_size() if _is_initialized() else 1


def get_backend() -> str | None:
    """Backend of the process group ('nccl', 'gloo'), or None without one."""
    return torch.distributed.get_backend() if _is_initialized() else None


def get_sync_device(device: torch.device | str | None = None) -> torch.device | None:
    """Device for collective reductions (e.g. training_stats): None for one process, CPU under gloo, else `device`."""
    if get_world_size() == 1:
        return None
    if get_backend() == "gloo" or device is None:
        return torch.device("cpu")
    return torch.device(device)


# ----------------------------------------------------------------------------


def init(temp_dir: str | None = None, backend: str | None = None) -> torch.device:
    """Join the torchrun process group (if any) and return this rank's device.

    Reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT as set by torchrun. With WORLD_SIZE unset or 1
    no group is created. Backend: `backend` if given, else NCCL when CUDA is available, else gloo (CPU). On Windows
    gloo uses a file store in `temp_dir`. With several ranks, also points training_stats at the sync device.

    Example:
        >>> device = distributed.init()  # then model.to(device)
    """
    if backend not in (None, "nccl", "gloo"):
        raise ValueError(f"distributed.init: backend must be None, 'nccl' or 'gloo', got {backend!r}")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = get_local_rank()
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"distributed.init: need 0 <= RANK < WORLD_SIZE, got RANK={rank}, WORLD_SIZE={world_size}")

    use_cuda = torch.cuda.is_available() and backend != "gloo"
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"distributed.init: LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")

    if world_size > 1 and not _is_initialized():
        if backend is None:
            backend = "nccl" if use_cuda else "gloo"
        if backend == "nccl" and not use_cuda:
            raise ValueError("distributed.init: backend 'nccl' needs CUDA; use 'gloo' on CPU")
        os.environ.setdefault("MASTER_ADDR", "localhost")
        os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 16384))
        if os.name == "nt":
            if temp_dir is None:
                raise ValueError("distributed.init: temp_dir is required on Windows (for the gloo file store)")
            init_file = os.path.abspath(os.path.join(temp_dir, ".torch_distributed_init"))
            init_method = "file:///" + init_file.replace("\\", "/")
            torch.distributed.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world_size)
        else:
            torch.distributed.init_process_group(
                backend=backend, init_method="env://", rank=rank, world_size=world_size
            )

    if get_world_size() > 1:
        from . import training_stats  # Deferred import; a single process keeps training_stats' defaults.

        training_stats.init_multiprocessing(rank=get_rank(), sync_device=get_sync_device(device))
    return device


def shutdown() -> None:
    """Leave the process group (no-op without one)."""
    if _is_initialized():
        torch.distributed.destroy_process_group()


# ----------------------------------------------------------------------------
# Collectives that degrade to no-ops for a single process.


def barrier() -> None:
    """Wait for all ranks."""
    if get_world_size() > 1:
        torch.distributed.barrier()


def broadcast(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite `tensor` in place with rank `src`'s values; returns it."""
    if get_world_size() > 1:
        torch.distributed.broadcast(tensor, src=src)
    return tensor


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce `tensor` in place over all ranks with op 'sum', 'mean', 'max' or 'min'; returns it."""
    ops = {"sum": "SUM", "mean": "SUM", "max": "MAX", "min": "MIN"}
    if op not in ops:
        raise ValueError(f"all_reduce: op must be one of {sorted(ops)}, got {op!r}")
    world_size = get_world_size()
    if world_size > 1:
        torch.distributed.all_reduce(tensor, op=getattr(torch.distributed.ReduceOp, ops[op]))
        if op == "mean":
            tensor.div_(world_size)
    return tensor


def all_gather(tensor: torch.Tensor) -> list[torch.Tensor]:
    """List of every rank's `tensor` (same shape on all ranks), in rank order."""
    if get_world_size() == 1:
        return [tensor]
    result = [torch.empty_like(tensor) for _ in range(get_world_size())]
    torch.distributed.all_gather(result, tensor.contiguous())
    return result


def all_gather_objects(obj: Any) -> list:
    """Every rank's picklable `obj`, in rank order (a one-item list for one process)."""
    if get_world_size() == 1:
        return [obj]
    out = [None] * get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy every parameter and buffer of `module` from rank `src` to all ranks, in place (no-op for one process)."""
    if get_world_size() == 1:
        return
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            torch.distributed.broadcast(tensor.data, src=src)


def sync_grads(params: Iterable[torch.nn.Parameter], gain: float = 1.0, shard_numel: int = 2**23) -> None:
    """Sum gradients across ranks, divide by the world size, multiply by `gain` and clean NaN/Inf, in place.

    Only parameters that have a gradient take part (the others keep none, so Adam skips them). The flat gradient is
    all-reduced in `ceil(n / shard_numel)` near-equal shards; afterwards NaN becomes 0 and +-inf becomes +-1e5. There
    is no other NaN handling: steps are never skipped.
    """
    params = [p for p in params if p.grad is not None]
    if not params:
        return
    flat = torch.cat([p.grad.detach().flatten() for p in params])
    world_size = get_world_size()
    if world_size > 1:
        for shard in flat.tensor_split(math.ceil(flat.numel() / shard_numel)):
            torch.distributed.all_reduce(shard)
    flat = flat / world_size
    flat = flat * gain
    flat = torch.nan_to_num(flat, nan=0.0, posinf=1e5, neginf=-1e5)
    for p, g in zip(params, flat.split([p.numel() for p in params])):
        p.grad.copy_(g.view_as(p.grad))


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s picklable Python object, returned on every rank."""
    if get_world_size() == 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def print0(*args, **kwargs) -> None:
    """`print` on rank 0 only (flushed, so logs interleave sensibly)."""
    if get_rank() == 0:
        kwargs.setdefault("flush", True)
        print(*args, **kwargs)
