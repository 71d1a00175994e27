"""Benchmark of the video datasets: clips per second through a DataLoader (lres and sres training shapes).

Builds its own synthetic dataset in a temporary directory, then times seeded shuffled DataLoaders.

    python benchmarks/bench_dataset.py                 # 2 workers, the numbers quoted in reports
    python benchmarks/bench_dataset.py --workers 4 --seconds 10
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import click
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import cpu_description  # noqa: E402
from dataset_tools.make_synthetic_dataset import make_synthetic_dataset  # noqa: E402
from long_video_gan.dataset import VideoDataset, VideoDatasetTwoRes  # noqa: E402

# ----------------------------------------------------------------------------


def time_loader(dataset, batch_size: int, workers: int, seconds: float, warmup_batches: int = 2) -> float:
    """Clips per second over about ``seconds`` of loading, after a warm-up (worker start excluded)."""
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        generator=torch.Generator().manual_seed(0),
        persistent_workers=workers > 0,
        drop_last=True,
    )

    def batches():
        while True:
            yield from loader

    stream = batches()
    for _ in range(warmup_batches):
        next(stream)
    start, clips = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        next(stream)
        clips += batch_size
    return clips / (time.perf_counter() - start)


@click.command()
@click.option("--workers", type=int, default=2, show_default=True, help="DataLoader worker processes.")
@click.option("--batch", type=int, default=4, show_default=True, help="Clips per batch.")
@click.option("--seconds", type=float, default=5.0, show_default=True, help="Timed seconds per case.")
@click.option("--num-videos", type=int, default=4, show_default=True, help="Synthetic clips.")
@click.option("--num-frames", type=int, default=136, show_default=True, help="Frames per synthetic clip.")
def main(workers, batch, seconds, num_videos, num_frames):
    """Print clips/s for 128-frame 36x64 clips (lres), 8-frame 144x256 clips, and the sres pairs."""
    for name, value, least in (
        ("--batch", batch, 1),
        ("--num-videos", num_videos, batch),
        ("--num-frames", num_frames, 128),
    ):
        if value < least:
            # Fewer clips than one batch: the loader (drop_last) would never yield and the timing loop never end.
            raise click.BadParameter(f"must be at least {least} here, got {value}", param_hint=name)
    machine = cpu_description()
    print(
        f"CPU: {machine['cpu']} ({machine['threads']} torch threads), torch {machine['torch']}, "
        f"{workers} workers, batch {batch}; load average {os.getloadavg()[0]:.1f} on {machine['cores']} cores"
    )
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        root = make_synthetic_dataset(
            Path(tmp) / "synthetic",
            num_videos=num_videos,
            num_frames=num_frames,
            resolutions=((36, 64), (144, 256)),
            seed=0,
        )
        print(
            f"Synthetic dataset: {num_videos} x {num_frames} frames at 36x64 and 144x256 in "
            f"{time.perf_counter() - start:.1f} s"
        )
        cases = [
            ("36x64 x 128 frames (lres)", VideoDataset(root, seq_length=128, height=36, width=64, x_flip=True), 128),
            ("144x256 x 8 frames", VideoDataset(root, seq_length=8, height=144, width=256, x_flip=True), 8),
            (
                "sres pair 12 lr + 12 hr (original)",
                VideoDatasetTwoRes(root, 12, 36, 64, 144, 256, x_flip=True),
                12 + 12,
            ),
            (
                "sres pair 12 lr + 4 hr (hr_frame_slice)",
                VideoDatasetTwoRes(root, 12, 36, 64, 144, 256, x_flip=True, hr_frame_slice=(4, 8)),
                12 + 4,
            ),
        ]
        for name, dataset, frames_per_clip in cases:
            rate = time_loader(dataset, batch, workers, seconds)
            print(f"{name:<42} {rate:8.1f} clips/s  ({rate * frames_per_clip:8.0f} frames/s decoded)")


if __name__ == "__main__":
    main()
