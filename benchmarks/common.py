"""Machine facts the benchmarks print next to their figures: the CPU and torch's view of it, and peak memory.

The scripts put the repository root on ``sys.path`` before importing this module, so it works whether they run as
``python benchmarks/<script>.py`` from the root or from anywhere else.

Example::

    from benchmarks.common import cpu_description, peak_rss_gib
    print(json.dumps(cpu_description()))  # {"cpu": "AMD EPYC", "cores": 2, "torch": "2.13.0+cpu", ...}
    print(f"peak RSS {peak_rss_gib():.2f} GiB")
"""

from __future__ import annotations

import os
import platform
import sys

# Instruction sets that decide which CPU kernels torch and torch_utils/ops/fast_cpu.py can use, in report order.
FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")

# ----------------------------------------------------------------------------


def cpu_info() -> tuple[str, set[str]]:
    """``(model name, instruction-set flags)`` of the first CPU in /proc/cpuinfo; where that cannot be read (not
    Linux), the platform's processor name and no flags."""
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not model:
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
                if model and flags:
                    break
    except OSError:
        pass
    return model or platform.processor() or platform.machine() or "unknown", flags


def cpu_description() -> dict:
    """CPU model, logical core count, torch version, intra-op threads and CPU capability, and which of
    ``FLAGS_OF_INTEREST`` the CPU has (in that order); JSON-ready."""
    import torch  # Here, so that importing this module stays cheap for the scripts' driver processes.

    model, flags = cpu_info()
    return dict(
        cpu=model,
        cores=os.cpu_count(),
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        capability=torch.backends.cpu.get_cpu_capability(),
        mkldnn=torch.backends.mkldnn.is_available(),
        flags=[name for name in FLAGS_OF_INTEREST if name in flags],
    )


def peak_rss_gib() -> float:
    """Peak resident memory of this process in GiB.

    Reads VmHWM from /proc/self/status. ru_maxrss is only the fallback: for a process started by fork and exec (the
    benchmarks' fresh worker processes) Linux carries the parent's peak at the fork over into the child's ru_maxrss,
    so a small worker of a big parent would look as big as the parent. For the same reason a parent must not read
    its children's peaks from RUSAGE_CHILDREN; each child reports its own.
    """
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20  # kB
    except OSError:
        pass
    import resource  # Unix only; where there is no /proc.

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**30 if sys.platform == "darwin" else maxrss / 2**20  # macOS reports bytes, Linux KiB.
