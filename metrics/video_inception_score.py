"""Video Inception Score with the UCF-101 C3D (Saito et al. 2017), as used in the LongVideoGAN paper's evaluation.

Needs the original c3d_ucf101.pt (no packaged fallback). The clips are passed to it as uint8 [N, 3, 16, H, W];
its internal preprocessing has not been checked here (no copy of the file was available offline).
"""

import numpy as np

from metrics import metric_utils
from metrics.inception_score import inception_score

DETECTOR_KWARGS: dict = {}

# ----------------------------------------------------------------------------


def compute_isv(
    opts: metric_utils.MetricOptions, num_gen: int, num_frames: int, num_splits: int, run_index: int = 0
) -> tuple:
    """(mean, std) video IS of num_gen generated clips; rows are shuffled with RandomState(42) first."""
    fake = metric_utils.compute_feature_stats_for_generator(
        opts,
        "c3d",
        DETECTOR_KWARGS,
        num_items=num_gen,
        num_frames=num_frames,
        batch_size=64,
        need_classifier=True,
        run_index=run_index,
        capture_all=True,
    )
    if opts.rank != 0:
        return float("nan"), float("nan")
    probs = fake.get_all()
    probs = probs[np.random.RandomState(42).permutation(probs.shape[0])]
    return inception_score(probs, num_splits)


# ----------------------------------------------------------------------------
