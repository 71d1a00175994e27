"""Running statistics (count, mean, std) of named scalars, reported anywhere and collected across ranks.

Example:
    from torch_utils import training_stats

    training_stats.init_multiprocessing(rank=rank, sync_device=distributed.get_sync_device(device))  # or
    # distributed.init(), which does this
    collector = training_stats.Collector(regex=".*")
    for step in range(steps):
        loss = ...
        training_stats.report("loss/G_loss", loss)     # any shape; every element counts as a sample
        training_stats.report0("progress/step", step)   # only rank 0's value counts
    collector.update()                                  # collective: every rank must call it
    print(collector["loss/G_loss"], collector.as_dict())

Every rank must report the same names in the same order (report0 registers the name on the other ranks too).
"""

import re

import numpy as np
import torch

import dnnlib

from . import misc

# ----------------------------------------------------------------------------

_num_moments = 3  # [num_scalars, sum_of_scalars, sum_of_squares]
_reduce_dtype = torch.float32  # Data type used to compute the moments of one report.
_counter_dtype = torch.float64  # Data type of the accumulated counters.
_rank = 0  # Rank of this process.
_sync_device = None  # Device for cross-rank reductions; None = single process, no synchronisation.
_sync_called = False  # Whether _sync() has run (init_multiprocessing must come first).
_counters = dict()  # name -> device -> running moments since the last _sync().
_cumulative = dict()  # name -> moments accumulated over all ranks since the start (CPU, float64).

# ----------------------------------------------------------------------------


def init_multiprocessing(rank: int, sync_device: torch.device | str | None) -> None:
    """Set this process's rank and the device used for cross-rank reductions (None = no synchronisation).

    Call once per process, before the first `Collector.update()`. With a gloo process group the sync device must be
    CPU; a CUDA device given under gloo is replaced by CPU.
    """
    global _rank, _sync_device
    if not isinstance(rank, int) or rank < 0:
        raise ValueError(f"init_multiprocessing: rank must be a non-negative int, got {rank!r}")
    if _sync_called:
        raise RuntimeError("init_multiprocessing: must be called before the first Collector.update()")
    if sync_device is not None:
        sync_device = torch.device(sync_device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            if torch.distributed.get_backend() == "gloo":
                sync_device = torch.device("cpu")
    _rank = rank
    _sync_device = sync_device


# ----------------------------------------------------------------------------


@misc.profiled_function
def report(name: str, value: torch.Tensor | np.ndarray | float | list) -> torch.Tensor | np.ndarray | float | list:
    """Add every element of `value` as one sample of statistic `name`; returns `value` unchanged.

    Moments are computed in float32 on the value's device and accumulated in float64. Empty values register the
    name without adding samples.
    """
    if not isinstance(name, str):
        raise TypeError(f"report: name must be a str, got {type(name).__name__}")
    if name not in _counters:
        _counters[name] = dict()

    elems = torch.as_tensor(value)
    if elems.numel() == 0:
        return value

    elems = elems.detach().flatten().to(_reduce_dtype)
    moments = torch.stack([torch.ones_like(elems).sum(), elems.sum(), elems.square().sum()])
    assert moments.ndim == 1 and moments.shape[0] == _num_moments
    moments = moments.to(_counter_dtype)

    device = moments.device
    if device not in _counters[name]:
        _counters[name][device] = torch.zeros_like(moments)
    _counters[name][device].add_(moments)
    return value


def report0(name: str, value: torch.Tensor | np.ndarray | float | list) -> torch.Tensor | np.ndarray | float | list:
    """Like `report`, but only rank 0's value counts (other ranks only register the name)."""
    report(name, value if _rank == 0 else [])
    return value


# ----------------------------------------------------------------------------


class Collector:
    """Reads the statistics reported since its previous `update()`, summed over all ranks.

    Example:
        >>> stats = Collector(regex="loss/.*")
        >>> stats.update()
        >>> stats.num("loss/G_loss"), stats.mean("loss/G_loss"), stats.std("loss/G_loss")
    """

    def __init__(
        self,
        regex: str = ".*",  # Only names that fully match this regular expression are collected.
        keep_previous: bool = True,  # Keep the last values of names that got no new samples in an update.
    ):
        self._regex = re.compile(regex)
        self._keep_previous = keep_previous
        self._cumulative = dict()
        self._moments = dict()
        self.update()
        self._moments.clear()

    def names(self) -> list[str]:
        """Names reported so far (by any code in this process) that match the regex, in first-report order."""
        return [name for name in _counters if self._regex.fullmatch(name)]

    def update(self) -> None:
        """Take in the samples reported since the previous update, on all ranks (a collective operation)."""
        if not self._keep_previous:
            self._moments.clear()
        for name, cumulative in _sync(self.names()):
            if name not in self._cumulative:
                self._cumulative[name] = torch.zeros([_num_moments], dtype=_counter_dtype)
            delta = cumulative - self._cumulative[name]
            self._cumulative[name].copy_(cumulative)
            if float(delta[0]) != 0:
                self._moments[name] = delta

    def _get_delta(self, name: str) -> torch.Tensor:
        if not self._regex.fullmatch(name):
            raise KeyError(f"Collector: name {name!r} does not match the collector's regex {self._regex.pattern!r}")
        if name not in self._moments:
            self._moments[name] = torch.zeros([_num_moments], dtype=_counter_dtype)
        return self._moments[name]

    def num(self, name: str) -> int:
        """Number of samples in the last update."""
        delta = self._get_delta(name)
        return int(delta[0])

    def mean(self, name: str) -> float:
        """Mean of the samples in the last update (NaN if none or not finite)."""
        delta = self._get_delta(name)
        if int(delta[0]) == 0:
            return float("nan")
        return float(delta[1] / delta[0])

    def std(self, name: str) -> float:
        """Population standard deviation of the samples in the last update (0 for one sample, NaN for none)."""
        delta = self._get_delta(name)
        if int(delta[0]) == 0 or not np.isfinite(float(delta[1])) or not np.isfinite(float(delta[2])):
            return float("nan")
        if int(delta[0]) == 1:
            return float(0)
        mean = float(delta[1] / delta[0])
        raw_var = float(delta[2] / delta[0])
        return float(np.sqrt(max(raw_var - np.square(mean), 0)))

    def as_dict(self) -> dnnlib.EasyDict:
        """{name: EasyDict(num, mean, std)} for every collected name, e.g. for one line of stats.jsonl."""
        stats = dnnlib.EasyDict()
        for name in self.names():
            stats[name] = dnnlib.EasyDict(num=self.num(name), mean=self.mean(name), std=self.std(name))
        return stats

    def __getitem__(self, name: str) -> float:
        """`collector[name]` is the mean."""
        return self.mean(name)


# ----------------------------------------------------------------------------


def _sync(names: list[str]) -> list[tuple[str, torch.Tensor]]:
    """Sum the counters of `names` over devices and ranks into the cumulative totals; return those totals."""
    if len(names) == 0:
        return []
    global _sync_called
    _sync_called = True

    # Gather this process's deltas on one device, resetting the counters.
    device = _sync_device if _sync_device is not None else torch.device("cpu")
    deltas = []
    for name in names:
        delta = torch.zeros([_num_moments], dtype=_counter_dtype, device=device)
        for counter in _counters[name].values():
            delta.add_(counter.to(device))
            counter.zero_()
        deltas.append(delta)
    deltas = torch.stack(deltas)

    # Sum over ranks.
    if _sync_device is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(deltas)

    # Update the cumulative totals.
    deltas = deltas.cpu()
    for idx, name in enumerate(names):
        if name not in _cumulative:
            _cumulative[name] = torch.zeros([_num_moments], dtype=_counter_dtype)
        _cumulative[name].add_(deltas[idx])
    return [(name, _cumulative[name]) for name in names]


# ----------------------------------------------------------------------------

default_collector = Collector()  # Collects every name; convenient for scripts with one consumer.

# ----------------------------------------------------------------------------
