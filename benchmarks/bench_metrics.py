"""Benchmark of the metric detectors: I3D seconds per 100 clips of 16 frames (FVD) and Inception seconds per 1,000
frames (FID/KID), on the packaged weights (or the original files with --source official).

Measures a few batches after a warm-up and extrapolates; prints the CPU model, its vector extensions, the thread
count and the load average (the machine may be shared, which slows everything down).

    python benchmarks/bench_metrics.py                       # CPU, the numbers quoted in reports
    python benchmarks/bench_metrics.py --device cuda --clips 32 --frames 256
"""

import os
import sys
import time
from pathlib import Path

import click
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import cpu_info  # noqa: E402
from metrics import detectors  # noqa: E402

# ----------------------------------------------------------------------------


def cpu_summary() -> str:
    """CPU model name and all its SIMD extensions (wider than benchmarks.common.FLAGS_OF_INTEREST: the detectors'
    convolutions use whichever torch finds)."""
    model, flags = cpu_info()
    simd = sorted(f for f in flags if f.startswith(("avx", "fma", "f16c", "amx")))
    return f"{model}; SIMD: {' '.join(simd) or 'unknown'}"


def time_calls(fn, batches, warmup: int = 1) -> float:
    """Seconds per call, averaged over the batches after `warmup` untimed calls."""
    with torch.no_grad():
        for x in batches[:warmup]:
            fn(x)
        sync = torch.cuda.synchronize if batches[0].is_cuda else (lambda: None)
        sync()
        start = time.perf_counter()
        for x in batches[warmup:]:
            fn(x)
        sync()
    return (time.perf_counter() - start) / max(len(batches) - warmup, 1)


@click.command()
@click.option("--device", default="cpu", show_default=True, help="Torch device.")
@click.option(
    "--source",
    type=click.Choice(list(detectors.SOURCES)),
    default="packaged",
    show_default=True,
    help="Which detector files to time.",
)
@click.option("--clips", default=8, show_default=True, help="Timed I3D clips (batches of 4, 16 frames, 36x64).")
@click.option("--frames", default=32, show_default=True, help="Timed Inception frames (batches of 8, 36x64).")
@click.option("--detector-dir", default=None, help="Directory with the original detector files.")
def main(device, source, clips, frames, detector_dir):
    """Time the FVD and FID feature detectors."""
    device = torch.device(device)
    print(f"CPU: {cpu_summary()}")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    )
    if hasattr(os, "getloadavg"):
        print("Load average (1/5/15 min): " + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    g = torch.Generator().manual_seed(0)

    # I3D: uint8 clips at the low-res size, resized to 224x224 inside, as in FVD.
    i3d = detectors.get_detector("i3d", device, source=source, detector_dir=detector_dir)
    clip_batches = [
        torch.randint(0, 256, (4, 3, 16, 36, 64), dtype=torch.uint8, generator=g).to(device)
        for _ in range(1 + max(1, clips // 4))
    ]
    sec = time_calls(lambda x: i3d(x, rescale=True, resize=True, return_features=True), clip_batches)
    print(
        f"I3D ({i3d.name}, {i3d.source}): {sec / 4 * 100:.1f} s per 100 clips of 16 frames ({sec / 4:.2f} s per clip)"
    )

    # Inception: uint8 frames, resized to 299x299 inside.
    inception = detectors.get_detector("inception", device, source=source, detector_dir=detector_dir)
    frame_batches = [
        torch.randint(0, 256, (8, 3, 36, 64), dtype=torch.uint8, generator=g).to(device)
        for _ in range(1 + max(1, frames // 8))
    ]
    sec = time_calls(lambda x: inception(x, return_features=True), frame_batches)
    print(
        f"Inception ({inception.name}, {inception.source}): {sec / 8 * 1000:.1f} s per 1,000 frames "
        f"({sec / 8:.3f} s per frame)"
    )
    if hasattr(os, "getloadavg"):
        print("Load average after (1/5/15 min): " + " ".join(f"{v:.2f}" for v in os.getloadavg()))


# ----------------------------------------------------------------------------

if __name__ == "__main__":
    main()
