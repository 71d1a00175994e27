"""Writing video and image grids for LongVideoGAN samples (SPEC §5.2), atomically (temp file + rename).

Videos are tensors `[N, 3, T, H, W]` with values in [-1, 1]. A batch of N clips becomes one grid video: the number
of rows is the largest divisor of N not above sqrt(N), and clip k goes to column k // rows, row k % rows. Each
frame grid is enlarged by a whole nearest-neighbour factor so both sides are multiples of 16 (the H.264 macro block),
e.g. a single 36x64 clip is written at 144x256.
"""

import math
import os
import uuid
from collections.abc import Iterable, Iterator

import einops
import numpy as np
import torch
import torch.distributed

# ----------------------------------------------------------------------------------------------------------------------


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
    return (x * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def grid_enlarge_factor(grid_height: int, grid_width: int, macro_block: int = 16) -> int:
    """Smallest whole factor that makes both grid sides multiples of `macro_block` (1 if they already are)."""
    fh = macro_block // math.gcd(grid_height, macro_block)
    fw = macro_block // math.gcd(grid_width, macro_block)
    return math.lcm(fh, fw)


def make_grid(video: torch.Tensor, num_rows: int) -> torch.Tensor:
    """`[N, C, T, H, W]` -> frames `[T, rows*H, cols*W, C]`; clip k goes to column k // rows, row k % rows."""
    n = video.shape[0]
    if video.ndim != 5:
        raise ValueError(f"video must be [N, C, T, H, W], got shape {tuple(video.shape)}")
    if n % num_rows != 0:
        raise ValueError(f"num_rows must divide the number of clips {n}, got {num_rows}")
    return einops.rearrange(video, "(cols rows) c t h w -> t (rows h) (cols w) c", rows=num_rows)


def _temp_path(path: str) -> str:
    """A hidden sibling of `path` with the same extension (ffmpeg and PIL pick the format from it)."""
    head, tail = os.path.split(os.path.abspath(path))
    stem, ext = os.path.splitext(tail)
    return os.path.join(head, f".{stem}.{uuid.uuid4().hex}.tmp{ext}")


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _all_gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenates `x` from every rank along dimension 0 (rank order); needs equal shapes on all ranks."""
    rank, world_size = _world()
    if world_size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size)]
    torch.distributed.all_gather(parts, x.contiguous())
    return torch.cat(parts)


# ----------------------------------------------------------------------------------------------------------------------


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
    """Writes a grid video (H.264, yuv420p) from a tensor or an iterable of `[N, 3, T, H, W]` segments.

    Segments are consumed one at a time, so a long video is never held in memory whole. With `gather=True` every
    rank must call this with equal segment shapes; the clips of all ranks are gathered and rank 0 writes
    (`max_samples` applies after gathering). `to_uint8=False` means the segments already hold uint8 values.
    `bitrate` (e.g. "16M", the original's setting) takes precedence; pass `bitrate=None` to use `quality` (1-10)
    instead. The file appears only when complete (temp file + rename). `path=None` writes nothing (the segments are
    still consumed and gathered, so ranks stay in step).

    Example:
        >>> write_video_grid(torch.zeros(4, 3, 16, 36, 64), "samples/grid.mp4")  # 2x2 grid, 144x256 per clip
    """
    import imageio_ffmpeg

    if isinstance(segments, torch.Tensor):
        segments = [segments]
    rank, _ = _world()
    is_writer = rank == 0 and path is not None

    writer = None
    temp = None
    grid_rows = num_rows
    factor = None
    try:
        for segment in _iter_checked(segments):
            if gather:
                segment = _all_gather(segment)
            if max_samples is not None:
                segment = segment[:max_samples]
            if not is_writer:
                continue
            if grid_rows is None:
                grid_rows = multiple_nearest_sqrt(segment.shape[0])  # Fixed from the first segment.
            frames = segment.detach()
            frames = float_to_uint8(frames) if to_uint8 else frames.to(torch.uint8)
            frames = make_grid(frames.cpu(), grid_rows)  # [T, GH, GW, C]
            if factor is None:
                factor = grid_enlarge_factor(frames.shape[1], frames.shape[2])
            if factor > 1:
                frames = frames.repeat_interleave(factor, dim=1).repeat_interleave(factor, dim=2)  # [T, GH*f, GW*f, C]
            frames = np.ascontiguousarray(frames.numpy())
            if writer is None:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
                temp = _temp_path(path)
                writer = imageio_ffmpeg.write_frames(
                    temp,
                    size=(frames.shape[2], frames.shape[1]),
                    fps=fps,
                    codec=codec,
                    bitrate=bitrate,
                    quality=quality if bitrate is None else None,
                    pix_fmt_in="rgb24",
                    pix_fmt_out="yuv420p",
                    macro_block_size=16,
                    ffmpeg_log_level="error",
                )
                writer.send(None)
            for frame in frames:
                writer.send(frame)
        if writer is not None:
            writer.close()
            writer = None
            os.replace(temp, path)
            temp = None
    finally:
        if writer is not None:
            writer.close()
        if temp is not None and os.path.exists(temp):
            os.remove(temp)


def _iter_checked(segments: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
    for i, segment in enumerate(segments):
        if not isinstance(segment, torch.Tensor) or segment.ndim != 5 or segment.shape[1] != 3:
            got = tuple(segment.shape) if isinstance(segment, torch.Tensor) else type(segment).__name__
            raise ValueError(f"segments[{i}] must be a [N, 3, T, H, W] tensor, got {got}")
        yield segment


# ----------------------------------------------------------------------------------------------------------------------


def save_image_grid(
    image: torch.Tensor, path: str, num_rows: int | None = None, to_uint8: bool = True, gather: bool = False
) -> None:
    """Saves `[N, 3, H, W]` images as one grid image with PIL (same mapping and layout as the videos, not enlarged)."""
    from PIL import Image

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
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temp = _temp_path(path)
    try:
        Image.fromarray(np.ascontiguousarray(grid.numpy()), "RGB").save(temp)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)
