"""End-to-end tests of train_lres.py on a tiny synthetic dataset: checkpoints and samples, exact resume after a kill,
a 2-process gloo run, and the input errors reported before any work starts."""

import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import imageio_ffmpeg
import pytest
import torch
from click.testing import CliRunner

import train_lres
from long_video_gan import training_loop, training_setup
from long_video_gan import training_utils as tu
from tests.data_utils import make_tiny_dataset
from tests.train_test_utils import (
    TINY_CPU,
    TrainScript,
    assert_same_state,
    dry_run_config,
    load_pickle,
    only_run_dir,
    train_env,
)
from torch_utils import misc

# Tiny networks, 2 clips per step, a status line every step, G-EMA and train pickles every 2 steps.
FAST = [*TINY_CPU, "--batch", "2", "--grad-accum", "1", "--tick", "1", "--snap", "2", "--train-snap", "2"]
SCRIPT = TrainScript(train_lres, FAST)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT_PATH = Path(ROOT)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("lres_data"), num_videos=3, num_frames=40)


@pytest.fixture(scope="module")
def full_run(dataset, tmp_path_factory):
    """Four uninterrupted steps (pickles at steps 0, 2 and 4)."""
    outdir = tmp_path_factory.mktemp("lres_full")
    stdout = SCRIPT.train(["--dataset", str(dataset), "--outdir", str(outdir), "--steps", "4"])
    return only_run_dir(outdir), stdout


# ----------------------------------------------------------------------------


def test_tiny_run_writes_checkpoints_samples_and_logs(full_run):
    run_dir, stdout = full_run
    assert run_dir.name == "00000-tiny_dataset-2batch-1accum-1.0gamma"
    ckpts = sorted(os.listdir(run_dir / "checkpoints"))
    assert ckpts == [f"ckpt-{s:08d}-{k}.pkl" for s in (0, 2, 4) for k in ("G-ema", "train")]
    samples = sorted(os.listdir(run_dir / "samples"))
    assert samples == ["fake-00000000.mp4", "fake-00000002.mp4", "fake-00000004.mp4", "real-long.mp4", "real-train.mp4"]
    reader = imageio_ffmpeg.read_frames(str(run_dir / "samples" / "fake-00000004.mp4"))
    meta = next(reader)
    assert meta["size"] == (256, 144) and sum(1 for _ in reader) == 32  # One 36x64 clip x4, 32 frames.

    # G-EMA pickle: a CPU generator in eval mode that renders video.
    G = load_pickle(run_dir / "checkpoints" / "ckpt-00000004-G-ema.pkl")
    assert type(G).__name__ == "VideoGenerator" and not G.training
    assert all(p.device.type == "cpu" and not p.requires_grad for p in G.parameters())
    with torch.no_grad():
        assert G(1, 16).shape == (1, 3, 16, 36, 64)

    # Train pickle: everything a resume needs.
    data = load_pickle(run_dir / "checkpoints" / "ckpt-00000004-train.pkl")
    assert data["phase"] == "lres" and data["step"] == 4 and data["world_size"] == 1
    assert data["loader_position"] == 4 + 1  # One D batch per step plus the R1 batch of step 0.
    assert data["G_opt"]["state"] and data["D_opt"]["state"]

    # Logs: one fixed-width status line per tick, stats.jsonl per tick, the config.
    status = [line for line in (run_dir / "log.txt").read_text().splitlines() if line.startswith("step ")]
    assert len(status) == 4 and len({len(line) for line in status}) == 1
    stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert [r["progress/step"]["mean"] for r in stats] == [1, 2, 3, 4]
    assert stats[0]["loss/r1_penalty"]["num"] == 2 and "timing/sec_per_step" in stats[0] and "timestamp" in stats[0]
    config = (run_dir / "config.json").read_text()
    for key in ("total_batch", "gan_kwargs", "loader_kwargs", "ticks_per_train_ckpt", "r1_interval"):
        assert f'"{key}"' in config
    leftovers = [p for p in run_dir.rglob("*") if ".tmp" in p.name]
    assert leftovers == []


def test_module_summaries_use_random_input(full_run):
    """The start-up summaries' output statistics come from random input, not zeros (issue 19, item 12)."""
    stdout = full_run[1]
    d_summary = stdout[stdout.index("\nD:\n") :]
    (row,) = [line.split() for line in d_summary.splitlines() if line.startswith("epilogue.linear_1 ")]
    assert float(row[-1]) > 0  # max|x| of D's output logit


def test_kill_and_resume_equals_uninterrupted(full_run, dataset, tmp_path):
    full_dir, _ = full_run
    outdir = tmp_path / "killed"
    args = ["--dataset", str(dataset), "--outdir", str(outdir), "--steps", "4"]
    run_dir = SCRIPT.kill_after_checkpoint(args, outdir, step=2)

    stdout = SCRIPT.train(args)  # The same command again resumes the run.
    assert only_run_dir(outdir) == run_dir
    assert "Resuming from" in (run_dir / "log.txt").read_text()
    assert_same_state(
        load_pickle(run_dir / "checkpoints" / "ckpt-00000004-train.pkl"),
        load_pickle(full_dir / "checkpoints" / "ckpt-00000004-train.pkl"),
    )
    ema = [misc.module_digest(load_pickle(d / "checkpoints" / "ckpt-00000004-G-ema.pkl")) for d in (run_dir, full_dir)]
    assert ema[0] == ema[1]
    stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert [r["progress/step"]["mean"] for r in stats] == [1, 2, 3, 4]  # What the killed run logged later is gone.

    # Once complete, rerunning does nothing.
    stdout = SCRIPT.train(args)
    assert "is complete" in stdout and "Training for" not in stdout


def test_max_minutes_stops_at_a_tick_with_a_train_pickle_and_resumes(full_run, dataset, tmp_path):
    full_dir, _ = full_run
    outdir = tmp_path / "timed"
    args = ["--dataset", str(dataset), "--outdir", str(outdir), "--steps", "4"]
    stdout = SCRIPT.train([*args, "--max-minutes", "1e-6"])  # Past the limit at the first tick (step 1).
    run_dir = only_run_dir(outdir)
    assert "Stopping at step 1: --max-minutes=1e-06 reached" in stdout
    ckpts = sorted(os.listdir(run_dir / "checkpoints"))
    assert ckpts == [f"ckpt-{s:08d}-{k}.pkl" for s in (0, 1) for k in ("G-ema", "train")]

    SCRIPT.train(args)  # The same command without the limit continues to the end, as if never stopped.
    assert only_run_dir(outdir) == run_dir
    assert_same_state(
        load_pickle(run_dir / "checkpoints" / "ckpt-00000004-train.pkl"),
        load_pickle(full_dir / "checkpoints" / "ckpt-00000004-train.pkl"),
    )


@pytest.mark.slow
def test_two_process_gloo_run_keeps_ranks_identical(dataset, tmp_path):
    outdir = tmp_path / "ddp"
    SCRIPT.train_two_processes(["--dataset", str(dataset), "--outdir", str(outdir), "--steps", "2"])
    run_dir = only_run_dir(outdir)
    data = load_pickle(run_dir / "checkpoints" / "ckpt-00000002-train.pkl")
    assert data["world_size"] == 2 and len(data["rng_states"]) == 2
    # Each rank's digest of its own G, D and G_ema, gathered at the snapshot, equals the pickled networks'.
    expected = misc.combined_digest({"G": data["G"], "D": data["D"], "G_ema": data["G_ema"]})
    assert data["rank_digests"] == [expected, expected]
    assert not torch.equal(data["rng_states"][0]["torch_cpu"], data["rng_states"][1]["torch_cpu"])  # Per-rank seeds.


# ----------------------------------------------------------------------------
# Bad input: a clear error naming the option, before anything is written.


def test_error_batch_not_divisible(dataset, tmp_path):
    out = SCRIPT.cli_error(["--dataset", str(dataset), "--batch", "3", "--grad-accum", "2"], tmp_path / "o")
    assert "--batch must be divisible by world size x --grad-accum = 1 x 2 = 2, got 3" in out


def test_error_dataset_without_low_res(tmp_path):
    root = make_tiny_dataset(tmp_path, num_videos=1, num_frames=20, resolutions=((144, 256),))
    out = SCRIPT.cli_error(["--dataset", str(root)], tmp_path / "o")
    assert "--dataset" in out and "0036x0064" in out


def test_error_no_clip_long_enough(tmp_path):
    root = make_tiny_dataset(tmp_path, num_videos=2, num_frames=[10, 12])
    out = SCRIPT.cli_error(["--dataset", str(root)], tmp_path / "o")
    assert "--dataset" in out and "16 frames" in out and "longest with 12 frames" in out


def test_error_resume_missing_truncated_wrong_phase(dataset, tmp_path, full_run):
    out = SCRIPT.cli_error(["--dataset", str(dataset), "--resume", str(tmp_path / "nope.pkl")], tmp_path / "o")
    assert "--resume" in out and "nope.pkl' does not exist" in out
    good = (full_run[0] / "checkpoints" / "ckpt-00000002-train.pkl").read_bytes()
    (tmp_path / "cut.pkl").write_bytes(good[: len(good) // 2])
    out = SCRIPT.cli_error(["--dataset", str(dataset), "--resume", str(tmp_path / "cut.pkl")], tmp_path / "o")
    assert "--resume" in out and "truncated" in out
    data = pickle.loads(good)
    data["phase"] = "sres"
    (tmp_path / "sres.pkl").write_bytes(pickle.dumps(data))
    out = SCRIPT.cli_error(["--dataset", str(dataset), "--resume", str(tmp_path / "sres.pkl")], tmp_path / "o")
    assert "--resume" in out and "sres checkpoint" in out and "lres training" in out


def test_error_unknown_metric(dataset, tmp_path):
    out = SCRIPT.cli_error(["--dataset", str(dataset), "-m", "fvd9"], tmp_path / "o")
    assert "--metric: unknown name 'fvd9'; valid:" in out and "fvd2048_16f" in out


def test_error_outdir_not_writable(dataset, tmp_path):
    (tmp_path / "file").write_text("not a directory")
    out = SCRIPT.cli_error(["--dataset", str(dataset)], tmp_path / "file" / "runs")
    assert "--outdir" in out and "not writable" in out


def test_dry_run_prints_config_only(dataset, tmp_path):
    result = CliRunner().invoke(
        train_lres.main, [*FAST, "--dataset", str(dataset), "--outdir", str(tmp_path / "o"), "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    assert '"seq_length": 16' in result.output and '"total_batch": 2' in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "args, policy",
    [
        ([], "color,translation,cutout"),  # The tiny preset of FAST: the original's policy.
        (["--preset", "demo"], "translation"),
        (["--diffaug", "none"], ""),
        (["--preset", "demo", "--diffaug", " cutout, color"], "cutout,color"),
    ],
)
def test_diffaug_option_sets_the_policy(dataset, tmp_path, args, policy):
    result = CliRunner().invoke(
        train_lres.main, [*FAST, "--dataset", str(dataset), "--outdir", str(tmp_path / "o"), *args, "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    config = dry_run_config(result.output)
    assert config["gan_kwargs"]["diffaug_policy"] == policy


@pytest.mark.parametrize("value, what", [("color,zoom", "unknown op 'zoom'"), ("color,color", "an op repeated")])
def test_diffaug_option_refuses_unknown_or_repeated_ops(dataset, tmp_path, value, what):
    result = CliRunner().invoke(train_lres.main, [*FAST, "--dataset", str(dataset), "--diffaug", value, "--dry-run"])
    assert result.exit_code == 2
    assert f"Invalid value for '--diffaug': {what} in {value!r}" in result.output


def test_mbstd_option_adds_the_layer_and_trains(dataset, tmp_path):
    """--mbstd F (our addition) puts an F-channel minibatch-stddev layer in D's epilogue, keeping the preset's epilogue
    width; a D call's clip count must split into groups of 4; a run with it trains and writes finite weights."""
    result = CliRunner().invoke(
        train_lres.main,
        [*FAST, "--dataset", str(dataset), "--outdir", str(tmp_path / "o"), "--mbstd", "2", "--dry-run"],
    )
    assert result.exit_code == 0, result.output
    config = dry_run_config(result.output)
    assert config["gan_kwargs"]["D_kwargs"]["epilogue_kwargs"] == {"channels": 16, "mbstd_num_channels": 2}
    out = SCRIPT.cli_error(["--dataset", str(dataset), "--batch", "6", "--mbstd", "1"], tmp_path / "o")
    assert "--mbstd needs the clips per D call" in out and "= 6)" in out
    SCRIPT.train(["--dataset", str(dataset), "--outdir", str(tmp_path / "run"), "--steps", "2", "--mbstd", "1"])
    data = load_pickle(only_run_dir(tmp_path / "run") / "checkpoints" / "ckpt-00000002-train.pkl")
    D = data["D"]
    assert D.epilogue.mbstd is not None and D.epilogue.mbstd.num_channels == 1
    assert all(torch.isfinite(p).all() for p in D.parameters())


# ----------------------------------------------------------------------------
# Resume and run directories (issue 19, items 4, 5 and 12).


def test_auto_resume_refuses_another_dataset_and_follows_a_moved_one(full_run, dataset, tmp_path):
    outdir = tmp_path / "runs"
    shutil.copytree(full_run[0].parent, outdir)
    before = sorted(p.name for p in outdir.iterdir())
    # The same run name (same dataset directory name), other content.
    other = make_tiny_dataset(tmp_path / "other", num_videos=3, num_frames=40, seed=1)
    assert other.name == dataset.name
    args = [*FAST, "--dataset", str(other), "--outdir", str(outdir), "--steps", "6"]
    result = CliRunner().invoke(train_lres.main, args)
    assert result.exit_code == 1, result.output
    error = result.output.strip().splitlines()[-1]
    assert error.startswith("Error: --resume: ") and "ckpt-00000004-train.pkl' was trained with other settings" in error
    assert f"dataset: '{dataset}' (content digest " in error and f"-> '{other}' (content digest " in error
    assert "other data" in error and "pass --resume=none to start a new run" in error
    assert sorted(p.name for p in outdir.iterdir()) == before  # Nothing written, config.json untouched.
    # The same data at another path resumes.
    moved = tmp_path / "moved" / dataset.name
    shutil.copytree(dataset, moved)
    result = CliRunner().invoke(
        train_lres.main, [*FAST, "--dataset", str(moved), "--outdir", str(outdir), "--steps", "6", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    assert '"resume_path": "' in result.output and "ckpt-00000004-train.pkl" in result.output


# The keys config.json had before issue 18 that no code read; runs written then still resume.
DEAD_KEYS = {"height", "width", "x_flip", "start_step", "r1_interval"}


def test_run_written_before_the_dead_config_keys_went_still_resumes(full_run, dataset, tmp_path):
    # tests/data/config_lres_before_issue18.json: the --dry-run config of this file's FAST options, written by the
    # code before issue 18 (paths replaced by placeholders); the dataset is the same as `dataset` (same content digest).
    text = (ROOT_PATH / "tests" / "data" / "config_lres_before_issue18.json").read_text()
    outdir = tmp_path / "runs"
    shutil.copytree(full_run[0].parent, outdir)
    run_dir = only_run_dir(outdir)
    old = json.loads(text.replace("@DATASET@", str(dataset)).replace("@RUN_DIR@", str(run_dir)))
    assert DEAD_KEYS <= old.keys()
    (run_dir / "config.json").write_text(json.dumps(old, indent=2))
    ckpt = run_dir / "checkpoints" / "ckpt-00000004-train.pkl"
    data = load_pickle(ckpt)
    data["config"] = old
    ckpt.write_bytes(pickle.dumps(data))
    args = [*FAST, "--dataset", str(dataset), "--outdir", str(outdir), "--steps", "6", "--dry-run"]
    result = CliRunner().invoke(train_lres.main, args)
    assert result.exit_code == 0, result.output
    new = dry_run_config(result.output)
    assert new["resume_path"] == str(ckpt)
    # The new config is the old one less the dead keys plus the keys added since (at their defaults), in the same
    # order; only resume_path and total_steps (--steps 6 here) differ.
    old_less_dead = {k: v for k, v in old.items() if k not in DEAD_KEYS}
    added = {"max_minutes": 0}
    assert {k: new[k] for k in added} == added
    new = {k: v for k, v in new.items() if k not in added}
    assert list(new) == list(old_less_dead)
    assert {k for k in new if new[k] != old_less_dead[k]} == {"resume_path", "total_steps"}
    assert training_setup.config_differences(old, new) == []


def test_resume_check_names_the_nested_setting_that_differs(full_run, dataset, tmp_path):
    # A run made with the original's DiffAugment policy, continued with --diffaug translation: the message names
    # gan_kwargs.diffaug_policy, not the whole of gan_kwargs.
    outdir = tmp_path / "runs"
    shutil.copytree(full_run[0].parent, outdir)
    args = [*FAST, "--dataset", str(dataset), "--outdir", str(outdir), "--steps", "6", "--diffaug", "translation"]
    result = CliRunner().invoke(train_lres.main, [*args, "--dry-run"])
    assert result.exit_code == 1, result.output
    error = result.output.strip().splitlines()[-1]
    assert error.endswith(
        'was trained with other settings (gan_kwargs.diffaug_policy: "color,translation,cutout" -> "translation"); '
        "pass --resume=none to start a new run"
    )
    old, new = {"gan_kwargs": {"a": {"b": 1}, "c": 2}}, {"gan_kwargs": {"a": {"b": 3}, "c": 2, "d": 4}}
    assert training_setup._value_differences("gan_kwargs", old["gan_kwargs"], new["gan_kwargs"]) == [
        "gan_kwargs.a.b: 1 -> 3",
        "gan_kwargs.d: null -> 4",
    ]


@pytest.mark.slow  # ~15-30 s: one training process started, a second one refused.
def test_second_copy_of_a_running_command_refuses(dataset, tmp_path):
    outdir = tmp_path / "runs"
    cmd = [sys.executable, str(train_lres.__file__), *FAST, "--dataset", str(dataset), "--outdir", str(outdir)]
    first = subprocess.Popen([*cmd, "--steps", "1000"], cwd=ROOT, env=train_env(), stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(outdir.glob(f"*/{tu.RUN_LOCK_NAME}")):
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        run_dir = only_run_dir(outdir)
        start = time.monotonic()
        second = subprocess.run(
            [*cmd, "--steps", "1000"], cwd=ROOT, env=train_env(), capture_output=True, text=True, timeout=120
        )
        assert second.returncode == 1, second.stdout + second.stderr
        assert f"Error: run directory '{run_dir}' is in use by pid {first.pid} on " in second.stderr
        assert "--resume=none" in second.stderr and time.monotonic() - start < 60
        assert only_run_dir(outdir) == run_dir
    finally:
        first.kill()  # SIGKILL: the lock goes with the process.
        first.wait()
    tu.lock_run_dir(str(run_dir)).release()


def test_failed_new_run_leaves_no_run_dir(dataset, tmp_path, monkeypatch):
    def fail_before_first_checkpoint(run_dir, **kwargs):
        os.makedirs(os.path.join(run_dir, "samples"))
        (tmp_path / "seen").write_text(run_dir)
        raise RuntimeError("simulated failure at start-up")

    monkeypatch.setattr(training_loop, "training_loop", fail_before_first_checkpoint)
    outdir = tmp_path / "runs"
    result = CliRunner().invoke(train_lres.main, [*FAST, "--dataset", str(dataset), "--outdir", str(outdir)])
    assert isinstance(result.exception, RuntimeError) and (tmp_path / "seen").exists()
    assert "the run failed before its first checkpoint" in result.output
    assert not outdir.exists()  # --outdir did not exist before this run, so it goes too.
    outdir.mkdir()
    result = CliRunner().invoke(train_lres.main, [*FAST, "--dataset", str(dataset), "--outdir", str(outdir)])
    assert isinstance(result.exception, RuntimeError) and list(outdir.iterdir()) == []  # The user's outdir stays.


class _StopAtDataset(Exception):
    """Raised by the dataset class below: ends `training_loop` right after its set-up."""


class _NoDataset:
    def __init__(self, **kwargs):
        raise _StopAtDataset


def test_precision_flags_come_from_the_config(tmp_path):
    # config.json's allow_tf32, allow_fp16_reduce and benchmark set the torch flags (they were once ignored).
    flags = [
        (torch.backends.cuda.matmul, "allow_tf32", "allow_tf32"),
        (torch.backends.cudnn, "allow_tf32", "allow_tf32"),
        (torch.backends.cuda.matmul, "allow_fp16_reduced_precision_reduction", "allow_fp16_reduce"),
        (torch.backends.cudnn, "benchmark", "benchmark"),
    ]
    saved = [getattr(obj, name) for obj, name, _ in flags]
    try:
        for value in (True, False):
            settings = dict(allow_tf32=value, allow_fp16_reduce=value, benchmark=value)
            with pytest.raises(_StopAtDataset):
                training_loop.training_loop(
                    run_dir=str(tmp_path),
                    phase="lres",
                    gan_kwargs={},
                    dataset_kwargs=dict(class_name=f"{__name__}._NoDataset"),
                    device="cpu",
                    total_batch=1,
                    **settings,
                )
            assert [getattr(obj, name) for obj, name, _ in flags] == [settings[key] for _, _, key in flags]
    finally:
        for (obj, name, _), value in zip(flags, saved):
            setattr(obj, name, value)


def test_help_lists_paper_defaults():
    result = CliRunner().invoke(train_lres.main, ["--help"])
    assert result.exit_code == 0 and "runs/lres" in result.output and "[paper: 64]" in result.output
