"""Parallel, restartable conversion of one partition of clips into LongVideoGAN shards (used by every tool).

A tool supplies a list of tasks (one per clip) and a top-level *frame source* function that turns a task into
its clip path and frames. Worker processes resize each frame to every requested output size, encode it as
JPEG and stream it into a per-clip scratch file; the main process merges the scratch files in task order into
one ``ShardWriter`` per output size, so the sources are read once for all resolutions. A killed run leaves only
scratch files and ``*.partial`` shards, which the next run of the same partition deletes. The command-line options
and checks the tools have in common are at the end.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

import click
import filelock
from PIL import Image
from tqdm import tqdm

from dataset_tools.utils import (
    ClipFileWriter,
    ShardWriter,
    center_crop_and_resize,
    default_workers,
    encode_jpeg,
    remove_stale_partials,
    resize_long_edge,
    shard_path,
    to_rgb,
    warn,
)

# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FrameSpec:
    """One output size: a fixed ``height`` x ``width`` (centre crop + Lanczos, written to ``HHHHxWWWW/``), or,
    with both None, a ``long_edge`` resize or the source size, written directly into the output directory."""

    height: int | None = None
    width: int | None = None
    long_edge: int | None = None

    @property
    def label(self) -> str:
        if self.height is not None:
            return f"{self.height:04d}x{self.width:04d}"
        return f"long{self.long_edge}" if self.long_edge is not None else "source"

    def shard(self, output_dir: str | os.PathLike, partition: int) -> Path:
        return shard_path(output_dir, partition, self.height, self.width)

    def apply(self, image: Image.Image) -> Image.Image:
        image = to_rgb(image)
        if self.height is not None:
            return center_crop_and_resize(image, self.height, self.width)
        if self.long_edge is not None:
            return resize_long_edge(image, self.long_edge)
        return image


# A frame source maps (task, problems) to (clip_path, iterable of (frame_name, PIL image)); it appends
# human-readable messages to `problems` for inputs it skips. It must be a module-level function (picklable).
FrameSource = Callable[[object, list], tuple[str, Iterable[tuple[str, Image.Image]]]]


@dataclasses.dataclass
class ClipResult:
    clip_path: str
    num_frames: int
    problems: list[str]


def convert_clip(source: FrameSource, task, specs: Sequence[FrameSpec], clip_files: Sequence[str]) -> ClipResult:
    """Worker body: read one clip, write one scratch file per output size."""
    problems: list[str] = []
    clip_path, frames = source(task, problems)
    writers = [ClipFileWriter(path, clip_path) for path in clip_files]
    count = 0
    try:
        for frame_name, image in frames:
            for spec, writer in zip(specs, writers):
                writer.add_frame(frame_name, encode_jpeg(spec.apply(image)))
            count += 1
    finally:
        for writer in writers:
            writer.close()
    return ClipResult(clip_path, count, problems)


# ----------------------------------------------------------------------------------------------------------------


def convert_partition(
    tasks: Sequence,  # Clips of this partition, in output order.
    source: FrameSource,  # Module-level function reading one task.
    output_dir: str | os.PathLike,  # Dataset root.
    partition: int,  # Partition index (names the shards).
    specs: Sequence[FrameSpec],  # Output sizes, all written in one pass.
    workers: int = 1,  # Worker processes; 1 = convert in this process.
    overwrite: bool = False,  # Replace existing shards instead of skipping them.
    desc: str | None = None,  # Progress bar label; None: "Partition <partition>".
) -> list[Path]:
    """Convert ``tasks`` into one shard per output size; returns the shards written (empty when all existed)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    shards = [spec.shard(output_dir, partition) for spec in specs]
    todo = [(spec, shard) for spec, shard in zip(specs, shards) if overwrite or not shard.exists()]
    for shard in shards:
        if shard.exists() and not overwrite:
            print(f"Skipping {shard}: it exists (use --overwrite to replace it)")
    if len(todo) == 0:
        return []
    if desc is None:
        desc = f"Partition {partition}"

    # One process per partition at a time; the lock dies with its holder, so a killed run never blocks.
    lock_path = output_dir / f".partition_{partition:04d}.lock"
    lock = filelock.FileLock(str(lock_path), timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise RuntimeError(
            f"another process is writing partition {partition} in {str(output_dir)!r} (lock {str(lock_path)!r} is held)"
        ) from None
    work_dir = output_dir / f".partition_{partition:04d}.work"
    try:
        shutil.rmtree(work_dir, ignore_errors=True)
        work_dir.mkdir(parents=True)
        for _, shard in todo:
            remove_stale_partials(shard)
        writers = [ShardWriter(shard) for _, shard in todo]
        try:
            _run_tasks(tasks, source, [spec for spec, _ in todo], writers, work_dir, workers, desc)
            written = [writer.close() for writer in writers]
        except BaseException:
            for writer in writers:
                writer.abort()
            raise
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
        lock.release()
        lock_path.unlink(missing_ok=True)
    return written


def _run_tasks(tasks, source, specs, writers, work_dir: Path, workers: int, desc: str) -> None:
    def clip_files(index: int) -> list[str]:
        return [str(work_dir / f"clip_{index:06d}.{spec.label}.scratch") for spec in specs]

    bar = tqdm(total=len(tasks), desc=desc, unit="clip", file=sys.stdout, dynamic_ncols=True)
    num_frames = 0

    def merge(index: int, result: ClipResult) -> None:
        nonlocal num_frames
        for message in result.problems:
            warn(message)
        for writer, path in zip(writers, clip_files(index)):
            writer.add_clip_file(path)
            os.unlink(path)
        num_frames += result.num_frames
        bar.set_postfix(frames=num_frames)

    if workers <= 1 or len(tasks) <= 1:
        for index, task in enumerate(tasks):
            merge(index, convert_clip(source, task, specs, clip_files(index)))
            bar.update(1)
        bar.close()
        return

    # Spawned workers: safe even when the parent has threads (torch, tqdm); results merged in task order.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context) as pool:
        pending: dict[Future, int] = {
            pool.submit(convert_clip, source, task, specs, clip_files(i)): i for i, task in enumerate(tasks)
        }
        done: dict[int, ClipResult] = {}
        next_index = 0
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    done[pending.pop(future)] = future.result()
                    bar.update(1)
                while next_index in done:
                    merge(next_index, done.pop(next_index))
                    next_index += 1
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    bar.close()


# ----------------------------------------------------------------------------------------------------------------
# Option handling shared by the tools: output sizes, and the click options (same names, defaults and help text in
# every tool, used as decorators), checks and error reporting of their command lines.


def resolve_specs(
    height: int | None,
    width: int | None,
    resolutions: Sequence[str] = (),
    long_edge: int | None = None,
    allow_flat: bool = False,
) -> list[FrameSpec]:
    """Turn ``--height/--width``, repeatable ``--resolution HxW`` and ``--long-edge`` into output sizes.

    Raises ``ValueError`` naming the offending option. ``allow_flat`` permits the videos tool's modes without a
    fixed size (long edge or source size, written directly into the output directory).
    """
    from dataset_tools.utils import parse_resolution

    if (height is None) != (width is None):
        raise ValueError(f"--height and --width must be given together, got --height={height} --width={width}")
    for name, value in (("--height", height), ("--width", width), ("--long-edge", long_edge)):
        if value is not None and value <= 0:
            raise ValueError(f"{name} must be a positive number of pixels, got {value}")
    sizes = [] if height is None else [(height, width)]
    for text in resolutions:
        try:
            size = parse_resolution(text)
        except ValueError as error:
            raise ValueError(f"--resolution: {error}") from None
        if size not in sizes:
            sizes.append(size)
    if long_edge is not None and sizes:
        raise ValueError("--long-edge cannot be combined with --height/--width or --resolution")
    if sizes:
        return [FrameSpec(height=h, width=w) for h, w in sizes]
    if not allow_flat:
        raise ValueError("give --height and --width, or at least one --resolution HxW")
    return [FrameSpec(long_edge=long_edge)]


def _stack(*decorators):
    """One decorator applying ``decorators`` as if stacked in this order (so their options keep it in --help)."""

    def apply(function):
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


# --height/--width with the frames and YouTube tools' default size, and --resolution; `resolve_cli_specs` combines
# them. (Each `click.option(...)` decorator makes a fresh option per command, so one can serve several tools.)
fixed_size_options = _stack(
    click.option("--height", type=int, default=144, show_default=True, help="Output height (centre crop + Lanczos)."),
    click.option("--width", type=int, default=256, show_default=True, help="Output width."),
    click.option(
        "--resolution",
        "resolution_list",
        multiple=True,
        metavar="HxW",
        help="Output size, repeatable; when given, --height/--width count only if set explicitly.",
    ),
)
partition_options = _stack(
    click.option("--partition", type=int, default=0, show_default=True, help="Partition index to convert."),
    click.option("--num-partitions", type=int, default=10, show_default=True, help="Number of partitions."),
)
fps_option = click.option(
    "--fps", type=float, default=None, help="Resample to this frame rate (default: keep the source's)."
)
overwrite_option = click.option(
    "--overwrite", is_flag=True, help="Replace existing shards of this partition (default: skip)."
)


def workers_option(help_text: str = "Parallel worker processes."):
    """``--workers``, defaulting to the cores this process may use."""
    return click.option(
        "--workers",
        type=click.IntRange(min=1),
        default=default_workers(),
        show_default="number of cores",
        help=help_text,
    )


def resolve_cli_specs(
    height: int | None,
    width: int | None,
    resolution_list: Sequence[str],
    partition: int,
    num_partitions: int,
    long_edge: int | None = None,
    allow_flat: bool = False,
) -> list[FrameSpec]:
    """Output sizes of a tool's command line after checking the size and partition options (``resolve_specs``);
    errors are raised as ``click.ClickException``, so they print as one ``Error:`` line.

    When --resolution is given, --height/--width count only if set on the command line, so a tool's default size
    is not written alongside the sizes asked for (a no-op where --height/--width default to None).
    """
    ctx = click.get_current_context()
    explicit = any(
        ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE for name in ("height", "width")
    )
    if resolution_list and not explicit:
        height = width = None
    try:
        specs = resolve_specs(height, width, resolution_list, long_edge, allow_flat=allow_flat)
    except ValueError as error:
        raise click.ClickException(str(error))
    if num_partitions < 1:
        raise click.ClickException(f"--num-partitions must be >= 1, got {num_partitions}")
    if not 0 <= partition < num_partitions:
        raise click.ClickException(f"--partition must be in [0, {num_partitions - 1}], got {partition}")
    return specs


def check_fps_option(fps: float | None) -> None:
    """Reject a ``--fps`` that is not positive."""
    if fps is not None and fps <= 0:
        raise click.ClickException(f"--fps must be > 0, got {fps}")


def run_conversion(
    convert: Callable[[], list[Path]],
    errors: tuple[type[BaseException], ...] = (FileNotFoundError, ValueError, RuntimeError),
) -> None:
    """Run a tool's conversion, show the expected ``errors`` as an ``Error:`` line (others keep their traceback)
    and list the shards written."""
    try:
        written = convert()
    except errors as error:
        raise click.ClickException(str(error))
    for shard in written:
        print(f"Wrote {shard}")
