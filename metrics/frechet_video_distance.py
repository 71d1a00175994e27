"""Fréchet Video Distance (Unterthiner et al. 2018) with the Kinetics-400 I3D used in the LongVideoGAN paper.

Real clips are random windows of random clips (clip-uniform); generated clips are cropped at random offsets. With
subsample_factor s, a clip is num_frames frames taken every s-th frame (a span of (num_frames - 1) * s + 1 frames).
"""

from metrics import metric_utils
from metrics.frechet_inception_distance import frechet_distance

# The I3D is called like the original TorchScript: uint8 input, rescaled to [-1, 1] and resized to 224x224 inside.
DETECTOR_KWARGS = dict(rescale=True, resize=True, return_features=True)

# ----------------------------------------------------------------------------


def compute_fvd(
    opts: metric_utils.MetricOptions,
    max_real: int | None,
    num_gen: int,
    num_frames: int,
    subsample_factor: int = 1,
    run_index: int = 0,
) -> float:
    """FVD between max_real real and num_gen generated clips of num_frames frames (NaN on ranks other than 0)."""
    batch_size = max(1, 64 // num_frames)  # The original's batch: 4 clips of 16 frames, 1 of 128.
    real = metric_utils.compute_feature_stats_for_dataset(
        opts,
        "i3d",
        DETECTOR_KWARGS,
        max_items=max_real,
        num_frames=num_frames,
        subsample_factor=subsample_factor,
        batch_size=batch_size,
        capture_mean_cov=True,
    )
    fake = metric_utils.compute_feature_stats_for_generator(
        opts,
        "i3d",
        DETECTOR_KWARGS,
        num_items=num_gen,
        num_frames=num_frames,
        subsample_factor=subsample_factor,
        batch_size=batch_size,
        run_index=run_index,
        capture_mean_cov=True,
    )
    if opts.rank != 0:
        return float("nan")
    mu_real, sigma_real = real.get_mean_cov()
    mu_gen, sigma_gen = fake.get_mean_cov()
    return frechet_distance(mu_gen, sigma_gen, mu_real, sigma_real)


# ----------------------------------------------------------------------------
