"""Reading frames from video files with PyAV for the dataset tools (SPEC §6.3 videos and YouTube tools)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import av
from PIL import Image

# ----------------------------------------------------------------------------------------------------------------


def video_duration(container, stream) -> float | None:
    """Duration in seconds of ``stream`` (the stream's own, else the container's), or None if unknown."""
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
    """Yield RGB PIL frames of the first video stream in the time window, in order.

    Frames without a timestamp are skipped (counted in ``problems``), a stream whose duration is unknown is
    skipped when ``trim_end`` needs it, and decoding stops at the first decode error (reported, frames so far
    kept). Raises the PyAV error when the file cannot be opened at all.
    """
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
    """Output frame k shows the source frame nearest in time to ``t0 + k / fps`` (``t0`` = first kept frame)."""
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
