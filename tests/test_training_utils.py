"""Tests for long_video_gan/training_utils.py: EMA schedule, run dirs and their lock, dataset identity, checkpoints,
logs, W&B mode. (Gradient sync: test_distributed.py; seeds, RNG states, seeded loading, digests: test_misc.py.)"""

import json
import os
import pickle

import pytest
import torch

import dnnlib
from long_video_gan import training_utils as tu

# ----------------------------------------------------------------------------
# G EMA.


def test_ema_beta_schedule():
    assert tu.ema_beta(0) == pytest.approx(0.0235, abs=1e-4)
    assert tu.ema_beta(1000) == pytest.approx(0.99626, abs=1e-5)
    assert tu.ema_beta(5000) == pytest.approx(0.99925, abs=1e-5)
    assert tu.ema_beta(25000) == 0.99985
    assert tu.ema_beta(10**6) == 0.99985
    assert all(tu.ema_beta(k) <= tu.ema_beta(k + 1) for k in range(0, 30000, 997))
    with pytest.raises(ValueError, match="step"):
        tu.ema_beta(-1)


class _Net(torch.nn.Module):
    def __init__(self, value):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.full([3], float(value)))
        self.register_buffer("ema_stat", torch.full([2], float(value)))
        self.register_buffer("counter", torch.tensor(int(value)))


def test_update_ema_lerps_parameters_and_buffers():
    ema, src = _Net(1.0), _Net(3.0)
    tu.update_ema(ema, src, beta=0.75)
    assert torch.allclose(ema.weight, torch.full([3], 1.5))  # 1 + (1 - 0.75) * (3 - 1).
    assert torch.allclose(ema.ema_stat, torch.full([2], 1.5))
    assert ema.counter.item() == 3  # Integer buffers are copied.
    assert src.weight.detach().eq(3).all()


# ----------------------------------------------------------------------------
# Run directories.


def test_run_desc_and_next_dir(tmp_path):
    desc = tu.run_desc("/data/horseback/", 64, 2, 1)
    assert desc == "horseback-64batch-2accum-1.0gamma"
    assert tu.get_next_run_dir(str(tmp_path / "missing"), desc).endswith("00000-" + desc)
    for name in ["00003-other", "00010-" + desc, "notes", "7-short"]:
        (tmp_path / name).mkdir()
    assert os.path.basename(tu.get_next_run_dir(str(tmp_path), desc)) == "00011-" + desc
    (tmp_path / ("00002-" + desc)).mkdir()
    assert os.path.basename(tu.find_latest_run_dir(str(tmp_path), desc)) == "00010-" + desc
    assert tu.find_latest_run_dir(str(tmp_path), "nothing-like-it") is None


def test_find_latest_train_checkpoint(tmp_path):
    assert tu.find_latest_train_checkpoint(str(tmp_path)) is None
    os.makedirs(tmp_path / "checkpoints")
    for step in [0, 40, 8]:
        (tmp_path / "checkpoints" / f"ckpt-{step:08d}-train.pkl").write_bytes(b"")
    (tmp_path / "checkpoints" / "ckpt-00000099-G-ema.pkl").write_bytes(b"")
    path, step = tu.find_latest_train_checkpoint(str(tmp_path))
    assert step == 40 and path.endswith("ckpt-00000040-train.pkl")


def test_check_writable_dir(tmp_path):
    tu.check_writable_dir(str(tmp_path / "a" / "b"))
    assert os.listdir(tmp_path) == []  # Checked, nothing created (a failed run leaves no empty directories).
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match="file/runs"):
        tu.check_writable_dir(str(blocker / "runs"))


def test_run_dir_lock_names_holder_and_dies_with_it(tmp_path):
    import subprocess
    import sys

    run_dir = tmp_path / "00000-run"
    run_dir.mkdir()
    script = (
        "import sys, time\n"
        "from long_video_gan import training_utils as tu\n"
        "lock = tu.lock_run_dir(sys.argv[1]); print('locked', flush=True); time.sleep(60)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    holder = subprocess.Popen([sys.executable, "-c", script, str(run_dir)], cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(tu.RunDirBusyError, match=f"run directory '{run_dir}' is in use by pid {holder.pid} on "):
            tu.lock_run_dir(str(run_dir))
    finally:
        holder.kill()  # SIGKILL
        holder.wait()
    tu.lock_run_dir(str(run_dir)).release()


def test_remove_run_dir_without_checkpoints(tmp_path):
    failed = tmp_path / "00000-a"
    (failed / "samples").mkdir(parents=True)
    (failed / "checkpoints").mkdir()
    (failed / "config.json").write_text("{}")
    assert tu.remove_run_dir_without_checkpoints(str(failed)) and not failed.exists()
    kept = tmp_path / "00001-a"
    (kept / "checkpoints").mkdir(parents=True)
    (kept / "checkpoints" / "ckpt-00000000-train.pkl").write_bytes(b"")
    assert not tu.remove_run_dir_without_checkpoints(str(kept)) and kept.exists()


def test_dataset_identity_follows_content_not_location(tmp_path):
    import shutil

    from tests.data_utils import make_tiny_dataset

    a = make_tiny_dataset(tmp_path / "a", num_videos=2, num_frames=6, resolutions=((36, 64),))
    kwargs = dict(dataset_dir=str(a), height=36, width=64)
    first = tu.dataset_identity(kwargs)
    assert first == dict(path=os.path.abspath(a), digest=first["digest"]) and len(first["digest"]) == 64
    moved = tmp_path / "moved"
    shutil.copytree(a, moved)
    assert tu.dataset_identity(dict(kwargs, dataset_dir=str(moved)))["digest"] == first["digest"]
    other = make_tiny_dataset(tmp_path / "b", num_videos=2, num_frames=6, resolutions=((36, 64),), seed=1)
    assert tu.dataset_identity(dict(kwargs, dataset_dir=str(other)))["digest"] != first["digest"]
    assert tu.dataset_resolutions(dict(lr_height=36, lr_width=64, hr_height=144, hr_width=256)) == [
        (36, 64),
        (144, 256),
    ]


# ----------------------------------------------------------------------------
# Checkpoints.


def _train_pickle(phase="lres"):
    return {k: 0 for k in tu.TRAIN_PICKLE_KEYS} | {"phase": phase}


def _write_pickle(obj, path):
    with dnnlib.util.atomic_write(path) as f:  # As training_loop writes its pickles.
        pickle.dump(obj, f)


def test_train_pickle_round_trip(tmp_path):
    path = str(tmp_path / "ckpt.pkl")
    _write_pickle(_train_pickle(), path)
    assert os.listdir(tmp_path) == ["ckpt.pkl"]
    assert tu.load_train_checkpoint(path, "lres")["phase"] == "lres"


def test_load_train_checkpoint_errors(tmp_path):
    with pytest.raises(tu.CheckpointError, match="does not exist"):
        tu.load_train_checkpoint(str(tmp_path / "nope.pkl"), "lres")
    data = pickle.dumps(_train_pickle())
    (tmp_path / "cut.pkl").write_bytes(data[: len(data) // 2])
    with pytest.raises(tu.CheckpointError, match="cut.pkl.*truncated"):
        tu.load_train_checkpoint(str(tmp_path / "cut.pkl"), "lres")
    _write_pickle(_train_pickle("sres"), str(tmp_path / "sres.pkl"))
    with pytest.raises(tu.CheckpointError, match="sres checkpoint.*lres training"):
        tu.load_train_checkpoint(str(tmp_path / "sres.pkl"), "lres")
    _write_pickle(torch.nn.Linear(2, 2), str(tmp_path / "module.pkl"))
    with pytest.raises(tu.CheckpointError, match="not a train checkpoint"):
        tu.load_train_checkpoint(str(tmp_path / "module.pkl"), "lres")
    _write_pickle({"G": 1, "D": 2}, str(tmp_path / "original.pkl"))
    with pytest.raises(tu.CheckpointError, match="lacks"):
        tu.load_train_checkpoint(str(tmp_path / "original.pkl"), "lres")


def test_snapshot_module_and_to_cpu():
    net = _Net(2.0)
    snap = tu.snapshot_module(net)
    assert not snap.training and not snap.weight.requires_grad and net.weight.requires_grad
    state = tu.to_cpu({"a": [torch.ones(1), (torch.zeros(2), 3)], "b": "x"})
    assert state["a"][1][1] == 3 and state["b"] == "x"


# ----------------------------------------------------------------------------
# Logs.


def test_trim_jsonl(tmp_path):
    path = tmp_path / "stats.jsonl"
    lines = [json.dumps({"step": s, "v": s * 2}) for s in [0, 10, 20, 30]]
    path.write_text("\n".join(lines) + "\n" + '{"step": 4')  # The last line was cut by a kill.
    tu.trim_jsonl(str(path), 10, lambda r: r["step"])
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [0, 10]


def test_status_line_fixed_width():
    a = tu.status_line(10, 1, 5.0, 0.5, 0.1, 1.0, 0.0, 0.0)
    b = tu.status_line(123456, 999, 7265.0, 12.345, 123.4, 12.5, 30.25, 31.5)
    assert len(a) == len(b)
    assert a.startswith("step 10 ") and "sec/step 0.500" in a and "time 2h 01m 05s" in b


def test_wandb_mode_never_prompts(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert tu.resolve_wandb_mode("off") == "off"
    assert tu.resolve_wandb_mode(None) == "off"  # No login (and no TTY under pytest).
    assert tu.resolve_wandb_mode("online") == "offline"  # A login prompt would block.
    with pytest.raises(ValueError, match="'sometimes'"):
        tu.resolve_wandb_mode("sometimes")
