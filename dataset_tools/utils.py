"""Shared pieces of the LongVideoGAN dataset tools: the sharded ZIP writer, JPEG encoding and frame resizing.

On-disk format (the original release's; long_video_gan/dataset.py reads it): ``<root>/HHHHxWWWW/partition_NNNN.zip``,
an uncompressed (STORED) ZIP holding JPEG frames at ``<clip_path>/<frame_name>`` and, written last, a root entry
``frame_paths.json`` mapping each clip path to its frame names in temporal order.

Deliberate differences from the original tools (they fix its weaknesses), all compatible with the original reader:

* JPEGs are quality 100 with 4:4:4 chroma (no subsampling); the original meant to but wrote 4:2:0.
* A shard is written to a temporary file next to its final name and renamed only once ``frame_paths.json`` is
  in, so a killed run never leaves a shard that looks complete, and a rerun never appends duplicates.
* Sources in grayscale, RGBA, palette or CMYK mode are converted to RGB before encoding.

Example::

    from dataset_tools.utils import ShardWriter, encode_jpeg, shard_path
    with ShardWriter(shard_path("out", 0, height=36, width=64)) as writer:
        writer.add_frame("clip_a", "frame_000000.jpg", encode_jpeg(pil_image))
"""

from __future__ import annotations

import io
import json
import math
import os
import posixpath
import re
import sys
import uuid
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

FRAME_PATHS_NAME = "frame_paths.json"  # Root ZIP entry listing clips and frame names.
JPEG_QUALITY = 100  # Quality of every JPEG our tools write.
JPEG_SUBSAMPLING = 0  # PIL code for 4:4:4 chroma, i.e. no chroma subsampling (the original wrote 4:2:0).
TEMP_SUFFIX = ".partial"  # Marks an unfinished shard; never matches the readers' `*.zip` pattern.
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)  # Fixed entry timestamp, so equal inputs give byte-identical shards.

# ----------------------------------------------------------------------------


def resolution_dir_name(height: int, width: int) -> str:
    """Directory name of one resolution, e.g. ``resolution_dir_name(36, 64) == "0036x0064"``."""
    return f"{int(height):04d}x{int(width):04d}"


def parse_resolution(text: str) -> tuple[int, int]:
    """Parse ``"HxW"`` (e.g. ``"36x64"`` or ``"0036x0064"``) into ``(height, width)``."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if match is None or int(match.group(1)) <= 0 or int(match.group(2)) <= 0:
        raise ValueError(f"resolution must look like HEIGHTxWIDTH with positive integers (e.g. 36x64), got {text!r}")
    return int(match.group(1)), int(match.group(2))


def partition_name(partition: int) -> str:
    """Shard file name of a partition index, e.g. ``partition_0003.zip``."""
    return f"partition_{int(partition):04d}.zip"


def shard_path(
    output_dir: str | os.PathLike, partition: int, height: int | None = None, width: int | None = None
) -> Path:
    """Final path of a shard: ``<output_dir>/HHHHxWWWW/partition_NNNN.zip``, or directly in ``output_dir`` when
    no height/width is given (the videos tool's long-edge and source-size modes, as in the original)."""
    root = Path(output_dir)
    if height is not None and width is not None:
        root = root / resolution_dir_name(height, width)
    return root / partition_name(partition)


def zip_entry_name(clip_path: str, frame_name: str) -> str:
    """ZIP entry of a frame: the POSIX-normalised join of clip path and frame name (clip ``.`` -> bare name)."""
    return posixpath.normpath(posixpath.join(clip_path, frame_name))


def format_frame_paths(frame_paths: dict[str, list[str]]) -> bytes:
    """Bytes of ``frame_paths.json`` exactly as the original writes them: indent 2, sorted keys, ASCII escapes,
    the default ``": "`` separator, UTF-8, no trailing newline."""
    return json.dumps(frame_paths, indent=2, sort_keys=True, ensure_ascii=True).encode("utf-8")


def partition_items(items: Sequence, partition: int, num_partitions: int) -> list:
    """Chunk ``partition`` of ``items`` split into ``num_partitions`` near-equal contiguous chunks, the first
    chunks taking the extra items (same split as ``numpy.array_split``)."""
    if num_partitions < 1:
        raise ValueError(f"num_partitions must be >= 1, got {num_partitions}")
    if not 0 <= partition < num_partitions:
        raise ValueError(
            f"partition must be in [0, {num_partitions - 1}] for num_partitions={num_partitions}, got {partition}"
        )
    bounds = np.array_split(np.arange(len(items)), num_partitions)[partition]
    return [items[i] for i in bounds]


def default_workers() -> int:
    """Default worker count of the tools: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # Not Linux.
        return max(1, os.cpu_count() or 1)


def warn(message: str) -> None:
    """Print a warning line to stderr (tools keep going after bad inputs), on a line of its own even while a
    progress bar is shown (``tqdm.write`` clears the bar, prints, and redraws it)."""
    from tqdm import tqdm

    tqdm.write(f"WARNING: {message}", file=sys.stderr)
    sys.stderr.flush()


# ----------------------------------------------------------------------------
# Frame preparation.


def to_rgb(image: Image.Image) -> Image.Image:
    """Return an RGB version of ``image`` (grayscale, palette, RGBA, CMYK, 16-bit ... are converted; alpha is
    dropped). The original tools kept the source mode, so RGBA sources crashed and L sources gave grayscale
    JPEGs; this is a deliberate fix."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(array / 256.0, 0, 255).astype(np.uint8), mode="L")
    return image.convert("RGB")


def center_crop_and_resize(image: Image.Image, height: int, width: int) -> Image.Image:
    """Centre-crop ``image`` to the aspect ratio of ``height`` x ``width`` and Lanczos-resize it to that size.

    Exactly the original tools' arithmetic: with ``s_h = src_h / height`` and ``s_w = src_w / width`` the
    longer relative side is cropped to a float length, the float crop box is rounded by PIL (half to even), then
    resized. No crop when the aspect ratios are equal.
    """
    src_w, src_h = image.size
    s_h = src_h / height
    s_w = src_w / width
    if s_h > s_w:
        crop = height * s_w
        top = math.floor((src_h - crop) / 2)
        image = image.crop((0, top, src_w, top + crop))
    elif s_w > s_h:
        crop = width * s_h
        left = math.floor((src_w - crop) / 2)
        image = image.crop((left, 0, left + crop, src_h))
    if image.size == (width, height):
        return image
    return image.resize((width, height), resample=Image.LANCZOS)


def resize_long_edge(image: Image.Image, long_edge: int) -> Image.Image:
    """Lanczos-resize ``image`` so its longer side is ``long_edge`` px, keeping the aspect ratio (as the original)."""
    w, h = image.size
    scale = long_edge / max(w, h)
    size = (round(w * scale), round(h * scale))
    if size == (w, h):
        return image
    return image.resize(size, resample=Image.LANCZOS)


def encode_jpeg(image: Image.Image | np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """Encode an RGB frame (PIL image or uint8 ``[H, W, 3]`` array) as baseline JPEG, 4:4:4, not optimised."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image array must be uint8 [H, W, 3], got {image.dtype} {list(image.shape)}")
        image = Image.fromarray(image, mode="RGB")
    buffer = io.BytesIO()
    to_rgb(image).save(buffer, format="JPEG", quality=quality, subsampling=JPEG_SUBSAMPLING)
    return buffer.getvalue()


# ----------------------------------------------------------------------------
# Shard writing.


class ShardWriter:
    """Write one shard (a STORED ZIP plus ``frame_paths.json``) safely.

    Entries go to ``<path>.<random>.partial`` in the same directory; ``close()`` appends ``frame_paths.json``
    (only clips with at least one frame), flushes to disk and renames the file to ``path``, replacing any older
    shard. ``abort()`` (or leaving a ``with`` block by an exception) deletes the temporary file. Frames of one clip
    must be added in temporal order; adding the same entry twice is an error, so shards never hold duplicates.

    Example::

        with ShardWriter("data/0036x0064/partition_0000.zip") as writer:
            for i, jpeg in enumerate(jpegs):
                writer.add_frame("video_a", f"frame_{i:06d}.jpg", jpeg)
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if self.path.suffix != ".zip":
            raise ValueError(f"shard path must end in .zip, got {str(self.path)!r}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.temp_path = self.path.with_name(f"{self.path.name}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}")
        self.frame_paths: dict[str, list[str]] = {}
        self._entries: set[str] = set()
        self._zip: zipfile.ZipFile | None = zipfile.ZipFile(self.temp_path, "w", zipfile.ZIP_STORED, allowZip64=True)

    def add_frame(self, clip_path: str, frame_name: str, data: bytes) -> None:
        """Add one encoded frame of ``clip_path`` (frames of a clip in temporal order)."""
        self._write(zip_entry_name(clip_path, frame_name), data)
        self.frame_paths.setdefault(clip_path, []).append(frame_name)

    def add_clip_file(self, clip_file: str | os.PathLike) -> None:
        """Copy every frame of a clip file made by ``ClipFileWriter`` (used by the parallel tools)."""
        with zipfile.ZipFile(clip_file, "r") as source:
            listing = json.loads(source.read(FRAME_PATHS_NAME))
            for clip_path, frame_names in listing.items():
                for frame_name in frame_names:
                    self.add_frame(clip_path, frame_name, source.read(zip_entry_name(clip_path, frame_name)))

    def _write(self, name: str, data: bytes) -> None:
        if self._zip is None:
            raise RuntimeError(f"shard {str(self.path)!r} is already closed")
        if name in self._entries or name == FRAME_PATHS_NAME:
            raise ValueError(f"duplicate ZIP entry {name!r} in shard {str(self.path)!r}")
        self._entries.add(name)
        info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
        info.compress_type = zipfile.ZIP_STORED
        info.external_attr = 0o644 << 16
        self._zip.writestr(info, data)

    def close(self) -> Path:
        """Write ``frame_paths.json``, sync and atomically move the shard into place. Returns its path."""
        if self._zip is None:
            raise RuntimeError(f"shard {str(self.path)!r} is already closed")
        listing = {clip: names for clip, names in self.frame_paths.items() if len(names) > 0}
        info = zipfile.ZipInfo(FRAME_PATHS_NAME, date_time=ZIP_DATE_TIME)
        info.compress_type = zipfile.ZIP_STORED
        info.external_attr = 0o644 << 16
        self._zip.writestr(info, format_frame_paths(listing))
        self._zip.close()
        self._zip = None
        with open(self.temp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(self.temp_path, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the unfinished shard."""
        if self._zip is not None:
            self._zip.close()
            self._zip = None
        self.temp_path.unlink(missing_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class ClipFileWriter:
    """Per-clip scratch file written by a worker process and merged into the shard by ``ShardWriter``.

    It is an ordinary STORED ZIP with the frames of one clip and a ``frame_paths.json``, so workers can stream
    long videos to disk instead of holding every encoded frame in memory.
    """

    def __init__(self, path: str | os.PathLike, clip_path: str):
        self.path = Path(path)
        self.clip_path = clip_path
        self.frame_names: list[str] = []
        self._zip = zipfile.ZipFile(self.path, "w", zipfile.ZIP_STORED, allowZip64=True)

    def add_frame(self, frame_name: str, data: bytes) -> None:
        info = zipfile.ZipInfo(zip_entry_name(self.clip_path, frame_name), date_time=ZIP_DATE_TIME)
        info.compress_type = zipfile.ZIP_STORED
        self._zip.writestr(info, data)
        self.frame_names.append(frame_name)

    def close(self) -> None:
        info = zipfile.ZipInfo(FRAME_PATHS_NAME, date_time=ZIP_DATE_TIME)
        self._zip.writestr(info, format_frame_paths({self.clip_path: self.frame_names}))
        self._zip.close()


def write_shard(path: str | os.PathLike, clips: Iterable[tuple[str, Iterable[tuple[str, bytes]]]]) -> Path:
    """Write a whole shard from ``(clip_path, [(frame_name, jpeg_bytes), ...])`` pairs; returns its path."""
    with ShardWriter(path) as writer:
        for clip_path, frames in clips:
            for frame_name, data in frames:
                writer.add_frame(clip_path, frame_name, data)
    return Path(path)


def remove_stale_partials(shard: str | os.PathLike) -> None:
    """Delete temporary files a killed run left for ``shard`` (call only while holding the partition lock)."""
    shard = Path(shard)
    if shard.parent.is_dir():
        for stale in shard.parent.glob(f"{shard.name}.*{TEMP_SUFFIX}"):
            stale.unlink(missing_ok=True)
