"""Inception Score (Salimans et al. 2016) of generated frames, as used in the LongVideoGAN paper's evaluation.

Needs the class probabilities of the original inception-2015-12-05.pkl (the packaged Inception has no classifier).
"""

import numpy as np

from metrics import metric_utils

DETECTOR_KWARGS = dict(no_output_bias=True)  # 1008-way softmax of the 2015 Inception.

# ----------------------------------------------------------------------------


def inception_score(probs: np.ndarray, num_splits: int = 10) -> tuple[float, float]:
    """Mean and population std over splits of exp(mean_rows Σ_c p (log p − log p̄)), p̄ the split's mean.

    Split i covers rows floor(i·N/num_splits) ... floor((i+1)·N/num_splits) − 1.
    """
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2 or probs.shape[0] < num_splits:
        raise ValueError(f"probs must be [N >= num_splits={num_splits}, classes], got shape {probs.shape}")
    n = probs.shape[0]
    scores = []
    for i in range(num_splits):
        part = probs[i * n // num_splits : (i + 1) * n // num_splits]
        kl = part * (np.log(part) - np.log(np.mean(part, axis=0, keepdims=True)))
        scores.append(np.exp(np.mean(np.sum(kl, axis=1))))
    return float(np.mean(scores)), float(np.std(scores))


def compute_is(opts: metric_utils.MetricOptions, num_gen: int, num_splits: int, run_index: int = 0) -> tuple:
    """(mean, std) Inception Score of num_gen generated frames (NaN on ranks other than 0)."""
    fake = metric_utils.compute_feature_stats_for_generator(
        opts,
        "inception",
        DETECTOR_KWARGS,
        num_items=num_gen,
        batch_size=16,
        need_classifier=True,
        run_index=run_index,
        capture_all=True,
    )
    if opts.rank != 0:
        return float("nan"), float("nan")
    return inception_score(fake.get_all(), num_splits)


# ----------------------------------------------------------------------------
