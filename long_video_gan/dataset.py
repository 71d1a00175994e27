"""Video clip datasets over sharded ZIPs of JPEG frames, as used to train LongVideoGAN (Brooks et al. 2022).

Layout (the original release's): ``<dataset_dir>/HHHHxWWWW/<partition>.zip``, each ZIP holding JPEG frames at
``<clip_path>/<frame_name>`` and a root ``frame_paths.json`` mapping clip path -> frame names in temporal order.

Three datasets (those of the original), returning float32 videos ``[C, T, H, W]`` in ``[-1, 1]`` (``2 * v / 255 - 1``):

* ``VideoDataset``: one item per clip long enough; a random start and frame spacing per item (low-res training,
  video metrics).
* ``VideoDatasetTwoRes``: the same frames at a low and a high resolution (super-resolution training).
* ``VideoDatasetPerImage``: every window of ``seq_length`` consecutive frames (image metrics).

Random numbers come from the global torch CPU RNG of the process (in a DataLoader worker, the worker's RNG,
which the DataLoader seeds from its generator), drawn in the original's order, so a seeded loader gives the
original's clips. ZIP files are opened lazily in each process and dropped when the dataset is pickled.

Deliberate differences from the original, none of which changes the result on a valid dataset:

* Frames that are not RGB (grayscale, RGBA, palette, CMYK JPEGs) are converted to RGB; the original crashed.
* ``VideoDatasetTwoRes`` takes ``hr_frame_slice`` to decode only some hr frames (super-resolution training
  needs all 12 lr frames but only the centre 4 hr frames; the original decoded all 12); the default reads all of them.
* Bad datasets raise errors naming the path and what was expected; clips too short to be used are counted
  in a warning.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import warnings
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image
import torch

FRAME_PATHS_NAME = "frame_paths.json"

# ----------------------------------------------------------------------------
# Reading partitions.


def resolution_dir_name(height: int, width: int) -> str:
    """Name of the directory of one resolution, e.g. ``0036x0064``."""
    return f"{int(height):04d}x{int(width):04d}"


def frame_entry_name(clip_path: str, frame_name: str) -> str:
    """ZIP entry of a frame: POSIX-normalised join of clip path and frame name (clip ``.`` -> bare name)."""
    return posixpath.normpath(posixpath.join(clip_path, frame_name))


def find_partitions(dataset_dir: str | os.PathLike, height: int, width: int) -> tuple[Path, list[Path]]:
    """Return the resolution directory and its partition ZIPs (``*.zip`` directly inside, sorted by stem)."""
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        kind = "is not a directory" if dataset_dir.exists() else "does not exist"
        raise FileNotFoundError(
            f"dataset_dir {str(dataset_dir)!r} {kind}; expected a dataset root holding "
            f"HHHHxWWWW/ resolution directories"
        )
    res_dir = dataset_dir / resolution_dir_name(height, width)
    if not res_dir.is_dir():
        present = sorted(p.name for p in dataset_dir.iterdir() if p.is_dir())
        raise FileNotFoundError(
            f"dataset_dir {str(dataset_dir)!r} has no resolution directory {res_dir.name!r} "
            f"for height={height}, width={width}; directories present: {present or 'none'}"
        )
    partitions = sorted((p for p in res_dir.glob("*.zip") if p.is_file()), key=lambda p: p.stem)
    if len(partitions) == 0:
        raise FileNotFoundError(f"resolution directory {str(res_dir)!r} holds no partition files (*.zip)")
    return res_dir, partitions


def load_frame_paths(zip_path: str | os.PathLike) -> dict[str, list[str]]:
    """Read ``frame_paths.json`` of one partition (the last entry of that name wins, like zipfile)."""
    zip_path = Path(zip_path)
    try:
        with zipfile.ZipFile(zip_path, "r") as zf:
            try:
                data = zf.read(FRAME_PATHS_NAME)
            except KeyError:
                raise ValueError(
                    f"partition {str(zip_path)!r} has no {FRAME_PATHS_NAME} entry; the shard is "
                    f"incomplete (it is written last) or not a LongVideoGAN dataset"
                ) from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as error:
        raise ValueError(
            f"partition {str(zip_path)!r} is not a readable ZIP file (corrupt or truncated?): {error}"
        ) from None
    try:
        frame_paths = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{FRAME_PATHS_NAME} of partition {str(zip_path)!r} is not valid JSON: {error}") from None
    if not isinstance(frame_paths, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(n, str) for n in v)
        for k, v in frame_paths.items()
    ):
        raise ValueError(
            f"{FRAME_PATHS_NAME} of partition {str(zip_path)!r} must map clip paths to lists of frame names"
        )
    return frame_paths


def decode_frame(data: bytes, where: str) -> np.ndarray:
    """Decode one JPEG (or any PIL image) to uint8 ``[H, W, 3]``; non-RGB frames are converted to RGB."""
    try:
        with PIL.Image.open(io.BytesIO(data)) as image:
            if image.mode != "RGB":
                image = image.convert("RGB")
            return np.asarray(image)
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as error:
        raise ValueError(f"cannot decode frame {where} as an image: {error}") from None


class _PartitionReader:
    """Lazily opened, per-process ZIP handles of a list of partitions (dropped when pickled)."""

    def __init__(self, zip_paths: list[Path]):
        self.zip_paths = list(zip_paths)
        self._handles: dict[int, zipfile.ZipFile] = {}
        self._pid: int | None = None

    def __getstate__(self) -> dict:
        return {"zip_paths": self.zip_paths}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["zip_paths"])

    def _zip(self, index: int) -> zipfile.ZipFile:
        # A forked worker must not share the parent's file offsets: reopen after a fork.
        if self._pid != os.getpid():
            self._handles = {}
            self._pid = os.getpid()
        handle = self._handles.get(index)
        if handle is None:
            handle = zipfile.ZipFile(self.zip_paths[index], "r")
            self._handles[index] = handle
        return handle

    def read_frames(self, index: int, clip_path: str, frame_names: list[str], height: int, width: int) -> np.ndarray:
        """Decode the given frames of one clip to uint8 ``[T, H, W, 3]``."""
        zf = self._zip(index)
        frames = []
        for frame_name in frame_names:
            entry = frame_entry_name(clip_path, frame_name)
            where = f"{entry!r} in {str(self.zip_paths[index])!r}"
            try:
                data = zf.read(entry)
            except KeyError:
                raise FileNotFoundError(
                    f"frame {where} is listed in {FRAME_PATHS_NAME} but missing from the ZIP"
                ) from None
            except (zipfile.BadZipFile, EOFError, OSError) as error:
                raise ValueError(f"cannot read frame {where}: {error}") from None
            frame = decode_frame(data, where)
            if frame.shape[:2] != (height, width):
                raise ValueError(
                    f"frame {where} is {frame.shape[0]}x{frame.shape[1]}, expected {height}x{width} (height x width)"
                )
            frames.append(frame)
        return np.stack(frames)  # [T, H, W, 3]

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles = {}


def frames_to_video(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> contiguous float32 ``[3, T, H, W]`` in ``[-1, 1]`` (``2 * v / 255 - 1``)."""
    video = torch.from_numpy(np.ascontiguousarray(frames.transpose(3, 0, 1, 2)))  # [C, T, H, W]
    # In-place float ops in the order of 2 * v / 255 - 1 (same rounding); one pass each, no temporaries.
    return video.to(torch.float32).mul_(2).div_(255).sub_(1)


# ----------------------------------------------------------------------------


class _ClipIndex:
    """Partitions and clip listings of one resolution of a dataset."""

    def __init__(self, dataset_dir: str | os.PathLike, height: int, width: int):
        self.res_dir, self.zip_paths = find_partitions(dataset_dir, height, width)
        self.partition_names = [p.stem for p in self.zip_paths]
        self.frame_paths = {p.stem: load_frame_paths(p) for p in self.zip_paths}  # {partition: {clip: names}}

    def clips(self) -> list[tuple[int, str, int]]:
        """All clips as ``(partition index, clip path, num frames)``, by partition name then clip path."""
        return [
            (i, clip, len(self.frame_paths[name][clip]))
            for i, name in enumerate(self.partition_names)
            for clip in sorted(self.frame_paths[name])
        ]


def _warn_short_clips(all_clips: list, kept: int, res_dir: str, frames: int, what: str) -> None:
    """Say how many clips are too short to be used (the original dropped them without a word)."""
    dropped = len(all_clips) - kept
    if dropped > 0:
        shortest = min(c[2] for c in all_clips)
        has, are = ("has", "is") if dropped == 1 else ("have", "are")
        warnings.warn(
            f"{dropped} of {len(all_clips)} clips in {res_dir!r} {has} fewer than the {frames} frames {what} "
            f"(the shortest has {shortest}) and {are} skipped",
            UserWarning,
            stacklevel=3,
        )


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class VideoDataset(torch.utils.data.Dataset):
    """Random clips of ``seq_length`` frames, one item per clip of at least ``min_video_length`` frames.

    Each item draws (from the global torch RNG, in this order) a frame spacing in
    ``[min_spacing, min(max_spacing, (n - 1) // (seq_length - 1))]``, a start frame, and, with ``x_flip``, a
    uniform number that flips the clip horizontally when below 0.5. Returns ``{"video": [3, T, H, W] float32 in
    [-1, 1], "spacing": int}``. Frames that are not RGB are converted to RGB (the original crashed on them).

    Example::

        dataset = VideoDataset("datasets/horseback", seq_length=128, height=36, width=64, x_flip=True)
        video = dataset[0]["video"]  # [3, 128, 36, 64]
    """

    def __init__(
        self,
        dataset_dir: str | os.PathLike,  # Dataset root holding HHHHxWWWW/ directories.
        seq_length: int,  # Frames per returned clip (T).
        height: int,  # Frame height in px; selects the resolution directory.
        width: int,  # Frame width in px.
        min_spacing: int = 1,  # Smallest step between returned frames (1 = consecutive).
        max_spacing: int = 1,  # Largest step, further limited per clip by its length.
        min_video_length: int | None = None,  # Skip clips shorter than this; None = just long enough for T frames.
        x_flip: bool = False,  # Flip each clip horizontally with probability 0.5.
    ):
        self.dataset_dir = str(dataset_dir)
        self.seq_length = _check_int("seq_length", seq_length, 1)
        self.height = _check_int("height", height, 1)
        self.width = _check_int("width", width, 1)
        self.min_spacing = _check_int("min_spacing", min_spacing, 1)
        self.max_spacing = _check_int("max_spacing", max_spacing, 1)
        if self.max_spacing < self.min_spacing:
            raise ValueError(f"max_spacing must be >= min_spacing={self.min_spacing}, got {max_spacing}")
        if min_video_length is not None:
            min_video_length = _check_int("min_video_length", min_video_length, 1)
        self.x_flip = bool(x_flip)
        self.min_video_length = max(min_video_length or 1, (self.seq_length - 1) * self.min_spacing + 1)

        index = _ClipIndex(dataset_dir, self.height, self.width)
        self.res_dir = str(index.res_dir)
        self.partition_names = index.partition_names
        self.frame_paths = index.frame_paths
        all_clips = index.clips()
        self.clips = [c for c in all_clips if c[2] >= self.min_video_length]  # [(partition, clip, n)]
        if len(self.clips) == 0:
            longest = max((c[2] for c in all_clips), default=0)
            raise ValueError(
                f"no clip in {self.res_dir!r} has the {self.min_video_length} frames needed "
                f"(seq_length={self.seq_length}, min_spacing={self.min_spacing}, "
                f"min_video_length={min_video_length}); it has {len(all_clips)} clips, the longest "
                f"with {longest} frames"
            )
        _warn_short_clips(all_clips, len(self.clips), self.res_dir, self.min_video_length, "needed")
        self._reader = _PartitionReader(index.zip_paths)

    def __len__(self) -> int:
        return len(self.clips)

    def _draw_window(self, num_frames: int) -> tuple[int, int, bool]:
        """Draw (spacing, start, flip) from the global torch RNG in the original's order."""
        if self.seq_length > 1:
            max_allowed = min(self.max_spacing, (num_frames - 1) // (self.seq_length - 1))
            spacing = int(torch.randint(self.min_spacing, max_allowed + 1, size=()))
        else:
            spacing = int(torch.randint(1, 2, size=()))  # The draw is kept so the RNG stream stays aligned.
        span = (self.seq_length - 1) * spacing + 1
        start = int(torch.randint(0, num_frames - span + 1, size=()))
        flip = self.x_flip and float(torch.rand(size=())) < 0.5
        return spacing, start, flip

    def _frame_names(self, partition: int, clip_path: str, start: int, spacing: int) -> list[str]:
        names = self.frame_paths[self.partition_names[partition]][clip_path]
        return names[start : start + (self.seq_length - 1) * spacing + 1 : spacing]

    def __getitem__(self, idx: int) -> dict:
        partition, clip_path, num_frames = self.clips[idx]
        spacing, start, flip = self._draw_window(num_frames)
        names = self._frame_names(partition, clip_path, start, spacing)
        video = frames_to_video(self._reader.read_frames(partition, clip_path, names, self.height, self.width))
        if flip:
            video = video.flip(-1)
        assert video.shape == (3, self.seq_length, self.height, self.width)  # [C, T, H, W]
        return {"video": video, "spacing": spacing}

    def close(self) -> None:
        """Close this process's ZIP handles (they reopen on the next read)."""
        self._reader.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.dataset_dir!r}, seq_length={self.seq_length}, "
            f"{self.height}x{self.width}, {len(self)} clips)"
        )


# ----------------------------------------------------------------------------


class VideoDatasetTwoRes(VideoDataset):
    """The same random clip at a low and a high resolution (same frames, same flip).

    Both resolutions must hold the same partitions, clip paths and frame names. The three random draws are
    made once (on the low-res clip lengths, which equal the high-res ones); all lr frames are decoded before
    the hr frames. ``hr_frame_slice=(start, stop)`` decodes only frames ``start:stop`` of the hr clip (e.g.
    ``(4, 8)`` for the centre 4 of 12 in super-resolution training); ``None`` reads all ``seq_length``.
    Returns ``{"lr_video": [3, T, h, w], "hr_video": [3, T_hr, H, W], "spacing": int}``.

    Example::

        dataset = VideoDatasetTwoRes("datasets/horseback", seq_length=12, lr_height=36, lr_width=64,
                                     hr_height=144, hr_width=256, x_flip=True, hr_frame_slice=(4, 8))
    """

    def __init__(
        self,
        dataset_dir: str | os.PathLike,  # Dataset root holding both HHHHxWWWW/ directories.
        seq_length: int,  # Frames per returned lr clip (T).
        lr_height: int,  # Low-res frame height in px.
        lr_width: int,  # Low-res frame width in px.
        hr_height: int,  # High-res frame height in px.
        hr_width: int,  # High-res frame width in px.
        min_spacing: int = 1,  # Smallest step between returned frames.
        max_spacing: int = 1,  # Largest step, further limited per clip by its length.
        min_video_length: int | None = None,  # Skip clips shorter than this; None = just long enough.
        x_flip: bool = False,  # Flip both clips horizontally with probability 0.5.
        hr_frame_slice: tuple[int, int] | slice | None = None,  # Hr frames to decode, (start, stop); None = all.
    ):
        super().__init__(
            dataset_dir,
            seq_length,
            lr_height,
            lr_width,
            min_spacing=min_spacing,
            max_spacing=max_spacing,
            min_video_length=min_video_length,
            x_flip=x_flip,
        )
        self.lr_height, self.lr_width = self.height, self.width
        self.hr_height = _check_int("hr_height", hr_height, 1)
        self.hr_width = _check_int("hr_width", hr_width, 1)
        self.hr_frame_slice = self._parse_slice(hr_frame_slice)

        hr_index = _ClipIndex(dataset_dir, self.hr_height, self.hr_width)
        if hr_index.partition_names != self.partition_names:
            raise ValueError(
                f"partitions differ between {self.res_dir!r} ({self.partition_names}) and "
                f"{str(hr_index.res_dir)!r} ({hr_index.partition_names})"
            )
        for name in self.partition_names:
            lr_paths, hr_paths = self.frame_paths[name], hr_index.frame_paths[name]
            if lr_paths != hr_paths:
                clip = next(k for k in sorted(set(lr_paths) | set(hr_paths)) if lr_paths.get(k) != hr_paths.get(k))
                what = (
                    "has different frame names"
                    if clip in lr_paths and clip in hr_paths
                    else f"exists only in {self.res_dir if clip in lr_paths else str(hr_index.res_dir)!r}"
                )
                raise ValueError(
                    f"clip {clip!r} of partition {name!r} {what} (comparing {self.res_dir!r} with "
                    f"{str(hr_index.res_dir)!r}); both resolutions must list the same clips and frames"
                )
        self.hr_res_dir = str(hr_index.res_dir)
        self._hr_reader = _PartitionReader(hr_index.zip_paths)

    def _parse_slice(self, value) -> tuple[int, int]:
        if value is None:
            return (0, self.seq_length)
        if isinstance(value, slice):
            if value.step not in (None, 1):
                raise ValueError(f"hr_frame_slice must have step 1, got {value!r}")
            value = value.indices(self.seq_length)[:2]
        if (
            not isinstance(value, (tuple, list))
            or len(value) != 2
            or not all(isinstance(v, (int, np.integer)) for v in value)
            or not 0 <= value[0] <= value[1] <= self.seq_length
        ):
            raise ValueError(
                f"hr_frame_slice must be None, a slice or (start, stop) with "
                f"0 <= start <= stop <= seq_length={self.seq_length}, got {value!r}"
            )
        return (int(value[0]), int(value[1]))

    def __getitem__(self, idx: int) -> dict:
        partition, clip_path, num_frames = self.clips[idx]
        spacing, start, flip = self._draw_window(num_frames)
        names = self._frame_names(partition, clip_path, start, spacing)
        lr_video = frames_to_video(self._reader.read_frames(partition, clip_path, names, self.height, self.width))
        hr_names = names[self.hr_frame_slice[0] : self.hr_frame_slice[1]]
        if len(hr_names) > 0:
            hr_frames = self._hr_reader.read_frames(partition, clip_path, hr_names, self.hr_height, self.hr_width)
        else:
            hr_frames = np.zeros((0, self.hr_height, self.hr_width, 3), dtype=np.uint8)
        hr_video = frames_to_video(hr_frames)
        if flip:
            lr_video = lr_video.flip(-1)
            hr_video = hr_video.flip(-1)
        assert lr_video.shape == (3, self.seq_length, self.height, self.width)  # [C, T, h, w]
        assert hr_video.shape == (3, len(hr_names), self.hr_height, self.hr_width)  # [C, T_hr, H, W]
        return {"lr_video": lr_video, "hr_video": hr_video, "spacing": spacing}

    def close(self) -> None:
        super().close()
        self._hr_reader.close()


# ----------------------------------------------------------------------------


class VideoDatasetPerImage(torch.utils.data.Dataset):
    """Every window of ``seq_length`` consecutive frames of every clip (image metrics).

    Items are ordered by partition name, clip path, then window start. Clips shorter than ``seq_length``
    contribute nothing. The only random draw is the optional flip. Returns ``{"video": [3, T, H, W],
    "num_samples_from_source": n - seq_length + 1}`` (for per-clip weighting). Non-RGB frames become RGB.

    Example::

        dataset = VideoDatasetPerImage("datasets/horseback", height=36, width=64)
        frame = dataset[0]["video"][:, 0]  # [3, 36, 64]
    """

    def __init__(
        self,
        dataset_dir: str | os.PathLike,  # Dataset root holding HHHHxWWWW/ directories.
        height: int,  # Frame height in px; selects the resolution directory.
        width: int,  # Frame width in px.
        seq_length: int = 1,  # Frames per window.
        x_flip: bool = False,  # Flip each window horizontally with probability 0.5.
    ):
        self.dataset_dir = str(dataset_dir)
        self.height = _check_int("height", height, 1)
        self.width = _check_int("width", width, 1)
        self.seq_length = _check_int("seq_length", seq_length, 1)
        self.x_flip = bool(x_flip)
        index = _ClipIndex(dataset_dir, self.height, self.width)
        self.res_dir = str(index.res_dir)
        self.partition_names = index.partition_names
        self.frame_paths = index.frame_paths
        all_clips = index.clips()
        self.clips = [c for c in all_clips if c[2] >= self.seq_length]  # [(partition, clip, n)]
        if len(self.clips) == 0:
            longest = max((c[2] for c in all_clips), default=0)
            raise ValueError(
                f"no clip in {self.res_dir!r} has the {self.seq_length} frames of one window (seq_length); "
                f"it has {len(all_clips)} clips, the longest with {longest} frames"
            )
        _warn_short_clips(all_clips, len(self.clips), self.res_dir, self.seq_length, "of one window")
        windows = np.array([n - self.seq_length + 1 for _, _, n in self.clips], dtype=np.int64)
        self._ends = np.cumsum(windows)  # Item index where each clip's windows end.
        self._reader = _PartitionReader(index.zip_paths)

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) > 0 else 0

    def __getitem__(self, idx: int) -> dict:
        if not -len(self) <= idx < len(self):
            raise IndexError(f"index {idx} out of range for {len(self)} items")
        idx = int(idx) % len(self)
        clip_index = int(np.searchsorted(self._ends, idx, side="right"))
        partition, clip_path, num_frames = self.clips[clip_index]
        start = idx - (int(self._ends[clip_index - 1]) if clip_index > 0 else 0)
        names = self.frame_paths[self.partition_names[partition]][clip_path][start : start + self.seq_length]
        video = frames_to_video(self._reader.read_frames(partition, clip_path, names, self.height, self.width))
        if self.x_flip and float(torch.rand(size=())) < 0.5:
            video = video.flip(-1)
        assert video.shape == (3, self.seq_length, self.height, self.width)  # [C, T, H, W]
        return {"video": video, "num_samples_from_source": num_frames - self.seq_length + 1}

    def close(self) -> None:
        """Close this process's ZIP handles (they reopen on the next read)."""
        self._reader.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.dataset_dir!r}, seq_length={self.seq_length}, "
            f"{self.height}x{self.width}, {len(self)} windows)"
        )
