"""Tests for the colour-similarity measure (long_video_gan/color_similarity.py) and plot_color_similarity.py."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import plot_color_similarity
from long_video_gan import api, export, generator_lres, generator_sres
from long_video_gan import color_similarity as cs
from tests.data_utils import make_tiny_dataset
from tests.test_export import no_unpickling
from torch_utils import persistence

pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py: one intra-op thread for tiny tensors

# ----------------------------------------------------------------------------
# The measure on constructed videos.


def solid(colors, T=1, H=4, W=6) -> torch.Tensor:
    """uint8 [N, T, H, W, 3] videos of solid frames, one RGB colour per video."""
    colors = torch.tensor(colors, dtype=torch.uint8)  # [N, 3]
    return colors[:, None, None, None, :].expand(-1, T, H, W, -1).contiguous()


def test_quantisation_rounds_to_20_levels_with_half_width_end_bins():
    v = torch.arange(256, dtype=torch.uint8)
    levels = cs.quantize_colors(torch.stack([v, torch.zeros_like(v), torch.zeros_like(v)], dim=-1)) // 400
    assert torch.equal(levels, torch.from_numpy(np.round(np.arange(256) * 19 / 255)).long())
    widths = torch.bincount(levels).tolist()
    assert len(widths) == 20 and widths[0] == widths[-1] == 7 and all(13 <= w <= 14 for w in widths[1:-1])
    # Joint bins: r, g, b levels in base 20.
    assert cs.quantize_colors(torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]])).tolist() == [
        19 * 400,
        19 * 20,
        19,
        7999,
    ]


def test_constant_video_stays_at_one():
    gen = torch.Generator().manual_seed(0)
    frame = torch.randint(0, 256, [3, 1, 5, 7, 3], generator=gen, dtype=torch.uint8)  # Three random frames.
    video = frame.expand(-1, 12, -1, -1, -1)  # [3, 12, 5, 7, 3], each repeated over time
    sims = cs.color_similarity(video)
    assert sims.dtype == torch.float64 and sims.shape == (3, 12)
    assert torch.equal(sims, torch.ones(3, 12, dtype=torch.float64))
    # Moving the pixels around does not change the colour histogram either.
    shuffled = torch.stack([f.flatten(0, 1)[torch.randperm(35, generator=gen)].view(5, 7, 3) for f in video[0]])
    assert torch.equal(cs.color_similarity(shuffled[None]), torch.ones(1, 12, dtype=torch.float64))


def test_second_half_with_disjoint_colours_drops_to_zero():
    gen = torch.Generator().manual_seed(1)
    T, H, W = 10, 6, 8
    dark = torch.randint(0, 120, [2, T // 2, H, W, 3], generator=gen, dtype=torch.uint8)  # levels 0..9
    light = torch.randint(136, 256, [2, T - T // 2, H, W, 3], generator=gen, dtype=torch.uint8)  # levels 10..19
    dark[:, :] = dark[:, :1]  # The first half repeats frame 0.
    sims = cs.color_similarity(torch.cat([dark, light], dim=1))
    assert torch.equal(sims[:, : T // 2], torch.ones(2, T // 2, dtype=torch.float64))
    assert torch.equal(sims[:, T // 2 :], torch.zeros(2, T - T // 2, dtype=torch.float64))


def test_partial_overlap_is_the_shared_pixel_fraction():
    video = solid([[0, 0, 0]], T=2, H=4, W=6)
    video[0, 1, :1] = 255  # Frame 1: a quarter of the pixels (one row of four) become white.
    assert cs.color_similarity(video).tolist() == [[1.0, 0.75]]
    video[0, 1, :, :] = torch.tensor([3, 3, 3], dtype=torch.uint8)  # Same bin as black (level 0): identical.
    assert cs.color_similarity(video).tolist() == [[1.0, 1.0]]


def test_std_uses_n_minus_1():
    # Second frames sharing 0, 1/2 and all of the first frame's colours: similarities 0, 0.5, 1.
    videos = solid([[0, 0, 0]] * 3, T=2, H=2, W=2)
    videos[0, 1] = 255
    videos[1, 1, :1] = 255
    sims = cs.color_similarity(videos)
    assert sims[:, 1].tolist() == [0.0, 0.5, 1.0]
    mean, std = cs.similarity_stats(sims)
    assert mean.tolist() == [1.0, 0.5]
    assert std[0] == 0 and std[1] == pytest.approx(0.5, abs=1e-12)  # sqrt((0.25 + 0 + 0.25) / (3 - 1)); n: 0.408
    with pytest.raises(ValueError, match="N >= 2"):
        cs.similarity_stats(sims[:1])


def test_streamed_chunks_equal_one_pass_and_bad_inputs():
    gen = torch.Generator().manual_seed(2)
    video = torch.randint(0, 256, [2, 9, 4, 5, 3], generator=gen, dtype=torch.uint8)
    acc = cs.SimilarityAccumulator()
    for part in video.split([1, 5, 3], dim=1):
        acc.add(part)
    assert torch.equal(acc.result(), cs.color_similarity(video))
    with pytest.raises(ValueError, match="does not continue"):
        acc.add(video[:1])
    with pytest.raises(TypeError, match=r"uint8 tensor \[N, T, H, W, 3\], got a torch.float32 tensor"):
        cs.color_similarity(video.float())
    with pytest.raises(ValueError, match=r"got shape \[9, 4, 5, 3\]"):
        cs.color_similarity(video[0])


# ----------------------------------------------------------------------------
# plot_color_similarity.py end to end on tiny networks and a tiny synthetic dataset.


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plot")
    root = make_tiny_dataset(tmp, num_videos=2, num_frames=[20, 12], resolutions=((9, 16), (36, 64)))
    torch.manual_seed(0)
    G_sres = generator_sres.VideoGenerator(**generator_sres.TINY_KWARGS).eval()
    G_lres = generator_lres.VideoGenerator(**dict(generator_lres.TINY_KWARGS, out_height=9, out_width=16)).eval()
    persistence.save(G_lres, tmp / "lres.pkl")
    persistence.save(G_sres, tmp / "sres.pkl")
    export.export(str(tmp / "sres.pkl"), str(tmp / "sres.safetensors"))
    export.export(str(tmp / "lres.pkl"), str(tmp / "lres.safetensors"))
    return dict(tmp=tmp, root=str(root), lres=str(tmp / "lres.pkl"), sres=str(tmp / "sres.safetensors"), G=G_lres)


def run(*args):
    return CliRunner().invoke(plot_color_similarity.main, [str(a) for a in args], catch_exceptions=False)


def test_help_lists_the_original_options():
    result = run("--help")
    assert result.exit_code == 0
    for text in ["--path", "--dataset", "--lres", "--sres", "--len", "--samples", "--batch", "--device", "--seed"]:
        assert text in result.output
    assert "128" in result.output and "1000" in result.output and "Examples" in result.output


def test_plot_with_sres_png_and_lres_only_pdf(setup, tmp_path):
    common = ["--dataset", setup["root"], "--samples", 3, "--batch", 2, "--device", "cpu"]
    lres_st = setup["tmp"] / "lres.safetensors"
    with no_unpickling():  # Both generators from .safetensors files.
        result = run(
            "--path", tmp_path / "plots" / "sres.png", "--lres", lres_st, "--sres", setup["sres"], "--len", 3, *common
        )
    assert result.exit_code == 0, result.output
    assert "36x64" in result.output  # Real clips at the super-res output size.
    with Image.open(tmp_path / "plots" / "sres.png") as image:
        assert image.format == "PNG" and image.size[0] > 300
    result = run("--path", tmp_path / "lres.pdf", "--lres", setup["lres"], "--len", 10, *common)
    assert result.exit_code == 0, result.output
    assert "9x16" in result.output and "Saved" in result.output
    assert (tmp_path / "lres.pdf").read_bytes().startswith(b"%PDF")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lres.pdf", "plots"]  # No temporary files left.


def test_generated_similarities_stream_batches_from_one_seeded_generator(setup):
    G = setup["G"]
    sims = plot_color_similarity.generated_similarities(G, None, 6, 3, 2, seed=5, segment_length=4, progress=False)
    assert sims.shape == (3, 6) and torch.all(sims[:, 0] == 1)
    gen = torch.Generator().manual_seed(5)
    expected = []
    for n in [2, 1]:
        chunks = api.iter_video_chunks(G, num_frames=6, generator=gen, batch_size=n, dtype=torch.float32)
        frames = torch.from_numpy(api.to_uint8(torch.cat([c.video for c in chunks], dim=2)))
        expected.append(cs.color_similarity(frames))
    assert torch.equal(sims, torch.cat(expected))
    assert not torch.equal(sims[0], sims[1])  # The videos of a batch differ.


def test_errors_name_the_option(setup, tmp_path):
    base = ["--dataset", setup["root"], "--lres", setup["lres"], "--device", "cpu"]
    result = run("--path", tmp_path / "plot.jpg", *base)
    assert result.exit_code != 0 and "--path must end in .png or .pdf" in result.output
    result = run("--path", tmp_path / "plot.png", "--samples", 1, *base)
    assert result.exit_code != 0 and "--samples" in result.output
    result = run("--path", tmp_path / "plot.png", "--len", 40, "--samples", 2, *base)
    assert result.exit_code != 0 and "--dataset: no clip" in result.output and "41 frames" in result.output
    result = run("--path", tmp_path / "plot.png", "--dataset", tmp_path / "none", "--lres", setup["lres"])
    assert result.exit_code != 0 and "--dataset" in result.output
    result = run("--path", tmp_path / "plot.png", *base[:2], "--lres", setup["sres"])
    assert result.exit_code != 0 and "--lres:" in result.output and "super-res" in result.output
    other_lres = setup["tmp"] / "lres_36x64.pkl"
    persistence.save(generator_lres.VideoGenerator(**generator_lres.TINY_KWARGS), other_lres)
    result = run("--path", tmp_path / "plot.png", *base[:2], "--lres", other_lres, "--sres", setup["sres"])
    assert result.exit_code != 0 and "--sres: the super-res generator takes 9x16" in result.output
    assert not (tmp_path / "plot.png").exists()
