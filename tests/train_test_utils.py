"""Test helpers for the end-to-end tests of train_lres.py and train_sres.py: running a script (plainly, killed after
a checkpoint, as two gloo processes, or in-process for its input errors) and comparing train pickles.

Example (in a test)::

    from tests.train_test_utils import TINY_CPU, TrainScript, only_run_dir
    SCRIPT = TrainScript(train_lres, [*TINY_CPU, "--batch", "2"])
    SCRIPT.train(["--dataset", str(dataset), "--outdir", str(outdir), "--steps", "4"])
    run_dir = only_run_dir(outdir)
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import torch
from click.testing import CliRunner

from torch_utils import misc

ROOT = Path(__file__).resolve().parents[1]

# The options every test run passes: tiny networks on the CPU, data loaded in the main process, no W&B.
TINY_CPU = ["--preset", "tiny", "--device", "cpu", "--workers", "0", "--wandb", "off"]

# ----------------------------------------------------------------------------


def train_env() -> dict:
    """The environment of a training subprocess: this checkout importable, one thread, and a plain (not torchrun)
    launch even when the tests themselves run under torchrun."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    return env


def only_run_dir(outdir) -> Path:
    """The one run directory under `outdir` (fails if there are none or several)."""
    runs = sorted(p for p in Path(outdir).iterdir() if p.is_dir())
    assert len(runs) == 1, runs
    return runs[0]


def dry_run_config(output: str) -> dict:
    """The resolved config a training script's --dry-run printed (the JSON object in its output)."""
    return json.loads(output[output.index("{") : output.rindex("}") + 1])


def load_pickle(path):
    with open(path, "rb") as f:
        return pickle.load(f)


def assert_same_state(a: dict, b: dict, modules=("G", "D", "G_ema")) -> None:
    """Bitwise equality of the `modules`, optimiser states, RNG states, data position and step of two train
    pickles."""
    for name in modules:
        assert misc.module_digest(a[name]) == misc.module_digest(b[name]), name
    for opt in ("G_opt", "D_opt"):
        sa, sb = a[opt]["state"], b[opt]["state"]
        assert sa.keys() == sb.keys()
        for k in sa:
            for key in sa[k]:
                assert torch.equal(torch.as_tensor(sa[k][key]), torch.as_tensor(sb[k][key])), (opt, k, key)
    for ra, rb in zip(a["rng_states"], b["rng_states"]):
        assert torch.equal(ra["torch_cpu"], rb["torch_cpu"])
    assert a["loader_position"] == b["loader_position"] and a["step"] == b["step"]


# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrainScript:
    """A training script under test: its module (whose `main` is the click command) and the options that go before
    each test's own in every run of it."""

    module: types.ModuleType
    fast: list[str]

    def _cmd(self, args) -> list[str]:
        return [str(ROOT / f"{self.module.__name__}.py"), *self.fast, *args]

    def train(self, args, timeout=600) -> str:
        """Runs the script in a subprocess to the end; returns its stdout (fails on a non-zero exit)."""
        cmd = [sys.executable, *self._cmd(args)]
        proc = subprocess.run(cmd, cwd=ROOT, env=train_env(), capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout

    def train_two_processes(self, args, timeout=600) -> None:
        """Runs the script under `torch.distributed.run` as two gloo ranks (fails on a non-zero exit)."""
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        cmd = [*launcher, *self._cmd(args)]
        proc = subprocess.run(cmd, cwd=ROOT, env=train_env(), capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    def kill_after_checkpoint(self, args, outdir: Path, step: int, poll_s: float = 0.05) -> Path:
        """Starts a run into `outdir`, SIGKILLs it once its step-`step` train pickle exists and returns its run
        directory, without the checkpoints of later steps (a kill that came late may have let some through)."""
        cmd = [sys.executable, *self._cmd(args)]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=train_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 600
            while not list(outdir.glob(f"*/checkpoints/ckpt-{step:08d}-train.pkl")):
                assert proc.poll() is None, f"training ended before its step-{step} checkpoint"
                assert time.time() < deadline
                time.sleep(poll_s)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
        run_dir = only_run_dir(outdir)
        for path in (run_dir / "checkpoints").glob("ckpt-*"):  # Names are ckpt-<step>-<kind>.pkl.
            if int(path.name.split("-")[1]) > step:
                path.unlink()
        return run_dir

    def cli_error(self, args, outdir) -> str:
        """Calls the command in-process with bad input; checks it fails before making a run directory and returns
        its output (the error message)."""
        result = CliRunner().invoke(self.module.main, [*self.fast, "--outdir", str(outdir), *args])
        assert result.exit_code != 0, result.output
        assert not Path(outdir).exists()  # Nothing made: neither a run directory nor --outdir itself.
        return result.output
