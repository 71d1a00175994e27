"""Smoke tests of benchmark scripts that no other test runs (they import the training scripts' config code)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["lres", "sres"])
def test_bench_train_tiny_step(phase):
    # One timed step of each phase's tiny preset: the script builds its config through the training scripts, so a
    # change of their config keys that breaks it shows here.
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "bench_train.py"), f"--phase={phase}", "--preset=tiny"]
    cmd += ["--steps=1", "--no-r1", "--threads=1"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert rows[0]["cpu"] and rows[1]["phase"] == phase and rows[1]["sec_per_step"] > 0


def test_detail_fid_blur_removes_only_fine_detail():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import detail_fid
    import torch

    # A vertical edge between two flat halves, plus a 1-pixel checkerboard on the left half.
    frames = torch.zeros([1, 3, 36, 64], dtype=torch.uint8)
    frames[..., 32:] = 200
    frames[..., ::2, :32:2] = 100
    frames[..., 1::2, 1:32:2] = 100
    assert torch.equal(detail_fid.blurred(frames, None), frames)
    assert torch.equal(detail_fid.blurred(frames, (36, 64)), frames)  # Down and up at the same size: unchanged.
    half = detail_fid.blurred(frames, (18, 32)).float()
    assert half[..., :, 2:30].std() < 1 and abs(half[..., :, 2:30].mean() - 50) < 1  # The checkerboard averages out.
    assert half[..., :, 34:].min() == 200 and half[..., :, :30].max() < 60  # The coarse edge survives.
