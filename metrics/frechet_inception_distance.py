"""Fréchet Inception Distance (Heusel et al. 2017) on frames, as used by LongVideoGAN (SPEC §7.1, §7.3).

``fid50k_full`` compares every real frame, each weighted by 1/(frames in its clip) so that every clip counts
equally, against 50,000 generated frames (one frame per generated sample).
"""

from typing import Optional

import numpy as np
import scipy.linalg

from metrics import metric_utils

DETECTOR_KWARGS = dict(return_features=True)  # 2048-d pool features of Inception-v3.

# ----------------------------------------------------------------------------


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2·sqrtm(Σ1 Σ2)), taking the real part of the matrix square root.

    Example: frechet_distance(np.zeros(2), np.eye(2), np.ones(2), np.eye(2)) == 2.0
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"mean/covariance shapes do not match: {mu1.shape}, {sigma1.shape}, {mu2.shape}, "
                         f"{sigma2.shape}")
    m = np.square(mu1 - mu2).sum()
    s = scipy.linalg.sqrtm(np.dot(sigma1, sigma2))
    return float(np.real(m + np.trace(sigma1 + sigma2 - s * 2)))


def compute_fid(opts: metric_utils.MetricOptions, max_real: Optional[int], num_gen: int,
                run_index: int = 0) -> float:
    """FID between (weighted) real frames and num_gen generated frames (NaN on ranks other than 0)."""
    real = metric_utils.compute_feature_stats_for_dataset(
        opts, "inception", DETECTOR_KWARGS, max_items=max_real, batch_size=64, use_weights=True,
        capture_mean_cov=True,
    )
    fake = metric_utils.compute_feature_stats_for_generator(
        opts, "inception", DETECTOR_KWARGS, num_items=num_gen, batch_size=4, run_index=run_index,
        capture_mean_cov=True,
    )
    if opts.rank != 0:
        return float("nan")
    mu_real, sigma_real = real.get_mean_cov()
    mu_gen, sigma_gen = fake.get_mean_cov()
    return frechet_distance(mu_gen, sigma_gen, mu_real, sigma_real)


# ----------------------------------------------------------------------------
