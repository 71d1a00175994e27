"""Tests of the dataset tools: videos, frames and YouTube converters, info, safety of shard writes."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import av
import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

from dataset_tools import info, make_dataset_from_frames, make_dataset_from_videos, make_dataset_from_youtube
from dataset_tools import make_synthetic_dataset as synthetic_tool
from dataset_tools.make_dataset_from_youtube import (
    interval_clip_name,
    load_clip_config,
    make_dataset_from_clips,
    parse_interval,
    parse_time,
)
from dataset_tools.pipeline import FrameSpec
from dataset_tools.utils import center_crop_and_resize, partition_items, shard_path
from long_video_gan.dataset import VideoDataset, VideoDatasetTwoRes
from tests.data_utils import bikes_path, make_lavfi_video, make_tiny_dataset

REPO = Path(__file__).resolve().parents[1]


def _listing(shard):
    with zipfile.ZipFile(shard) as zf:
        names = zf.namelist()
        return json.loads(zf.read("frame_paths.json")), names


def _invoke(command, args):
    result = CliRunner().invoke(command, [str(a) for a in args], catch_exceptions=False)
    return result


# ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tool", [make_dataset_from_videos, make_dataset_from_frames, make_dataset_from_youtube, info, synthetic_tool]
)
def test_help(tool):
    result = _invoke(tool.main, ["--help"])
    assert result.exit_code == 0
    assert "Example" in result.output and f"python -m dataset_tools.{tool.__name__.split('.')[-1]}" in result.output


def test_center_crop_and_resize_box():
    # 640x272 -> 36x64: s_h = 7.56 < s_w = 10, so the width is cropped to 64 * 272 / 36 = 483.56 px from
    # left = floor(78.22) = 78; PIL rounds the right edge 561.56 to 562.
    rng = np.random.default_rng(0)
    image = PIL.Image.fromarray(rng.integers(0, 256, (272, 640, 3), dtype=np.uint8))
    expected = image.crop((78, 0, 562, 272)).resize((64, 36), PIL.Image.LANCZOS)
    assert np.array_equal(np.asarray(center_crop_and_resize(image, 36, 64)), np.asarray(expected))
    # Tall source -> height cropped: 100x300 to 16x16: crop 100 px from top floor(100) = 100.
    tall = PIL.Image.fromarray(rng.integers(0, 256, (300, 100, 3), dtype=np.uint8))
    expected = tall.crop((0, 100, 100, 200)).resize((16, 16), PIL.Image.LANCZOS)
    assert np.array_equal(np.asarray(center_crop_and_resize(tall, 16, 16)), np.asarray(expected))


def test_partitioning_and_video_order(tmp_path):
    items = list(range(11))
    chunks = [partition_items(items, p, 3) for p in range(3)]
    assert chunks == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    for name in ("a-b.mp4", "a/b.mp4", "a/c.MOV", "z.txt", "b.wmv"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    rel = [r.as_posix() for _, r in make_dataset_from_videos.list_videos(tmp_path)]
    assert rel == ["a/b.mp4", "a/c.MOV", "a-b.mp4", "b.wmv"]  # Component-wise, unlike plain string order.
    result = _invoke(
        make_dataset_from_videos.main,
        [tmp_path, tmp_path / "o", "--partition", 3, "--num-partitions", 3, "--height", 36, "--width", 64],
    )
    assert result.exit_code != 0 and "--partition must be in [0, 2], got 3" in result.output
    result = _invoke(make_dataset_from_videos.main, [tmp_path, tmp_path / "o", "--height", 36])
    assert result.exit_code != 0 and "--height and --width must be given together" in result.output


# ----------------------------------------------------------------------------
# Videos tool.


def test_videos_tool_bikes_two_res(tmp_path):
    src = tmp_path / "videos"
    src.mkdir()
    os.symlink(bikes_path(), src / "bikes.mp4")
    result = _invoke(
        make_dataset_from_videos.main,
        [
            src,
            tmp_path / "data",
            "--height",
            144,
            "--width",
            256,
            "--resolution",
            "36x64",
            "--trim-end",
            9,
            "--num-partitions",
            1,
            "--workers",
            1,
        ],
    )
    assert result.exit_code == 0, result.output
    # bikes.mp4 is 25 fps and 10 s long: --trim-end 9 keeps t <= 1 s, i.e. 26 frames.
    dataset = VideoDatasetTwoRes(tmp_path / "data", 26, 36, 64, 144, 256)
    assert dataset.clips == [(0, "bikes", 26)]
    item = dataset[0]
    with av.open(str(bikes_path())) as container:
        source = [f.to_image() for f, _ in zip(container.decode(video=0), range(26))]
    for t in (0, 25):
        for video, (h, w) in ((item["lr_video"], (36, 64)), (item["hr_video"], (144, 256))):
            expected = np.asarray(center_crop_and_resize(source[t], h, w), dtype=np.float64)
            got = (video[:, t].permute(1, 2, 0).numpy() + 1) * 127.5
            assert np.abs(got - expected).mean() < 1.0  # Same frame, JPEG q100 error only.
    down = torch.nn.functional.avg_pool3d(item["hr_video"], (1, 4, 4))
    assert (down - item["lr_video"]).abs().mean() < 0.05


def test_unreadable_video_is_skipped(tmp_path):
    src = tmp_path / "videos"
    make_lavfi_video(src / "good.mp4", seconds=0.5, size="64x36")
    (src / "broken.mp4").write_bytes(b"this is not a video")
    result = CliRunner().invoke(
        make_dataset_from_videos.main,
        [
            str(src),
            str(tmp_path / "data"),
            "--height",
            "36",
            "--width",
            "64",
            "--num-partitions",
            "1",
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 0
    assert "WARNING" in result.stderr and "broken.mp4" in result.stderr and "skipped" in result.stderr
    listing, _ = _listing(shard_path(tmp_path / "data", 0, 36, 64))
    assert list(listing) == ["good"] and len(listing["good"]) == 15


def test_videos_mapping_to_one_clip_are_refused_up_front(tmp_path):
    src = tmp_path / "videos"
    make_lavfi_video(src / "a.mp4", seconds=0.2, size="64x36")
    shutil.copy(src / "a.mp4", src / "a.mov")  # Same clip path "a" once the extension is dropped.
    make_lavfi_video(src / "b.mp4", seconds=0.2, size="64x36")
    args = [str(src), str(tmp_path / "data"), "--height", "36", "--width", "64", "--num-partitions", "2"]
    for partition in ("0", "1"):  # Also the partition that does not hold the clashing videos.
        result = CliRunner().invoke(make_dataset_from_videos.main, args + ["--partition", partition])
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output  # An Error: line.
        assert "a.mov and a.mp4" in result.output and "same clip path 'a'" in result.output, result.output
    assert not list((tmp_path / "data").rglob("*.zip"))


def test_fps_resampling_and_trim(tmp_path):
    src = tmp_path / "videos"
    make_lavfi_video(src / "v.mp4", seconds=2, size="64x36", fps=30)  # Frames at t = k / 30, k < 60.
    runs = {"plain": [], "fps15": ["--fps", 15], "fps60": ["--fps", 60], "trim": ["--trim-start", 1.0]}
    listings = {}
    for name, extra in runs.items():
        result = _invoke(
            make_dataset_from_videos.main,
            [src, tmp_path / name, "--height", 36, "--width", 64, "--num-partitions", 1, "--workers", 1, *extra],
        )
        assert result.exit_code == 0, result.output
        listings[name] = shard_path(tmp_path / name, 0, 36, 64)
    counts = {name: len(_listing(path)[0]["v"]) for name, path in listings.items()}
    assert counts == {"plain": 60, "fps15": 30, "fps60": 119, "trim": 30}
    with (
        zipfile.ZipFile(listings["plain"]) as plain,
        zipfile.ZipFile(listings["fps15"]) as half,
        zipfile.ZipFile(listings["fps60"]) as double,
        zipfile.ZipFile(listings["trim"]) as trim,
    ):
        for k in (0, 7, 29):  # Nearest source frame in time: exactly the same JPEG bytes.
            assert half.read(f"v/frame_{k:06d}.jpg") == plain.read(f"v/frame_{2 * k:06d}.jpg")
            assert trim.read(f"v/frame_{k:06d}.jpg") == plain.read(f"v/frame_{30 + k:06d}.jpg")
        assert double.read("v/frame_000041.jpg") == plain.read("v/frame_000020.jpg")


def test_long_edge_and_source_size_write_flat(tmp_path):
    src = tmp_path / "videos"
    make_lavfi_video(src / "v.mp4", seconds=0.2, size="64x36")
    for name, extra, size in (("long", ["--long-edge", 32], (32, 18)), ("source", [], (64, 36))):
        result = _invoke(make_dataset_from_videos.main, [src, tmp_path / name, "--num-partitions", 1, *extra])
        assert result.exit_code == 0, result.output
        shard = tmp_path / name / "partition_0000.zip"  # No HHHHxWWWW level without a fixed size.
        with zipfile.ZipFile(shard) as zf:
            assert PIL.Image.open(zf.open("v/frame_000000.jpg")).size == size
    result = _invoke(make_dataset_from_videos.main, [src, tmp_path / "x", "--long-edge", 32, "--resolution", "36x64"])
    assert result.exit_code != 0 and "--long-edge cannot be combined" in result.output


def test_rerun_skips_and_overwrite_replaces(tmp_path):
    src = tmp_path / "videos"
    make_lavfi_video(src / "v.mp4", seconds=0.3, size="64x36")
    args = [src, tmp_path / "data", "--height", 36, "--width", 64, "--num-partitions", 1, "--workers", 1]
    assert _invoke(make_dataset_from_videos.main, args).exit_code == 0
    shard = shard_path(tmp_path / "data", 0, 36, 64)
    first, stat = shard.read_bytes(), shard.stat()
    result = _invoke(make_dataset_from_videos.main, args)
    assert "Skipping" in result.output and shard.stat().st_mtime_ns == stat.st_mtime_ns
    result = _invoke(make_dataset_from_videos.main, [*args, "--overwrite"])
    assert result.exit_code == 0 and shard.read_bytes() == first  # Rewritten, identical, no duplicates.
    assert sorted(p.name for p in (tmp_path / "data").rglob("*")) == [
        "0036x0064",
        "partition_0000.zip",
        "partitions.json",
    ]


def test_killed_run_leaves_no_complete_shard(tmp_path):
    src = tmp_path / "videos"
    for i in range(4):
        make_lavfi_video(src / f"v{i}.mp4", source="testsrc2", seconds=3, size="320x180", fps=30)
    out = tmp_path / "data"
    args = [
        sys.executable,
        "-m",
        "dataset_tools.make_dataset_from_videos",
        str(src),
        str(out),
        "--height",
        "144",
        "--width",
        "256",
        "--resolution",
        "36x64",
        "--num-partitions",
        "1",
        "--workers",
        "1",
    ]
    process = subprocess.Popen(
        args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        partial = []
        while time.monotonic() < deadline and process.poll() is None:
            partial = [p for p in out.rglob("*.partial") if p.stat().st_size > 10000]
            if partial:
                break
            time.sleep(0.005)
        assert partial, "the tool finished or stalled before a shard was half written"
        os.killpg(process.pid, signal.SIGKILL)  # The tool's own process group.
    finally:
        process.wait()
    assert list(out.rglob("*.zip")) == []  # Nothing that looks like a complete shard.
    assert _invoke(make_dataset_from_videos.main, args[3:]).exit_code == 0
    for res in ("0036x0064", "0144x0256"):
        assert sorted(p.name for p in (out / res).iterdir()) == ["partition_0000.zip"]
        listing, names = _listing(out / res / "partition_0000.zip")
        assert len(names) == len(set(names)) == 4 * 90 + 1
        assert {k: len(v) for k, v in listing.items()} == {f"v{i}": 90 for i in range(4)}
    assert sorted(p.name for p in out.iterdir()) == ["0036x0064", "0144x0256", "partitions.json"]  # No scratch.
    assert len(VideoDatasetTwoRes(out, 8, 36, 64, 144, 256)) == 4


def test_parallel_workers_match_serial(tmp_path):
    src = tmp_path / "videos"
    for i, source in enumerate(("testsrc2", "mandelbrot", "life")):
        make_lavfi_video(src / f"{source}.mp4", source=source, seconds=0.4, size="96x54")
    for workers in (1, 2):
        result = _invoke(
            make_dataset_from_videos.main,
            [src, tmp_path / f"w{workers}", "--height", 36, "--width", 64, "--num-partitions", 1, "--workers", workers],
        )
        assert result.exit_code == 0, result.output
    assert shard_path(tmp_path / "w1", 0, 36, 64).read_bytes() == shard_path(tmp_path / "w2", 0, 36, 64).read_bytes()


# ----------------------------------------------------------------------------
# Frames tool.


def test_frames_tool(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)

    def image(mode="RGB", size=(80, 40)):
        return PIL.Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)

    src = tmp_path / "frames"
    for path, mode in (
        ("top.png", "RGB"),
        ("clipA/10.png", "RGB"),
        ("clipA/2.png", "RGB"),
        ("clipB/a.png", "RGBA"),
        ("clipB/b.jpg", "L"),
        ("clipB/a.jpg", "RGB"),
    ):
        (src / path).parent.mkdir(parents=True, exist_ok=True)
        image(mode).save(src / path)
    (src / "clipC").mkdir()
    (src / "clipC" / "bad.png").write_bytes(b"not an image")
    monkeypatch.chdir(tmp_path)  # Relative input path: the listing keeps it as given.
    result = CliRunner().invoke(
        make_dataset_from_frames.main,
        ["frames", "data", "--resolution", "36x64", "--resolution", "18x32", "--num-partitions", "1", "--workers", "1"],
    )
    assert result.exit_code == 0, result.output
    cache = json.loads((src / "frame_paths.json").read_text())
    assert cache[0] == [".", ["frames/top.png"]] and cache[1] == [
        "clipA",
        ["frames/clipA/10.png", "frames/clipA/2.png"],
    ]
    assert "collides" in result.stderr and "bad.png" in result.stderr
    assert not (tmp_path / "data" / "0144x0256").exists()  # Default size not used when --resolution is given.
    for h, w in ((36, 64), (18, 32)):
        listing, _ = _listing(shard_path(tmp_path / "data", 0, h, w))
        assert listing == {".": ["top.jpg"], "clipA": ["10.jpg", "2.jpg"], "clipB": ["a.jpg", "b.jpg"]}
        dataset = VideoDataset(tmp_path / "data", 1, h, w)
        assert [c[1] for c in dataset.clips] == [".", "clipA", "clipB"] and dataset[0]["video"].shape == (3, 1, h, w)
    with zipfile.ZipFile(shard_path(tmp_path / "data", 0, 36, 64)) as zf:
        assert PIL.Image.open(zf.open("clipB/b.jpg")).mode == "RGB"  # Grayscale source written as RGB.


# ----------------------------------------------------------------------------
# YouTube tool (parsing and clip extraction only; never the network).


def test_youtube_time_parsing():
    assert parse_time("42") == 42 and parse_time("5:57") == 357 and parse_time("1:02:03") == 3723
    assert parse_interval("0:24 5:57") == (24, 357) and interval_clip_name("0:24 5:57") == "0_24-5_57"
    for bad in ("1:2:3:4", "ab", "-3", "1::2", ""):
        with pytest.raises(ValueError, match=r"bad time string .* expected \[\[H:\]M:\]S"):
            parse_time(bad)
    with pytest.raises(ValueError, match="bad time string '0:2x'"):
        parse_interval("0:01 0:2x")
    with pytest.raises(ValueError, match="bad interval '0:05 0:04': the end must be after the start"):
        parse_interval("0:05 0:04")
    with pytest.raises(ValueError, match="bad interval '0:05'"):
        parse_interval("0:05")


def test_youtube_configs(tmp_path):
    configs = REPO / "dataset_tools" / "youtube_configs"
    for name, videos, clips in (("horseback", 44, 66), ("biking", 28, 1202)):
        items = load_clip_config(configs / f"{name}.json")
        assert len(items) == clips and len({v for v, _ in items}) == videos
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"abc": ["0:01 0:0x"]}))
    result = _invoke(make_dataset_from_youtube.main, [bad, tmp_path / "o", tmp_path / "cache"])
    assert result.exit_code != 0 and "video 'abc'" in result.output and "bad time string '0:0x'" in result.output


def test_youtube_clip_extraction_local(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    make_lavfi_video(cache / "vidA.mp4", seconds=3, size="64x36", fps=30)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"vidA": ["0:01 0:02", "0:00 0:01"], "vidB": ["0:00 0:10"]}))
    import yt_dlp

    def no_network(*args, **kwargs):
        raise AssertionError("the test must not download anything")

    monkeypatch.setattr(yt_dlp, "YoutubeDL", no_network)
    # Partition 0 of 2 holds vidA's two intervals; only vidA (cached) is needed, so nothing is downloaded.
    result = _invoke(
        make_dataset_from_youtube.main,
        [
            config,
            tmp_path / "data",
            cache,
            "--resolution",
            "36x64",
            "--partition",
            0,
            "--num-partitions",
            2,
            "--workers",
            1,
        ],
    )
    assert result.exit_code == 0, result.output
    listing, _ = _listing(shard_path(tmp_path / "data", 0, 36, 64))
    assert {k: len(v) for k, v in listing.items()} == {"vidA/0_00-0_01": 31, "vidA/0_01-0_02": 31}
    written = make_dataset_from_clips(
        [("vidA", "0:02 0:03")],
        {"vidA": cache / "vidA.mp4"},
        tmp_path / "d2",
        [FrameSpec(36, 64)],
        partition=0,
        workers=1,
    )
    assert len(_listing(written[0])[0]["vidA/0_02-0_03"]) == 30  # The video ends at 2.967 s.


# ----------------------------------------------------------------------------
# Info and Slurm.


def test_info_tool(tmp_path):
    root = make_tiny_dataset(tmp_path, num_videos=2, num_frames=[10, 30], resolutions=((36, 64), (18, 32)))
    result = _invoke(info.main, [root])
    assert result.exit_code == 0, result.output
    assert "0036x0064: 1 shards, 2 clips, 40 frames" in result.output and "OK" in result.output
    assert "min 10" in result.output and "max 30" in result.output
    shard = shard_path(root, 0, 18, 32)
    listing, _ = _listing(shard)
    listing["video_0000"].append("frame_999999.jpg")
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(shard, "a") as zf:
        zf.writestr("frame_paths.json", json.dumps(listing))  # Duplicate name: readers take the last one.
    (shard.parent / "partition_0001.zip.1234abcd.partial").write_bytes(b"")
    result = CliRunner().invoke(info.main, [str(root)])
    assert result.exit_code == 1
    assert "1 listed frames are missing, e.g. 'video_0000/frame_999999.jpg'" in result.output
    assert "1 duplicate entries" in result.output and "interrupted run" in result.output
    assert "0036x0064 and 0018x0032 list different partitions, clips or frames" in result.output


def test_sbatch_script_runs_each_partition(tmp_path):
    script = REPO / "dataset_tools" / "make_dataset_sbatch.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/bash\nshift 5\nexec "$@"\n')  # Drop "-N 1 -n 1 --exclusive".
    (bin_dir / "python").write_text(f'#!/bin/bash\nexec {sys.executable} "$@"\n')
    (bin_dir / "python").chmod(0o755)
    (bin_dir / "srun").chmod(0o755)
    src = tmp_path / "videos"
    for i in range(3):
        make_lavfi_video(src / f"v{i}.mp4", seconds=0.2, size="64x36")
    env = dict(
        os.environ,
        PATH=f"{bin_dir}:{os.environ['PATH']}",
        SRC_DIR=str(src),
        DST_DIR=str(tmp_path / "out"),
        NUM_PARTITIONS="2",
        CONDA_ENV="",
        EXTRA_ARGS="--height 36 --width 64",
        SLURM_CPUS_PER_TASK="1",
    )
    done = subprocess.run(["bash", str(script)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    shards = sorted(p.name for p in (tmp_path / "out" / "0036x0064").iterdir())
    assert shards == ["partition_0000.zip", "partition_0001.zip"]  # Indices 0..N-1 only.
    assert len(VideoDataset(tmp_path / "out", 2, 36, 64)) == 3


def test_synthetic_tool_cli(tmp_path):
    result = _invoke(
        synthetic_tool.main,
        [tmp_path / "s", "--num-videos", 2, "--num-frames", 5, "--resolution", "18x32", "--num-partitions", 2],
    )
    assert result.exit_code == 0, result.output
    assert len(VideoDataset(tmp_path / "s", 5, 18, 32)) == 2
    result = _invoke(synthetic_tool.main, [tmp_path / "s", "--resolution", "18by32"])
    assert result.exit_code != 0 and "--resolution" in result.output and "'18by32'" in result.output
    shutil.rmtree(tmp_path / "s")


# ----------------------------------------------------------------------------
# What a new user hit (issue 19): failed inputs, partitions, synthetic reruns, bad output directories, warnings.


def _video_args(src, out, *extra):
    return [src, out, "--height", 36, "--width", 64, "--workers", 1, *extra]


def test_all_inputs_failed_writes_no_shard_and_fails(tmp_path):
    src = tmp_path / "videos"
    src.mkdir()
    (src / "broken.mp4").write_bytes(b"this is not a video")
    (src / "empty.mov").write_bytes(b"")
    out = tmp_path / "data"
    for _ in range(2):  # A rerun tries again instead of skipping an empty shard.
        result = CliRunner().invoke(
            make_dataset_from_videos.main, [str(a) for a in _video_args(src, out)] + ["--num-partitions", "1"]
        )
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
        assert "Error: nothing converted: 2 of 2 inputs failed" in result.output, result.output
        assert "broken.mp4" in result.stderr and "Skipping" not in result.output
        assert not out.exists()  # No shard, no partitions.json, no empty directories.
    # An empty shard left by an older version is replaced, not skipped.
    make_lavfi_video(src / "good.mp4", seconds=0.2, size="64x36")
    from dataset_tools.utils import write_shard

    write_shard(shard_path(out, 0, 36, 64), [])
    result = CliRunner().invoke(
        make_dataset_from_videos.main, [str(a) for a in _video_args(src, out)] + ["--num-partitions", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "Replacing" in result.output and "2 of 3 inputs failed" in result.stderr
    assert list(_listing(shard_path(out, 0, 36, 64))[0]) == ["good"]


def test_youtube_offline_download_fails_without_shard(tmp_path, monkeypatch):
    import yt_dlp

    class Offline:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *args):
            return False

        def download(self, urls):
            raise OSError("Unable to download webpage: <urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(yt_dlp, "YoutubeDL", Offline)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"vidA": ["0:01 0:02", "0:03 0:04"]}))
    result = CliRunner().invoke(
        make_dataset_from_youtube.main,
        [str(config), str(tmp_path / "data"), str(tmp_path / "cache"), "--num-partitions", "1", "--workers", "1"],
    )
    assert result.exit_code == 1, result.output
    assert "nothing converted: 2 of 2 inputs failed" in result.output and "download of 'vidA' failed" in result.stderr
    assert not (tmp_path / "data").exists()


def test_info_reports_empty_shards_and_undecodable_frames(tmp_path):
    from dataset_tools.utils import write_shard

    empty = tmp_path / "empty"
    write_shard(shard_path(empty, 0, 36, 64), [])
    result = CliRunner().invoke(info.main, [str(empty)])
    assert result.exit_code == 1 and "OK" not in result.output
    assert "1 problem:" in result.output and "lists no clips" in result.output, result.output

    root = make_tiny_dataset(tmp_path, num_videos=2, num_frames=12, resolutions=((36, 64),))
    shard = shard_path(root, 0, 36, 64)
    with zipfile.ZipFile(shard) as zf:
        entries = [(i, zf.read(i)) for i in zf.infolist()]
    with zipfile.ZipFile(shard, "w", zipfile.ZIP_STORED) as zf:  # Garbage in the middle of a clip.
        for item, data in entries:
            zf.writestr(
                item, b"\xff\xd8garbage, not a JPEG" if item.filename == "video_0001/frame_000005.jpg" else data
            )
    assert _invoke(info.main, [root]).exit_code == 0  # Only each clip's first and last frame are decoded by default.
    result = CliRunner().invoke(info.main, [str(root), "--decode"])
    assert result.exit_code == 1, result.output
    assert "'video_0001/frame_000005.jpg' does not decode" in result.output and str(shard) in result.output
    assert "--decode" in _invoke(info.main, ["--help"]).output


def test_partition_hint_and_info_reports_missing_partitions(tmp_path):
    src = tmp_path / "videos"
    make_lavfi_video(src / "a.mp4", seconds=0.2, size="64x36")
    make_lavfi_video(src / "b.mp4", seconds=0.2, size="64x36")
    out = tmp_path / "data"
    result = _invoke(make_dataset_from_videos.main, _video_args(src, out))  # Default --num-partitions 10.
    assert result.exit_code == 0, result.output
    assert "Converted partition 0 of 10 (1 of 2 videos); for the rest run --partition 1" in result.output
    assert "partitions 2..9 are empty" in result.output
    result = CliRunner().invoke(info.main, [str(out)])
    assert result.exit_code == 1 and "missing partition 1 (partitions.json: 2 videos in 10 partitions)" in result.output
    result = CliRunner().invoke(
        make_dataset_from_videos.main, [str(a) for a in _video_args(src, out, "--partition", 5)]
    )
    assert (
        result.exit_code == 1
        and "partition 5 of 10 is empty" in result.output
        and "--num-partitions 2" in result.output
    )
    assert _invoke(make_dataset_from_videos.main, _video_args(src, out, "--partition", 1)).exit_code == 0
    assert _invoke(info.main, [out]).exit_code == 0
    # Another split into the same directory would mix shards: refused, naming a shard in the way.
    result = CliRunner().invoke(
        make_dataset_from_videos.main, [str(a) for a in _video_args(src, out, "--num-partitions", 1)]
    )
    assert result.exit_code == 1 and "--num-partitions 10" in result.output and "partition_0001.zip" in result.output


def _synthetic(out, *extra):
    return CliRunner().invoke(
        synthetic_tool.main,
        [
            str(out),
            "--num-videos",
            "3",
            "--num-frames",
            "4",
            "--resolution",
            "18x32",
            "--workers",
            "1",
            *[str(e) for e in extra],
        ],
    )


def test_synthetic_tool_reruns_partitions_and_overwrite(tmp_path):
    default = next(p for p in synthetic_tool.main.params if p.name == "num_frames").default
    assert default >= 128  # The low-res phase trains on 128-frame clips.
    whole = tmp_path / "whole"
    assert _synthetic(whole, "--num-partitions", 3).exit_code == 0
    # One partition at a time gives the same shards; a killed run's *.partial files are cleaned up.
    parts = tmp_path / "parts"
    (parts / "0018x0032").mkdir(parents=True)
    stale = parts / "0018x0032" / "partition_0001.zip.0123abcd.partial"
    stale.write_bytes(b"left by kill -9")
    for partition in (1, 0, 2):
        result = _synthetic(parts, "--num-partitions", 3, "--partition", partition)
        assert result.exit_code == 0, result.output
    assert "Converted partition 2 of 3 (1 of 3 videos)" in result.output
    assert not stale.exists()
    for p in range(3):
        assert shard_path(parts, p, 18, 32).read_bytes() == shard_path(whole, p, 18, 32).read_bytes()
    # Other settings into an existing dataset: refused; --overwrite replaces it.
    before = shard_path(whole, 0, 18, 32).read_bytes()
    result = _synthetic(whole, "--num-partitions", 3, "--seed", 1)
    assert result.exit_code == 1 and "seed 0" in result.output and "--overwrite" in result.output, result.output
    assert shard_path(whole, 0, 18, 32).read_bytes() == before
    result = _synthetic(whole, "--num-partitions", 3)  # Same settings: a rerun skips the finished shards.
    assert result.exit_code == 0 and "Skipping" in result.output
    # Fewer partitions on a rerun: refused, or with --overwrite the extra shard is removed.
    result = _synthetic(whole, "--num-partitions", 2)
    assert result.exit_code == 1 and "--num-partitions 3" in result.output
    result = _synthetic(whole, "--num-partitions", 2, "--overwrite")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (whole / "0018x0032").iterdir()) == ["partition_0000.zip", "partition_0001.zip"]
    assert _invoke(info.main, [whole]).exit_code == 0 and len(VideoDataset(whole, 4, 18, 32)) == 3
    # --max-freq: a band-limited world into the same directory is another setting; a non-positive limit is refused.
    result = _synthetic(whole, "--num-partitions", 2, "--max-freq", 3)
    assert result.exit_code == 1 and "max_freq None" in result.output, result.output
    result = _synthetic(tmp_path / "bad", "--max-freq", 0)
    assert result.exit_code == 2 and "--max-freq" in result.output and not (tmp_path / "bad").exists()


def test_output_under_a_file_gives_one_line(tmp_path):
    src = tmp_path / "videos"
    make_lavfi_video(src / "v.mp4", seconds=0.2, size="64x36")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    for tool, args in (
        (make_dataset_from_videos.main, _video_args(src, blocker / "out", "--num-partitions", 1)),
        (synthetic_tool.main, [blocker / "out", "--num-videos", 1, "--num-frames", 2, "--resolution", "18x32"]),
    ):
        result = CliRunner().invoke(tool, [str(a) for a in args])
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
        assert f"Error: cannot write to the output directory '{blocker / 'out'}'" in result.output, result.output


def _unprivileged() -> list[str]:
    """Command prefix under which permission bits apply: none for a normal user; for root, setpriv dropping the
    capabilities that bypass them (skips the test where that is impossible)."""
    if os.geteuid() != 0:
        return []
    prefix = [
        "setpriv",
        "--bounding-set",
        "-dac_override,-dac_read_search",
        "--inh-caps",
        "-dac_override,-dac_read_search",
    ]
    if shutil.which("setpriv") is None or subprocess.run([*prefix, "true"]).returncode != 0:
        pytest.skip("running as root without setpriv: permission bits cannot be enforced")
    return prefix


def test_read_only_directories_give_one_line(tmp_path):
    prefix = _unprivileged()
    src = tmp_path / "videos"
    make_lavfi_video(src / "v.mp4", seconds=0.2, size="64x36")
    frames = tmp_path / "frames"
    (frames / "clip").mkdir(parents=True)
    PIL.Image.new("RGB", (64, 36), (10, 20, 30)).save(frames / "clip" / "0.png")
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    for path in (read_only, frames):
        path.chmod(0o555)
    try:
        tool = [*prefix, sys.executable, "-m"]
        videos = [*tool, "dataset_tools.make_dataset_from_videos", str(src), str(read_only)]
        done = subprocess.run(
            [*videos, "--resolution", "36x64", "--num-partitions", "1"], cwd=REPO, capture_output=True, text=True
        )
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"Error: cannot write to the output directory '{read_only}': Permission denied" in done.stderr
        assert "Traceback" not in done.stderr and list(read_only.iterdir()) == []
        # A read-only INPUT_DIR: the listing cache cannot be written there; the tool goes on without it.
        out = tmp_path / "out"
        frames_tool = [*tool, "dataset_tools.make_dataset_from_frames", str(frames), str(out), "--resolution", "36x64"]
        done = subprocess.run([*frames_tool, "--num-partitions", "1"], cwd=REPO, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "no listing cache written" in done.stdout and "Permission denied" in done.stdout
        assert list(_listing(shard_path(out, 0, 36, 64))[0]) == ["clip"] and not (frames / "frame_paths.json").exists()
        done = subprocess.run(
            [*frames_tool, "--wait-for-list-file"], cwd=REPO, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 1 and "is read-only, so no listing cache" in done.stderr, done.stdout + done.stderr
    finally:
        for path in (read_only, frames):
            path.chmod(0o755)


def test_odd_and_portrait_sizes_warn(tmp_path):
    src = tmp_path / "videos"
    make_lavfi_video(src / "v.mp4", seconds=0.1, size="64x36")
    result = CliRunner().invoke(
        make_dataset_from_videos.main,
        [str(src), str(tmp_path / "o"), "--resolution", "37x64", "--resolution", "64x36", "--num-partitions", "1"],
    )
    assert result.exit_code == 0, result.output
    assert "37x64 has an odd height" in result.stderr and "64x36 is portrait" in result.stderr
    result = CliRunner().invoke(make_dataset_from_videos.main, [str(a) for a in _video_args(src, tmp_path / "p")])
    assert "WARNING: output size" not in result.stderr


def test_warnings_print_on_their_own_line_under_a_progress_bar(monkeypatch):
    import io

    from tqdm import tqdm

    from dataset_tools.utils import warn

    stream = io.StringIO()  # Terminal-like: stdout and stderr on one screen.
    monkeypatch.setattr(sys, "stdout", stream)
    monkeypatch.setattr(sys, "stderr", stream)
    bar = tqdm(total=3, desc="Partition 0", file=sys.stdout, mininterval=0)
    bar.update(1)
    warn("clip 'x': cannot read the video; skipped")
    bar.close()
    text = stream.getvalue()
    before = text[: text.index("WARNING")]
    assert before.endswith(("\r", "\n")), repr(text)  # The bar line was cleared first.
    assert "\rPartition 0" in text[text.index("WARNING") :]  # ... and redrawn after.
