"""Tests for generate.py (the original's CLI with our fixes): options, output files, errors before any work."""

import av
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import generate
from long_video_gan import api, generator_lres, generator_sres
from torch_utils import persistence

# ----------------------------------------------------------------------------
# Helpers.


pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py: one intra-op thread for tiny tensors


@pytest.fixture(scope="module")
def pickles(tmp_path_factory):
    """Tiny low-res and super-res pickles whose sizes fit together (lres output = sres input)."""
    root = tmp_path_factory.mktemp("pickles")
    torch.manual_seed(0)
    G_sres = generator_sres.VideoGenerator(**generator_sres.TINY_KWARGS).eval()
    torch.manual_seed(1)
    kwargs = {**generator_lres.TINY_KWARGS, "out_height": G_sres.lr_height, "out_width": G_sres.lr_width}
    G_lres = generator_lres.VideoGenerator(**kwargs).eval()
    persistence.save(G_lres, root / "lres.pkl")
    persistence.save(G_sres, root / "sres.pkl")
    (root / "notes.txt").write_text("hello\n")
    return dict(lres=str(root / "lres.pkl"), sres=str(root / "sres.pkl"), text=str(root / "notes.txt"), G_lres=G_lres)


def run(*args: str):
    result = CliRunner().invoke(generate.main, list(args), catch_exceptions=False)
    return result


def read_mp4(path) -> tuple[list[np.ndarray], float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return frames, float(stream.average_rate)


# ----------------------------------------------------------------------------
# Runs.


def test_help():
    result = run("--help")
    assert result.exit_code == 0
    for option in [
        "--outdir",
        "--seed",
        "--lres",
        "--sres",
        "--len",
        "--save-lres",
        "--save-index",
        "--device",
        "--dtype",
        "--fps",
        "--bitrate",
        "--quality",
        "--window",
    ]:
        assert option in result.output


def test_lres_only_run(pickles, tmp_path):
    out = tmp_path / "out"
    result = run(
        f"--outdir={out}",
        "--seed=5",
        f"--lres={pickles['lres']}",
        "--len=20",
        "-i",
        "0",
        "-i",
        "-1",
        "--fps=24",
        "--device=cpu",
        "--window=7",
    )
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["seed=5_len=20_frame=0000.png", "seed=5_len=20_frame=0019.png", "seed=5_len=20_lres.mp4"]
    frames, fps = read_mp4(out / "seed=5_len=20_lres.mp4")
    assert len(frames) == 20 and fps == 24
    expected = list(api.iter_video_frames(pickles["G_lres"], seed=5, num_frames=20))
    for index in [0, 19]:
        png = np.asarray(Image.open(out / f"seed=5_len=20_frame={index:04d}.png"))
        assert np.array_equal(png, expected[index])


@pytest.mark.parametrize("save_lres", [["--save-lres"], ["--save-lres=True"], ["--save-lres", "True"]])
def test_sres_run_and_save_lres_forms(pickles, tmp_path, save_lres):
    out = tmp_path / "out"
    result = run(
        f"--outdir={out}",
        "--seed",
        "1",
        f"--lres={pickles['lres']}",
        f"--sres={pickles['sres']}",
        "--len",
        "5",
        *save_lres,
        "--segment",
        "3",
        "--quality",
        "8",
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["seed=1_len=5_lres.mp4", "seed=1_len=5_sres.mp4"]
    hr, fps = read_mp4(out / "seed=1_len=5_sres.mp4")
    lr, _ = read_mp4(out / "seed=1_len=5_lres.mp4")
    assert len(hr) == len(lr) == 5 and fps == 30
    assert hr[0].shape[:2] == (144, 256)


def test_save_lres_false_and_several_seeds(pickles, tmp_path):
    out = tmp_path / "out"
    result = run(
        f"--outdir={out}",
        "--seeds=2-3,7",
        f"--lres={pickles['lres']}",
        f"--sres={pickles['sres']}",
        "--len=2",
        "--save-lres=False",
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [f"seed={s}_len=2_sres.mp4" for s in (2, 3, 7)]


def test_parse_seeds():
    assert generate.parse_seeds("3") == [3]
    assert generate.parse_seeds("1-4") == [1, 2, 3, 4]
    assert generate.parse_seeds("1,5,7-9") == [1, 5, 7, 8, 9]
    for bad in ["", "a", "4-1", "1,,2", "-3"]:
        with pytest.raises(Exception):
            generate.parse_seeds(bad)


# ----------------------------------------------------------------------------
# Errors: named options, raised before any work.


def test_bad_len_and_index_fail_before_loading(tmp_path):
    missing = str(tmp_path / "missing.pkl")  # Never opened: validation comes first.
    out = tmp_path / "out"
    result = run(f"--outdir={out}", "--seed=0", f"--lres={missing}", "--len=0")
    assert result.exit_code != 0 and "--len must be a positive number of frames, got 0" in result.output
    result = run(f"--outdir={out}", "--seed=0", f"--lres={missing}", "--len=10", "-i", "10")
    assert result.exit_code != 0 and "--save-index" in result.output and "10" in result.output
    result = run(f"--outdir={out}", "--seed=0", f"--lres={missing}", "--len=10", "-i", "-11")
    assert result.exit_code != 0 and "--save-index" in result.output and "-11" in result.output
    result = run(f"--outdir={out}", "--seed=x", f"--lres={missing}")
    assert result.exit_code != 0 and "--seeds" in result.output
    assert not out.exists()


def test_unwritable_outdir(tmp_path, pickles):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run(f"--outdir={blocker / 'sub'}", "--seed=0", f"--lres={pickles['lres']}", "--len=3")
    assert result.exit_code != 0 and "--outdir: cannot write to" in result.output


def test_wrong_phase_and_not_a_pickle(tmp_path, pickles):
    out = tmp_path / "out"
    result = run(f"--outdir={out}", "--seed=0", f"--lres={pickles['sres']}", "--len=3")
    assert result.exit_code != 0
    assert "--lres" in result.output and "super-res generator" in result.output
    result = run(f"--outdir={out}", "--seed=0", f"--lres={pickles['lres']}", f"--sres={pickles['lres']}", "--len=3")
    assert result.exit_code != 0 and "--sres" in result.output and "low-res generator" in result.output
    result = run(f"--outdir={out}", "--seed=0", f"--lres={pickles['text']}", "--len=3")
    assert result.exit_code != 0 and "--lres" in result.output and "not a network pickle" in result.output
    result = run(f"--outdir={out}", "--seed=0", f"--lres={tmp_path / 'missing.pkl'}", "--len=3")
    assert result.exit_code != 0 and "--lres" in result.output and "missing.pkl" in result.output
    assert not out.exists()  # Nothing generated, and no empty output directory left behind.


def test_bad_device_and_dtype(tmp_path, pickles):
    result = run(f"--outdir={tmp_path}", "--seed=0", f"--lres={pickles['lres']}", "--device=tpu9")
    assert result.exit_code != 0 and "--device" in result.output
    result = run(f"--outdir={tmp_path}", "--seed=0", f"--lres={pickles['lres']}", "--dtype=fp16")
    assert result.exit_code != 0 and "--dtype" in result.output
    if not torch.cuda.is_available():
        result = run(f"--outdir={tmp_path}", "--seed=0", f"--lres={pickles['lres']}", "--device=cuda")
        assert result.exit_code != 0 and "--device" in result.output and "CUDA is not available" in result.output


def test_mismatched_pair_fails_before_generation(tmp_path, pickles):
    G_lres = generator_lres.VideoGenerator(**generator_lres.TINY_KWARGS).eval()  # 36x64 output
    persistence.save(G_lres, tmp_path / "lres_36x64.pkl")
    out = tmp_path / "out"
    result = run(f"--outdir={out}", "--seed=0", f"--lres={tmp_path / 'lres_36x64.pkl'}", f"--sres={pickles['sres']}")
    assert result.exit_code != 0
    (error,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert error.startswith("Error: --sres: the super-res generator takes 9x16 low-res video with 3 channels, but the")
    assert "makes 36x64" in error and not out.exists()


def test_bad_bitrate_fails_before_loading(tmp_path):
    out = tmp_path / "out"
    result = run(f"--outdir={out}", "--seed=0", f"--lres={tmp_path / 'missing.pkl'}", "--bitrate=abc")
    assert result.exit_code != 0 and "--bitrate: bitrate must be bits per second" in result.output
    assert "'abc'" in result.output and "Loading" not in result.output and not out.exists()
    with pytest.raises(ValueError, match="bitrate"):
        api.VideoWriter(tmp_path / "x.mp4", bitrate="16 M")
    for good in ["16M", "800k", "2000000", "1.5M"]:
        api.check_bitrate(good)


def test_failed_generation_leaves_no_empty_outdir(tmp_path, pickles, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(api, "generate_video_files", fail)
    out = tmp_path / "new" / "out"
    with pytest.raises(RuntimeError, match="out of memory"):
        run(f"--outdir={out}", "--seed=0", f"--lres={pickles['lres']}", "--len=3")
    assert not out.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(RuntimeError, match="out of memory"):
        run(f"--outdir={existing}", "--seed=0", f"--lres={pickles['lres']}", "--len=3")
    assert existing.is_dir()  # A directory the user made stays.


def test_api_refuses_swapped_phases_in_one_line(pickles):
    """load_generator without `phase` loads either kind; the generation API then names the mistake (it used to fail
    deep inside with an AttributeError)."""
    G_sres = api.load_generator(pickles["sres"])  # No phase: accepted, as documented.
    G_lres = api.load_generator(pickles["lres"])
    with pytest.raises(ValueError, match=r"^G_lres must be a low-res generator, got a super-res generator \(load it"):
        next(api.iter_video_frames(G_sres, seed=0, num_frames=2))
    with pytest.raises(ValueError, match="^G_sres must be a super-res generator, got a low-res generator"):
        api.iter_video_chunks(G_lres, G_lres, num_frames=2)
    with pytest.raises(ValueError, match="^G_lres must be a low-res generator, got a Linear"):
        api.iter_video_chunks(torch.nn.Linear(1, 1), None, num_frames=2)
