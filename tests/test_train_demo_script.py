"""long_video_gan/pretrained/train_demo.sh, the one command that trains and exports both demo models, run end to end
with the demo networks for 2 steps each on a 2-clip synthetic world."""

import os
import subprocess
import sys

import pytest
import torch

from long_video_gan import api
from tests.train_test_utils import train_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "long_video_gan", "pretrained", "train_demo.sh")
SHORT = "--steps 2 --tick 1 --snap 1 --train-snap 1"


def run_script(*args, **settings):
    env = dict(train_env(), PYTHON=sys.executable, DEVICE="cpu", **settings)
    return subprocess.run(["bash", SCRIPT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_trains_both_phases_and_exports_a_working_pair(tmp_path):
    data, runs, out = (str(tmp_path / name) for name in ("data", "runs", "out"))
    settings = dict(
        DATA_ARGS="--num-videos 2 --num-frames 40 --seed 1 --max-freq 3", LRES_ARGS=SHORT, SRES_ARGS=SHORT, WORKERS="1"
    )
    proc = run_script(data, runs, out, **settings)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "ckpt-00000002-G-ema.pkl" in proc.stdout
    G_lres = api.load_generator(os.path.join(out, "demo_lres.safetensors"))
    G_sres = api.load_generator(os.path.join(out, "demo_sres.safetensors"))
    api.check_generator_pair(G_lres, G_sres)
    with torch.no_grad():
        chunk = next(iter(api.iter_video_chunks(G_lres, G_sres, seed=0, num_frames=2, segment_length=2)))
    assert chunk.video.shape == (1, 3, 2, 144, 256) and torch.isfinite(chunk.video).all()

    # Rerun: the dataset is kept, both runs are complete, the export is written again.
    proc = run_script(data, runs, out, **settings)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"Dataset: {data} exists; not rebuilt." in proc.stdout
    assert all("is complete" in open(os.path.join(runs, f"{p}.log")).read() for p in ("lres", "sres"))


def test_usage_and_a_failing_training_are_reported(tmp_path):
    proc = run_script()
    assert proc.returncode == 2 and "usage: bash" in proc.stderr
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "partitions.json").write_text("{}")  # Not a dataset: both trainings refuse it.
    proc = run_script(str(tmp_path / "data"), str(tmp_path / "runs"), str(tmp_path / "out"))
    assert proc.returncode == 1
    assert "train_lres.py failed; the end of" in proc.stderr and "--dataset" in proc.stderr
    assert not (tmp_path / "out" / "demo_lres.safetensors").exists()
