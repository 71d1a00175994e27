"""Video and image files: the one H.264 writer (generated videos, training sample grids), PNG and grid images, and
the one reader (dataset tools). Every file is written atomically (temp file + rename).

Videos in memory are tensors `[N, 3, T, H, W]` with values in [-1, 1], mapped to uint8 as the original release does
(`float_to_uint8`). A batch of N clips becomes one grid video: the number of rows is the largest divisor of N not
above sqrt(N), and clip k goes to column k // rows, row k % rows. The writer enlarges frames by a whole
nearest-neighbour factor so both sides are multiples of 16 (the H.264 macro block), e.g. a single 36x64 clip is
written at 144x256, and encodes them with libx264 to yuv420p at 16 Mbit/s by default, like the original.

torch, PyAV, PIL and imageio-ffmpeg are imported where they are used, so the dataset tools can read videos through
this module without importing torch.
"""

from __future__ import annotations

import math
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import av
    import torch
    from PIL import Image

# ----------------------------------------------------------------------------
# Pixels and grid layout.


def multiple_nearest_sqrt(n: int) -> int:
    """Largest divisor of `n` that is not above sqrt(n) (1 for a prime)."""
    if n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    best = 1
    for d in range(1, math.isqrt(n) + 1):
        if n % d == 0:
            best = d
    return best


def float_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Maps [-1, 1] floats to uint8 with `uint8(clamp(x*127.5 + 128, 0, 255))`; truncation, so this rounds."""
    import torch

    return (x * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def grid_enlarge_factor(grid_height: int, grid_width: int, macro_block: int = 16) -> int:
    """Smallest whole factor that makes both grid sides multiples of `macro_block` (1 if they already are)."""
    fh = macro_block // math.gcd(grid_height, macro_block)
    fw = macro_block // math.gcd(grid_width, macro_block)
    return math.lcm(fh, fw)


def make_grid(video: torch.Tensor, num_rows: int) -> torch.Tensor:
    """`[N, C, T, H, W]` -> frames `[T, rows*H, cols*W, C]`; clip k goes to column k // rows, row k % rows."""
    import einops

    n = video.shape[0]
    if video.ndim != 5:
        raise ValueError(f"video must be [N, C, T, H, W], got shape {tuple(video.shape)}")
    if n % num_rows != 0:
        raise ValueError(f"num_rows must divide the number of clips {n}, got {num_rows}")
    return einops.rearrange(video, "(cols rows) c t h w -> t (rows h) (cols w) c", rows=num_rows)


# ----------------------------------------------------------------------------
# Writing.


def _temp_path(path: str) -> str:
    """A hidden sibling of `path` with the same extension (ffmpeg picks the format from it)."""
    head, tail = os.path.split(os.path.abspath(path))
    stem, ext = os.path.splitext(tail)
    return os.path.join(head, f".{stem}.{uuid.uuid4().hex}.tmp{ext}")


_BITRATE = re.compile(r"[0-9]+(\.[0-9]+)?[kKmM]?")


def check_bitrate(bitrate: str | None) -> None:
    """Raise ValueError unless `bitrate` is None or an ffmpeg bitrate such as '16M', '800k' or '2000000'."""
    if bitrate is not None and not (isinstance(bitrate, str) and _BITRATE.fullmatch(bitrate)):
        raise ValueError(f"bitrate must be bits per second such as 16M, 800k or 2000000, got {bitrate!r}")


def check_video_settings(fps: float, bitrate: str | None, quality: float | None) -> None:
    """Raise ValueError naming the setting unless the `VideoWriter` arguments are usable."""
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if bitrate is None and quality is None:
        raise ValueError("give a bitrate or a quality, got neither")
    check_bitrate(bitrate)
    if quality is not None and not 1 <= quality <= 10:
        raise ValueError(f"quality must be in [1, 10], got {quality}")


class VideoWriter:
    """Writes an H.264 mp4 (yuv420p) frame by frame; the file appears under its name only when complete.

    Frames are enlarged by the smallest whole nearest-neighbour factor that makes both sides multiples of 16 (the
    original writer's rule: 36x64 -> 144x256; 144x256 stays; the factor is fixed by the first frames), so the encoder
    never rescales them. Nothing is written if no frame comes.

    Example:
        with VideoWriter("out.mp4", fps=30) as writer:
            for chunk in chunks:
                writer.write(api.to_uint8(chunk.video)[0])  # [T, H, W, 3] uint8
    """

    def __init__(
        self,
        path: str | os.PathLike,  # Final file name; its folder must exist.
        fps: float = 30,  # Frames per second.
        bitrate: str | None = "16M",  # Target bitrate (the original's setting); None = use `quality`.
        quality: float | None = None,  # Constant quality 1-10 (libx264 CRF int(51*(1 - q/10))) when bitrate is None.
        codec: str = "libx264",  # ffmpeg encoder.
    ):
        check_video_settings(fps, bitrate, quality)
        self.path = os.fspath(path)
        self.fps = fps
        self.bitrate = bitrate
        self.quality = quality
        self.codec = codec
        self.num_frames = 0
        self._temp = None
        self._writer = None
        self._factor = None

    def write(self, frames: np.ndarray) -> None:
        """Append frames `[T, H, W, 3]` uint8."""
        if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
            got = f"{frames.dtype} array of shape {frames.shape}" if isinstance(frames, np.ndarray) else type(frames)
            raise ValueError(f"frames must be a uint8 array [T, H, W, 3], got {got}")
        if self._factor is None:
            self._factor = grid_enlarge_factor(frames.shape[1], frames.shape[2])
        if self._factor > 1:
            frames = frames.repeat(self._factor, axis=1).repeat(self._factor, axis=2)  # [T, H*f, W*f, 3]
        if self._writer is None:
            import imageio_ffmpeg

            self._temp = _temp_path(self.path)
            self._writer = imageio_ffmpeg.write_frames(
                self._temp,
                size=(frames.shape[2], frames.shape[1]),
                fps=self.fps,
                codec=self.codec,
                bitrate=self.bitrate,
                quality=self.quality if self.bitrate is None else None,
                pix_fmt_in="rgb24",
                pix_fmt_out="yuv420p",
                macro_block_size=16,
                ffmpeg_log_level="error",
            )
            self._writer.send(None)
        for frame in frames:
            self._writer.send(np.ascontiguousarray(frame))
        self.num_frames += len(frames)

    def close(self, keep: bool = True) -> None:
        """Finish the file and move it into place (`keep=True`), or discard it."""
        writer, temp = self._writer, self._temp
        self._writer = self._temp = None
        try:
            if writer is not None:
                writer.close()
            if keep and temp is not None:
                os.replace(temp, self.path)
                temp = None
        finally:
            if temp is not None and os.path.exists(temp):
                os.remove(temp)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(keep=exc_type is None)


def _world() -> tuple[int, int]:
    import torch.distributed

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _all_gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenates `x` from every rank along dimension 0 (rank order); needs equal shapes on all ranks."""
    import torch.distributed

    rank, world_size = _world()
    if world_size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size)]
    torch.distributed.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def write_video_grid(
    segments: torch.Tensor | Iterable[torch.Tensor],
    path: str | None = None,
    fps: int = 30,
    max_samples: int | None = None,
    num_rows: int | None = None,
    to_uint8: bool = True,
    gather: bool = False,
    bitrate: str | None = "16M",
    quality: float | None = None,
    codec: str = "libx264",
) -> None:
    """Writes a grid video with `VideoWriter` from a tensor or an iterable of `[N, 3, T, H, W]` segments.

    Segments are consumed one at a time, so a long video is never held in memory whole. With `gather=True` every
    rank must call this with equal segment shapes; the clips of all ranks are gathered and rank 0 writes
    (`max_samples` applies after gathering). `to_uint8=False` means the segments already hold uint8 values.
    `bitrate` (e.g. "16M", the original's setting) takes precedence; pass `bitrate=None` to use `quality` (1-10)
    instead. The folder of `path` is created. `path=None` writes nothing (the segments are still consumed and
    gathered, so ranks stay in step).

    Example:
        >>> write_video_grid(torch.zeros(4, 3, 16, 36, 64), "samples/grid.mp4")  # 2x2 grid, 144x256 per clip
    """
    import torch

    check_video_settings(fps, bitrate, quality)  # On every rank, before any collective.
    if isinstance(segments, torch.Tensor):
        segments = [segments]
    is_writer = _world()[0] == 0 and path is not None
    writer = VideoWriter(path, fps=fps, bitrate=bitrate, quality=quality, codec=codec) if is_writer else None
    grid_rows = num_rows
    try:
        for segment in _iter_checked(segments):
            if gather:
                segment = _all_gather(segment)
            if max_samples is not None:
                segment = segment[:max_samples]
            if writer is None:
                continue
            if grid_rows is None:
                grid_rows = multiple_nearest_sqrt(segment.shape[0])  # Fixed from the first segment.
            frames = segment.detach()
            frames = float_to_uint8(frames) if to_uint8 else frames.to(torch.uint8)
            frames = make_grid(frames.cpu(), grid_rows).numpy()  # [T, GH, GW, C]
            if writer.num_frames == 0:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            writer.write(frames)
    except BaseException:
        if writer is not None:
            writer.close(keep=False)
        raise
    if writer is not None:
        writer.close()


def _iter_checked(segments: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
    import torch

    for i, segment in enumerate(segments):
        if not isinstance(segment, torch.Tensor) or segment.ndim != 5 or segment.shape[1] != 3:
            got = tuple(segment.shape) if isinstance(segment, torch.Tensor) else type(segment).__name__
            raise ValueError(f"segments[{i}] must be a [N, 3, T, H, W] tensor, got {got}")
        yield segment


def _save_rgb(pixels: np.ndarray, path: str, format: str | None = None) -> None:
    """Saves uint8 `[H, W, 3]` pixels with PIL, atomically; `format=None` picks it from the extension of `path`."""
    from PIL import Image

    from dnnlib.util import atomic_write

    if format is None:
        ext = os.path.splitext(path)[1].lower()
        if ext not in Image.registered_extensions():
            raise ValueError(f"image path must end in an image extension such as .png or .jpg, got {path!r}")
        format = Image.registered_extensions()[ext]
    with atomic_write(path, "wb") as f:
        Image.fromarray(np.ascontiguousarray(pixels), "RGB").save(f, format=format)


def save_png(frame: np.ndarray, path: str | os.PathLike) -> None:
    """Save one uint8 frame `[H, W, 3]` as a PNG at its native size, atomically (temp file + rename)."""
    _save_rgb(frame, os.fspath(path), format="PNG")


def save_image_grid(
    image: torch.Tensor, path: str, num_rows: int | None = None, to_uint8: bool = True, gather: bool = False
) -> None:
    """Saves `[N, 3, H, W]` images as one grid image with PIL (same mapping and layout as the videos, not enlarged)."""
    import torch

    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[1] != 3:
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be a [N, 3, H, W] tensor, got {got}")
    if gather:
        image = _all_gather(image)
    if _world()[0] != 0:
        return
    pixels = float_to_uint8(image.detach()) if to_uint8 else image.detach().to(torch.uint8)
    rows = num_rows or multiple_nearest_sqrt(pixels.shape[0])
    grid = make_grid(pixels.cpu()[:, :, None], rows)[0]  # [GH, GW, C]
    _save_rgb(grid.numpy(), path)  # Creates the folder.


# ----------------------------------------------------------------------------
# Reading (PyAV), for the dataset tools.


def video_duration(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    """Duration in seconds of `stream` (the stream's own, else the container's), or None if unknown."""
    import av

    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def iter_video_frames(
    path: str | os.PathLike,  # Video file.
    problems: list[str],  # Receives messages about skipped frames, missing durations and decode errors.
    start: float = 0.0,  # Keep frames with timestamp >= start (s); seek there first when > 0 or `seek`.
    end: float | None = None,  # Keep frames with timestamp <= end (s); None = to the end of the stream.
    trim_end: float = 0.0,  # Alternatively keep frames with timestamp <= duration - trim_end (s).
    fps: float | None = None,  # Resample to this rate (nearest frame in time); None = keep every frame.
    seek: bool = False,  # Seek to `start` even when it is 0 (the YouTube tool always seeks).
) -> Iterator[Image.Image]:
    """Yield RGB PIL frames of the first video stream of a file in the time window, in order.

    Frames without a timestamp are skipped (counted in `problems`), a stream whose duration is unknown is
    skipped when `trim_end` needs it, and decoding stops at the first decode error (reported, frames so far
    kept). Raises the PyAV error when the file cannot be opened at all.
    """
    import av

    container = av.open(str(path))
    try:
        if len(container.streams.video) == 0:
            problems.append(f"{path}: no video stream; skipped")
            return
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if trim_end > 0:
            duration = video_duration(container, stream)
            if duration is None:
                problems.append(f"{path}: the stream has no duration, so --trim-end cannot be applied; skipped")
                return
            end = duration - trim_end if end is None else min(end, duration - trim_end)
        if start > 0 or seek:
            container.seek(int(start / stream.time_base), stream=stream)
        frames = _timed_frames(container, stream, problems, path)
        kept = ((t, frame) for t, frame in frames if t >= start and (end is None or t <= end))
        yield from (_resample(kept, fps) if fps is not None else (frame.to_image() for _, frame in kept))
    finally:
        container.close()


def _timed_frames(container, stream, problems: list[str], path) -> Iterator[tuple[float, av.VideoFrame]]:
    import av

    missing = 0
    try:
        for frame in container.decode(stream):
            if frame.time is None:
                missing += 1
                continue
            yield float(frame.time), frame
    except av.error.FFmpegError as error:
        problems.append(f"{path}: decoding stopped early: {error}")
    if missing > 0:
        problems.append(f"{path}: skipped {missing} frames without a timestamp")


def _resample(frames: Iterator[tuple[float, av.VideoFrame]], fps: float) -> Iterator[Image.Image]:
    """Output frame k shows the source frame nearest in time to `t0 + k / fps` (`t0` = first kept frame)."""
    t0 = None
    k = 0
    previous: tuple[float, av.VideoFrame] | None = None
    image = None
    for t, frame in frames:
        if previous is None:
            t0 = t
        else:
            midpoint = 0.5 * (previous[0] + t)
            while t0 + k / fps < midpoint - 1e-9:
                if image is None:
                    image = previous[1].to_image()
                yield image
                k += 1
        previous, image = (t, frame), None
    if previous is not None:
        while t0 + k / fps <= previous[0] + 1e-9:
            if image is None:
                image = previous[1].to_image()
            yield image
            k += 1
