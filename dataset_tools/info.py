"""Summarise and check a LongVideoGAN dataset: resolutions, shards, clips, frames, clip lengths, missing entries."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import zipfile
from pathlib import Path

import click
import numpy as np

from dataset_tools.utils import FRAME_PATHS_NAME, zip_entry_name

RESOLUTION_DIR = re.compile(r"(\d{4})x(\d{4})")

# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ShardInfo:
    path: Path
    frame_paths: dict[str, list[str]] | None = None
    problems: list[str] = dataclasses.field(default_factory=list)
    num_entries: int = 0
    num_duplicates: int = 0


def inspect_shard(path: Path) -> ShardInfo:
    """Read one shard and check that every listed frame exists."""
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
    except (zipfile.BadZipFile, OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as error:
        info.problems.append(f"{path}: unreadable ({error})")
        return info
    present = set(names)
    missing = [
        zip_entry_name(clip, name)
        for clip, frames in info.frame_paths.items()
        for name in frames
        if zip_entry_name(clip, name) not in present
    ]
    if missing:
        info.problems.append(f"{path}: {len(missing)} listed frames are missing, e.g. {missing[0]!r}")
    if info.num_duplicates:
        info.problems.append(f"{path}: {info.num_duplicates} duplicate entries (readers use the last)")
    return info


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


def describe_dataset(dataset_dir: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Return (report lines, problems) for a dataset root."""
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise FileNotFoundError(f"dataset {str(dataset_dir)!r} is not a directory")
    res_dirs = find_resolution_dirs(dataset_dir)
    if not res_dirs:
        raise FileNotFoundError(f"dataset {str(dataset_dir)!r} has no HHHHxWWWW directories and no *.zip shards")
    lines, problems = [f"Dataset {dataset_dir}"], []
    listings = {}
    for res_dir in res_dirs:
        shards = sorted((p for p in res_dir.glob("*.zip") if p.is_file()), key=lambda p: p.stem)
        partial = sorted(p.name for p in res_dir.iterdir() if p.name.endswith(".partial"))
        infos = [inspect_shard(p) for p in shards]
        lengths = np.array([len(f) for i in infos if i.frame_paths for f in i.frame_paths.values()], dtype=np.int64)
        size = sum(p.stat().st_size for p in shards)
        label = res_dir.name if res_dir != dataset_dir else "(root)"
        lines.append(
            f"  {label}: {len(shards)} shards, {len(lengths)} clips, {int(lengths.sum())} frames, "
            f"{size / 2**20:.1f} MiB"
        )
        lines.append(f"    clip lengths: {length_summary(lengths)}")
        lines += length_histogram(lengths)
        if not shards:
            problems.append(f"{res_dir}: no shards (*.zip)")
        if partial:
            problems.append(f"{res_dir}: unfinished shards from an interrupted run: {', '.join(partial)}")
        for info in infos:
            problems += info.problems
        listings[label] = {i.path.stem: i.frame_paths for i in infos}
    # All resolutions must list the same partitions, clips and frames (VideoDatasetTwoRes requires it).
    labels = list(listings)
    for label in labels[1:]:
        if listings[label] != listings[labels[0]]:
            problems.append(f"{label} and {labels[0]} list different partitions, clips or frames")
    return lines, problems


# ----------------------------------------------------------------------------------------------------------------


@click.command()
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False))
def main(dataset_dir):
    """Print the resolutions, shards, clips, frames and clip-length distribution of DATASET_DIR, and check that
    every frame listed in each frame_paths.json exists. Exits with status 1 when a problem is found.

    \b
    Example:
      python -m dataset_tools.info datasets/horseback
    """
    try:
        lines, problems = describe_dataset(dataset_dir)
    except FileNotFoundError as error:
        raise click.ClickException(str(error))
    for line in lines:
        print(line)
    if problems:
        print(f"{len(problems)} problems:")
        for problem in problems:
            print(f"  {problem}")
        raise SystemExit(1)
    print("OK: every listed frame exists.")


if __name__ == "__main__":
    main()
