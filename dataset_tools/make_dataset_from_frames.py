"""Convert directories of image frames into a LongVideoGAN dataset partition (the original's frames tool)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click
from PIL import Image

from dataset_tools import pipeline

LIST_FILE_NAME = "frame_paths.json"  # Listing cache written inside the input directory.
POLL_SECONDS = 10  # --wait-for-list-file polling interval.

# ----------------------------------------------------------------------------


def image_suffixes() -> set[str]:
    """File extensions PIL can open (lower case, with the dot)."""
    return {suffix.lower() for suffix in Image.registered_extensions()}


def scan_frames(input_dir: str) -> list[list]:
    """List every directory below ``input_dir`` holding images as ``[relative_dir, [paths]]``.

    Paths are the scanned directory joined with the file name (so they start with ``input_dir`` as given) and
    are sorted as plain strings within a directory, which defines the temporal order (``10.png`` before
    ``2.png``, as in the original); the list is sorted by ``relative_dir``.
    """
    suffixes = image_suffixes()
    listing = []
    for directory, _, files in os.walk(input_dir):
        paths = sorted(os.path.join(directory, name) for name in files if os.path.splitext(name)[1].lower() in suffixes)
        if paths:
            listing.append([os.path.relpath(directory, input_dir), paths])
    return sorted(listing, key=lambda entry: entry[0])


def load_or_scan_listing(input_dir: str, wait_for_list_file: bool = False) -> list[list]:
    """Read the listing cache ``<input_dir>/frame_paths.json``, or scan and write it atomically. With
    ``wait_for_list_file``, poll for the cache instead (another process, e.g. partition 0, writes it). A read-only
    ``input_dir`` gets no cache (a note says so; every partition then scans for itself)."""
    list_file = Path(input_dir) / LIST_FILE_NAME
    if wait_for_list_file:
        if not list_file.is_file() and not os.access(input_dir, os.W_OK):
            raise ValueError(
                f"--wait-for-list-file: input_dir {str(input_dir)!r} is read-only, so no listing cache "
                f"{LIST_FILE_NAME} can appear there; run without --wait-for-list-file"
            )
        while not list_file.is_file():
            print(f"Waiting for {list_file} ...", flush=True)
            time.sleep(POLL_SECONDS)
    if list_file.is_file():
        try:
            listing = json.loads(list_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"listing cache {str(list_file)!r} is unreadable ({error}); delete it to rescan") from None
        if not isinstance(listing, list) or not all(isinstance(e, list) and len(e) == 2 for e in listing):
            raise ValueError(
                f"listing cache {str(list_file)!r} must be a list of [relative_dir, [paths]]; delete it to rescan"
            )
        return listing
    listing = scan_frames(input_dir)
    temp = list_file.with_name(f"{LIST_FILE_NAME}.{os.getpid()}.tmp")
    try:
        temp.write_text(json.dumps(listing, indent=2), encoding="utf-8")
        os.replace(temp, list_file)
    except OSError as error:
        try:
            temp.unlink(missing_ok=True)
        except OSError:
            pass
        print(
            f"Note: no listing cache written ({list_file}: {error.strerror or error}); every partition scans "
            f"input_dir itself",
            flush=True,
        )
    return listing


def _frames_source(task: tuple, problems: list[str]):
    relative_dir, paths = task
    clip_path = Path(relative_dir).as_posix()

    def frames():
        seen: dict[str, str] = {}
        for path in paths:
            frame_name = Path(path).with_suffix(".jpg").name
            if frame_name in seen:
                problems.append(f"{path}: its output name {frame_name!r} collides with {seen[frame_name]!r}; skipped")
                continue
            try:
                with Image.open(path) as image:
                    image.load()
            except (OSError, SyntaxError, ValueError) as error:
                problems.append(f"{path}: cannot read the image ({error}); skipped")
                continue
            seen[frame_name] = path
            yield frame_name, image

    return clip_path, frames()


def make_dataset_from_frames(
    input_dir: str,  # Directory tree of frames; every directory holding images is one clip.
    output_dir: str | os.PathLike,  # Dataset root.
    specs: list[pipeline.FrameSpec],  # Output sizes.
    partition: int = 0,  # Which chunk of the sorted clip list to convert.
    num_partitions: int = 10,  # Number of chunks (numpy.array_split).
    wait_for_list_file: bool = False,  # Poll for the listing cache instead of scanning.
    workers: int = 1,  # Parallel worker processes.
    overwrite: bool = False,  # Replace existing shards (default: skip them).
) -> list[Path]:
    """Library entry point of the frames tool; returns the shards written."""
    if not Path(input_dir).is_dir():
        raise FileNotFoundError(f"input_dir {str(input_dir)!r} is not a directory")
    listing = load_or_scan_listing(str(input_dir), wait_for_list_file)
    if len(listing) == 0:
        raise FileNotFoundError(f"input_dir {str(input_dir)!r} holds no images PIL can read")
    selected = pipeline.select_partition(
        listing, partition, num_partitions, "clip directories", f"input_dir {str(input_dir)!r}"
    )
    record = pipeline.check_partitioning(
        output_dir,
        specs,
        [partition],
        num_partitions,
        len(listing),
        "make_dataset_from_frames",
        "clip directories",
        overwrite,
    )
    tasks = [(relative_dir, list(paths)) for relative_dir, paths in selected]
    written = pipeline.convert_partition(
        tasks, _frames_source, output_dir, partition, specs, workers=workers, overwrite=overwrite
    )
    pipeline.write_partitioning(output_dir, record)
    pipeline.print_partition_hint(partition, num_partitions, len(selected), len(listing), "clip directories")
    return written


# ----------------------------------------------------------------------------


@click.command()
@click.argument("input_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("output_dir", type=click.Path(file_okay=False))
@pipeline.fixed_size_options
@pipeline.partition_options
@click.option("--wait-for-list-file", is_flag=True, help=f"Poll every {POLL_SECONDS} s for the listing cache.")
@pipeline.workers_option()
@pipeline.overwrite_option
def main(
    input_dir,
    output_dir,
    height,
    width,
    resolution_list,
    partition,
    num_partitions,
    wait_for_list_file,
    workers,
    overwrite,
):
    """Convert every directory of images below INPUT_DIR (one clip per directory, frames in plain string order
    of their file names) into partition PARTITION of a dataset in OUTPUT_DIR. Frame names keep the file name
    with a .jpg suffix; JPEG quality 100, 4:4:4; non-RGB images are converted to RGB. The directory listing is
    cached in INPUT_DIR/frame_paths.json (delete it after adding frames; a read-only INPUT_DIR gets no cache).

    \b
    Examples:
      python -m dataset_tools.make_dataset_from_frames frames/ data/ --num-partitions 1
      python -m dataset_tools.make_dataset_from_frames frames/ data/ --resolution 144x256 --resolution 36x64 \\
          --partition 0 --num-partitions 4
      python -m dataset_tools.make_dataset_from_frames frames/ data/ --partition 1 --num-partitions 4 \\
          --wait-for-list-file
    """
    specs = pipeline.resolve_cli_specs(height, width, resolution_list, partition, num_partitions)
    pipeline.run_conversion(
        lambda: make_dataset_from_frames(
            input_dir,
            output_dir,
            specs,
            partition=partition,
            num_partitions=num_partitions,
            wait_for_list_file=wait_for_list_file,
            workers=workers,
            overwrite=overwrite,
        ),
        output_dir=output_dir,
    )


if __name__ == "__main__":
    main()
