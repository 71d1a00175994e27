"""Colour similarity versus frame separation, the measure of content change over time of LongVideoGAN (Brooks et al.).

Each RGB channel of a uint8 frame is quantised by rounding to `NUM_LEVELS` = 20 levels, `round(v / 255 · 19)`, so
the two end bins are half as wide as the others; the three channels give one of 20³ = 8000 joint colour bins. The
similarity of frame t to frame 0 is the intersection of their colour histograms normalised by the pixel count,
sum over bins of min(count_t, count_0) / (H · W): 1 for identical colour distributions, 0 for disjoint ones
(the original's measure). Over many videos the curve is summarised by its mean and sample standard deviation (n − 1).

Example:
    sims = color_similarity(frames)  # frames: uint8 [N, T, H, W, 3] -> float64 [N, T], sims[:, 0] == 1
    mean, std = similarity_stats(sims)  # [T] each
"""

import torch

NUM_LEVELS = 20  # Quantisation levels per channel.
NUM_BINS = NUM_LEVELS**3  # Joint RGB bins.

# ----------------------------------------------------------------------------


def _check_frames(frames: torch.Tensor) -> None:
    if not isinstance(frames, torch.Tensor) or frames.dtype != torch.uint8:
        got = f"a {frames.dtype} tensor" if isinstance(frames, torch.Tensor) else f"a {type(frames).__name__}"
        raise TypeError(f"frames must be a uint8 tensor [N, T, H, W, 3], got {got}")
    if frames.ndim != 5 or frames.shape[-1] != 3 or min(frames.shape) == 0:
        raise ValueError(f"frames must be a non-empty uint8 tensor [N, T, H, W, 3], got shape {list(frames.shape)}")


def quantize_colors(frames: torch.Tensor) -> torch.Tensor:
    """Joint colour bin in [0, 8000) of every pixel of uint8 `frames [..., 3]`, as int64 `[...]`.

    Channel level `round(v · 19 / 255)` in integer arithmetic (v · 19 / 255 never falls halfway between two
    integers, so no tie rule is needed); bin = (r · 20 + g) · 20 + b.
    """
    levels = (frames.long() * (2 * (NUM_LEVELS - 1)) + 255) // 510  # [..., 3], floor(v·19/255 + 1/2)
    return (levels[..., 0] * NUM_LEVELS + levels[..., 1]) * NUM_LEVELS + levels[..., 2]


def color_histograms(frames: torch.Tensor) -> torch.Tensor:
    """Per-frame joint colour histograms (pixel counts) of uint8 `frames [N, T, H, W, 3]`, int64 `[N, T, 8000]`."""
    _check_frames(frames)
    N, T = frames.shape[:2]
    bins = quantize_colors(frames).flatten(2)  # [N, T, H·W]
    offsets = torch.arange(N * T, device=frames.device).view(N, T, 1) * NUM_BINS
    counts = torch.bincount((bins + offsets).flatten(), minlength=N * T * NUM_BINS)
    return counts.view(N, T, NUM_BINS)  # [N, T, 8000]


def histogram_intersection(hists: torch.Tensor, reference: torch.Tensor, num_pixels: int) -> torch.Tensor:
    """Sum over bins of min(hists, reference) / num_pixels: `[N, T, B]` counts vs `[N, B]` counts → float64 `[N, T]`."""
    return torch.minimum(hists, reference[:, None, :]).sum(dim=-1).double() / num_pixels


def color_similarity(frames: torch.Tensor) -> torch.Tensor:
    """Colour similarity of every frame to frame 0 of its video: uint8 `[N, T, H, W, 3]` → float64 `[N, T]`."""
    hists = color_histograms(frames)  # [N, T, 8000]
    return histogram_intersection(hists, hists[:, 0], frames.shape[2] * frames.shape[3])


def similarity_stats(similarities: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and sample standard deviation (n − 1 in the denominator) over videos of `[N, T]` → (`[T]`, `[T]`)."""
    if similarities.ndim != 2 or similarities.shape[0] < 2:
        raise ValueError(
            f"similarities must be [N, T] with N >= 2 videos (the sample std needs two), got shape "
            f"{list(similarities.shape)}"
        )
    similarities = similarities.double()
    return similarities.mean(dim=0), similarities.std(dim=0, correction=1)


class SimilarityAccumulator:
    """Colour similarity of streamed videos: feed consecutive frame chunks of a batch, read `[N, T]` at the end.

    Example:
        acc = SimilarityAccumulator()
        for chunk in chunks:  # uint8 [N, t, H, W, 3], consecutive frames of the same N videos
            acc.add(chunk)
        sims = acc.result()  # float64 [N, T]
    """

    def __init__(self):
        self.reference = None  # [N, 8000] counts of frame 0.
        self.num_pixels = None
        self.parts = []

    def add(self, frames: torch.Tensor) -> None:
        hists = color_histograms(frames)  # [N, t, 8000]
        if self.reference is None:
            self.reference = hists[:, 0].clone()
            self.num_pixels = frames.shape[2] * frames.shape[3]
        elif hists.shape[0] != self.reference.shape[0] or frames.shape[2] * frames.shape[3] != self.num_pixels:
            raise ValueError(f"frames: chunk of shape {list(frames.shape)} does not continue the earlier chunks")
        self.parts.append(histogram_intersection(hists, self.reference, self.num_pixels))

    def result(self) -> torch.Tensor:
        if not self.parts:
            raise ValueError("no frames were added")
        return torch.cat(self.parts, dim=1)  # [N, T]
