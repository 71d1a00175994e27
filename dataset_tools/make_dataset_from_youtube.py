"""Download YouTube videos listed in a clip config and convert their intervals into a LongVideoGAN dataset
partition (the original's YouTube tool; configs for the paper's datasets are in ``dataset_tools/youtube_configs``).

Config: ``{"<video_id>": ["<start> <end>", ...], ...}`` with times as ``[[H:]M:]S``. Partitioning is over the
flattened (video, interval) list in file order. Unlike the original, only the videos of the selected partition
are downloaded.
"""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import click

from dataset_tools import pipeline
from dataset_tools.utils import warn
from long_video_gan.video_io import iter_video_frames

TIME_PATTERN = re.compile(r"(?:(?:(\d+):)?(\d+):)?(\d+(?:\.\d+)?)")

# ----------------------------------------------------------------------------


def parse_time(text: str) -> float:
    """Seconds of a ``[[H:]M:]S`` time string, e.g. ``parse_time("1:02:03") == 3723``."""
    match = TIME_PATTERN.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"bad time string {text!r}: expected [[H:]M:]S, e.g. '42', '5:57' or '1:02:03'")
    hours, minutes, seconds = match.groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds)


def parse_interval(text: str) -> tuple[float, float]:
    """``"<start> <end>"`` -> (start, end) in seconds; ``end`` must be after ``start``."""
    parts = text.split() if isinstance(text, str) else []
    if len(parts) != 2:
        raise ValueError(f"bad interval {text!r}: expected '<start> <end>' with times as [[H:]M:]S, e.g. '0:24 5:57'")
    start, end = parse_time(parts[0]), parse_time(parts[1])
    if end <= start:
        raise ValueError(f"bad interval {text!r}: the end must be after the start")
    return start, end


def interval_clip_name(interval: str) -> str:
    """Clip directory of an interval: ``"0:24 5:57"`` -> ``"0_24-5_57"``."""
    return interval.replace(":", "_").replace(" ", "-")


def load_clip_config(path: str | os.PathLike) -> list[tuple[str, str]]:
    """Flattened ``(video_id, interval)`` list of a config, in file order; every interval is validated."""
    path = Path(path)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read clip config {str(path)!r}: {error}") from None
    if not isinstance(config, dict) or not all(isinstance(v, list) for v in config.values()):
        raise ValueError(f"clip config {str(path)!r} must map video ids to lists of '<start> <end>' strings")
    items = []
    for video_id, intervals in config.items():
        for interval in intervals:
            try:
                parse_interval(interval)
            except ValueError as error:
                raise ValueError(f"clip config {str(path)!r}, video {video_id!r}: {error}") from None
            items.append((video_id, interval))
    return items


def find_cached_video(cache_dir: str | os.PathLike, video_id: str) -> Path | None:
    """The downloaded file ``<cache_dir>/<video_id>.<ext>``, if any (partial downloads ignored)."""
    for path in sorted(Path(cache_dir).glob(f"{glob_escape(video_id)}.*")):
        if path.stem == video_id and path.suffix not in (".part", ".ytdl", ".temp") and path.is_file():
            return path
    return None


def glob_escape(text: str) -> str:
    return re.sub(r"([\[\]*?])", r"[\1]", text)


def download_videos(video_ids: list[str], cache_dir: str | os.PathLike, max_parallel: int = 8) -> dict[str, Path]:
    """Download each video once with yt-dlp into ``cache_dir`` (``%(id)s.%(ext)s``); returns the files found.
    Failed downloads are reported and left out."""
    import yt_dlp  # Imported here so the other tools and the tests never need it.

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    missing = [v for v in video_ids if find_cached_video(cache_dir, v) is None]

    def fetch(video_id: str) -> None:
        options = {"outtmpl": str(cache_dir / "%(id)s.%(ext)s"), "quiet": True, "no_warnings": True}
        try:
            with yt_dlp.YoutubeDL(options) as downloader:
                downloader.download([f"https://www.youtube.com/watch?v={video_id}"])
        except Exception as error:  # yt-dlp raises many types; one bad video must not stop the rest.
            warn(f"download of {video_id!r} failed: {error}")

    if missing:
        print(f"Downloading {len(missing)} videos into {cache_dir} ...", flush=True)
        with ThreadPoolExecutor(max_workers=max(1, min(max_parallel, len(missing)))) as pool:
            list(pool.map(fetch, missing))
    found = {v: find_cached_video(cache_dir, v) for v in video_ids}
    for video_id, path in found.items():
        if path is None:
            warn(f"video {video_id!r} is not in the cache {str(cache_dir)!r}; its clips are skipped")
    return {v: p for v, p in found.items() if p is not None}


def _interval_source(task: tuple, problems: list[str]):
    path, video_id, interval, fps = task
    if path is None:
        problems.append(f"video {video_id!r} is not available (its download failed); clip {interval!r} skipped")
        return f"{video_id}/{interval_clip_name(interval)}", iter(())
    start, end = parse_interval(interval)
    clip_path = f"{Path(path).stem}/{interval_clip_name(interval)}"

    def frames():
        try:
            images = iter_video_frames(path, problems, start=start, end=end, fps=fps, seek=True)
            for index, image in enumerate(images):
                yield f"frame_{index:06d}.jpg", image
        except (av.error.FFmpegError, OSError) as error:
            problems.append(f"{path}: cannot read the video ({error}); clip {clip_path!r} skipped")

    return clip_path, frames()


def make_dataset_from_clips(
    items: list[tuple[str, str]],
    video_files: dict[str, Path],
    output_dir,
    specs,
    partition: int,
    fps: float | None = None,
    workers: int = 1,
    overwrite: bool = False,
) -> list[Path]:
    """Cut the ``(video_id, interval)`` items of one partition from local ``video_files`` into shards; items
    whose video is missing count as failed inputs."""
    tasks = [(str(video_files[v]) if v in video_files else None, v, interval, fps) for v, interval in items]
    return pipeline.convert_partition(
        tasks, _interval_source, output_dir, partition, specs, workers=workers, overwrite=overwrite
    )


def make_dataset_from_youtube(
    clips_config_path: str | os.PathLike,  # JSON {video_id: ["<start> <end>", ...]}.
    output_dir: str | os.PathLike,  # Dataset root.
    video_cache_dir: str | os.PathLike,  # Downloaded videos, reused between runs and partitions.
    specs: list[pipeline.FrameSpec],  # Output sizes.
    partition: int = 0,  # Which chunk of the flattened (video, interval) list to convert.
    num_partitions: int = 10,  # Number of chunks (numpy.array_split).
    fps: float | None = None,  # Resample to this frame rate; None keeps every source frame.
    workers: int = 1,  # Parallel worker processes for the conversion.
    download_workers: int = 8,  # Parallel downloads.
    overwrite: bool = False,  # Replace existing shards (default: skip them).
) -> list[Path]:
    """Library entry point of the YouTube tool; returns the shards written."""
    all_items = load_clip_config(clips_config_path)
    where = f"clip config {str(clips_config_path)!r}"
    items = pipeline.select_partition(all_items, partition, num_partitions, "clips", where)
    pipeline.check_writable_dir(output_dir)
    pipeline.check_writable_dir(video_cache_dir, "video cache directory")
    record = pipeline.check_partitioning(
        output_dir, specs, [partition], num_partitions, len(all_items), "make_dataset_from_youtube", "clips", overwrite
    )
    if not pipeline.shards_to_write(output_dir, partition, specs, overwrite, notes=False):
        pipeline.shards_to_write(output_dir, partition, specs, overwrite)  # Prints the skip notes.
        written = []
    else:
        video_ids = list(dict.fromkeys(v for v, _ in items))
        video_files = download_videos(video_ids, video_cache_dir, download_workers)
        written = make_dataset_from_clips(
            items, video_files, output_dir, specs, partition, fps=fps, workers=workers, overwrite=overwrite
        )
    pipeline.write_partitioning(output_dir, record)
    pipeline.print_partition_hint(partition, num_partitions, len(items), len(all_items), "clips")
    return written


# ----------------------------------------------------------------------------


@click.command()
@click.argument("clips_config_path", type=click.Path(exists=True, dir_okay=False))
@click.argument("output_dir", type=click.Path(file_okay=False))
@click.argument("video_cache_dir", type=click.Path(file_okay=False))
@pipeline.fixed_size_options
@pipeline.fps_option
@pipeline.partition_options
@pipeline.workers_option("Parallel conversion processes.")
@click.option(
    "--download-workers", type=click.IntRange(min=1), default=8, show_default=True, help="Parallel downloads."
)
@pipeline.overwrite_option
def main(
    clips_config_path,
    output_dir,
    video_cache_dir,
    height,
    width,
    resolution_list,
    fps,
    partition,
    num_partitions,
    workers,
    download_workers,
    overwrite,
):
    """Download (yt-dlp, cached in VIDEO_CACHE_DIR) the videos of partition PARTITION of CLIPS_CONFIG_PATH and
    write their intervals to OUTPUT_DIR. Clip path = <video_id>/<interval with ':'->'_' and ' '->'-'>, frames
    frame_000000.jpg, ... (JPEG quality 100, 4:4:4).

    \b
    Examples:
      python -m dataset_tools.make_dataset_from_youtube dataset_tools/youtube_configs/horseback.json \\
          datasets/horseback cache/ --resolution 144x256 --resolution 36x64 --num-partitions 1
      python -m dataset_tools.make_dataset_from_youtube dataset_tools/youtube_configs/biking.json \\
          datasets/biking cache/ --partition 3 --num-partitions 10
    """
    specs = pipeline.resolve_cli_specs(height, width, resolution_list, partition, num_partitions)
    pipeline.check_fps_option(fps)
    pipeline.run_conversion(
        lambda: make_dataset_from_youtube(
            clips_config_path,
            output_dir,
            video_cache_dir,
            specs,
            partition=partition,
            num_partitions=num_partitions,
            fps=fps,
            workers=workers,
            download_workers=download_workers,
            overwrite=overwrite,
        ),
        output_dir=output_dir,
    )


if __name__ == "__main__":
    main()
