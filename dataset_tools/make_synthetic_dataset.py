"""Seeded synthetic long videos of dynamic scenes, written as a LongVideoGAN dataset (tests, demos, benchmarks).

Each video has the properties the paper studies (Brooks et al. 2022, Sec. 1 and 3): a camera moving smoothly
through a persistent, procedurally generated 2-D world (a periodic terrain texture panned and zoomed, so new
content enters over time and old content comes back unchanged), objects that keep their identity (sprites
with a fixed colour and shape moving along smooth paths, one of them following the camera like a rider's
horse), and slow scene changes (a lighting and colour drift over hundreds of frames).

All resolutions are rendered from the same world: every frame is rendered once at the largest requested
resolution and Lanczos-resized with the tools' ``center_crop_and_resize``, so the low- and high-resolution
clips pair frame for frame as ``VideoDatasetTwoRes`` expects. Video ``i`` of seed ``s`` depends only on
``(s, i)``: its first frames are the same whatever ``num_videos`` or ``num_frames`` is.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import click
import numpy as np
from PIL import Image

from dataset_tools import pipeline
from dataset_tools.utils import parse_resolution, partition_items, warn

WORLD_SIZE = 8.0  # World side length in frame heights; the world wraps around (a torus).
WORLD_FREQS = 192  # Texture band limit: frequencies up to WORLD_FREQS/2 cycles per world side.
TEXELS_PER_UNIT = 64  # Texture samples per world unit (at most; fewer for frames under 64 px high).
CHUNK_FRAMES = 16  # Frames rendered per vectorised step (bounds memory for long videos).

# ----------------------------------------------------------------------------
# The world texture.


def _periodic_noise(
    rng: np.random.Generator, num_fields: int, size: int, betas: Sequence[float], max_freq: float | None = None
) -> np.ndarray:
    """Band-limited periodic noise fields ``[F, size, size]`` with power spectrum ~ 1/f^(2 beta).

    The random Fourier coefficients live on a fixed ``WORLD_FREQS`` grid, so the same seed gives the same
    world at any texture size. ``max_freq`` (cycles per world side) drops the frequencies above it; the
    coefficients are drawn all the same, so a band-limited world is a smoothed version of the full one.
    """
    freqs = np.fft.fftfreq(WORLD_FREQS, 1.0 / WORLD_FREQS).astype(np.int64)  # Integer cycles per world.
    fy, fx = np.meshgrid(freqs, freqs, indexing="ij")
    distance = np.hypot(fx, fy)
    radius = np.maximum(distance, 1.0)
    beyond = None if max_freq is None else distance > max_freq  # Dropped by the band limit.
    coef = rng.standard_normal((num_fields, WORLD_FREQS, WORLD_FREQS, 2))
    coef = coef[..., 0] + 1j * coef[..., 1]  # [F, K, K]
    spectrum = np.zeros((num_fields, size, size), dtype=np.complex128)
    for i, beta in enumerate(betas):
        amp = radius ** (-beta)
        amp[0, 0] = 0.0
        if beyond is not None:
            amp[beyond] = 0.0
        spectrum[i, fy % size, fx % size] = coef[i] * amp
    fields = np.fft.ifft2(spectrum).real  # [F, size, size]
    fields -= fields.mean(axis=(1, 2), keepdims=True)
    fields /= fields.std(axis=(1, 2), keepdims=True) + 1e-12
    return fields.astype(np.float32)


def _world_texture(rng: np.random.Generator, texels_per_unit: int, max_freq: float | None = None) -> np.ndarray:
    """Terrain-like RGB texture ``[S, S, 3]`` in [0, 1] covering the whole (periodic) world; ``max_freq``: band
    limit in cycles per world unit (None = the full ``WORLD_FREQS`` grid)."""
    size = max(int(round(WORLD_SIZE * texels_per_unit)), WORLD_FREQS)
    limit = None if max_freq is None else max_freq * WORLD_SIZE
    elevation, moisture, detail = _periodic_noise(rng, 3, size, betas=(1.7, 1.9, 1.1), max_freq=limit)
    # Colour ramps over elevation (water, sand, vegetation, rock, snow); a dry and a wet variant mixed by moisture.
    stops = np.array([-2.0, -0.4, -0.15, 0.0, 0.8, 1.5, 2.2], dtype=np.float32)
    dry = np.array(
        [
            [0.05, 0.12, 0.35],
            [0.15, 0.35, 0.6],
            [0.85, 0.8, 0.55],
            [0.7, 0.65, 0.35],
            [0.55, 0.45, 0.3],
            [0.5, 0.48, 0.45],
            [0.95, 0.95, 0.97],
        ],
        dtype=np.float32,
    )
    wet = np.array(
        [
            [0.03, 0.1, 0.3],
            [0.1, 0.3, 0.55],
            [0.75, 0.72, 0.5],
            [0.2, 0.55, 0.2],
            [0.1, 0.35, 0.15],
            [0.4, 0.42, 0.4],
            [0.95, 0.95, 0.97],
        ],
        dtype=np.float32,
    )
    hue_shift = rng.uniform(-0.08, 0.08, size=3).astype(np.float32)
    wetness = 1.0 / (1.0 + np.exp(-2.0 * moisture))  # [S, S]
    texture = np.empty((size, size, 3), dtype=np.float32)
    for c in range(3):
        texture[..., c] = (
            (1 - wetness) * np.interp(elevation, stops, dry[:, c])
            + wetness * np.interp(elevation, stops, wet[:, c])
            + hue_shift[c]
        )
    texture *= (1.0 + 0.12 * detail)[..., None]
    return np.clip(texture, 0.0, 1.0)


def _sample_wrapped(texture: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear lookup of a periodic texture ``[S, S, 3]`` at texel coordinates ``u`` (x) and ``v`` (y)."""
    size = texture.shape[0]
    x0 = np.floor(u)
    y0 = np.floor(v)
    fx = (u - x0)[..., None].astype(np.float32)
    fy = (v - y0)[..., None].astype(np.float32)
    x0 = x0.astype(np.int64) % size
    y0 = y0.astype(np.int64) % size
    x1 = (x0 + 1) % size
    y1 = (y0 + 1) % size
    top = texture[y0, x0] * (1 - fx) + texture[y0, x1] * fx
    bottom = texture[y1, x0] * (1 - fx) + texture[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


# ----------------------------------------------------------------------------
# Smooth motion.


class _SmoothSignal:
    """Sum of a few sinusoids with random periods and phases: a smooth, seeded function of the frame index."""

    def __init__(self, rng: np.random.Generator, num_terms: int, min_period: float, max_period: float):
        self.periods = np.exp(rng.uniform(np.log(min_period), np.log(max_period), size=num_terms))
        self.phases = rng.uniform(0, 2 * np.pi, size=num_terms)
        self.weights = rng.uniform(0.5, 1.0, size=num_terms)
        self.weights /= np.sqrt(np.sum(self.weights**2) / 2)  # Unit RMS.

    def __call__(self, t: np.ndarray) -> np.ndarray:
        angles = 2 * np.pi * t[:, None] / self.periods + self.phases
        return np.sum(self.weights * np.sin(angles), axis=1)


class _Sprite:
    """An object with fixed colour, shape and size moving on a smooth path (world or screen coordinates)."""

    def __init__(self, rng: np.random.Generator, origin: np.ndarray, in_screen: bool):
        self.in_screen = in_screen
        self.sides = int(rng.choice([0, 3, 4, 5, 6]))  # 0 = disc.
        self.radius = float(rng.uniform(0.07, 0.12) if in_screen else rng.uniform(0.05, 0.14))
        hue = rng.uniform(0, 1)
        self.colour = np.array([0.5 + 0.5 * math.cos(2 * math.pi * (hue + k / 3)) for k in range(3)], np.float32)
        self.origin = origin.astype(np.float64)
        self.path = [_SmoothSignal(rng, 3, 40, 400) for _ in range(2)]
        self.amplitude = rng.uniform(0.05, 0.15) if in_screen else rng.uniform(0.3, 1.0)
        self.drift = rng.normal(0, 0.004, size=2)
        self.spin = rng.normal(0, 0.02)
        self.angle0 = rng.uniform(0, 2 * np.pi)

    def position(self, t: np.ndarray) -> np.ndarray:
        offset = np.stack([self.amplitude * p(t) for p in self.path], axis=1)  # [T, 2] (x, y)
        if not self.in_screen:
            offset = offset + self.drift * t[:, None]
        return self.origin + offset

    def coverage(self, dx: np.ndarray, dy: np.ndarray, angle: np.ndarray, pixel: np.ndarray) -> np.ndarray:
        """Anti-aliased coverage in [0, 1] from offsets to the centre (same units as ``pixel``)."""
        if self.sides == 0:
            sdf = np.hypot(dx, dy) - self.radius
        else:
            sdf = np.full(dx.shape, -np.inf, dtype=np.float32)
            for k in range(self.sides):
                a = angle + 2 * np.pi * k / self.sides
                sdf = np.maximum(sdf, dx * np.cos(a) + dy * np.sin(a))
            sdf = sdf - self.radius * math.cos(math.pi / self.sides)
        return np.clip(0.5 - sdf / pixel, 0.0, 1.0)


# ----------------------------------------------------------------------------
# Rendering.


def iter_synthetic_frames(
    num_frames: int, height: int, width: int, seed: int = 0, video_index: int = 0, max_freq: float | None = None
) -> Iterator[np.ndarray]:
    """Yield the frames of one synthetic video as uint8 ``[H, W, 3]`` arrays.

    ``max_freq`` band-limits the world texture to that many cycles per frame height (at zoom 1); None keeps the
    full texture (12 cycles per frame height: detail down to the pixel at 36x64). The world's layout, the camera
    path and the sprites do not depend on it.

    Example::

        frames = np.stack(list(iter_synthetic_frames(16, 36, 64, seed=0, video_index=0)))  # [T, H, W, 3]
    """
    if num_frames < 0 or height <= 0 or width <= 0:
        raise ValueError(f"num_frames, height, width must be >= 0, > 0, > 0, got {num_frames}, {height}, {width}")
    if max_freq is not None and not max_freq > 0:
        raise ValueError(f"max_freq must be > 0 (cycles per frame height) or None, got {max_freq!r}")
    rng = np.random.default_rng([int(seed), int(video_index)])
    # The texture is band-limited to WORLD_FREQS / (2 * WORLD_SIZE) = 12 cycles per frame height, so 64 texels per
    # unit already sample it 5x finer than needed; bilinear lookups between texels then add little blur.
    texture = _world_texture(rng, texels_per_unit=min(height, TEXELS_PER_UNIT), max_freq=max_freq)
    texels = texture.shape[0] / WORLD_SIZE  # Texels per world unit (one unit = one frame height at zoom 1).

    # Camera: heading and speed vary smoothly; zoom breathes slowly. Units: frame heights, frames.
    heading0 = rng.uniform(0, 2 * np.pi)
    heading = _SmoothSignal(rng, 3, 150, 900)
    speed = rng.uniform(0.012, 0.025)
    zoom_signal = _SmoothSignal(rng, 2, 200, 600)
    start = rng.uniform(0, WORLD_SIZE, size=2)
    # Lighting: slow per-channel gain drift ("time of day") with periods of several hundred frames.
    light = [_SmoothSignal(rng, 2, 300, 1200) for _ in range(4)]
    sprites = [_Sprite(rng, np.array([0.0, 0.3]), in_screen=True)]
    sprites += [_Sprite(rng, start + rng.uniform(-0.8, 0.8, size=2), in_screen=False) for _ in range(4)]

    # Camera path: position = start + speed * running sum of the unit heading vectors of the previous frames.
    all_theta = heading0 + 1.5 * heading(np.arange(num_frames, dtype=np.float64))
    steps = np.stack([np.cos(all_theta), np.sin(all_theta)], axis=1)  # [T, 2] (x, y)
    centres = start + speed * (np.cumsum(steps, axis=0) - steps)

    aspect = width / height
    ys = ((np.arange(height) + 0.5) / height - 0.5).astype(np.float32)  # Screen coordinates, frame heights.
    xs = ((np.arange(width) + 0.5) / height - 0.5 * aspect).astype(np.float32)
    for chunk_start in range(0, num_frames, CHUNK_FRAMES):
        t = np.arange(chunk_start, min(chunk_start + CHUNK_FRAMES, num_frames), dtype=np.float64)
        centre = centres[chunk_start : chunk_start + len(t)].astype(np.float32)  # [T, 2]
        zoom = np.exp(0.2 * zoom_signal(t)).astype(np.float32)  # World units per frame height.

        # Background: look up the world under every pixel.
        wx = centre[:, 0, None, None] + zoom[:, None, None] * xs[None, None, :]  # [T, 1, W]
        wy = centre[:, 1, None, None] + zoom[:, None, None] * ys[None, :, None]  # [T, H, 1]
        wx, wy = np.broadcast_arrays(wx, wy)  # [T, H, W]
        frames = _sample_wrapped(texture, wx * texels, wy * texels)  # [T, H, W, 3]

        # Sprites: world sprites use the wrapped offset to the pixel's world point, screen sprites screen offsets.
        pixel = (zoom / height)[:, None, None].astype(np.float32)  # World units per pixel, [T, 1, 1]
        for sprite in sprites:
            pos = sprite.position(t).astype(np.float32)  # [T, 2]
            angle = (sprite.angle0 + sprite.spin * t)[:, None, None].astype(np.float32)
            if sprite.in_screen:
                dx = xs[None, None, :] - pos[:, 0, None, None]
                dy = ys[None, :, None] - pos[:, 1, None, None]
                dx, dy = np.broadcast_arrays(dx, dy)
                alpha = sprite.coverage(dx, dy, angle, np.full_like(pixel, 1.0 / height))
                rel_y = dy / sprite.radius
            else:
                # Skip the sprite for this chunk when it is outside the view in every frame.
                gap = (pos - centre + WORLD_SIZE / 2) % WORLD_SIZE - WORLD_SIZE / 2  # [T, 2]
                reach = 0.5 * zoom * np.hypot(aspect, 1.0) + sprite.radius  # [T]
                if np.all(np.hypot(gap[:, 0], gap[:, 1]) > reach):
                    continue
                dx = (wx - pos[:, 0, None, None] + WORLD_SIZE / 2) % WORLD_SIZE - WORLD_SIZE / 2
                dy = (wy - pos[:, 1, None, None] + WORLD_SIZE / 2) % WORLD_SIZE - WORLD_SIZE / 2
                alpha = sprite.coverage(dx, dy, angle, pixel)
                rel_y = dy / sprite.radius
            shade = sprite.colour * (1.0 - 0.25 * np.clip(rel_y, -1, 1))[..., None]  # Lit from above.
            frames += alpha[..., None] * (shade - frames)

        # Slow lighting drift.
        gain = 1.0 + 0.12 * light[0](t)[:, None] + 0.06 * np.stack([s(t) for s in light[1:]], axis=1)  # [T, 3]
        frames *= gain[:, None, None, :].astype(np.float32)
        frames = np.clip(frames * 255.0 + 0.5, 0, 255).astype(np.uint8)
        yield from frames


def _synthetic_source(task: tuple, problems: list[str]):
    """Pipeline frame source of one synthetic video:
    ``task = (video_index, num_frames, render_h, render_w, seed, max_freq)``."""
    video_index, num_frames, render_h, render_w, seed, max_freq = task
    frames = iter_synthetic_frames(num_frames, render_h, render_w, seed, video_index, max_freq)
    return f"video_{video_index:04d}", (
        (f"frame_{i:06d}.jpg", Image.fromarray(frame, mode="RGB")) for i, frame in enumerate(frames)
    )


def make_synthetic_dataset(
    out_dir: str | os.PathLike,  # Dataset root to create (shards go to <out_dir>/HHHHxWWWW/).
    num_videos: int = 4,  # Number of clips.
    num_frames: int | Sequence[int] = 64,  # Frames per clip, or one length per clip.
    resolutions: Sequence[tuple[int, int]] = ((36, 64), (144, 256)),  # (height, width) pairs to write.
    seed: int = 0,  # World, paths and colours of video i depend only on (seed, i).
    num_partitions: int = 1,  # Clips are split into this many shards per resolution (numpy.array_split).
    progress: bool = False,  # Show a tqdm bar and the notes of the conversion.
    partitions: Sequence[int] | None = None,  # Partitions to write; None = all.
    workers: int = 1,  # Parallel worker processes.
    overwrite: bool = False,  # Replace a dataset made with other settings, and this run's existing shards.
    max_freq: float | None = None,  # World texture band limit, cycles per frame height; None = full detail.
) -> Path:
    """Write a synthetic dataset (clips ``video_0000``, ... with frames ``frame_000000.jpg``, ...).

    Restartable like the other tools (shards are written atomically; a killed run's ``*.partial`` files are
    deleted by the next run of the same partition; existing shards are skipped). A dataset in ``out_dir`` made
    with other settings (seed, videos, frames, max_freq, partitions) is refused with ``pipeline.ConversionError`` unless
    ``overwrite``, which replaces it and deletes its shards beyond ``num_partitions``.

    Example::

        root = make_synthetic_dataset("/tmp/synth", num_videos=2, num_frames=32, resolutions=((36, 64),))
        ds = VideoDataset(root, seq_length=16, height=36, width=64)
    """
    if num_videos < 1:
        raise ValueError(f"num_videos must be >= 1, got {num_videos}")
    lengths = [int(num_frames)] * num_videos if np.isscalar(num_frames) else [int(n) for n in num_frames]
    if len(lengths) != num_videos or min(lengths) < 1:
        raise ValueError(f"num_frames must be a positive int or {num_videos} positive ints, got {num_frames!r}")
    resolutions = [(int(h), int(w)) for h, w in resolutions]
    if len(resolutions) == 0 or min(min(r) for r in resolutions) < 1:
        raise ValueError(f"resolutions must be a non-empty list of positive (height, width), got {resolutions!r}")
    if not 1 <= num_partitions <= num_videos:
        raise ValueError(f"num_partitions must be in [1, num_videos={num_videos}], got {num_partitions}")
    if max_freq is not None and not max_freq > 0:
        raise ValueError(f"max_freq must be > 0 (cycles per frame height) or None, got {max_freq!r}")
    partitions = list(range(num_partitions)) if partitions is None else [int(p) for p in partitions]
    if not all(0 <= p < num_partitions for p in partitions):
        raise ValueError(f"partitions must be in [0, {num_partitions - 1}], got {partitions}")
    render_h, render_w = max(resolutions, key=lambda r: (r[0] * r[1], r[0]))
    out_dir = Path(out_dir)
    specs = [pipeline.FrameSpec(height=h, width=w) for h, w in resolutions]

    pipeline.check_writable_dir(out_dir)
    settings = dict(seed=int(seed), num_videos=num_videos, num_frames=lengths if len(set(lengths)) > 1 else lengths[0])
    if max_freq is not None:  # Recorded only when set, so datasets made before the option still match.
        settings["max_freq"] = float(max_freq)
    record = pipeline.check_partitioning(
        out_dir,
        specs,
        partitions,
        num_partitions,
        num_videos,
        "make_synthetic_dataset",
        "videos",
        overwrite=overwrite,
        settings=settings,
        remove_stale=True,
    )
    for partition in partitions:
        video_ids = partition_items(list(range(num_videos)), partition, num_partitions)
        tasks = [(i, lengths[i], render_h, render_w, int(seed), max_freq) for i in video_ids]
        pipeline.convert_partition(
            tasks, _synthetic_source, out_dir, partition, specs, workers=workers, overwrite=overwrite, progress=progress
        )
        pipeline.write_partitioning(out_dir, record)
    return out_dir


# ----------------------------------------------------------------------------


@click.command()
@click.argument("output_dir", type=click.Path(file_okay=False))
@click.option("--num-videos", type=click.IntRange(min=1), default=4, show_default=True, help="Number of clips.")
@click.option(
    "--num-frames",
    type=click.IntRange(min=1),
    default=160,
    show_default=True,
    help=f"Frames per clip (the low-res phase trains on {pipeline.LOW_RES_CLIP_FRAMES}-frame clips).",
)
@click.option(
    "--resolution",
    "resolution_list",
    multiple=True,
    default=("36x64", "144x256"),
    show_default=True,
    help="HEIGHTxWIDTH to write; repeatable.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option(
    "--partition", type=click.IntRange(min=0), default=None, help="Write only this partition [default: all of them]."
)
@click.option(
    "--num-partitions", type=click.IntRange(min=1), default=1, show_default=True, help="Shards per resolution."
)
@click.option(
    "--max-freq",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Band limit of the world texture, cycles per frame height [default: none, the full texture (12)]. "
    "A smoother world is quicker to learn (the demo models of long_video_gan/pretrained/ use 3).",
)
@pipeline.workers_option()
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace a dataset in OUTPUT_DIR made with other settings, and this run's existing shards "
    "(default: skip existing shards, refuse other settings).",
)
def main(
    output_dir, num_videos, num_frames, resolution_list, seed, partition, num_partitions, max_freq, workers, overwrite
):
    """Render a seeded synthetic long-video dataset (moving camera over a persistent world, moving objects,
    slow lighting drift) into OUTPUT_DIR/HHHHxWWWW/partition_NNNN.zip. Restartable: existing shards are skipped
    and a killed run's leftovers are deleted; a dataset made with other settings is refused unless --overwrite.

    \b
    Examples:
      python -m dataset_tools.make_synthetic_dataset /tmp/synth
      python -m dataset_tools.make_synthetic_dataset /tmp/synth --num-videos 8 --num-frames 300 \\
          --resolution 36x64 --resolution 144x256 --num-partitions 2 --partition 1
    """
    try:
        resolutions = [parse_resolution(r) for r in resolution_list]
    except ValueError as error:
        raise click.ClickException(f"--resolution: {error}")
    if num_partitions > num_videos:
        raise click.ClickException(f"--num-partitions ({num_partitions}) must not exceed --num-videos ({num_videos})")
    if partition is not None and partition >= num_partitions:
        raise click.ClickException(f"--partition must be in [0, {num_partitions - 1}], got {partition}")
    pipeline.check_sizes([pipeline.FrameSpec(height=h, width=w) for h, w in resolutions])
    if num_frames < pipeline.LOW_RES_CLIP_FRAMES:
        warn(
            f"--num-frames {num_frames} is below the {pipeline.LOW_RES_CLIP_FRAMES} frames of the low-res phase's "
            f"clips; that phase cannot train on this dataset"
        )
    partitions = None if partition is None else [partition]
    pipeline.run_conversion(
        lambda: make_synthetic_dataset(
            output_dir,
            num_videos=num_videos,
            num_frames=num_frames,
            resolutions=resolutions,
            seed=seed,
            num_partitions=num_partitions,
            progress=True,
            partitions=partitions,
            workers=workers,
            overwrite=overwrite,
            max_freq=max_freq,
        ),
        output_dir=output_dir,
    )
    which = "all partitions" if partition is None else f"partition {partition} of {num_partitions}"
    print(f"Done: {num_videos} videos of {num_frames} frames at {', '.join(resolution_list)} in {output_dir} ({which})")
    if partition is not None:
        pipeline.print_partition_hint(
            partition,
            num_partitions,
            len(partition_items(list(range(num_videos)), partition, num_partitions)),
            num_videos,
            "videos",
        )


if __name__ == "__main__":
    main()
