"""Kernel Inception Distance (Bińkowski et al. 2018) on frames, as used in the LongVideoGAN paper's evaluation.

Unbiased MMD² with the cubic polynomial kernel k(a, b) = (a·b / d + 1)³, averaged over random subsets, reported
×1000. Real frame weights are ignored.
"""

import numpy as np

from metrics import metric_utils

DETECTOR_KWARGS = dict(return_features=True)

# ----------------------------------------------------------------------------


def kernel_distance(
    real_features: np.ndarray,
    gen_features: np.ndarray,
    num_subsets: int = 100,
    max_subset_size: int = 1000,
    rng: np.random.RandomState | None = None,
) -> float:
    """KID of two feature sets [N, d]: for each subset draw m generated rows x, then m real rows y (without
    replacement), add [Σ_{i≠j} k(x_i,x_j) + Σ_{i≠j} k(y_i,y_j)]/(m−1) − 2·Σ k(x_i,y_j)/m; return Σ/(subsets·m)."""
    real_features = np.asarray(real_features, np.float64)
    gen_features = np.asarray(gen_features, np.float64)
    if real_features.ndim != 2 or gen_features.ndim != 2 or real_features.shape[1] != gen_features.shape[1]:
        raise ValueError(f"features must be [N, d] with equal d, got {real_features.shape} and {gen_features.shape}")
    rng = rng if rng is not None else np.random.RandomState(0)
    n = real_features.shape[1]
    m = min(real_features.shape[0], gen_features.shape[0], max_subset_size)
    if m < 2:
        raise ValueError(
            f"KID needs at least 2 real and 2 generated rows, got {real_features.shape[0]} and {gen_features.shape[0]}"
        )
    t = 0.0
    for _ in range(num_subsets):
        x = gen_features[rng.choice(gen_features.shape[0], m, replace=False)]
        y = real_features[rng.choice(real_features.shape[0], m, replace=False)]
        a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
        b = (x @ y.T / n + 1) ** 3
        t += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return float(t / num_subsets / m)


def compute_kid(
    opts: metric_utils.MetricOptions,
    max_real: int | None,
    num_gen: int,
    num_subsets: int,
    max_subset_size: int,
    run_index: int = 0,
) -> float:
    """KID ×1000 between real and generated frames (NaN on ranks other than 0)."""
    real = metric_utils.compute_feature_stats_for_dataset(
        opts,
        "inception",
        DETECTOR_KWARGS,
        max_items=max_real,
        batch_size=64,
        capture_all=True,
    )
    fake = metric_utils.compute_feature_stats_for_generator(
        opts,
        "inception",
        DETECTOR_KWARGS,
        num_items=num_gen,
        batch_size=16,
        run_index=run_index,
        capture_all=True,
    )
    if opts.rank != 0:
        return float("nan")
    rng = np.random.RandomState(metric_utils.derive_seed(opts.seed, "kid", run_index) % (2**32))
    kid = kernel_distance(real.get_all(), fake.get_all(), num_subsets, max_subset_size, rng=rng)
    return kid * 1000


# ----------------------------------------------------------------------------
