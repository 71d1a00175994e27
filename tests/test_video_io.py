"""Tests for long_video_gan/video_io.py: grid layout, enlargement, H.264 writing, atomicity, image grids, and the
reader of the dataset tools."""

import os
import subprocess
import sys

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image

from long_video_gan import api, video_io


def _read_video(path):
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = reader.__next__()
    width, height = meta["size"]
    frames = [np.frombuffer(f, dtype=np.uint8).reshape(height, width, 3) for f in reader]
    return np.stack(frames), meta


def _solid_clips(colors, t=3, h=36, w=64):
    """One clip per RGB colour in [-1, 1]."""
    c = torch.tensor(colors, dtype=torch.float32)  # [N, 3]
    return c[:, :, None, None, None].expand(-1, -1, t, h, w).contiguous()


@pytest.mark.parametrize("n, rows", [(1, 1), (2, 1), (3, 1), (4, 2), (6, 2), (8, 2), (9, 3), (12, 3), (16, 4)])
def test_multiple_nearest_sqrt(n, rows):
    assert video_io.multiple_nearest_sqrt(n) == rows


def test_enlarge_factor():
    assert video_io.grid_enlarge_factor(36, 64) == 4  # A single 36x64 clip -> 144x256.
    assert video_io.grid_enlarge_factor(72, 128) == 2
    assert video_io.grid_enlarge_factor(144, 256) == 1
    assert video_io.grid_enlarge_factor(36, 128) == 4


def test_float_to_uint8_rounds():
    x = torch.tensor([-1.0, -0.999, 0.0, 0.5, 1.0, 2.0])
    expected = [0, 0, 128, 191, 255, 255]  # floor(x*127.5 + 128) clamped.
    assert video_io.float_to_uint8(x).tolist() == expected


def test_grid_layout_is_column_major():
    video = torch.arange(6, dtype=torch.float32)[:, None, None, None, None].expand(6, 1, 1, 2, 2)
    grid = video_io.make_grid(video, num_rows=2)[0, :, :, 0]  # [rows*H, cols*W]
    cells = grid[::2, ::2]  # One value per cell: [rows, cols].
    assert cells.tolist() == [[0, 2, 4], [1, 3, 5]]  # Clip k at column k // rows, row k % rows.


def test_write_video_grid_layout_and_size(tmp_path):
    colors = [[-1, -1, -1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]
    path = tmp_path / "sub" / "grid.mp4"
    video_io.write_video_grid(_solid_clips(colors, t=5), str(path))
    frames, meta = _read_video(path)
    assert frames.shape == (5, 144, 256, 3)  # 2x2 grid of 36x64 = 72x128, enlarged x2.
    assert meta["fps"] == 30
    expected = ((np.array(colors) + 1) * 127.5).clip(0, 255)
    for k in range(4):
        row, col = k % 2, k // 2
        cell = frames[2, row * 72 + 8 : row * 72 + 64, col * 128 + 8 : col * 128 + 120].reshape(-1, 3).mean(0)
        assert np.abs(cell - expected[k]).max() < 8, (k, cell, expected[k])
    assert os.listdir(path.parent) == ["grid.mp4"]  # No temp file left.


def test_write_video_grid_segments_and_single_clip(tmp_path):
    path = tmp_path / "one.mp4"
    segments = (_solid_clips([[0.2, 0.4, -0.2]], t=2) for _ in range(3))
    video_io.write_video_grid(segments, str(path), bitrate=None, quality=8)
    frames, _ = _read_video(path)
    assert frames.shape == (6, 144, 256, 3)  # 36x64 enlarged x4; three segments of two frames.


def test_write_video_grid_max_samples(tmp_path):
    path = tmp_path / "max.mp4"
    video_io.write_video_grid(_solid_clips([[0, 0, 0]] * 6, t=2), str(path), max_samples=1)
    frames, _ = _read_video(path)
    assert frames.shape == (2, 144, 256, 3)


def test_write_video_grid_is_atomic(tmp_path):
    path = tmp_path / "broken.mp4"

    def segments():
        yield _solid_clips([[0, 0, 0]], t=2)
        raise RuntimeError("generator failed")

    with pytest.raises(RuntimeError, match="generator failed"):
        video_io.write_video_grid(segments(), str(path))
    assert os.listdir(tmp_path) == []  # Neither the video nor a temp file.


def test_write_video_grid_rejects_bad_segment(tmp_path):
    with pytest.raises(ValueError, match=r"segments\[0\]"):
        video_io.write_video_grid(torch.zeros(2, 4, 3, 8, 8), str(tmp_path / "x.mp4"))


def test_save_image_grid_exact(tmp_path):
    gen = torch.Generator().manual_seed(0)
    images = torch.rand([4, 3, 5, 7], generator=gen) * 2 - 1
    path = tmp_path / "grid.png"
    video_io.save_image_grid(images, str(path))
    pixels = np.asarray(Image.open(path))
    assert pixels.shape == (10, 14, 3)  # 2x2 grid, not enlarged.
    u8 = video_io.float_to_uint8(images).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(pixels[5:10, 0:7], u8[1])  # Clip 1: row 1, column 0.
    assert np.array_equal(pixels[0:5, 7:14], u8[2])  # Clip 2: row 0, column 1.
    with pytest.raises(ValueError, match="image"):
        video_io.save_image_grid(images[0], str(path))


def test_one_writer_for_grids_and_api(tmp_path):
    assert api.VideoWriter is video_io.VideoWriter and api.save_png is video_io.save_png
    assert api.check_bitrate is video_io.check_bitrate
    clip = torch.rand([1, 3, 6, 36, 64], generator=torch.Generator().manual_seed(1)) * 2 - 1
    video_io.write_video_grid(clip, str(tmp_path / "grid.mp4"), fps=24)
    with video_io.VideoWriter(tmp_path / "writer.mp4", fps=24) as writer:
        writer.write(api.to_uint8(clip)[0])
    assert (tmp_path / "grid.mp4").read_bytes() == (tmp_path / "writer.mp4").read_bytes()


@pytest.mark.parametrize(
    "settings, message",
    [(dict(fps=0), "fps"), (dict(bitrate="16 M"), "bitrate"), (dict(bitrate=None), "neither"),
     (dict(bitrate=None, quality=11), "quality")],
)  # fmt: skip
def test_write_video_grid_checks_settings_first(tmp_path, settings, message):
    with pytest.raises(ValueError, match=message):
        video_io.write_video_grid(_solid_clips([[0, 0, 0]]), str(tmp_path / "sub" / "x.mp4"), **settings)
    assert list(tmp_path.iterdir()) == []


def test_reader_reads_what_the_writer_wrote(tmp_path):
    gen = torch.Generator().manual_seed(2)
    frames = video_io.float_to_uint8(torch.rand([1, 3, 12, 36, 64], generator=gen) * 0.2 - 0.1)  # Smooth: codes well.
    frames = frames.permute(0, 2, 3, 4, 1)[0].numpy()  # [T, H, W, 3]
    with video_io.VideoWriter(tmp_path / "v.mp4", fps=10, bitrate=None, quality=10) as writer:
        writer.write(frames)
    problems = []
    read = np.stack([np.asarray(f) for f in video_io.iter_video_frames(tmp_path / "v.mp4", problems)])
    assert problems == [] and read.shape == (12, 144, 256, 3)
    assert np.abs(read[:, ::4, ::4].astype(int) - frames).mean() < 3  # Lossy H.264, nearly exact at quality 10.
    half = list(video_io.iter_video_frames(tmp_path / "v.mp4", problems, start=0.35, fps=5))
    assert len(half) == 4  # Frames at 0.4, 0.6, 0.8, 1.0 s (nearest to 0.4 + k/5, up to the last frame at 1.1 s).


def test_dataset_tools_read_videos_without_torch():
    code = "import sys, dataset_tools.make_dataset_from_videos; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
