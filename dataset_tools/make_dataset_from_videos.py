"""Convert a directory tree of video files into a LongVideoGAN dataset partition (the original's videos tool)."""

from __future__ import annotations

import os
from pathlib import Path

import av
import click

from dataset_tools import pipeline
from long_video_gan.video_io import iter_video_frames

VIDEO_SUFFIXES = (".avi", ".mkv", ".mov", ".mp4", ".wmv")  # Matched case-insensitively.

# ----------------------------------------------------------------------------


def list_videos(input_dir: str | os.PathLike) -> list[tuple[Path, Path]]:
    """All ``(path, path relative to input_dir)`` of videos below ``input_dir``, sorted as pathlib paths
    (component by component, so ``a/b.mp4`` comes before ``a-b.mp4``); the order decides partition membership."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"input_dir {str(input_dir)!r} is not a directory")
    pairs = [
        (p, p.relative_to(input_dir))
        for p in input_dir.rglob("*")
        if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()
    ]
    return sorted(pairs)


def clip_path_of(relative_path: Path) -> str:
    """Clip path of a video: its path relative to the input directory without the extension."""
    return relative_path.with_suffix("").as_posix()


def _video_source(task: tuple, problems: list[str]):
    path, clip_path, trim_start, trim_end, fps = task

    def frames():
        try:
            for index, image in enumerate(
                iter_video_frames(path, problems, start=trim_start, trim_end=trim_end, fps=fps)
            ):
                yield f"frame_{index:06d}.jpg", image
        except (av.error.FFmpegError, OSError) as error:
            problems.append(f"{path}: cannot read the video ({error}); skipped")

    return clip_path, frames()


def make_dataset_from_videos(
    input_dir: str | os.PathLike,  # Directory searched recursively for .avi .mkv .mov .mp4 .wmv files.
    output_dir: str | os.PathLike,  # Dataset root.
    specs: list[pipeline.FrameSpec],  # Output sizes (see pipeline.resolve_specs).
    trim_start: float = 0.0,  # Seconds dropped at the start of every video.
    trim_end: float = 0.0,  # Seconds dropped at the end of every video.
    fps: float | None = None,  # Resample to this frame rate; None keeps every source frame.
    partition: int = 0,  # Which chunk of the sorted video list to convert.
    num_partitions: int = 10,  # Number of chunks (numpy.array_split).
    workers: int = 1,  # Parallel worker processes.
    overwrite: bool = False,  # Replace existing shards (default: skip them).
) -> list[Path]:
    """Library entry point of the videos tool; returns the shards written."""
    if trim_start < 0 or trim_end < 0:
        raise ValueError(f"trim_start and trim_end must be >= 0 s, got {trim_start} and {trim_end}")
    if fps is not None and fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    videos = list_videos(input_dir)
    if len(videos) == 0:
        raise FileNotFoundError(f"input_dir {str(input_dir)!r} holds no videos ({', '.join(VIDEO_SUFFIXES)})")
    by_clip = {}
    for path, rel in videos:  # Checked over all videos, so every partition refuses the same input alike.
        by_clip.setdefault(clip_path_of(rel), []).append(str(rel))
    clashes = {clip: rels for clip, rels in by_clip.items() if len(rels) > 1}
    if clashes:
        clip, rels = next(iter(sorted(clashes.items())))
        raise ValueError(
            f"input_dir {str(input_dir)!r}: videos {' and '.join(rels)} map to the same clip path {clip!r} (the path "
            f"without its extension); rename or move one of them ({len(clashes)} clip path(s) clash)"
        )
    where = f"input_dir {str(input_dir)!r}"
    selected = pipeline.select_partition(videos, partition, num_partitions, "videos", where)
    record = pipeline.check_partitioning(
        output_dir, specs, [partition], num_partitions, len(videos), "make_dataset_from_videos", "videos", overwrite
    )
    tasks = [(str(path), clip_path_of(rel), trim_start, trim_end, fps) for path, rel in selected]
    written = pipeline.convert_partition(
        tasks, _video_source, output_dir, partition, specs, workers=workers, overwrite=overwrite
    )
    pipeline.write_partitioning(output_dir, record)
    pipeline.print_partition_hint(partition, num_partitions, len(selected), len(videos), "videos")
    return written


# ----------------------------------------------------------------------------


@click.command()
@click.argument("input_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("output_dir", type=click.Path(file_okay=False))
@click.option("--height", type=int, default=None, help="Output height (with --width): centre crop + Lanczos.")
@click.option("--width", type=int, default=None, help="Output width (with --height).")
@click.option(
    "--resolution",
    "resolution_list",
    multiple=True,
    metavar="HxW",
    help="Additional output size, written in the same pass; repeatable.",
)
@click.option(
    "--long-edge",
    type=int,
    default=None,
    help="Without a fixed size: resize the long edge to this many px (output directly in OUTPUT_DIR).",
)
@click.option("--trim-start", type=float, default=0.0, show_default=True, help="Seconds to skip at the start.")
@click.option("--trim-end", type=float, default=0.0, show_default=True, help="Seconds to drop at the end.")
@pipeline.fps_option
@pipeline.partition_options
@pipeline.workers_option()
@pipeline.overwrite_option
def main(
    input_dir,
    output_dir,
    height,
    width,
    resolution_list,
    long_edge,
    trim_start,
    trim_end,
    fps,
    partition,
    num_partitions,
    workers,
    overwrite,
):
    """Convert the videos below INPUT_DIR (.avi .mkv .mov .mp4 .wmv, recursive) into partition PARTITION of a
    dataset in OUTPUT_DIR. Clip path = video path relative to INPUT_DIR without extension; frames are
    frame_000000.jpg, ... (JPEG quality 100, 4:4:4). Unreadable videos are skipped with a warning; when none
    of the partition's videos can be read, no shard is written and the exit status is 1. The default splits the
    videos into 10 partitions (one per Slurm task, see make_dataset_sbatch.sh): use --num-partitions 1 to convert
    them all in one run.

    \b
    Examples:
      python -m dataset_tools.make_dataset_from_videos videos/ data/ --height 144 --width 256 \\
          --resolution 36x64 --num-partitions 1
      python -m dataset_tools.make_dataset_from_videos videos/ data/ --height 144 --width 256 \\
          --trim-start 2 --trim-end 2 --fps 30 --partition 3 --num-partitions 10
      python -m dataset_tools.make_dataset_from_videos videos/ raw/ --long-edge 512 --num-partitions 1
    """
    specs = pipeline.resolve_cli_specs(
        height, width, resolution_list, partition, num_partitions, long_edge, allow_flat=True
    )
    for name, value in (("--trim-start", trim_start), ("--trim-end", trim_end)):
        if value < 0:
            raise click.ClickException(f"{name} must be >= 0 seconds, got {value}")
    pipeline.check_fps_option(fps)
    pipeline.run_conversion(
        lambda: make_dataset_from_videos(
            input_dir,
            output_dir,
            specs,
            trim_start=trim_start,
            trim_end=trim_end,
            fps=fps,
            partition=partition,
            num_partitions=num_partitions,
            workers=workers,
            overwrite=overwrite,
        ),
        output_dir=output_dir,
    )


if __name__ == "__main__":
    main()
