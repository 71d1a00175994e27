"""Registry of the LongVideoGAN metrics (Brooks et al. 2022, its evaluation): name -> function, runs, JSONL reports.

Each registered metric takes a MetricOptions and returns a dict of named floats; calc_metric adds timing, the
world size and the detectors used. The paper protocol is the default; MetricOptions.num_gen / max_real shrink it
for quick runs.

Example:
    result = calc_metric("fvd2048_16f", G=G_ema, dataset_kwargs=dict(dataset_dir=root, height=36, width=64))
    report_metric(result, jsonl_path="metric-fvd2048_16f.jsonl", step=5000)
"""

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch

import dnnlib
from metrics import (
    frechet_inception_distance,
    frechet_video_distance,
    inception_score,
    kernel_inception_distance,
    metric_utils,
    video_inception_score,
)
from torch_utils.process_lock import ProcessLock

try:
    import fcntl
except ImportError:  # Windows.
    fcntl = None

# ----------------------------------------------------------------------------

_metric_dict: dict[str, Callable[[metric_utils.MetricOptions], dict]] = {}


def register_metric(fn: Callable) -> Callable:
    assert callable(fn)
    _metric_dict[fn.__name__] = fn
    return fn


def is_valid_metric(metric: str) -> bool:
    return metric in _metric_dict


def list_valid_metrics() -> list[str]:
    return list(_metric_dict.keys())


def _num(paper_value: int, override: int | None) -> int:
    return paper_value if override is None else override


def _cap(paper_cap: int | None, override: int | None) -> int | None:
    if override is None:
        return paper_cap
    return override if paper_cap is None else min(paper_cap, override)


def calc_metric(metric: str, num_runs: int = 1, **kwargs) -> dnnlib.EasyDict:
    """Run `metric` num_runs times with MetricOptions(**kwargs).

    Returns {results, metric, total_time, total_time_str, world_size, detectors}; with num_runs > 1 each key k of
    the results becomes k_run01, k_run02, ... plus k_mean and k_std (population std). Values come from rank 0.
    """
    if not is_valid_metric(metric):
        raise ValueError(f"metric: unknown name {metric!r}; valid: {', '.join(list_valid_metrics())}")
    if not isinstance(num_runs, int) or num_runs < 1:
        raise ValueError(f"num_runs must be a positive integer, got {num_runs!r}")
    opts = metric_utils.MetricOptions(**kwargs)

    start = time.time()
    runs = []
    for run_index in range(num_runs):
        opts.run_index = run_index
        runs.append(dict(_metric_dict[metric](opts)))
    total_time = time.time() - start

    # Values from rank 0 to everybody.
    if opts.num_gpus > 1:
        for run in runs:
            for key, value in run.items():
                t = torch.as_tensor(float(value), dtype=torch.float64, device=metric_utils._collective_device(opts))
                torch.distributed.broadcast(t, src=0)
                run[key] = float(t.item())

    if num_runs == 1:
        results = dnnlib.EasyDict(runs[0])
    else:
        results = dnnlib.EasyDict()
        for key in runs[0]:
            values = [float(run[key]) for run in runs]
            for i, value in enumerate(values):
                results[f"{key}_run{i + 1:02d}"] = value
            results[f"{key}_mean"] = float(np.mean(values))
            results[f"{key}_std"] = float(np.std(values))
    return dnnlib.EasyDict(
        results=results,
        metric=metric,
        total_time=total_time,
        total_time_str=dnnlib.util.format_time(total_time),
        world_size=opts.num_gpus,
        detectors=dict(opts.detectors_used),
    )


def report_metric(result_dict: dict, jsonl_path: str | None = None, **extra) -> str:
    """Append one JSON line (the result dict plus `extra` fields) to jsonl_path (see append_jsonl); return it."""
    line = json.dumps(dict(result_dict, **extra))
    if jsonl_path is not None:
        append_jsonl(jsonl_path, line)
    return line


@contextlib.contextmanager
def _directory_lock(directory: str):
    """Exclusive flock on a directory, which leaves no file behind; without fcntl (Windows), a ProcessLock on a
    hidden file in it."""
    if fcntl is None:
        with ProcessLock(os.path.join(directory, ".metrics-jsonl.lock")):
            yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # Released when fd is closed, or when the process dies.
        yield
    finally:
        os.close(fd)


def append_jsonl(jsonl_path: str, line: str) -> None:
    """Append `line` to a JSONL file atomically (parent dirs created): the file is rewritten to a temporary file
    and renamed, so a crash or a full disk leaves the old file whole, never a half-written line. Writers hold a lock
    on the file's directory around the read and the rename, so processes that append to the same file at once
    (calc_metrics.py runs side by side) do not drop each other's lines."""
    parent = os.path.dirname(os.path.abspath(jsonl_path))
    os.makedirs(parent, exist_ok=True)
    with _directory_lock(parent):
        old = b""
        if os.path.exists(jsonl_path):
            with open(jsonl_path, "rb") as f:
                old = f.read()
            if old and not old.endswith(b"\n"):
                old += b"\n"
        with dnnlib.util.atomic_write(jsonl_path, "wb") as f:
            f.write(old + line.encode("utf-8") + b"\n")


def check_jsonl_path(jsonl_path: str) -> None:
    """Raise OSError (naming the path) unless `jsonl_path` can be appended to: run before computing anything."""
    path = os.path.abspath(jsonl_path)
    if os.path.isdir(path):
        raise IsADirectoryError(21, "is a directory, expected a JSONL file", jsonl_path)
    parent = os.path.dirname(path)
    blocker = parent
    while not os.path.exists(blocker) and os.path.dirname(blocker) != blocker:
        blocker = os.path.dirname(blocker)
    if not os.path.isdir(blocker):
        raise NotADirectoryError(20, f"{blocker!r} is not a directory", jsonl_path)
    os.makedirs(parent, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=parent, prefix=".write_test_"):  # The atomic append writes here.
        pass
    if os.path.exists(path):
        with open(path, "ab"):  # Opening for append changes nothing.
            pass


# ----------------------------------------------------------------------------
# Video metrics.


@register_metric
def fvd2048_16f(opts):
    fvd = frechet_video_distance.compute_fvd(
        opts,
        max_real=_cap(2048, opts.max_real),
        num_gen=_num(2048, opts.num_gen),
        num_frames=16,
        run_index=opts.run_index,
    )
    return dict(fvd2048_16f=fvd)


@register_metric
def fvd2048_128f(opts):
    fvd = frechet_video_distance.compute_fvd(
        opts,
        max_real=_cap(2048, opts.max_real),
        num_gen=_num(2048, opts.num_gen),
        num_frames=128,
        run_index=opts.run_index,
    )
    return dict(fvd2048_128f=fvd)


@register_metric
def fvd2048_128f_subsample8f(opts):
    fvd = frechet_video_distance.compute_fvd(
        opts,
        max_real=_cap(2048, opts.max_real),
        num_gen=_num(2048, opts.num_gen),
        num_frames=16,
        subsample_factor=8,
        run_index=opts.run_index,
    )
    return dict(fvd2048_128f_subsample8f=fvd)


@register_metric
def isv2048_ucf(opts):
    mean, std = video_inception_score.compute_isv(
        opts,
        num_gen=_num(2048, opts.num_gen),
        num_frames=16,
        num_splits=10,
        run_index=opts.run_index,
    )
    return dict(isv2048_ucf_mean=mean, isv2048_ucf_std=std)


# ----------------------------------------------------------------------------
# Image metrics (one frame per generated sample).


@register_metric
def fid50k_full(opts):
    fid = frechet_inception_distance.compute_fid(
        opts,
        max_real=_cap(None, opts.max_real),
        num_gen=_num(50000, opts.num_gen),
        run_index=opts.run_index,
    )
    return dict(fid50k_full=fid)


@register_metric
def fid50k(opts):
    fid = frechet_inception_distance.compute_fid(
        opts,
        max_real=_cap(50000, opts.max_real),
        num_gen=_num(50000, opts.num_gen),
        run_index=opts.run_index,
    )
    return dict(fid50k=fid)


@register_metric
def kid50k_full(opts):
    kid = kernel_inception_distance.compute_kid(
        opts,
        max_real=_cap(1000000, opts.max_real),
        num_gen=_num(50000, opts.num_gen),
        num_subsets=100,
        max_subset_size=1000,
        run_index=opts.run_index,
    )
    return dict(kid50k_full=kid)


@register_metric
def is50k(opts):
    mean, std = inception_score.compute_is(
        opts,
        num_gen=_num(50000, opts.num_gen),
        num_splits=10,
        run_index=opts.run_index,
    )
    return dict(is50k_mean=mean, is50k_std=std)


# ----------------------------------------------------------------------------
