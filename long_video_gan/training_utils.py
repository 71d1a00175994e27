"""What LongVideoGAN's training needs beyond the generic helpers: device choice, the G EMA schedule, sample clips,
run directories and their lock, dataset identity, checkpoints, status lines, JSONL logs and an optional W&B wrapper.

Model-agnostic plumbing has one home elsewhere: logging to log.txt, atomic writes and time formatting in
`dnnlib.util`; printing on rank 0, barriers, gathers, broadcasts and gradient sync in `torch_utils.distributed`;
seeds, RNG states, seeded resumable data loading and rank-consistency digests in `torch_utils.misc`.
`video_gan_lres.py` / `video_gan_sres.py` hold the phase-specific steps and `training_loop.py` the loop.
"""

import copy
import glob
import hashlib
import json
import os
import pickle
import re
import sys
import uuid

import psutil
import torch

import dnnlib
from torch_utils import distributed, misc

# ----------------------------------------------------------------------------
# Generator EMA: a moving average of G whose decay warms up towards 0.99985 over the first ~25k steps.


def ema_beta(step: int, beta: float = 0.99985, warmup_steps: int = 25000) -> float:
    """`min(beta ** ((warmup + 1) / (step + 1)), beta)`: about 0.0235 at step 0, 0.99626 at 1000, then `beta`."""
    if step < 0:
        raise ValueError(f"step must be non-negative, got {step}")
    return min(beta ** ((warmup_steps + 1) / (step + 1)), beta)


@torch.no_grad()
def update_ema(ema: torch.nn.Module, source: torch.nn.Module, beta: float) -> None:
    """`ema <- ema + (1 - beta) * (source - ema)` for every parameter and every buffer (non-float buffers copied)."""
    ema_tensors = dict(ema.named_parameters()) | dict(ema.named_buffers())
    src_tensors = dict(source.named_parameters()) | dict(source.named_buffers())
    if ema_tensors.keys() != src_tensors.keys():
        missing = sorted(set(src_tensors) ^ set(ema_tensors))
        raise ValueError(f"ema and source modules differ in tensors: {missing[:5]}")
    for name, e in ema_tensors.items():
        s = src_tensors[name].detach()
        if e.is_floating_point():
            e.lerp_(s.to(e.dtype), 1 - beta)
        else:
            e.copy_(s)


def read_items(dataset, num_items: int, seed: int) -> list[dict]:
    """`num_items` items of `dataset` chosen and drawn from `seed` alone, never from the training data stream."""
    gen = torch.Generator().manual_seed(seed)
    items = misc.SeededItems(dataset)
    out = []
    for i in range(num_items):
        index = int(torch.randint(len(dataset), [], generator=gen))
        out.append(items[index, misc.item_seed(seed, _SAMPLE_STREAM, i)])
    return out


def read_clips(dataset, num_clips: int, seed: int) -> torch.Tensor:
    """Stacked `video` entries of `read_items`: `[N, C, T, H, W]`."""
    return torch.stack([item["video"] for item in read_items(dataset, num_clips, seed)])


_SAMPLE_STREAM = 2**30  # Stands in for the rank in item seeds, so sample clips never coincide with training items.


# ----------------------------------------------------------------------------
# Run directories: `outdir/NNNNN-{desc}`, numbered on from the largest existing id, as the original.

_RUN_ID = re.compile(r"^(\d+)")


def run_desc(dataset_dir: str, batch: int, grad_accum: int, gamma: float) -> str:
    """`{dataset basename}-{batch}batch-{grad_accum}accum-{gamma}gamma`, e.g. `horseback-64batch-2accum-1.0gamma`."""
    name = os.path.basename(os.path.normpath(dataset_dir))
    return f"{name}-{batch}batch-{grad_accum}accum-{float(gamma)}gamma"


def get_next_run_dir(outdir: str, desc: str) -> str:
    """`outdir/{id:05d}-{desc}` with id = 1 + the largest leading integer of the existing entries (0 if none)."""
    ids = [int(m.group(1)) for name in _listdir(outdir) if (m := _RUN_ID.match(name))]
    return os.path.join(outdir, f"{max(ids, default=-1) + 1:05d}-{desc}")


def find_latest_run_dir(outdir: str, desc: str) -> str | None:
    """The run directory `NNNNN-{desc}` with the largest id, or None."""
    best = None
    for name in _listdir(outdir):
        m = _RUN_ID.match(name)
        if m and name == f"{m.group(1)}-{desc}" and os.path.isdir(os.path.join(outdir, name)):
            if best is None or int(m.group(1)) > best[0]:
                best = (int(m.group(1)), name)
    return None if best is None else os.path.join(outdir, best[1])


def _listdir(path: str) -> list[str]:
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def checkpoint_path(run_dir: str, step: int, kind: str) -> str:
    """`run_dir/checkpoints/ckpt-{step:08d}-{kind}.pkl` with kind `G-ema` or `train`."""
    return os.path.join(run_dir, "checkpoints", f"ckpt-{step:08d}-{kind}.pkl")


def find_latest_train_checkpoint(run_dir: str) -> tuple[str, int] | None:
    """(path, step) of the newest `ckpt-XXXXXXXX-train.pkl` in `run_dir/checkpoints`, or None."""
    found = []
    for path in glob.glob(os.path.join(run_dir, "checkpoints", "ckpt-*-train.pkl")):
        m = re.fullmatch(r"ckpt-(\d{8})-train\.pkl", os.path.basename(path))
        if m:
            found.append((int(m.group(1)), path))
    if not found:
        return None
    step, path = max(found)
    return path, step


def check_writable_dir(path: str) -> None:
    """Checks that `path` is a writable directory or can be made one (its nearest existing ancestor is a writable
    directory), creating nothing; raises PermissionError otherwise."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    try:
        if not os.path.isdir(existing):
            raise NotADirectoryError(f"'{existing}' is not a directory")
        probe = os.path.join(existing, f".write-test-{uuid.uuid4().hex}")
        with open(probe, "wb"):
            pass
        os.remove(probe)
    except OSError as e:
        raise PermissionError(f"output directory '{path}' is not writable: {e.strerror or e}") from None


# A run directory is locked by the process that trains into it (rank 0), with a lock the kernel drops when that
# process ends in any way (kill -9 included), so a second copy of the same command refuses at once.
RUN_LOCK_NAME = ".run.lock"


class RunDirBusyError(RuntimeError):
    """Another live process trains into the run directory; the message names it."""


def lock_run_dir(run_dir: str):
    """Takes the run directory's lock and returns it (a `ProcessLock`; keep it until training ends), or raises
    RunDirBusyError naming the run directory and the process that holds it."""
    from torch_utils.process_lock import ProcessLock

    lock = ProcessLock(os.path.join(run_dir, RUN_LOCK_NAME))
    if not lock.try_acquire():
        raise RunDirBusyError(f"run directory '{run_dir}' is in use by {lock.holder()}")
    return lock


def remove_run_dir_without_checkpoints(run_dir: str) -> bool:
    """Deletes `run_dir` if it holds no checkpoint (a run that failed before its first one: config.json, log.txt,
    sample videos and the lock file only); returns whether it did."""
    if glob.glob(os.path.join(run_dir, "checkpoints", "ckpt-*.pkl")):
        return False
    import shutil

    shutil.rmtree(run_dir, ignore_errors=True)
    return not os.path.exists(run_dir)


# ----------------------------------------------------------------------------
# Dataset identity, compared on resume like the other settings.


def dataset_resolutions(dataset_kwargs: dict) -> list[tuple[int, int]]:
    """The (height, width) pairs a training dataset reads: `height`/`width`, or `lr_*` and `hr_*`."""
    pairs = []
    for prefix in ("", "lr_", "hr_"):
        if f"{prefix}height" in dataset_kwargs:
            pairs.append((int(dataset_kwargs[f"{prefix}height"]), int(dataset_kwargs[f"{prefix}width"])))
    return pairs


def dataset_identity(dataset_kwargs: dict) -> dict:
    """`{"path": absolute dataset root, "digest": sha256}` of the partitions a training run reads.

    The digest covers, for each resolution directory read, every partition's name and every ZIP entry's name, size
    and CRC-32 as listed in its central directory (frame_paths.json and every JPEG), so it changes with any frame's
    content but costs no decompression (well under a second for a dataset of 100,000 frames).
    """
    import zipfile

    from long_video_gan import dataset as dataset_module

    root = dataset_kwargs["dataset_dir"]
    digest = hashlib.sha256()
    for height, width in dataset_resolutions(dataset_kwargs):
        res_dir, partitions = dataset_module.find_partitions(root, height, width)
        for zip_path in partitions:
            digest.update(f"{res_dir.name}/{zip_path.name}\n".encode())
            with zipfile.ZipFile(zip_path) as zf:
                for info in sorted(zf.infolist(), key=lambda i: i.filename):
                    digest.update(f"{info.filename}\t{info.file_size}\t{info.CRC:08x}\n".encode())
    return dict(path=os.path.abspath(root), digest=digest.hexdigest())


# ----------------------------------------------------------------------------
# Checkpoints.


def snapshot_module(module: torch.nn.Module) -> torch.nn.Module:
    """A deep copy in eval mode, with `requires_grad=False`, on the CPU: what goes into a pickle."""
    return copy.deepcopy(module).eval().requires_grad_(False).cpu()


def to_cpu(obj):
    """`obj` with every tensor inside (nested dicts, lists, tuples) moved to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return type(obj)((k, to_cpu(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


class CheckpointError(ValueError):
    """A train pickle that cannot be used to resume (missing, truncated, wrong phase, incomplete)."""


TRAIN_PICKLE_KEYS = ("G", "D", "G_ema", "G_opt", "D_opt", "step", "phase", "rng_states", "loader_position")


def load_train_checkpoint(path: str, phase: str) -> dict:
    """Loads and checks a train pickle written by our `training_loop` for `phase` ("lres" or "sres").

    Raises CheckpointError with a message that names the file and the problem.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"'{path}' does not exist")
    try:
        with open(path, "rb") as f:
            data = pickle.load(f)
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, ImportError, RuntimeError) as e:
        raise CheckpointError(f"'{path}' is not a readable pickle (truncated or corrupt?): {type(e).__name__}: {e}")
    if not isinstance(data, dict):
        raise CheckpointError(f"'{path}' holds a {type(data).__name__}, not a train checkpoint (a G-ema pickle?)")
    if "phase" in data and data["phase"] != phase:
        raise CheckpointError(f"'{path}' is a {data['phase']} checkpoint, but this is {phase} training")
    missing = [k for k in TRAIN_PICKLE_KEYS if k not in data]
    if missing:
        raise CheckpointError(f"'{path}' lacks {', '.join(missing)}; only train pickles of this codebase can resume")
    return data


# ----------------------------------------------------------------------------
# Logs.


def append_jsonl(path: str, record: dict) -> None:
    """Appends one JSON object per line and flushes (the file is closed after each write)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def trim_jsonl(path: str, max_step: int, step_key) -> None:
    """Drops the lines of a JSONL log whose step (read by `step_key(record)`) is above `max_step`.

    On resume this removes what a killed run logged after the checkpoint it resumes from.
    """
    if not os.path.isfile(path):
        return
    kept = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                step = step_key(json.loads(line))
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # A line cut short by the kill.
            if step is None or step <= max_step:
                kept.append(line if line.endswith("\n") else line + "\n")
    with dnnlib.util.atomic_write(path, "wb") as f:
        f.write("".join(kept).encode("utf-8"))


def cpu_mem_gb() -> float:
    """Resident memory of this process in GB (2^30 bytes)."""
    return psutil.Process(os.getpid()).memory_info().rss / 2**30


def status_line(
    step: int,
    tick: int,
    total_sec: float,
    sec_per_step: float,
    maintenance_sec: float,
    cpu_mem: float,
    gpu_mem: float,
    gpu_reserved: float,
) -> str:
    """One fixed-width line per tick."""
    fields = [
        f"step {step:<9d}",
        f"tick {tick:<5d}",
        f"time {dnnlib.util.format_time(total_sec):<12s}",
        f"sec/step {sec_per_step:<8.3f}",
        f"maintenance {maintenance_sec:<7.1f}",
        f"cpumem {cpu_mem:<6.2f}",
        f"gpumem {gpu_mem:<6.2f}",
        f"reserved {gpu_reserved:<6.2f}",
    ]
    return " ".join(fields)


# ----------------------------------------------------------------------------
# Weights & Biases, optional and never blocking.


def resolve_wandb_mode(requested: str | None) -> str:
    """The W&B mode to use: "online", "offline" or "off".

    `None` (the default) means online only when logged in and on a terminal, else off. "online" without a login falls
    back to "offline", since a login prompt would block.
    """
    if requested not in (None, "online", "offline", "off"):
        raise ValueError(f"wandb mode must be online, offline or off, got '{requested}'")
    if requested in ("offline", "off"):
        return requested
    try:
        import wandb  # noqa: F401
    except ImportError:
        return "off"
    logged_in = _wandb_has_key()
    if requested == "online":
        return "online" if logged_in else "offline"
    return "online" if logged_in and sys.stdin is not None and sys.stdin.isatty() else "off"


def _wandb_has_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        with open(netrc, encoding="utf-8") as f:
            return "api.wandb.ai" in f.read()
    except OSError:
        return False


class WandbLogger:
    """Logs scalars to W&B from rank 0; any failure disables it with one message instead of stopping training."""

    def __init__(self, mode: str, project: str, run_dir: str, config: dict, resume_id: str | None = None):
        self.run = None
        self.mode = mode
        if mode == "off" or distributed.get_rank() != 0:
            return
        try:
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            self.run = wandb.init(
                project=project,
                name=os.path.basename(run_dir),
                dir=run_dir,
                config=config,
                mode=mode,
                id=resume_id,
                resume="allow" if resume_id else None,
                settings=wandb.Settings(init_timeout=60, console="off"),
            )
        except Exception as e:  # W&B must never stop a run.
            print(f"W&B disabled: {type(e).__name__}: {e}")
            self.run = None

    @property
    def run_id(self) -> str | None:
        return None if self.run is None else self.run.id

    def log(self, values: dict, step: int) -> None:
        if self.run is None:
            return
        try:
            self.run.log(values, step=step)
        except Exception as e:
            print(f"W&B disabled: {type(e).__name__}: {e}")
            self.run = None

    def finish(self) -> None:
        if self.run is not None:
            try:
                self.run.finish()
            except Exception:
                pass
            self.run = None
