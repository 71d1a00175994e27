"""`make demo` (long_video_gan/demo.py) and generate.py without --lres: the bundled models, nothing untrained."""

import os
import shutil

import av
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import generate
import train_sres
from long_video_gan import api, demo, generator_lres, generator_sres
from torch_utils import persistence

pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py: one intra-op thread for tiny tensors


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A stand-in pretrained/ directory with tiny 36x64 low-res and 36x64 -> 144x256 super-res pickles."""
    root = tmp_path_factory.mktemp("pretrained")
    torch.manual_seed(0)
    G_lres = generator_lres.VideoGenerator(**generator_lres.TINY_KWARGS).eval()
    kwargs = {**generator_sres.TINY_KWARGS, **train_sres.TINY_G_KWARGS}
    G_sres = generator_sres.VideoGenerator(**kwargs).eval()
    persistence.save(G_lres, root / "demo_lres.pkl")
    persistence.save(G_sres, root / "demo_sres.pkl")
    return root


def _num_frames(path) -> tuple[int, tuple[int, int]]:
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]
    return len(frames), frames[0].shape[:2]


def test_bundled_model_path_prefers_demo_models_then_tiny(tmp_path):
    assert demo.bundled_model_path("lres", str(tmp_path)) is None
    (tmp_path / "tiny_lres.pkl").write_bytes(b"x")
    assert demo.bundled_model_path("lres", str(tmp_path)) == str(tmp_path / "tiny_lres.pkl")
    (tmp_path / "demo_lres.pkl").write_bytes(b"x")
    assert demo.bundled_model_path("lres", str(tmp_path)) == str(tmp_path / "demo_lres.pkl")
    (tmp_path / "demo_lres.safetensors").write_bytes(b"x")
    assert demo.bundled_model_path("lres", str(tmp_path)) == str(tmp_path / "demo_lres.safetensors")
    assert demo.bundled_model_path("sres", str(tmp_path)) is None
    with pytest.raises(ValueError, match="phase"):
        demo.bundled_model_path("hres", str(tmp_path))


def test_the_repository_bundles_a_low_res_model_that_loads():
    path = demo.bundled_model_path("lres")
    assert path is not None
    G = api.load_generator(path, phase="lres")
    assert (G.out_height, G.out_width) == (36, 64)
    sres = demo.bundled_model_path("sres")
    if sres is not None:  # Bundled pairs chain, and each file stays small (issue 17: at most 15 MB).
        api.check_generator_pair(G, api.load_generator(sres, phase="sres"))
    for p in [path, sres]:
        assert p is None or os.path.getsize(p) <= 15 * 2**20


def test_demo_writes_super_res_and_low_res_videos_and_pngs(model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "PRETRAINED_DIR", str(model_dir))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        demo.main, ["--outdir", str(out), "--len", "9", "--pngs", "3", "--device", "cpu"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "seed=0_len=9_frame=0000.png",
        "seed=0_len=9_frame=0004.png",
        "seed=0_len=9_frame=0008.png",
        "seed=0_len=9_lres.mp4",
        "seed=0_len=9_sres.mp4",
    ]
    assert _num_frames(out / "seed=0_len=9_sres.mp4")[0] == 9
    assert _num_frames(out / "seed=0_len=9_lres.mp4")[0] == 9
    for name in names:  # Every file is announced with its full path.
        assert str(out.resolve() / name) in result.output


def test_demo_without_super_res_model_writes_low_res_only_never_an_untrained_network(model_dir, tmp_path, monkeypatch):
    only_lres = tmp_path / "pretrained"
    only_lres.mkdir()
    shutil.copy(model_dir / "demo_lres.pkl", only_lres / "demo_lres.pkl")
    monkeypatch.setattr(demo, "PRETRAINED_DIR", str(only_lres))
    out = tmp_path / "out"
    result = CliRunner().invoke(demo.main, ["--outdir", str(out), "--len", "5", "--pngs", "0"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "No bundled super-res model" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["seed=0_len=5_lres.mp4"]

    monkeypatch.setattr(demo, "PRETRAINED_DIR", str(tmp_path / "empty"))
    result = CliRunner().invoke(demo.main, ["--outdir", str(out)])
    assert result.exit_code == 1 and "no bundled low-res model" in result.output


def test_generate_without_lres_uses_the_bundled_models(model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "PRETRAINED_DIR", str(model_dir))
    out = tmp_path / "out"
    args = ["--outdir", str(out), "--seed", "2", "--len", "5", "--device", "cpu"]
    result = CliRunner().invoke(generate.main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "demo_lres.pkl" in result.output and "demo_sres.pkl" in result.output
    assert _num_frames(out / "seed=2_len=5_sres.mp4")[0] == 5

    monkeypatch.setattr(demo, "PRETRAINED_DIR", str(tmp_path / "empty"))
    result = CliRunner().invoke(generate.main, ["--outdir", str(tmp_path / "o2"), "--seed", "0"])
    assert result.exit_code == 1 and "--lres: not given" in result.output


def test_contact_sheet_has_generated_and_real_rows(model_dir, tmp_path):
    from PIL import Image

    from benchmarks import make_contact_sheet
    from tests.data_utils import make_tiny_dataset

    dataset = make_tiny_dataset(tmp_path, num_videos=1, num_frames=12, resolutions=((36, 64), (144, 256)))
    out = tmp_path / "sheet.png"
    args = ["--dataset", str(dataset), "--lres", str(model_dir / "demo_lres.pkl"), "--sres"]
    args += [str(model_dir / "demo_sres.pkl"), "--len", "21", "--every", "10", "--out", str(out)]
    result = CliRunner().invoke(make_contact_sheet.main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    sheet = Image.open(out).convert("RGB")
    g = make_contact_sheet
    # Columns: frames 0, 10, 20; rows: generated 144x256 and 36x64 (shown 4x), real at both sizes.
    assert sheet.size == (g.LABEL_WIDTH + 3 * (256 + g.GAP), g.HEADER + 4 * (144 + g.GAP))
    pixels = np.asarray(sheet)

    def cell(row, col):
        y, x = g.HEADER + row * (144 + g.GAP), g.LABEL_WIDTH + col * (256 + g.GAP)
        return pixels[y : y + 144, x : x + 256]

    assert (cell(2, 0) != 255).any() and (cell(2, 1) != 255).any()  # The real 12-frame clip has frames 0 and 10,
    assert (cell(2, 2) == 255).all() and (cell(3, 2) == 255).all()  # not frame 20: left blank.
    # The real rows show the same clip: the 4x-enlarged low-res frame is close to the high-res one.
    diff = np.abs(cell(2, 0).astype(float) - cell(3, 0).astype(float)).mean()
    assert diff < 20, diff
