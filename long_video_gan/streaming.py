"""Streaming generation for LongVideoGAN (Brooks et al., NeurIPS 2022): videos of any length in bounded memory.

The low-res generator (generator_lres.py) is fully convolutional in time, so any range of output frames can be
computed from a temporal window of every intermediate sequence. This module evaluates the one-shot computation
`G(N, L, generator_emb=gen)` window by window and returns the same values (up to float rounding), whatever the
window size, including the frames at the start and end of the video where the one-shot computation sees zero
padding.

Global index bookkeeping (all ranges are half-open `[a, b)` in the coordinates of the one-shot tensors):

* Noise: `[N, noise_channels, 32·T_in + K − 1]` white noise, drawn up front exactly like the one-shot path
  (it is small: 8 channels). The temporal embedding frame `t` is a valid correlation over noise samples
  `t … t + K − 1`, so a window of the embedding needs only the matching noise slice.
* Latent levels: level 0 is the mapped latent at full rate (`32·T_in` samples); level `l` is level `l − 1` after one
  `TemporalKaiserDownsample` (12 taps, zero padding 5 at both ends of the whole sequence, stride 2). Output `j`
  reads samples `2j − 5 … 2j + 6` of the finer level, so a window `[a, b)` of level `l` needs `[2a − 6, 2b + 6)` of
  level `l − 1` (widened to even bounds), with zeros exactly where the one-shot sequence has its padding.
* Synthesis: temporal layer `i` maps an input of `n_i` frames to `n_{i+1}`; each block holds two zero-padded
  temporal convolutions (halo `kt // 2` each), an optional ×2 linear upsampling with zero borders (up index `2k`
  reads residual `k − 1, k`; `2k + 1` reads `k, k + 1`) and a centre crop starting at
  `floor((len − target) / 2)`. Its latent is a centre crop of its level starting at `floor((len_l − n_i) / 2)`.
  A window of a block input is evaluated with the block's own zero padding at its ends; where the window ends
  at a true end of the sequence (`0` or `n_i`) that padding is the one-shot padding, elsewhere the window is
  widened by the receptive field (plus an optional margin) and only the uncontaminated middle is kept.
* Spatial layers and ToRGB act frame by frame on frames `[p, q)` with the level-0 latent centre-cropped to `L`.

The only other coupling across frames, the styles' normalisation by their maximum over all frames before
demodulation (generator_lres.temporal_modulated_conv3d), cancels in the demodulation except through its 1e-8 term,
so windows differ from the one-shot computation by float rounding only (measured: at most 2e-6 on the release-size
network, 301 frames).

The super-res generator (generator_sres.py) maps each output frame from the 2·temporal_context + 1 low-res frames
around it, independently given its `z`, so it consumes the low-res stream with a rolling buffer.

Extra dimension letters used below: K = taps of the temporal-embedding filters, F = number of those filters.
"""

import contextlib
import dataclasses
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from einops import rearrange

from torch_utils.ops import fast_cpu

# ----------------------------------------------------------------------------
# Argument checks: each public entry point checks its own arguments once, up front; the functions it calls next
# take them as checked.


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_dtype(dtype: torch.dtype | None, device: torch.device) -> None:
    if dtype not in (None, torch.float32, torch.bfloat16):
        raise ValueError(f"dtype must be None, torch.float32 or torch.bfloat16, got {dtype}")
    if dtype == torch.bfloat16 and (device.type != "cpu" or not fast_cpu.is_enabled()):
        why = "the fast CPU paths are off (LVG_FAST_CPU=0)" if device.type == "cpu" else f"the device is {device}"
        raise ValueError(f"dtype=torch.bfloat16 means bfloat16 convolutions of the fast CPU paths, but {why}")


def _check_frame_range(start: int, stop: int, seq_length: int) -> None:
    if not (0 <= start < stop <= seq_length):
        raise ValueError(f"frame range must satisfy 0 <= start < stop <= {seq_length}, got [{start}, {stop})")


# ----------------------------------------------------------------------------
# One-shot lengths.

# The original generate.py renders the low-res video at a multiple of its super-res segment length (16 frames),
# plus 2·temporal_context frames when a super-res generator follows. The length of the one-shot video
# decides the noise size and every crop offset, so streaming uses the same length to reproduce its frames.
ORIGINAL_SEGMENT_LENGTH = 16


def original_lres_length(num_frames: int, temporal_context: int = 0) -> int:
    """Length of the low-res video that the original generate.py renders for `num_frames` output frames.

    Example: `original_lres_length(301)` is 304; `original_lres_length(301, temporal_context=4)` is 312.
    """
    _check_positive_int("num_frames", num_frames)
    if temporal_context < 0:
        raise ValueError(f"temporal_context must be non-negative, got {temporal_context}")
    multiple = ORIGINAL_SEGMENT_LENGTH
    return -(-num_frames // multiple) * multiple + 2 * temporal_context


# ----------------------------------------------------------------------------
# Plan: the global lengths and offsets of the one-shot computation.


@dataclasses.dataclass(frozen=True)
class LresPlan:
    """Lengths and offsets of the one-shot low-res computation for a video of `seq_length` frames."""

    seq_length: int  # L: frames of the one-shot video.
    in_lengths: tuple[int, ...]  # Input length of each temporal layer (the first one is T_in).
    out_lengths: tuple[int, ...]  # Output length of each temporal layer (the last one is L).
    ups: tuple[bool, ...]  # Whether each temporal layer up-samples ×2 in time.
    halos: tuple[int, ...]  # Temporal receptive-field radius of each block before up-sampling.
    crop_starts: tuple[int, ...]  # Start of each temporal layer's centre crop (after up-sampling).
    levels: tuple[int, ...]  # Latent level read by each temporal layer (number of ×½ steps).
    level_lengths: tuple[int, ...]  # Length of every latent level, level 0 = full rate (32·T_in).
    latent_starts: tuple[int, ...]  # Start of each temporal layer's latent crop within its level.
    spatial_latent_start: int  # Start of the crop of level 0 to L for the spatial layers and ToRGB.
    noise_length: int  # Samples per noise channel: level_lengths[0] + K − 1.


def _crop_start(length: int, target: int) -> int:
    # Centre crops start at floor((len − target) / 2) everywhere, as in the generators.
    assert length >= target, (length, target)
    return (length - target) // 2


def _seq_lengths(G: torch.nn.Module, seq_length: int) -> tuple[int, list[int]]:
    """The generator's own `compute_seq_lengths(seq_length)` (it also checks `seq_length`), as ints."""
    input_length, out_lengths = G.compute_seq_lengths(seq_length)
    return int(input_length), [int(n) for n in out_lengths]


def _noise_length(G: torch.nn.Module, input_length: int) -> int:
    """Noise samples per channel of a one-shot call: the full-rate embedding (32·T_in) plus K − 1 filter taps."""
    return input_length * int(G.total_temporal_scale) + int(G.temporal_emb.blur_filters.shape[-1]) - 1


def make_lres_plan(G: torch.nn.Module, seq_length: int) -> LresPlan:
    """Work out the global bookkeeping of the one-shot computation of `G(N, seq_length)`."""
    ups = tuple(bool(block.temporal_up) for block in G.temporal_layers)
    input_length, out_lengths = _seq_lengths(G, seq_length)
    in_lengths = (input_length, *out_lengths[:-1])
    total_scale = int(G.total_temporal_scale)  # 2 ** (number of layers with temporal_up)

    # Block halo: two temporal convolutions with zero padding kt // 2 (the skip path is 1×1×1).
    halos = tuple(int(b.weight_0.shape[2]) // 2 + int(b.weight_1.shape[2]) // 2 for b in G.temporal_layers)
    crop_starts = tuple(_crop_start(n * (2 if up else 1), m) for n, m, up in zip(in_lengths, out_lengths, ups))

    # Latent levels: walking the layers from last to first, each up-sampling layer first halves the running latent.
    level_lengths = [input_length * total_scale]
    levels = [0] * len(ups)
    for i in reversed(range(len(ups))):
        if ups[i]:
            assert level_lengths[-1] % 2 == 0
            level_lengths.append(level_lengths[-1] // 2)
        levels[i] = len(level_lengths) - 1
    latent_starts = tuple(_crop_start(level_lengths[levels[i]], in_lengths[i]) for i in range(len(ups)))
    return LresPlan(
        seq_length=seq_length,
        in_lengths=in_lengths,
        out_lengths=tuple(out_lengths),
        ups=ups,
        halos=halos,
        crop_starts=crop_starts,
        levels=tuple(levels),
        level_lengths=tuple(level_lengths),
        latent_starts=latent_starts,
        spatial_latent_start=_crop_start(level_lengths[0], seq_length),
        noise_length=_noise_length(G, input_length),
    )


# ----------------------------------------------------------------------------
# Temporal embedding from a given noise slice (generator_lres.BlurredNoise).


def draw_lres_noise(
    G: torch.nn.Module, batch_size: int, seq_length: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw the white noise of a one-shot `G(batch_size, seq_length, generator_emb=generator)` call.

    One standard-normal draw of shape `[N, noise_channels, 32·T_in + K − 1]` on the device of the embedding
    filters, the same call the one-shot path makes, so the generator ends in the same state and the video is the
    same. It is small (8 channels, about 4 KB per 100 frames).
    """
    _check_positive_int("batch_size", batch_size)
    emb = G.temporal_emb
    noise_channels = int(emb.channels) // int(emb.blur_filters.shape[0])
    device = emb.blur_filters.device
    if generator is not None and generator.device.type != device.type:
        raise ValueError(f"generator must live on the generator's device {device}, got one on {generator.device}")
    noise_length = _noise_length(G, _seq_lengths(G, seq_length)[0])  # = make_lres_plan(G, seq_length).noise_length
    return torch.randn([batch_size, noise_channels, noise_length], generator=generator, device=device)


def filter_noise(temporal_emb: torch.nn.Module, noise: torch.Tensor) -> torch.Tensor:
    """Temporal embedding `[N, C, T]` from white noise `[N, C / F, T + K − 1]` (the filtering half of BlurredNoise).

    Frame `t` depends on noise samples `t … t + K − 1` only (valid correlation, right-aligned filters), so a window
    of the embedding is computed exactly from the matching noise slice.
    """
    filters = temporal_emb.blur_filters  # [F, 1, K]
    num_filters, _, num_taps = filters.shape
    N, noise_channels, noise_length = noise.shape
    if noise_length < num_taps:
        raise ValueError(f"noise must have at least {num_taps} samples, got shape {tuple(noise.shape)}")
    # Each noise channel feeds all F filters (channel index c·F + f).
    x = noise.reshape(N * noise_channels, 1, noise_length).expand(-1, num_filters, -1)  # [(N C/F), F, T + K − 1]
    y = F.conv1d(x, filters, groups=num_filters)  # [(N C/F), F, T]
    y = y * (1 + temporal_emb.normalize_per_filter * (temporal_emb.output_scale - 1))
    return y.reshape(N, noise_channels * num_filters, noise_length - num_taps + 1)  # [N, C, T]


# ----------------------------------------------------------------------------
# Windowed low-res generator.


def _take(seg_start: int, seg: torch.Tensor, a: int, b: int, length: int) -> torch.Tensor:
    """Samples `[a, b)` of a global sequence of `length` samples (zero outside it) from the segment held in `seg`."""
    lo, hi = max(a, 0), min(b, length)
    assert seg_start <= lo and hi <= seg_start + seg.shape[2], (seg_start, seg.shape, a, b, length)
    part = seg[:, :, lo - seg_start : hi - seg_start]
    if lo == a and hi == b:
        return part
    return F.pad(part, [lo - a, b - hi])


# Frames whose latent levels are computed together (about 12 MB per 1,000 frames at the release's 1,024 channels).
LATENT_WINDOW = 1024


class LresStreamer:
    """Computes any range of frames of the one-shot low-res video `G(N, seq_length)` from its noise.

    Each call to `render(start, stop)` is independent (random access) and touches only windows of size about
    `stop − start` plus the receptive field, so memory is bounded by the window, not by `seq_length`.

    Example:
        noise = draw_lres_noise(G, 1, 1000, torch.Generator().manual_seed(0))
        streamer = LresStreamer(G, noise, 1000)
        video = torch.cat([streamer.render(t, min(t + 64, 1000)) for t in range(0, 1000, 64)], dim=2)
        # equals G(1, 1000, generator_emb=torch.Generator().manual_seed(0)) up to float rounding
    """

    def __init__(
        self,
        G: torch.nn.Module,  # Low-res generator (generator_lres.py), eval mode; its magnitude EMAs are only read.
        noise: torch.Tensor,  # [N, C / F, 32·T_in + K − 1] white noise from draw_lres_noise().
        seq_length: int,  # Frames of the one-shot video being reproduced (decides every crop offset).
        dtype: torch.dtype | None = None,  # Activation dtype passed to the blocks; None = their default.
        margin: int = 0,  # Extra frames beyond the exact receptive field on each side of every block window.
    ):
        self.G = G
        self.plan = make_lres_plan(G, seq_length)
        if noise.ndim != 3 or noise.shape[2] != self.plan.noise_length:
            raise ValueError(
                f"noise must have shape [N, C, {self.plan.noise_length}] for seq_length={seq_length}, "
                f"got {tuple(noise.shape)}"
            )
        if margin < 0:
            raise ValueError(f"margin must be non-negative, got {margin}")
        self.noise = noise
        self.seq_length = seq_length
        self.dtype = dtype
        self.margin = margin

    def _plan_window(self, start: int, stop: int):
        """Global ranges of every intermediate tensor needed for output frames `[start, stop)`."""
        p = self.plan
        num_layers = len(p.ups)
        in_ranges = [None] * num_layers  # Block input window of each temporal layer.
        out_ranges = [None] * num_layers  # Part of each temporal layer's output that is kept.
        a, b = start, stop
        for i in reversed(range(num_layers)):
            out_ranges[i] = (a, b)
            a, b = a + p.crop_starts[i], b + p.crop_starts[i]  # Before the crop.
            if p.ups[i]:
                a, b = a // 2 - 1, (b - 1) // 2 + 2  # Residual samples read by the linear up-sampling.
            halo = p.halos[i] + self.margin
            a, b = max(a - halo, 0), min(b + halo, p.in_lengths[i])
            in_ranges[i] = (a, b)

        # Latent ranges: each level serves its layers and the next coarser level.
        needs = [[] for _ in p.level_lengths]
        for i, (a, b) in enumerate(in_ranges):
            c = p.latent_starts[i]
            needs[p.levels[i]].append((a + c, b + c))
        needs[0].append((start + p.spatial_latent_start, stop + p.spatial_latent_start))
        level_ranges = [None] * len(p.level_lengths)
        for level in reversed(range(len(p.level_lengths))):
            if level + 1 < len(p.level_lengths):
                a, b = level_ranges[level + 1]
                needs[level].append((max(2 * a - 6, 0), min(2 * b + 6, p.level_lengths[level])))
            level_ranges[level] = (min(a for a, _ in needs[level]), max(b for _, b in needs[level]))
        return in_ranges, out_ranges, level_ranges

    @torch.no_grad()
    def _latent_levels(self, level_ranges) -> list[tuple[int, torch.Tensor]]:
        """`(start, values [N, C, b − a])` of every latent level over its needed range."""
        G, p = self.G, self.plan
        # Embedding and mapping act frame by frame at full rate.
        a, b = level_ranges[0]
        num_taps = self.noise.shape[2] - p.level_lengths[0] + 1
        emb = filter_noise(G.temporal_emb, self.noise[:, :, a : b + num_taps - 1])  # [N, C, b − a]
        levels = [(a, G.latent_mapping(emb))]
        # Each coarser level: Kaiser ×½ of an even-aligned window of the finer one, zeros where the one-shot pads.
        for level in range(1, len(p.level_lengths)):
            a, b = level_ranges[level]
            src = _take(*levels[-1], 2 * a - 6, 2 * b + 6, p.level_lengths[level - 1])  # [N, C, 2(b − a) + 12]
            y = G.temporal_downsample_latent(src)  # [N, C, b − a + 6], sample j ↔ global a − 3 + j
            assert y.shape[2] == b - a + 6, (y.shape, a, b)
            levels.append((a, y[:, :, 3 : 3 + b - a]))
        return levels

    def render(self, start: int, stop: int, levels: list[tuple[int, torch.Tensor]] | None = None) -> torch.Tensor:
        """Frames `[start, stop)` of the one-shot video: `[N, 3, stop − start, H, W]` float32.

        `levels`: latent levels computed by `latent_levels(a, b)` for a range `[a, b)` containing `[start, stop)`,
        to share them between neighbouring windows; None computes them for this window alone.
        """
        _check_frame_range(start, stop, self.seq_length)
        return self._render(start, stop, levels)

    @torch.no_grad()
    def _render(self, start: int, stop: int, levels: list[tuple[int, torch.Tensor]] | None) -> torch.Tensor:
        G, p = self.G, self.plan
        in_ranges, out_ranges, level_ranges = self._plan_window(start, stop)
        if levels is None:
            levels = self._latent_levels(level_ranges)

        def latent(level: int, a: int, b: int) -> torch.Tensor:
            return _take(*levels[level], a, b, p.level_lengths[level])

        # Temporal input: the first layer's latent through w_to_temp_input, plus the learned spatial constant.
        a, b = in_ranges[0]
        w_input = latent(p.levels[0], a + p.latent_starts[0], b + p.latent_starts[0])  # [N, C, T]
        N = w_input.shape[0]
        temporal_input = G.w_to_temp_input(rearrange(w_input, "n c t -> (n t) c"))  # [(N T), Ci]
        temporal_input = rearrange(temporal_input, "(n t) c -> n c t", n=N)  # [N, Ci, T]
        x = (temporal_input[..., None, None] + G.spatial_input) * math.sqrt(0.5)  # [N, Ci, T, H, W]

        # Temporal layers on windows; keep only the part that equals the one-shot values.
        for i, block in enumerate(G.temporal_layers):
            a, b = in_ranges[i]
            assert x.shape[2] == b - a, (i, x.shape, a, b)
            c = p.latent_starts[i]
            scale = 2 if p.ups[i] else 1
            # Passing the uncropped length makes the block's own crop a no-op; we crop in global coordinates.
            y = block(
                x,
                latent(p.levels[i], a + c, b + c),
                magnitude_ema_beta=1.0,
                out_seq_length=scale * (b - a),
                dtype=self.dtype,
            )  # [N, Co, scale·(b − a), H, W], sample k ↔ pre-crop index scale·a + k
            lo, hi = out_ranges[i]
            lo, hi = lo + p.crop_starts[i] - scale * a, hi + p.crop_starts[i] - scale * a
            x = y[:, :, lo:hi]  # [N, Co, T, H, W]

        # Spatial layers and ToRGB act frame by frame.
        w = latent(0, start + p.spatial_latent_start, stop + p.spatial_latent_start)  # [N, C, stop − start]
        for block in G.spatial_layers:
            x = block(x, w, magnitude_ema_beta=1.0, out_seq_length=stop - start, dtype=self.dtype)
        # Of the original's ToRGB only (x, w) is known: pass only what differs from its defaults (read-only EMA).
        x = G.to_rgb(x, w) if self.dtype is None else G.to_rgb(x, w, dtype=self.dtype)
        video = x.to(torch.float32) * G.output_scale  # [N, 3, T, H, W]
        assert video.shape[:3] == (N, 3, stop - start), video.shape
        return video

    def latent_levels(self, start: int, stop: int) -> list[tuple[int, torch.Tensor]]:
        """The latent levels that every window inside frames `[start, stop)` needs (see `render`)."""
        _check_frame_range(start, stop, self.seq_length)
        return self._latent_levels(self._plan_window(start, stop)[2])

    def iter_chunks(
        self, start: int, stop: int, window: int, latent_window: int = LATENT_WINDOW
    ) -> Iterator[torch.Tensor]:
        """Consecutive chunks of at most `window` frames covering `[start, stop)`.

        The latent path is cheap per frame but each window needs it over a wide range (its receptive field spans
        about 750 full-rate frames), so it is computed once per group of windows spanning at least `latent_window`
        frames and shared by them; the synthesis runs window by window. Neither setting changes the values.
        The arguments are checked when this is called; the frames are computed as the chunks are requested.
        """
        _check_positive_int("window", window)
        if start < stop:  # An empty range gives no chunks.
            _check_frame_range(start, stop, self.seq_length)
        return self._iter_chunks(start, stop, window, latent_window)

    def _iter_chunks(self, start: int, stop: int, window: int, latent_window: int) -> Iterator[torch.Tensor]:
        group = window * max(1, -(-latent_window // window))  # Whole windows, so chunk bounds do not move.
        for group_start in range(start, stop, group):
            group_stop = min(group_start + group, stop)
            levels = self._latent_levels(self._plan_window(group_start, group_stop)[2])
            for t in range(group_start, group_stop, window):
                yield self._render(t, min(t + window, group_stop), levels)


# ----------------------------------------------------------------------------
# Super-resolution over a low-res stream.


def iter_sres_chunks(
    G_sres: torch.nn.Module,
    lr_chunks: Iterator[torch.Tensor],
    z: torch.Tensor,
    num_frames: int,
    segment_length: int = ORIGINAL_SEGMENT_LENGTH,
    force_fp32: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Super-resolve a stream of low-res chunks: yields `(hr [N, 3, S, Hh, Wh], lr [N, 3, S, H, W])` pairs.

    `lr_chunks` must deliver (at least) low-res frames `0 … num_frames + 2·ctx − 1` in order; hr frame `t` is made
    from lr frames `t … t + 2·ctx` with the same `z` for all frames (one `z` per video), and the yielded lr chunk
    holds the aligned centre frames `t + ctx`. Frames are independent given `z`, so the segment length changes only
    rounding. `force_fp32` switches off the fp16 layers that the super-res generator uses on CUDA (its num_fp16_res
    last layers).
    The arguments are checked when this is called; the frames are computed as the pairs are requested.
    """
    _check_positive_int("num_frames", num_frames)
    _check_positive_int("segment_length", segment_length)
    return _sres_pairs(G_sres, lr_chunks, z, num_frames, segment_length, force_fp32)


def _sres_pairs(
    G_sres: torch.nn.Module,
    lr_chunks: Iterator[torch.Tensor],
    z: torch.Tensor,
    num_frames: int,
    segment_length: int,
    force_fp32: bool,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    ctx = int(G_sres.temporal_context)
    done = 0
    buffer = None  # [N, 3, T, H, W] lr frames from global index `done` on.
    for chunk in lr_chunks:
        buffer = chunk if buffer is None else torch.cat([buffer, chunk], dim=2)
        while done < num_frames:
            n = min(segment_length, num_frames - done)
            if buffer.shape[2] < n + 2 * ctx:
                break
            cond = buffer[:, :, : n + 2 * ctx]  # [N, 3, n + 2·ctx, H, W]
            with torch.no_grad():
                hr = G_sres.SG3(z, cond, force_fp32=True) if force_fp32 else G_sres.SG3(z, cond)  # [N, 3, n, Hh, Wh]
            assert hr.shape[2] == n, hr.shape
            yield hr, cond[:, :, ctx : ctx + n]
            buffer = buffer[:, :, n:]
            done += n
        if done == num_frames:
            return
    raise ValueError(
        f"lr_chunks ended after {done + buffer.shape[2] if buffer is not None else 0} frames; "
        f"{num_frames + 2 * ctx} are needed for num_frames={num_frames}"
    )


# ----------------------------------------------------------------------------
# Whole videos.


@dataclasses.dataclass
class VideoChunk:
    """Consecutive frames of a streamed video."""

    start: int  # Index of the first frame in the output video.
    video: torch.Tensor  # [N, 3, T, H, W] float32 output frames: super-res if a super-res G is used, else low-res.
    lres: torch.Tensor  # [N, 3, T, h, w] float32 low-res frames aligned with `video` (the same tensor without sres).


def stream_video(
    G_lres: torch.nn.Module,
    G_sres: torch.nn.Module | None = None,
    *,
    num_frames: int,
    generator: torch.Generator | None = None,
    batch_size: int = 1,
    window: int = 128,
    segment_length: int = ORIGINAL_SEGMENT_LENGTH,
    dtype: torch.dtype | None = None,
) -> Iterator[VideoChunk]:
    """Stream a video of `num_frames` frames in chunks, equal to the original generate.py's one-shot video.

    Random numbers are drawn **now** (not lazily), in the original's order from one generator: all low-res noise
    for a one-shot video of `original_lres_length(num_frames, ctx)` frames, then one super-res `z` of shape
    `[batch_size, 512]`. Frames are then computed on demand, `window` low-res frames at a time.
    `dtype` is the precision of the computation, as generate.py's --dtype: None keeps the generators' defaults (fp16
    layers on CUDA where they have them); torch.float32 is strict fp32 (fp16 layers off, fp32 convolutions);
    torch.bfloat16 is strict fp32 except the convolutions of the fast CPU paths, which multiply in bfloat16 (CPU
    only). The setting acts while the chunks are computed; the process-wide `fast_cpu` conv dtype is left as it was.

    Example:
        gen = torch.Generator().manual_seed(0)
        for chunk in stream_video(G_lres, G_sres, num_frames=301, generator=gen):
            write(chunk.video)  # [1, 3, T, 144, 256]
    """
    # Every argument is checked here, once, before any random number is drawn; the calls below take them as checked.
    ctx = int(G_sres.temporal_context) if G_sres is not None else 0
    seq_length = original_lres_length(num_frames, ctx)  # Checks num_frames.
    _check_positive_int("window", window)
    if G_sres is not None:
        _check_positive_int("segment_length", segment_length)
    _check_dtype(dtype, G_lres.temporal_emb.blur_filters.device)
    noise = draw_lres_noise(G_lres, batch_size, seq_length, generator)  # Checks batch_size and the RNG's device.
    z = G_sres.sample_latent_z(batch_size, generator_z=generator) if G_sres is not None else None
    block_dtype = None if dtype is None else torch.float32  # Activations: the networks' own `dtype` argument.
    lres = LresStreamer(G_lres, noise, seq_length, dtype=block_dtype)  # The one plan of this video.
    lr_chunks = lres._iter_chunks(0, num_frames + 2 * ctx, window, LATENT_WINDOW)
    if G_sres is None:
        pairs = ((chunk, chunk) for chunk in lr_chunks)
    else:
        pairs = _sres_pairs(G_sres, lr_chunks, z, num_frames, segment_length, force_fp32=dtype is not None)
    return _video_chunks(pairs, conv_dtype=dtype)


def _video_chunks(
    pairs: Iterator[tuple[torch.Tensor, torch.Tensor]], conv_dtype: torch.dtype | None
) -> Iterator[VideoChunk]:
    """`VideoChunk`s of `(video, lres)` pairs, each pair computed with the fast CPU convolutions in `conv_dtype`
    (None: as set for the process); the caller's setting holds between chunks."""
    start = 0
    while True:
        with fast_cpu.conv_dtype(conv_dtype) if conv_dtype is not None else contextlib.nullcontext():
            video, lres = next(pairs, (None, None))
        if video is None:
            return
        yield VideoChunk(start=start, video=video, lres=lres)
        start += video.shape[2]
