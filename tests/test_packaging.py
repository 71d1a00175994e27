"""`pip install .` of the checkout: the packages, plugin sources, bundled model and command-line tools land in the
environment and work from any directory (issue 19, item 9)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.egg-info", "build", "runs", "outputs", "wandb", ".*")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The checkout installed with `pip install --target` (no dependencies, no build isolation: offline)."""
    tmp = tmp_path_factory.mktemp("pkg")
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=SKIP)  # pip builds in the source tree; keep the checkout clean.
    target = tmp / "site"
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target)]
    proc = subprocess.run([*cmd, str(source)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return target


def test_install_puts_packages_data_and_scripts_in_place(installed):
    for name in ["long_video_gan", "torch_utils", "dnnlib", "metrics", "dataset_tools"]:
        assert (installed / name / "__init__.py").is_file(), name
    for name in ["generate.py", "train_lres.py", "train_sres.py", "calc_metrics.py"]:
        assert (installed / name).is_file(), name
    assert (installed / "long_video_gan" / "pretrained" / "tiny_lres.pkl").is_file()
    for name in ["fast_cpu.cpp", "fast_cpu.h", "upfirdn2d.cu", "bias_act.h"]:
        assert (installed / "torch_utils" / "ops" / name).is_file(), name
    assert (installed / "metrics" / "kinetics400_labels.txt").is_file()
    assert (installed / "dataset_tools" / "youtube_configs" / "horseback.json").is_file()
    scripts = sorted(p.name for p in (installed / "bin").iterdir())
    assert scripts == [
        "long-video-gan-calc-metrics",
        "long-video-gan-demo",
        "long-video-gan-generate",
        "long-video-gan-train-lres",
        "long-video-gan-train-sres",
    ]


def test_installed_code_runs_from_another_directory(installed, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(installed), OMP_NUM_THREADS="1")
    code = (
        "import long_video_gan, dataset_tools, metrics, torch_utils, dnnlib\n"
        "from long_video_gan import api\n"
        "print(long_video_gan.__file__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(installed / "long_video_gan" / "__init__.py")
    script = installed / "bin" / "long-video-gan-generate"
    proc = subprocess.run(
        [sys.executable, str(script), "--help"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0 and "Usage: long-video-gan-generate [OPTIONS]" in proc.stdout, proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "dataset_tools.info", "--help"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0 and "DATASET_DIR" in proc.stdout, proc.stderr
