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
