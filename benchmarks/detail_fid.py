"""What FID does missing detail cost on a dataset? Real frames with their fine detail removed, against the real
statistics of the FID protocol of benchmarks/demo_metrics.py.

Every frame is area-downsampled to each --level (HEIGHTxWIDTH) and bilinearly upsampled back, then scored with the
packaged Inception against --max-real frames spread over the dataset (cached like calc_metrics.py's). The frames
scored are --num frames spread over the dataset half a step away from the real set's, so "none" (no blur) is the
floor of the protocol. A generator that gets the layout and colours right but draws no detail finer than a level
scores about that level's FID: the scale on which to read a demo model's FID.

Example (measured 2026-12-06 on the two synthetic demo worlds of long_video_gan/pretrained/README.md, 36x64, the
default 256 frames against 2048; the untrained demo generator scores 370.6 and 276.2 on them):
    python benchmarks/detail_fid.py --dataset /root/lvg_demo/datasets/synth_demo     # full texture
        none 28.9, 18x32 102.9, 9x16 233.5, 5x8 297.2, 3x4 335.2
    python benchmarks/detail_fid.py --dataset /root/lvg_demo/datasets/synth_smooth   # --max-freq 3
        none 25.6, 18x32 64.4, 9x16 150.9, 5x8 198.8, 3x4 218.0
(The full-texture line was measured with numpy's n-1 covariance for the blurred frames, before this script switched
to calc_metrics.py's FeatureStats (n); on the smooth world that switch moved each figure by 0.1-0.2.)
"""

import os
import sys

import click
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from dataset_tools.utils import parse_resolution  # noqa: E402
from long_video_gan.dataset import VideoDatasetPerImage  # noqa: E402
from metrics import metric_utils  # noqa: E402
from metrics.frechet_inception_distance import DETECTOR_KWARGS, frechet_distance  # noqa: E402


def blurred(frames: torch.Tensor, level: tuple[int, int] | None) -> torch.Tensor:
    """uint8 frames [N, 3, H, W] with the detail finer than `level` (h, w) removed; None = unchanged."""
    if level is None:
        return frames
    x = F.interpolate(frames.float(), size=level, mode="area")
    x = F.interpolate(x, size=frames.shape[-2:], mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8)


@click.command()
@click.option("--dataset", required=True, help="Dataset root.")
@click.option("--resolution", default="36x64", show_default=True, help="Frame size (HEIGHTxWIDTH directory).")
@click.option(
    "--level",
    "levels",
    multiple=True,
    default=("18x32", "9x16", "5x8", "3x4"),
    show_default=True,
    help="HEIGHTxWIDTH to blur to; repeatable.",
)
@click.option("--num", type=click.IntRange(min=2), default=256, show_default=True, help="Frames scored per level.")
@click.option("--max-real", type=click.IntRange(min=2), default=2048, show_default=True, help="Real frames (spread).")
@click.option("--device", default="cpu", show_default=True)
def main(dataset, resolution, levels, num, max_real, device):
    """FID of real frames blurred to each --level, against the dataset's spread real statistics."""
    try:
        height, width = parse_resolution(resolution)
        levels = [parse_resolution(level) for level in levels]
    except ValueError as error:
        raise click.BadParameter(str(error))
    opts = metric_utils.MetricOptions(
        dataset_kwargs=dict(dataset_dir=dataset, height=height, width=width),
        num_gen=num,
        max_real=max_real,
        real_subset="spread",
        detector_source="packaged",
        device=device,
        show_progress=True,
    )
    real = metric_utils.compute_feature_stats_for_dataset(
        opts, "inception", DETECTOR_KWARGS, max_items=max_real, batch_size=64, use_weights=True, capture_mean_cov=True
    )
    mu_real, sigma_real = real.get_mean_cov()
    frames_ds = VideoDatasetPerImage(dataset, height=height, width=width, seq_length=1)
    n = len(frames_ds)
    picks = [(i * n + n // 2) // num % n for i in range(num)]  # Between the real set's items i * n // max_real.
    frames = torch.stack([metric_utils.to_uint8(frames_ds[i]["video"][:, 0]) for i in picks])  # [N, 3, H, W]
    detector = metric_utils.get_detector(opts, "inception")
    for level in [None] + levels:
        x = blurred(frames, level).to(device)
        stats = metric_utils.FeatureStats(capture_mean_cov=True)  # The statistics calc_metrics.py computes.
        for i in range(0, num, 32):
            stats.append(detector(x[i : i + 32], **DETECTOR_KWARGS).cpu().numpy())
        fid = frechet_distance(*stats.get_mean_cov(), mu_real, sigma_real)
        name = "none" if level is None else f"{level[0]}x{level[1]}"
        print(f"{name:>8}  FID {fid:.1f}", flush=True)


if __name__ == "__main__":
    main()
