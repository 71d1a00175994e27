"""End-to-end tests of train_sres.py on a tiny two-resolution dataset: checkpoints and samples, exact resume after a
kill (ADA state included), a 2-process gloo run, and the input errors reported before any work starts."""

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio_ffmpeg
import pytest
import torch
from click.testing import CliRunner

import train_sres
from long_video_gan import training_utils as tu
from tests.data_utils import make_tiny_dataset

ROOT = Path(__file__).resolve().parents[1]
LR, HR = (9, 16), (36, 64)  # Resolutions of the tiny sres networks.
# Tiny networks (2 hr frames + 4 lr context frames on each side), 2 clips per step, a tick every 2 steps, G-EMA and
# train pickles every 4 steps.
FAST = [
    "--preset",
    "tiny",
    "--device",
    "cpu",
    "--workers",
    "0",
    "--batch",
    "2",
    "--tick",
    "2",
    "--snap",
    "2",
    "--train-snap",
    "2",
    "--wandb",
    "off",
]


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    return env


def _train(args, timeout=600):
    cmd = [sys.executable, str(ROOT / "train_sres.py"), *FAST, *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _only_run_dir(outdir):
    runs = sorted(p for p in Path(outdir).iterdir() if p.is_dir())
    assert len(runs) == 1, runs
    return runs[0]


def _load(path):
    with open(path, "rb") as f:
        return pickle.load(f)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("sres_data"), num_videos=3, num_frames=30, resolutions=(LR, HR))


@pytest.fixture(scope="module")
def full_run(dataset, tmp_path_factory):
    """Eight uninterrupted steps (pickles at steps 0, 4 and 8; ADA updates at steps 0 and 4)."""
    outdir = tmp_path_factory.mktemp("sres_full")
    _train(["--dataset", str(dataset), "--outdir", str(outdir), "--steps", "8"])
    return _only_run_dir(outdir)


# ----------------------------------------------------------------------------------------------------------------------


def test_tiny_run_writes_checkpoints_and_samples(full_run):
    run_dir = full_run
    ckpts = sorted(os.listdir(run_dir / "checkpoints"))
    assert ckpts == [f"ckpt-{s:08d}-{k}.pkl" for s in (0, 4, 8) for k in ("G-ema", "train")]
    samples = sorted(os.listdir(run_dir / "samples"))
    assert samples == [
        "fake-00000000-hr.mp4",
        "fake-00000004-hr.mp4",
        "fake-00000008-hr.mp4",
        "real-hr.mp4",
        "real-lr.mp4",
    ]
    reader = imageio_ffmpeg.read_frames(str(run_dir / "samples" / "fake-00000008-hr.mp4"))
    meta = next(reader)
    assert meta["size"] == (256, 144) and sum(1 for _ in reader) == 8  # 36x64 enlarged x4; 8 super-resolved frames.
    reader = imageio_ffmpeg.read_frames(str(run_dir / "samples" / "real-lr.mp4"))
    assert next(reader)["size"] == (256, 144) and sum(1 for _ in reader) == 16  # 9x16 x16; 8 + 2 x 4 context frames.

    G = _load(run_dir / "checkpoints" / "ckpt-00000008-G-ema.pkl")
    assert type(G).__name__ == "VideoGenerator" and not G.training
    with torch.no_grad():
        assert G(torch.zeros(1, 3, 10, *LR)).shape == (1, 3, 2, *HR)

    data = _load(run_dir / "checkpoints" / "ckpt-00000008-train.pkl")
    assert data["phase"] == "sres" and data["step"] == 8
    assert type(data["augment"]).__name__ == "AugmentPipe" and type(data["in_augment"]).__name__ == "AugmentPipe"
    assert float(data["in_augment"].p) == 0.5
    assert data["loader_position"] == 2 * 8 + 1  # G and D batches per step plus the R1 batch of step 0.
    stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert [r["progress/step"]["mean"] for r in stats] == [2, 4, 6, 8]
    assert "progress/augment_p" in stats[0] and "loss/D_sign_real" in stats[0]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["ada_interval"] == 4 and config["temporal_context"] == 4 and config["hr_height"] == 36


def test_kill_and_resume_equals_uninterrupted(full_run, dataset, tmp_path):
    outdir = tmp_path / "killed"
    args = ["--dataset", str(dataset), "--outdir", str(outdir), "--steps", "8"]
    cmd = [sys.executable, str(ROOT / "train_sres.py"), *FAST, *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 600
        while not list(outdir.glob("*/checkpoints/ckpt-00000004-train.pkl")):
            assert proc.poll() is None, "training ended before its step-4 checkpoint"
            assert time.time() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    run_dir = _only_run_dir(outdir)
    for path in (run_dir / "checkpoints").glob("ckpt-00000008-*"):  # Had the kill come late, drop what came after.
        path.unlink()

    _train(args)
    a = _load(run_dir / "checkpoints" / "ckpt-00000008-train.pkl")
    b = _load(full_run / "checkpoints" / "ckpt-00000008-train.pkl")
    for name in ("G", "D", "G_ema", "augment", "in_augment"):
        assert tu.module_digest(a[name]) == tu.module_digest(b[name]), name
    for opt in ("G_opt", "D_opt"):
        for k, state in a[opt]["state"].items():
            for key, value in state.items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(b[opt]["state"][k][key])), (opt, k, key)
    assert torch.equal(a["rng_states"][0]["torch_cpu"], b["rng_states"][0]["torch_cpu"])
    assert a["loader_position"] == b["loader_position"]


@pytest.mark.slow
def test_two_process_gloo_run_keeps_ranks_identical(dataset, tmp_path):
    outdir = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(ROOT / "train_sres.py"),
        *FAST,
        "--dataset",
        str(dataset),
        "--outdir",
        str(outdir),
        "--steps",
        "4",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = _load(_only_run_dir(outdir) / "checkpoints" / "ckpt-00000004-train.pkl")
    modules = {k: data[k] for k in ("G", "D", "G_ema", "augment", "in_augment")}
    assert data["world_size"] == 2 and data["rank_digests"] == [tu.combined_digest(modules)] * 2


# ----------------------------------------------------------------------------------------------------------------------
# Bad input: a clear error naming the option, before anything is written.


def _cli_error(args, outdir):
    result = CliRunner().invoke(train_sres.main, [*FAST, "--outdir", str(outdir), *args])
    assert result.exit_code != 0, result.output
    assert not Path(outdir).exists() or not any(p.is_dir() for p in Path(outdir).iterdir())
    return result.output


def test_error_missing_resolution_named(tmp_path):
    lr_only = make_tiny_dataset(tmp_path / "a", num_videos=1, num_frames=12, resolutions=(LR,))
    out = _cli_error(["--dataset", str(lr_only)], tmp_path / "o")
    assert "--dataset" in out and "0036x0064" in out
    hr_only = make_tiny_dataset(tmp_path / "b", num_videos=1, num_frames=12, resolutions=(HR,))
    out = _cli_error(["--dataset", str(hr_only)], tmp_path / "o")
    assert "--dataset" in out and "0009x0016" in out


def test_error_resolutions_list_different_clips(tmp_path):
    root = make_tiny_dataset(tmp_path / "a", num_videos=2, num_frames=12, resolutions=(LR,))
    other = make_tiny_dataset(tmp_path / "b", num_videos=3, num_frames=12, resolutions=(HR,))
    shutil.copytree(other / "0036x0064", root / "0036x0064")
    out = _cli_error(["--dataset", str(root)], tmp_path / "o")
    assert "--dataset" in out and "video_0002" in out and "same clips" in out


def test_error_no_clip_long_enough(tmp_path):
    root = make_tiny_dataset(tmp_path, num_videos=2, num_frames=8, resolutions=(LR, HR))
    out = _cli_error(["--dataset", str(root)], tmp_path / "o")
    assert "--dataset" in out and "10 frames" in out and "longest with 8 frames" in out


def test_error_batch_and_resume(dataset, tmp_path):
    out = _cli_error(["--dataset", str(dataset), "--batch", "3", "--grad-accum", "2"], tmp_path / "o")
    assert "--batch must be divisible by" in out
    lres_pickle = {k: 0 for k in tu.TRAIN_PICKLE_KEYS} | {"phase": "lres"}
    (tmp_path / "lres.pkl").write_bytes(pickle.dumps(lres_pickle))
    out = _cli_error(["--dataset", str(dataset), "--resume", str(tmp_path / "lres.pkl")], tmp_path / "o")
    assert "--resume" in out and "lres checkpoint" in out and "sres training" in out


def test_paper_preset_metric_default():
    result = CliRunner().invoke(train_sres.main, ["--help"])
    assert result.exit_code == 0 and "runs/sres" in result.output and "[paper: fvd2048_16f]" in result.output
    assert train_sres.PRESETS["paper"]["metric"] == ("fvd2048_16f",) and train_sres.PRESETS["paper"]["batch"] == 32
