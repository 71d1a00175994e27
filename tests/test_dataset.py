"""Tests of the shard format and the video datasets (long_video_gan/dataset.py)."""

import io
import json
import pickle
import warnings
import zipfile

import numpy as np
import PIL.Image
import PIL.JpegImagePlugin
import pytest
import torch

from dataset_tools.make_synthetic_dataset import iter_synthetic_frames, make_synthetic_dataset
from dataset_tools.pipeline import ConversionError
from dataset_tools.utils import ShardWriter, center_crop_and_resize, encode_jpeg, shard_path
from long_video_gan.dataset import VideoDataset, VideoDatasetPerImage, VideoDatasetTwoRes
from tests.data_utils import make_tiny_dataset

# ----------------------------------------------------------------------------
# Helpers.


def _frames(num_frames, height=36, width=64, video_index=0):
    return np.stack(list(iter_synthetic_frames(num_frames, height, width, seed=7, video_index=video_index)))


def _write(root, clips, height=36, width=64, partition=0):
    """Write {clip_path: uint8 [T, H, W, 3]} into one shard; returns the shard path."""
    with ShardWriter(shard_path(root, partition, height, width)) as writer:
        for clip, frames in clips.items():
            for i, frame in enumerate(frames):
                writer.add_frame(clip, f"frame_{i:06d}.jpg", encode_jpeg(frame))
    return shard_path(root, partition, height, width)


def _to_uint8_space(video):
    return (video.permute(1, 2, 3, 0).numpy() + 1) * 127.5  # [T, H, W, C] in [0, 255]


# ----------------------------------------------------------------------------
# Format.


def test_round_trip_pixels(tmp_path):
    frames = _frames(10)
    _write(tmp_path, {"clip": frames})
    dataset = VideoDataset(tmp_path, seq_length=10, height=36, width=64)
    video = dataset[0]["video"]
    assert video.shape == (3, 10, 36, 64) and video.dtype == torch.float32  # [C, T, H, W]
    assert video.min() >= -1 and video.max() <= 1
    error = np.abs(_to_uint8_space(video) - frames)
    assert error.mean() < 0.6 and error.max() <= 6  # JPEG q100 4:4:4 error, in 8-bit levels.
    # The mapping is exactly 2 * v / 255 - 1 on the decoded pixels.
    with zipfile.ZipFile(shard_path(tmp_path, 0, 36, 64)) as zf:
        decoded = np.array(PIL.Image.open(io.BytesIO(zf.read("clip/frame_000003.jpg"))))
    expected = torch.from_numpy(decoded).permute(2, 0, 1).float() * 2 / 255 - 1
    assert torch.equal(video[:, 3], expected)


def test_jpeg_is_q100_444(tmp_path):
    shard = _write(tmp_path, {"clip": _frames(2)})
    with zipfile.ZipFile(shard) as zf:
        image = PIL.Image.open(io.BytesIO(zf.read("clip/frame_000000.jpg")))
    assert image.format == "JPEG" and image.mode == "RGB"
    assert PIL.JpegImagePlugin.get_sampling(image) == 0  # 4:4:4
    assert all(all(q == 1 for q in table) for table in image.quantization.values())  # Quality 100.
    assert "progressive" not in image.info


def test_zip_stored_and_frame_paths_format(tmp_path):
    frames = _frames(3)
    shard = shard_path(tmp_path, 0, 36, 64)
    with ShardWriter(shard) as writer:
        writer.add_frame("caf\u00e9/b", "frame_000000.jpg", encode_jpeg(frames[0]))
        writer.add_frame(".", "top.jpg", encode_jpeg(frames[1]))
        writer.add_frame("a/x", "f1.jpg", encode_jpeg(frames[2]))
    with zipfile.ZipFile(shard) as zf:
        infos = zf.infolist()
        data = zf.read("frame_paths.json")
    assert shard.parent.name == "0036x0064" and shard.name == "partition_0000.zip"
    assert all(info.compress_type == zipfile.ZIP_STORED for info in infos)
    assert [i.filename for i in infos] == ["caf\u00e9/b/frame_000000.jpg", "top.jpg", "a/x/f1.jpg", "frame_paths.json"]
    expected = (
        '{\n  ".": [\n    "top.jpg"\n  ],\n  "a/x": [\n    "f1.jpg"\n  ],\n  "caf\\u00e9/b": [\n'
        '    "frame_000000.jpg"\n  ]\n}'
    )
    assert data == expected.encode("ascii")
    assert list(shard.parent.iterdir()) == [shard]  # No temporary file left.


def test_shard_writer_rejects_duplicates_and_aborts(tmp_path):
    shard = shard_path(tmp_path, 0, 36, 64)
    frame = encode_jpeg(_frames(1)[0])
    with pytest.raises(ValueError, match="duplicate ZIP entry 'c/f.jpg'"):
        with ShardWriter(shard) as writer:
            writer.add_frame("c", "f.jpg", frame)
            writer.add_frame("c", "f.jpg", frame)
    assert not shard.exists() and list(shard.parent.iterdir()) == []


def test_reader_rules(tmp_path):
    """*.zip directly inside only; sorted by stem; last duplicate wins; clip '.' -> bare names."""
    frames = _frames(4)
    res_dir = tmp_path / "0036x0064"
    res_dir.mkdir()
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(res_dir / "b.zip", "w") as zf:
        zf.writestr("frame_paths.json", json.dumps({"old": ["x.jpg"]}))
        zf.writestr("x.jpg", encode_jpeg(frames[0]))
        zf.writestr("x.jpg", encode_jpeg(frames[1]))  # Duplicate entry: the last one wins.
        zf.writestr("frame_paths.json", json.dumps({".": ["x.jpg"]}))
    _write(tmp_path, {"c": frames[2:4]}, partition=0)  # partition_0000.zip sorts after b.zip.
    (res_dir / "nested").mkdir()
    _write(res_dir / "nested", {"z": frames}, height=36, width=64)  # Not directly inside: ignored.
    (res_dir / "ignored.zip.1234.partial").write_bytes(b"junk")
    dataset = VideoDataset(tmp_path, seq_length=1, height=36, width=64)
    assert dataset.partition_names == ["b", "partition_0000"]
    assert [(p, c, n) for p, c, n in dataset.clips] == [(0, ".", 1), (1, "c", 2)]
    video = dataset[0]["video"]
    assert np.abs(_to_uint8_space(video)[0] - frames[1]).mean() < 1  # The second x.jpg.


# ----------------------------------------------------------------------------
# Sampling.


def test_min_video_length_and_draw_order(tmp_path):
    frames = _frames(30)
    _write(tmp_path, {"a": frames[:6], "b": frames[:9], "c": frames})
    dataset = VideoDataset(tmp_path, seq_length=4, height=36, width=64, min_spacing=2, max_spacing=5, x_flip=True)
    assert [c[1] for c in dataset.clips] == ["b", "c"]  # a has 6 < (4 - 1) * 2 + 1 = 7 frames.
    assert dataset.min_video_length == 7
    assert [c[1] for c in VideoDataset(tmp_path, 4, 36, 64, min_video_length=10).clips] == ["c"]
    full = VideoDataset(tmp_path, seq_length=30, height=36, width=64)[0]["video"]  # Clip c, all frames.
    for seed in range(6):
        torch.manual_seed(seed)
        spacing = int(torch.randint(2, min(5, 29 // 3) + 1, size=()))
        start = int(torch.randint(0, 30 - (3 * spacing + 1) + 1, size=()))
        flip = float(torch.rand(size=())) < 0.5
        torch.manual_seed(seed)
        item = dataset[1]
        assert item["spacing"] == spacing
        expected = full[:, start : start + 3 * spacing + 1 : spacing]
        assert torch.equal(item["video"], expected.flip(-1) if flip else expected)


def test_seq_length_one_and_spacing_limits(tmp_path):
    _write(tmp_path, {"a": _frames(5)})
    dataset = VideoDataset(tmp_path, seq_length=3, height=36, width=64, max_spacing=10)
    torch.manual_seed(0)
    assert {dataset[0]["spacing"] for _ in range(20)} <= {1, 2}  # (5 - 1) // (3 - 1) = 2.
    single = VideoDataset(tmp_path, seq_length=1, height=36, width=64)
    assert single[0]["video"].shape == (3, 1, 36, 64) and single[0]["spacing"] == 1


def test_two_res_pairs_frames(tmp_path):
    root = make_synthetic_dataset(tmp_path / "d", num_videos=2, num_frames=[14, 20], resolutions=((36, 64), (72, 128)))
    dataset = VideoDatasetTwoRes(root, 12, 36, 64, 72, 128, max_spacing=2, x_flip=True)
    hr_only = VideoDataset(root, seq_length=12, height=72, width=128, max_spacing=2, x_flip=True)
    sliced = VideoDatasetTwoRes(root, 12, 36, 64, 72, 128, max_spacing=2, x_flip=True, hr_frame_slice=(4, 8))
    for seed in range(4):
        torch.manual_seed(seed)
        item = dataset[1]
        torch.manual_seed(seed)
        hr = hr_only[1]["video"]
        torch.manual_seed(seed)
        part = sliced[1]
        assert torch.equal(item["hr_video"], hr)  # Same three draws as VideoDataset.
        assert part["hr_video"].shape == (3, 4, 72, 128) and torch.equal(part["hr_video"], hr[:, 4:8])
        assert torch.equal(part["lr_video"], item["lr_video"])
        down = torch.nn.functional.avg_pool3d(item["hr_video"], (1, 2, 2))
        assert (down - item["lr_video"]).abs().mean() < 0.03  # Same frames, same flip.
    assert set(item) == {"lr_video", "hr_video", "spacing"}


def test_two_res_names_first_differing_clip(tmp_path):
    frames = _frames(4)
    _write(tmp_path, {"a": frames, "b": frames, "c": frames}, 36, 64)
    _write(tmp_path, {"a": frames, "c": frames}, 72, 128)
    with pytest.raises(ValueError, match="clip 'b' of partition 'partition_0000' exists only in .*0036x0064"):
        VideoDatasetTwoRes(tmp_path, 2, 36, 64, 72, 128)
    with pytest.raises(ValueError, match="hr_frame_slice"):
        VideoDatasetTwoRes(tmp_path, 2, 36, 64, 36, 64, hr_frame_slice=(1, 5))


def test_per_image_windows(tmp_path):
    frames = _frames(6)
    _write(tmp_path, {"a": frames[:2], "b": frames, "c": frames[:3]})
    dataset = VideoDatasetPerImage(tmp_path, height=36, width=64, seq_length=3)
    assert len(dataset) == 0 + 4 + 1  # a is shorter than 3 frames.
    assert [dataset[i]["num_samples_from_source"] for i in range(5)] == [4, 4, 4, 4, 1]
    full = VideoDataset(tmp_path, seq_length=6, height=36, width=64)[0]["video"]
    assert torch.equal(dataset[2]["video"], full[:, 2:5])
    assert set(dataset[0]) == {"video", "num_samples_from_source"}
    with pytest.raises(IndexError):
        dataset[5]
    with pytest.raises(ValueError, match="no clip .* has the 7 frames of one window .* 3 clips, the longest with 6"):
        VideoDatasetPerImage(tmp_path, height=36, width=64, seq_length=7)


def test_non_rgb_frames_become_rgb(tmp_path):
    res_dir = tmp_path / "0036x0064"
    res_dir.mkdir()
    gray = PIL.Image.fromarray(_frames(1)[0]).convert("L")
    rgba = PIL.Image.fromarray(_frames(1)[0]).convert("RGBA")
    buffers = [io.BytesIO(), io.BytesIO()]
    gray.save(buffers[0], format="JPEG", quality=100)
    rgba.save(buffers[1], format="PNG")
    with zipfile.ZipFile(res_dir / "p.zip", "w") as zf:
        zf.writestr("g/0.jpg", buffers[0].getvalue())
        zf.writestr("g/1.png", buffers[1].getvalue())
        zf.writestr("frame_paths.json", json.dumps({"g": ["0.jpg", "1.png"]}))
    video = VideoDataset(tmp_path, seq_length=2, height=36, width=64)[0]["video"]
    assert video.shape == (3, 2, 36, 64)
    assert torch.equal(video[0, 0], video[1, 0])  # Grayscale: equal channels.


# ----------------------------------------------------------------------------
# Bad input.


def test_bad_dataset_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VideoDataset(tmp_path / "nope", 2, 36, 64)
    (tmp_path / "0144x0256").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no resolution directory '0036x0064'.*\['0144x0256'\]"):
        VideoDataset(tmp_path, 2, 36, 64)
    with pytest.raises(FileNotFoundError, match="0144x0256' holds no partition files"):
        VideoDataset(tmp_path, 2, 144, 256)
    with pytest.raises(ValueError, match="seq_length must be an integer >= 1, got 0"):
        VideoDataset(tmp_path, 0, 36, 64)


def test_bad_shard_errors(tmp_path):
    shard = _write(tmp_path, {"a": _frames(3)})
    good = shard.read_bytes()
    shard.write_bytes(good[: len(good) // 2])  # Truncated.
    with pytest.raises(ValueError, match="partition_0000.zip' is not a readable ZIP"):
        VideoDataset(tmp_path, 2, 36, 64)
    shard.write_bytes(b"\x00" * 100)  # Garbage.
    with pytest.raises(ValueError, match="not a readable ZIP"):
        VideoDataset(tmp_path, 2, 36, 64)
    with zipfile.ZipFile(shard, "w") as zf:
        zf.writestr("a/frame_000000.jpg", b"")
    with pytest.raises(ValueError, match="partition_0000.zip' has no frame_paths.json"):
        VideoDataset(tmp_path, 2, 36, 64)
    with zipfile.ZipFile(shard, "w") as zf:
        zf.writestr("m/0.jpg", encode_jpeg(_frames(1)[0]))
        zf.writestr("u/0.jpg", b"not a jpeg")
        zf.writestr("frame_paths.json", json.dumps({"m": ["0.jpg", "1.jpg"], "u": ["0.jpg"]}))
    with pytest.raises(FileNotFoundError, match="'m/1.jpg' in .*partition_0000.zip' is listed .* missing"):
        VideoDataset(tmp_path, 2, 36, 64)[0]
    with pytest.raises(ValueError, match="cannot decode frame 'u/0.jpg' in .*partition_0000.zip"):
        VideoDataset(tmp_path, 1, 36, 64)[1]
    with ShardWriter(shard_path(tmp_path, 0, 72, 128)) as writer:  # Frames of the wrong size.
        writer.add_frame("a", "0.jpg", encode_jpeg(_frames(1)[0]))
    with pytest.raises(ValueError, match=r"frame 'a/0.jpg' in .*0072x0128.* is 36x64, expected 72x128"):
        VideoDataset(tmp_path, 1, 72, 128)[0]


def test_all_clips_too_short(tmp_path):
    _write(tmp_path, {"a": _frames(3), "b": _frames(5)})
    with pytest.raises(ValueError, match="no clip .* has the 8 frames needed .* it has 2 clips, the longest with 5"):
        VideoDataset(tmp_path, seq_length=8, height=36, width=64)


# ----------------------------------------------------------------------------
# Processes.


def test_pickle_drops_zip_handles(tmp_path):
    root = make_tiny_dataset(tmp_path, num_videos=2, num_frames=10)
    dataset = VideoDataset(root, seq_length=4, height=36, width=64)
    torch.manual_seed(1)
    before = dataset[0]["video"]
    state = pickle.dumps(dataset)
    assert b"ZipFile" not in state
    clone = pickle.loads(state)
    torch.manual_seed(1)
    assert torch.equal(clone[0]["video"], before)


def test_dataloader_two_workers_reproducible(tmp_path):
    root = make_tiny_dataset(tmp_path, num_videos=3, num_frames=24)
    dataset = VideoDataset(root, seq_length=8, height=36, width=64, max_spacing=3, x_flip=True)

    def run(seed):
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=2, shuffle=True, num_workers=2, generator=torch.Generator().manual_seed(seed)
        )
        return [torch.cat([b["video"].flatten(), b["spacing"].float()]) for _ in range(2) for b in loader]

    first, second, other = run(5), run(5), run(6)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(first, other))


# ----------------------------------------------------------------------------
# Synthetic data.


def test_synthetic_dataset_properties(tmp_path):
    a = make_synthetic_dataset(tmp_path / "a", num_videos=2, num_frames=24, resolutions=((36, 64), (72, 128)), seed=3)
    b = make_synthetic_dataset(
        tmp_path / "b", num_videos=3, num_frames=24, resolutions=((36, 64), (72, 128)), seed=3, num_partitions=2
    )
    # Video i depends only on (seed, i).
    lr_a = VideoDatasetPerImage(a, 36, 64, seq_length=24)
    lr_b = VideoDatasetPerImage(b, 36, 64, seq_length=24)
    assert VideoDataset(b, 1, 36, 64).partition_names == ["partition_0000", "partition_0001"]
    assert torch.equal(lr_a[0]["video"], lr_b[0]["video"]) and torch.equal(lr_a[1]["video"], lr_b[1]["video"])
    prefix = np.stack(list(iter_synthetic_frames(5, 72, 128, seed=3, video_index=0)))
    longer = np.stack(list(iter_synthetic_frames(20, 72, 128, seed=3, video_index=0)))
    assert np.array_equal(prefix, longer[:5])
    # Low-res frames are Lanczos-downsampled high-res frames.
    lr = np.asarray(center_crop_and_resize(PIL.Image.fromarray(longer[3]), 36, 64)).astype(float)
    assert np.abs(_to_uint8_space(lr_a[0]["video"])[3] - lr).mean() < 1.0
    # The camera moves smoothly: consecutive frames differ a little, distant frames a lot.
    video = longer.astype(float)
    step = np.abs(video[1:] - video[:-1]).mean()
    assert 0.2 < step < 12 and np.abs(video[19] - video[0]).mean() > 2 * step
    assert not np.array_equal(np.stack(list(iter_synthetic_frames(2, 36, 64, seed=4))), longer[:2, ::2, ::2])


def test_synthetic_max_freq_smooths_the_same_world(tmp_path):
    def frames(**kwargs):
        return np.stack(list(iter_synthetic_frames(3, 36, 64, seed=5, video_index=1, **kwargs))).astype(float)

    def detail(video):  # Mean absolute Laplacian: the fine detail of the frames.
        return np.abs(
            4 * video[:, 1:-1, 1:-1]
            - video[:, :-2, 1:-1]
            - video[:, 2:, 1:-1]
            - video[:, 1:-1, :-2]
            - video[:, 1:-1, 2:]
        ).mean()

    full, smooth = frames(), frames(max_freq=3)
    # A limit above every frequency of the texture grid changes nothing: the same draws, the same world.
    assert np.array_equal(frames(max_freq=1000), full)
    # The band-limited world is a smoothed version of the full one: far less detail, the same colours on average.
    assert detail(smooth) < 0.5 * detail(full)
    assert np.abs(smooth.mean(axis=(0, 1, 2)) - full.mean(axis=(0, 1, 2))).max() < 25
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match="max_freq must be > 0"):
            frames(max_freq=bad)
    # The limit is a dataset setting: a rerun with another one is refused; one made without it still matches.
    root = make_synthetic_dataset(tmp_path / "s", num_videos=1, num_frames=2, resolutions=((18, 32),), max_freq=3)
    assert json.loads((root / "partitions.json").read_text())["settings"]["max_freq"] == 3.0
    for other in (2, None):  # Another limit, or none, would mix two worlds in one dataset.
        with pytest.raises(ConversionError, match="max_freq 3.0"):
            make_synthetic_dataset(root, num_videos=1, num_frames=2, resolutions=((18, 32),), max_freq=other)
    plain = make_synthetic_dataset(tmp_path / "p", num_videos=1, num_frames=2, resolutions=((18, 32),))
    assert "max_freq" not in json.loads((plain / "partitions.json").read_text())["settings"]
    make_synthetic_dataset(plain, num_videos=1, num_frames=2, resolutions=((18, 32),))  # A rerun still matches.


def test_make_tiny_dataset_is_fast(tmp_path):
    import time

    start = time.perf_counter()
    root = make_tiny_dataset(tmp_path)
    assert time.perf_counter() - start < 2.0
    dataset = VideoDataset(root, seq_length=40, height=36, width=64)
    assert len(dataset) == 3 and dataset[2]["video"].shape == (3, 40, 36, 64)


def test_short_clips_are_counted_in_a_warning(tmp_path):
    root = make_tiny_dataset(tmp_path, num_videos=3, num_frames=[10, 30, 12])
    with pytest.warns(UserWarning, match=r"2 of 3 clips in '.*0036x0064' have fewer than the 16 frames needed"):
        assert len(VideoDataset(root, seq_length=16, height=36, width=64)) == 1
    with pytest.warns(UserWarning, match=r"1 of 3 clips .* has fewer than the 11 frames of one window"):
        VideoDatasetPerImage(root, height=36, width=64, seq_length=11)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Nothing dropped, nothing said.
        VideoDataset(root, seq_length=10, height=36, width=64)
