"""Fréchet Inception Distance (Heusel et al. 2017) on frames, as used in the LongVideoGAN paper's evaluation.

``fid50k_full`` compares every real frame, each weighted by 1/(frames in its clip) so that every clip counts
equally, against 50,000 generated frames (one frame per generated sample).
"""

import numpy as np
import scipy.linalg

from metrics import metric_utils

DETECTOR_KWARGS = dict(return_features=True)  # 2048-d pool features of Inception-v3.

# ----------------------------------------------------------------------------


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, method: str = "sqrtm"
) -> float:
    """‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2·sqrtm(Σ1 Σ2)).

    method: "sqrtm" (the original: real part of scipy.linalg.sqrtm of the product; about a minute for 2048-d on a
    2-core CPU) or "eigh" (the same trace from symmetric eigendecompositions, Tr sqrt(Σ1^½ Σ2 Σ1^½), a few seconds;
    equal up to rounding for well-conditioned covariances, more stable for singular ones).

    Example: frechet_distance(np.zeros(2), np.eye(2), np.ones(2), np.eye(2)) == 2.0
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(
            f"mean/covariance shapes do not match: {mu1.shape}, {sigma1.shape}, {mu2.shape}, {sigma2.shape}"
        )
    m = np.square(mu1 - mu2).sum()
    if method == "sqrtm":
        s = scipy.linalg.sqrtm(np.dot(sigma1, sigma2))
        return float(np.real(m + np.trace(sigma1 + sigma2 - s * 2)))
    if method == "eigh":
        # The eigenvalues of Σ1Σ2 equal those of the symmetric PSD matrix Σ1^½ Σ2 Σ1^½.
        w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
        root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        inner = root1 @ sigma2 @ root1
        trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum()
        return float(m + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)
    raise ValueError(f"method must be 'sqrtm' or 'eigh', got {method!r}")


def frechet_distance_from_features(x1: np.ndarray, x2: np.ndarray) -> float:
    """Fréchet distance between the Gaussians of two unweighted feature sets [N1, d] and [N2, d] (population
    covariances, as FeatureStats computes them), exactly and fast when there are few rows.

    With a = (x1 − μ1)/√N1 and b = (x2 − μ2)/√N2, Σ1 = aᵀa and Σ2 = bᵀb, and the nonzero eigenvalues of Σ1Σ2 are the
    squared singular values of a·bᵀ, so Tr sqrtm(Σ1Σ2) is the nuclear norm of a·bᵀ (an N1 x N2 matrix).
    """
    x1, x2 = np.asarray(x1, np.float64), np.asarray(x2, np.float64)
    if x1.ndim != 2 or x2.ndim != 2 or x1.shape[1] != x2.shape[1]:
        raise ValueError(f"features must be [N, d] with equal d, got {x1.shape} and {x2.shape}")
    mu1, mu2 = x1.mean(axis=0), x2.mean(axis=0)
    a = (x1 - mu1) / np.sqrt(x1.shape[0])
    b = (x2 - mu2) / np.sqrt(x2.shape[0])
    nuclear = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    return float(np.square(mu1 - mu2).sum() + np.square(a).sum() + np.square(b).sum() - 2 * nuclear)


def compute_fid(opts: metric_utils.MetricOptions, max_real: int | None, num_gen: int, run_index: int = 0) -> float:
    """FID between (weighted) real frames and num_gen generated frames (NaN on ranks other than 0)."""
    real = metric_utils.compute_feature_stats_for_dataset(
        opts,
        "inception",
        DETECTOR_KWARGS,
        max_items=max_real,
        batch_size=64,
        use_weights=True,
        capture_mean_cov=True,
    )
    fake = metric_utils.compute_feature_stats_for_generator(
        opts,
        "inception",
        DETECTOR_KWARGS,
        num_items=num_gen,
        batch_size=4,
        run_index=run_index,
        capture_mean_cov=True,
    )
    if opts.rank != 0:
        return float("nan")
    mu_real, sigma_real = real.get_mean_cov()
    mu_gen, sigma_gen = fake.get_mean_cov()
    return frechet_distance(mu_gen, sigma_gen, mu_real, sigma_real)


# ----------------------------------------------------------------------------
