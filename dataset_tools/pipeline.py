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
import json
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

import click
import filelock
from PIL import Image
from tqdm import tqdm

from dataset_tools.utils import (
    FRAME_PATHS_NAME,
    ClipFileWriter,
    ShardWriter,
    center_crop_and_resize,
    default_workers,
    encode_jpeg,
    partition_items,
    remove_stale_partials,
    resize_long_edge,
    shard_path,
    to_rgb,
    warn,
)

PARTITIONS_FILE = "partitions.json"  # Sidecar in the dataset root: how the inputs were split (read by `info`).
LOW_RES_CLIP_FRAMES = 128  # Clip length of the low-res training phase; shorter clips are unused there.

# ----------------------------------------------------------------------------


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


class ConversionError(RuntimeError):
    """A conversion that cannot start or produced nothing; the tools print it as one ``Error:`` line."""


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
    if count == 0 and not problems:
        problems.append(f"clip {clip_path!r}: no frames (empty input, or everything trimmed away); skipped")
    return ClipResult(clip_path, count, problems)


# ----------------------------------------------------------------------------


def check_writable_dir(directory: str | os.PathLike, what: str = "output directory") -> Path:
    """Create ``directory`` (and parents) and make sure files can be created in it; raises ``ConversionError``
    naming the directory otherwise, so a tool fails before any work."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write_test_"):
            pass
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConversionError(f"cannot write to the {what} {str(directory)!r}: {reason}") from None
    return directory


def shard_num_clips(shard: Path) -> int | None:
    """Number of clips a shard lists, or None when it cannot be read."""
    try:
        with zipfile.ZipFile(shard) as zf:
            return len(json.loads(zf.read(FRAME_PATHS_NAME)))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError):
        return None


def shards_to_write(
    output_dir: str | os.PathLike, partition: int, specs: Sequence[FrameSpec], overwrite: bool, notes: bool = True
) -> list[tuple[FrameSpec, Path]]:
    """The (size, shard) pairs of a partition still to write: all with ``overwrite``, else those whose shard is
    missing or lists no clips (left by an older run whose inputs all failed); ``notes`` prints why others are
    skipped."""
    todo = []
    for spec in specs:
        shard = spec.shard(output_dir, partition)
        if shard.exists() and not overwrite:
            if shard_num_clips(shard) == 0:
                if notes:
                    print(f"Replacing {shard}: it lists no clips (every input of an earlier run failed)", flush=True)
            else:
                if notes:
                    print(f"Skipping {shard}: it exists (use --overwrite to replace it)", flush=True)
                continue
        todo.append((spec, shard))
    return todo


def convert_partition(
    tasks: Sequence,  # Clips of this partition, in output order.
    source: FrameSource,  # Module-level function reading one task.
    output_dir: str | os.PathLike,  # Dataset root.
    partition: int,  # Partition index (names the shards).
    specs: Sequence[FrameSpec],  # Output sizes, all written in one pass.
    workers: int = 1,  # Worker processes; 1 = convert in this process.
    overwrite: bool = False,  # Replace existing shards instead of skipping them.
    desc: str | None = None,  # Progress bar label; None: "Partition <partition>".
    progress: bool = True,  # Show a progress bar and the skip notes.
) -> list[Path]:
    """Convert ``tasks`` into one shard per output size; returns the shards written (empty when all existed).

    Inputs that yield no frames are reported and left out, with an "N of M inputs failed" summary; when no input
    yields a frame nothing is written and ``ConversionError`` is raised, so a rerun tries again. An existing
    shard listing no clips (from an older run whose inputs all failed) is replaced rather than skipped.
    """
    output_dir = check_writable_dir(output_dir)
    todo = shards_to_write(output_dir, partition, specs, overwrite, progress)
    if len(todo) == 0:
        return []
    if len(tasks) == 0:
        raise ConversionError(f"partition {partition} has no inputs; nothing was written")
    if desc is None:
        desc = f"Partition {partition}"
    for shard in {shard.parent for _, shard in todo}:
        check_writable_dir(shard)

    # One process per partition at a time; the lock dies with its holder, so a killed run never blocks.
    lock_path = output_dir / f".partition_{partition:04d}.lock"
    lock = filelock.FileLock(str(lock_path), timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise ConversionError(
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
            lengths = _run_tasks(tasks, source, [spec for spec, _ in todo], writers, work_dir, workers, desc, progress)
            failed = sum(1 for n in lengths if n == 0)
            if failed == len(tasks):
                raise ConversionError(
                    f"nothing converted: {failed} of {len(tasks)} inputs failed (see the warnings above); "
                    f"no shard written for partition {partition}"
                )
            written = [writer.close() for writer in writers]
        except BaseException:
            for writer in writers:
                writer.abort()
            raise
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
        lock.release()
        lock_path.unlink(missing_ok=True)
    if failed > 0:
        warn(
            f"{failed} of {len(tasks)} inputs failed (see the warnings above); the shards hold the other "
            f"{len(tasks) - failed}"
        )
    short = sum(1 for n in lengths if 0 < n < LOW_RES_CLIP_FRAMES)
    if short > 0 and progress:
        has = "has" if short == 1 else "have"
        warn(
            f"{short} of {len(tasks) - failed} clips {has} fewer than {LOW_RES_CLIP_FRAMES} frames, the low-res "
            f"training phase's clip length; that phase will skip them"
        )
    if progress:
        for shard in written:
            print(f"Wrote {shard}", flush=True)
    return written


def _run_tasks(tasks, source, specs, writers, work_dir: Path, workers: int, desc: str, progress: bool) -> list[int]:
    """Convert and merge every task in order; returns the number of frames of each task's clip."""

    def clip_files(index: int) -> list[str]:
        return [str(work_dir / f"clip_{index:06d}.{spec.label}.scratch") for spec in specs]

    bar = tqdm(total=len(tasks), desc=desc, unit="clip", file=sys.stdout, dynamic_ncols=True, disable=not progress)
    lengths: list[int] = []

    def merge(index: int, result: ClipResult) -> None:
        for message in result.problems:
            warn(message)
        for writer, path in zip(writers, clip_files(index)):
            writer.add_clip_file(path)
            os.unlink(path)
        lengths.append(result.num_frames)
        bar.set_postfix(frames=sum(lengths))

    if workers <= 1 or len(tasks) <= 1:
        for index, task in enumerate(tasks):
            merge(index, convert_clip(source, task, specs, clip_files(index)))
            bar.update(1)
        bar.close()
        return lengths

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
    return lengths


# ----------------------------------------------------------------------------
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
    check_sizes(specs)
    return specs


def check_fps_option(fps: float | None) -> None:
    """Reject a ``--fps`` that is not positive."""
    if fps is not None and fps <= 0:
        raise click.ClickException(f"--fps must be > 0, got {fps}")


def run_conversion(
    convert: Callable[[], list[Path]],
    errors: tuple[type[BaseException], ...] = (OSError, ValueError, RuntimeError),
    output_dir: str | os.PathLike | None = None,
) -> list[Path]:
    """Run a tool's conversion and show the expected ``errors`` as one ``Error:`` line (others keep their
    traceback); returns the shards written. After such an error, the directories this run created below and
    including ``output_dir`` are removed again if they are empty, so a failed run leaves nothing behind."""
    before = _directories(output_dir)
    try:
        written = convert()
    except errors as error:
        message = str(error)
        if isinstance(error, OSError) and error.filename is not None and error.strerror:
            message = f"{error.filename}: {error.strerror}"
        if output_dir is not None:
            for directory in sorted(_directories(output_dir) - before, key=lambda p: len(p.parts), reverse=True):
                try:
                    directory.rmdir()  # Only if empty.
                except OSError:
                    pass
        raise click.ClickException(message)
    return written


def _directories(output_dir: str | os.PathLike | None) -> set[Path]:
    """``output_dir``, its ancestors and the directories inside it that exist now."""
    if output_dir is None:
        return set()
    root = Path(output_dir).absolute()
    found = {p for p in (root, *root.parents) if p.is_dir()}
    if root.is_dir():
        found |= {p for p in root.rglob("*") if p.is_dir()}
    return found


def check_sizes(specs: Sequence[FrameSpec]) -> None:
    """Warn about output sizes the models are not built for: odd sides, or portrait frames (height > width)."""
    for spec in specs:
        if spec.height is None:
            continue
        size = f"{spec.height}x{spec.width}"
        odd = [name for name, value in (("height", spec.height), ("width", spec.width)) if value % 2]
        if odd:
            warn(
                f"output size {size} has an odd {' and '.join(odd)}; the generators expect even sizes "
                f"(the paper uses 36x64 and 144x256, with the super-res size 4x the low-res one)"
            )
        if spec.height > spec.width:
            warn(
                f"output size {size} is portrait (height > width); the models and presets are built for "
                f"landscape 16:9 frames such as 36x64 and 144x256 (height x width)"
            )


# ----------------------------------------------------------------------------
# Partitions: selection, the partitions.json record in the dataset root, and the hint about the other partitions.

_SHARD_NAME = re.compile(r"partition_(\d{4,})\.zip")


def format_indices(indices: Iterable[int]) -> str:
    """``[1, 2, 3, 5]`` -> ``"1..3, 5"``."""
    indices = sorted(set(indices))
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in runs)


def select_partition(items: Sequence, partition: int, num_partitions: int, noun: str, where: str) -> list:
    """Chunk ``partition`` of ``items`` (``partition_items``); an empty chunk raises ``ConversionError`` that
    says how many partitions the inputs fill."""
    selected = partition_items(items, partition, num_partitions)
    if len(selected) == 0:
        raise ConversionError(
            f"partition {partition} of {num_partitions} is empty: {where} holds {len(items)} {noun}, fewer than "
            f"--num-partitions {num_partitions}; use --num-partitions {len(items)} or fewer"
        )
    return selected


def read_partitioning(dataset_dir: str | os.PathLike) -> dict | None:
    """The ``partitions.json`` record of a dataset root, or None when there is none (or it is unreadable)."""
    try:
        record = json.loads((Path(dataset_dir) / PARTITIONS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("num_partitions"), int):
        return None
    return record


def existing_shards(res_dirs: Iterable[Path]) -> dict[int, list[Path]]:
    """``partition_NNNN.zip`` files in ``res_dirs`` by partition index."""
    found: dict[int, list[Path]] = {}
    for res_dir in res_dirs:
        if res_dir.is_dir():
            for path in res_dir.iterdir():
                match = _SHARD_NAME.fullmatch(path.name)
                if match:
                    found.setdefault(int(match.group(1)), []).append(path)
    return found


def check_partitioning(
    output_dir: str | os.PathLike,  # Dataset root.
    specs: Sequence[FrameSpec],  # Output sizes of this run.
    partitions: Sequence[int],  # Partitions this run writes.
    num_partitions: int,  # Size of the split.
    num_inputs: int,  # Inputs (videos, clips, ...) of the whole split.
    tool: str,  # Tool name, recorded.
    noun: str,  # What an input is ("videos"), recorded.
    overwrite: bool = False,  # This run replaces its own partitions' shards.
    settings: dict | None = None,  # Further settings that all partitions must share (recorded, compared).
    remove_stale: bool = False,  # With overwrite: delete shards of partitions >= num_partitions instead of refusing.
) -> dict:
    """Check that this run's split matches the shards already in ``output_dir`` (and its ``partitions.json``);
    returns the record for ``write_partitioning`` (``info`` reads it to find missing partitions).

    Shards of another split (a different ``num_partitions`` or different ``settings``) must not end up mixed with
    this run's: such a run is refused with a ``ConversionError`` naming a shard, unless the only shards in the way
    are the ones this run replaces with ``overwrite`` (or, with ``remove_stale``, shards of partitions beyond
    ``num_partitions``, which are then deleted).
    """
    output_dir = Path(output_dir)
    recorded = read_partitioning(output_dir)
    res_dirs = {spec.shard(output_dir, 0).parent for spec in specs}
    existing = existing_shards(res_dirs)
    settings = dict(settings or {})
    mismatch = []
    if recorded is not None:
        if recorded["num_partitions"] != num_partitions:
            mismatch.append(f"--num-partitions {recorded['num_partitions']}")
        recorded_settings = recorded.get("settings", {})
        for key in sorted(set(settings) | set(recorded_settings)):  # Both ways: an optional setting may be absent.
            if recorded_settings.get(key) != settings.get(key):
                mismatch.append(f"{key} {recorded_settings.get(key)!r}")
    elif any(i >= num_partitions for i in existing):
        mismatch.append(f"at least {max(existing) + 1} partitions")
    if mismatch:
        what = f"{str(output_dir)!r} holds shards made with {', '.join(mismatch)}"
        mine = set(partitions)
        others = sorted(p for i, paths in existing.items() if i not in mine for p in paths)
        if (
            others
            and remove_stale
            and overwrite
            and all(int(_SHARD_NAME.fullmatch(p.name).group(1)) >= num_partitions for p in others)
        ):
            for path in others:
                print(f"Removing {path}: partition beyond --num-partitions {num_partitions}", flush=True)
                path.unlink()
            others = []
        if others:
            raise ConversionError(
                f"{what}, e.g. {str(others[0])!r}; they must not be mixed with this run's. Use the same settings, "
                f"an empty output directory, or delete the old shards first"
            )
        if existing and not overwrite:
            first = sorted(p for paths in existing.values() for p in paths)[0]
            raise ConversionError(f"{what}, e.g. {str(first)!r}; add --overwrite to replace them")
    return dict(tool=tool, num_partitions=num_partitions, num_inputs=num_inputs, inputs=noun, settings=settings)


def write_partitioning(output_dir: str | os.PathLike, record: dict) -> None:
    """Write the record returned by ``check_partitioning`` to ``<output_dir>/partitions.json`` atomically (after
    a partition was converted, so a failed run leaves no record)."""
    path = Path(output_dir) / PARTITIONS_FILE
    if read_partitioning(output_dir) == record:
        return
    temp = path.with_name(f".{PARTITIONS_FILE}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temp, path)


def partition_hint(partition: int, num_partitions: int, num_selected: int, num_total: int, noun: str) -> str | None:
    """One line about the other partitions after converting ``partition`` (None when there is only one)."""
    if num_partitions <= 1:
        return None
    line = f"Converted partition {partition} of {num_partitions} ({num_selected} of {num_total} {noun})"
    filled = min(num_partitions, num_total)
    others = [i for i in range(filled) if i != partition]
    if others:
        line += (
            f"; for the rest run --partition {format_indices(others)}, or all at once: --num-partitions 1 --overwrite"
        )
    if filled < num_partitions:
        line += f" (partitions {format_indices(range(filled, num_partitions))} are empty)"
    return line


def print_partition_hint(partition: int, num_partitions: int, num_selected: int, num_total: int, noun: str) -> None:
    line = partition_hint(partition, num_partitions, num_selected, num_total, noun)
    if line is not None:
        print(line, flush=True)
