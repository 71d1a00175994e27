"""Summarise and check a LongVideoGAN dataset: resolutions, shards, clips, frames, clip lengths, missing entries,
missing partitions and (with ``--decode``) frames that do not decode or have the wrong size."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import zipfile
from pathlib import Path

import click
import numpy as np
import PIL.Image
from tqdm import tqdm

from dataset_tools.pipeline import existing_shards, format_indices, read_partitioning
from dataset_tools.utils import FRAME_PATHS_NAME, zip_entry_name

RESOLUTION_DIR = re.compile(r"(\d{4})x(\d{4})")

# ----------------------------------------------------------------------------


@dataclasses.dataclass
class ShardInfo:
    path: Path
    frame_paths: dict[str, list[str]] | None = None
    problems: list[str] = dataclasses.field(default_factory=list)
    num_entries: int = 0
    num_duplicates: int = 0


def inspect_shard(path: Path, size: tuple[int, int] | None = None, decode: str = "ends", bar=None) -> ShardInfo:
    """Read one shard and check that every listed frame exists; decode the first and last frame of every clip
    (``decode="ends"``), every frame (``"all"``) or none (``"none"``), checking the size (height, width) if given."""
    info = ShardInfo(path)
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            info.num_entries = len(names)
            info.num_duplicates = len(names) - len(set(names))
            if FRAME_PATHS_NAME not in names:
                info.problems.append(f"{path}: no {FRAME_PATHS_NAME} entry (incomplete shard?)")
                return info
            info.frame_paths = json.loads(zf.read(FRAME_PATHS_NAME).decode("utf-8"))
            present = set(names)
            missing = [
                zip_entry_name(clip, name)
                for clip, frames in info.frame_paths.items()
                for name in frames
                if zip_entry_name(clip, name) not in present
            ]
            if decode != "none":
                info.problems += _decode_frames(zf, path, info.frame_paths, present, size, decode == "all", bar)
    except (zipfile.BadZipFile, OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as error:
        info.problems.append(f"{path}: unreadable ({error})")
        return info
    if len(info.frame_paths) == 0:
        info.problems.append(f"{path}: lists no clips (did every input of that partition fail?)")
    if missing:
        info.problems.append(f"{path}: {len(missing)} listed frames are missing, e.g. {missing[0]!r}")
    if info.num_duplicates:
        info.problems.append(f"{path}: {info.num_duplicates} duplicate entries (readers use the last)")
    return info


def _decode_frames(zf, path, frame_paths, present, size, every: bool, bar) -> list[str]:
    """Decode listed frames (all, or each clip's first and last); returns one problem per bad clip, naming the
    first bad frame and counting the rest."""
    problems = []
    for clip, frames in frame_paths.items():
        chosen = frames if every else sorted({frames[0], frames[-1]}, key=frames.index) if frames else []
        bad = []
        for name in chosen:
            entry = zip_entry_name(clip, name)
            if entry not in present:
                continue
            try:
                with PIL.Image.open(io.BytesIO(zf.read(entry))) as image:
                    image.load()
                    shape = (image.height, image.width)
                if size is not None and shape != size:
                    bad.append(f"{entry!r} is {shape[0]}x{shape[1]}, expected {size[0]}x{size[1]}")
            except PIL.UnidentifiedImageError:
                bad.append(f"{entry!r} does not decode (not an image file)")
            except (OSError, SyntaxError, ValueError, zipfile.BadZipFile, PIL.Image.DecompressionBombError) as error:
                bad.append(f"{entry!r} does not decode ({error})")
        if bar is not None:
            bar.update(len(chosen))
        if bad:
            more = f" (and {len(bad) - 1} more bad frames in that clip)" if len(bad) > 1 else ""
            problems.append(f"{path}: frame {bad[0]}{more}")
    return problems


def find_resolution_dirs(dataset_dir: Path) -> list[Path]:
    """``HHHHxWWWW`` directories of a dataset root, or the root itself when it holds shards directly."""
    dirs = sorted(p for p in dataset_dir.iterdir() if p.is_dir() and RESOLUTION_DIR.fullmatch(p.name))
    if not dirs and any(dataset_dir.glob("*.zip")):
        dirs = [dataset_dir]
    return dirs


def length_summary(lengths: np.ndarray) -> str:
    if len(lengths) == 0:
        return "no clips"
    q = np.percentile(lengths, [0, 25, 50, 75, 100])
    return (
        f"min {int(q[0])}, p25 {q[1]:.0f}, median {q[2]:.0f}, p75 {q[3]:.0f}, max {int(q[4])}, "
        f"mean {lengths.mean():.1f}"
    )


def length_histogram(lengths: np.ndarray, num_bins: int = 8, bar_width: int = 40) -> list[str]:
    """Text histogram of clip lengths on log2-spaced bins."""
    if len(lengths) == 0:
        return []
    edges = np.unique(np.round(np.geomspace(max(1, lengths.min()), lengths.max() + 1, num_bins + 1)).astype(int))
    counts, _ = np.histogram(lengths, bins=edges)
    lines = []
    for lo, hi, count in zip(edges[:-1], edges[1:], counts):
        bar = "#" * int(round(bar_width * count / max(counts.max(), 1)))
        lines.append(f"    [{lo:>7}, {hi:>7}) frames {count:>6} {bar}")
    return lines


def describe_dataset(dataset_dir: str | os.PathLike, decode: str = "ends") -> tuple[list[str], list[str]]:
    """Return (report lines, problems) for a dataset root. ``decode``: "ends" decodes the first and last frame
    of every clip, "all" every frame (with a progress bar), "none" nothing."""
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise FileNotFoundError(f"dataset {str(dataset_dir)!r} is not a directory")
    res_dirs = find_resolution_dirs(dataset_dir)
    if not res_dirs:
        raise FileNotFoundError(f"dataset {str(dataset_dir)!r} has no HHHHxWWWW directories and no *.zip shards")
    lines, problems = [f"Dataset {dataset_dir}"], []
    listings = {}
    record = read_partitioning(dataset_dir)
    for res_dir in res_dirs:
        shards = sorted((p for p in res_dir.glob("*.zip") if p.is_file()), key=lambda p: p.stem)
        partial = sorted(p.name for p in res_dir.iterdir() if p.name.endswith(".partial"))
        match = RESOLUTION_DIR.fullmatch(res_dir.name)
        size = (int(match.group(1)), int(match.group(2))) if match else None
        bar = None
        if decode == "all":
            total = 0
            for p in shards:
                try:
                    with zipfile.ZipFile(p) as zf:
                        total += sum(len(f) for f in json.loads(zf.read(FRAME_PATHS_NAME)).values())
                except (zipfile.BadZipFile, OSError, EOFError, KeyError, ValueError):
                    pass
            bar = tqdm(total=total, desc=f"Decoding {res_dir.name}", unit="frame", leave=False, dynamic_ncols=True)
        try:
            infos = [inspect_shard(p, size, decode, bar) for p in shards]
        finally:
            if bar is not None:
                bar.close()
        lengths = np.array([len(f) for i in infos if i.frame_paths for f in i.frame_paths.values()], dtype=np.int64)
        total_size = sum(p.stat().st_size for p in shards)
        label = res_dir.name if res_dir != dataset_dir else "(root)"
        lines.append(
            f"  {label}: {len(shards)} shards, {len(lengths)} clips, {int(lengths.sum())} frames, "
            f"{total_size / 2**20:.1f} MiB"
        )
        lines.append(f"    clip lengths: {length_summary(lengths)}")
        lines += length_histogram(lengths)
        if not shards:
            problems.append(f"{res_dir}: no shards (*.zip)")
        if partial:
            problems.append(f"{res_dir}: unfinished shards from an interrupted run: {', '.join(partial)}")
        problems += missing_partitions(res_dir, record)
        for info in infos:
            problems += info.problems
        listings[label] = {i.path.stem: i.frame_paths for i in infos}
    # All resolutions must list the same partitions, clips and frames (VideoDatasetTwoRes requires it).
    labels = list(listings)
    for label in labels[1:]:
        if listings[label] != listings[labels[0]]:
            problems.append(f"{label} and {labels[0]} list different partitions, clips or frames")
    return lines, problems


def missing_partitions(res_dir: Path, record: dict | None) -> list[str]:
    """Problems for ``partition_NNNN.zip`` shards that should exist: those of the split recorded in the dataset's
    partitions.json that hold inputs, or, without a record, gaps below the highest index."""
    present = set(existing_shards([res_dir]))
    if record is not None:
        num_partitions = record["num_partitions"]
        num_inputs = record.get("num_inputs")
        filled = num_partitions if not isinstance(num_inputs, int) else min(num_partitions, num_inputs)
        expected = set(range(filled))
        why = f"partitions.json: {num_inputs} {record.get('inputs', 'inputs')} in {num_partitions} partitions"
    elif present:
        expected = set(range(max(present) + 1))
        why = "gaps in the partition numbers"
    else:
        return []
    missing = sorted(expected - present)
    if not missing:
        return []
    them = "it" if len(missing) == 1 else "them"
    indices = format_indices(missing)
    return [f"{res_dir}: missing partition {indices} ({why}); convert {them} with --partition {indices}"]


# ----------------------------------------------------------------------------


@click.command()
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--decode",
    is_flag=True,
    help="Decode every frame and check its size (about 1 ms per 144x256 frame on one core, so minutes for a "
    "large dataset; a progress bar is shown). Default: only the first and last frame of every clip.",
)
def main(dataset_dir, decode):
    """Print the resolutions, shards, clips, frames and clip-length distribution of DATASET_DIR, and check that
    every frame listed in each frame_paths.json exists, that no partition is missing and that frames decode
    (the first and last of every clip; all of them with --decode). Exits with status 1 when a problem is found.

    \b
    Examples:
      python -m dataset_tools.info datasets/horseback
      python -m dataset_tools.info datasets/horseback --decode
    """
    try:
        lines, problems = describe_dataset(dataset_dir, decode="all" if decode else "ends")
    except FileNotFoundError as error:
        raise click.ClickException(str(error))
    for line in lines:
        print(line)
    if problems:
        print(f"{len(problems)} {'problem' if len(problems) == 1 else 'problems'}:")
        for problem in problems:
            print(f"  {problem}")
        raise SystemExit(1)
    checked = "every frame decodes" if decode else "first and last frames decode (--decode checks every frame)"
    print(f"OK: every listed frame exists, {checked}.")


if __name__ == "__main__":
    main()
