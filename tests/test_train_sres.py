"""End-to-end tests of train_sres.py on a tiny two-resolution dataset: checkpoints and samples, exact resume after a
kill (ADA state included), a 2-process gloo run, and the input errors reported before any work starts."""

import json
import os
import pickle
import shutil

import imageio_ffmpeg
import pytest
import torch
from click.testing import CliRunner

import dnnlib
import train_sres
from long_video_gan import training_setup
from long_video_gan import training_utils as tu
from tests.data_utils import make_tiny_dataset
from tests.train_test_utils import TINY_CPU, TrainScript, assert_same_state, dry_run_config, load_pickle, only_run_dir
from torch_utils import misc

LR, HR = (36, 64), (144, 256)  # Resolutions of the tiny sres networks (those of the paper).
# Tiny networks (2 hr frames + 4 lr context frames on each side), 2 clips per step, a tick every 2 steps, G-EMA and
# train pickles every 4 steps.
FAST = [*TINY_CPU, "--batch", "2", "--tick", "2", "--snap", "2", "--train-snap", "2"]
SCRIPT = TrainScript(train_sres, FAST)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("sres_data"), num_videos=3, num_frames=30, resolutions=(LR, HR))


@pytest.fixture(scope="module")
def full_run(dataset, tmp_path_factory):
    """Eight uninterrupted steps (pickles at steps 0, 4 and 8; ADA updates at steps 0 and 4)."""
    outdir = tmp_path_factory.mktemp("sres_full")
    SCRIPT.train(["--dataset", str(dataset), "--outdir", str(outdir), "--steps", "8"])
    return only_run_dir(outdir)


# ----------------------------------------------------------------------------


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
    assert meta["size"] == (256, 144) and sum(1 for _ in reader) == 8  # 8 super-resolved frames.
    reader = imageio_ffmpeg.read_frames(str(run_dir / "samples" / "real-lr.mp4"))
    assert next(reader)["size"] == (256, 144) and sum(1 for _ in reader) == 16  # 36x64 x4; 8 + 2 x 4 context frames.

    G = load_pickle(run_dir / "checkpoints" / "ckpt-00000008-G-ema.pkl")
    assert type(G).__name__ == "VideoGenerator" and not G.training
    with torch.no_grad():
        assert G(torch.zeros(1, 3, 10, *LR)).shape == (1, 3, 2, *HR)

    data = load_pickle(run_dir / "checkpoints" / "ckpt-00000008-train.pkl")
    assert data["phase"] == "sres" and data["step"] == 8
    assert type(data["augment"]).__name__ == "AugmentPipe" and type(data["in_augment"]).__name__ == "AugmentPipe"
    assert float(data["in_augment"].p) == 0.5
    assert data["loader_position"] == 2 * 8 + 1  # G and D batches per step plus the R1 batch of step 0.
    stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert [r["progress/step"]["mean"] for r in stats] == [2, 4, 6, 8]
    assert "progress/augment_p" in stats[0] and "loss/D_sign_real" in stats[0]
    config = json.loads((run_dir / "config.json").read_text())
    gan = config["gan_kwargs"]
    assert gan["ada_kwargs"]["interval"] == 4 and gan["r1_interval"] == 16
    assert gan["G_kwargs"]["temporal_context"] == 4 and gan["G_kwargs"]["hr_height"] == 144
    assert config["dataset_kwargs"]["x_flip"] is True and config["dataset_kwargs"]["hr_height"] == 144
    # Only settings that act: no top-level copies of the above (config.json had them before issue 18).
    assert not {"ada_interval", "r1_interval", "temporal_context", "hr_height", "x_flip", "start_step"} & config.keys()


def test_kill_and_resume_equals_uninterrupted(full_run, dataset, tmp_path):
    outdir = tmp_path / "killed"
    args = ["--dataset", str(dataset), "--outdir", str(outdir), "--steps", "8"]
    run_dir = SCRIPT.kill_after_checkpoint(args, outdir, step=4, poll_s=0.02)

    SCRIPT.train(args)
    assert_same_state(
        load_pickle(run_dir / "checkpoints" / "ckpt-00000008-train.pkl"),
        load_pickle(full_run / "checkpoints" / "ckpt-00000008-train.pkl"),
        modules=("G", "D", "G_ema", "augment", "in_augment"),
    )


@pytest.mark.slow
def test_two_process_gloo_run_keeps_ranks_identical(dataset, tmp_path):
    outdir = tmp_path / "ddp"
    SCRIPT.train_two_processes(["--dataset", str(dataset), "--outdir", str(outdir), "--steps", "4"])
    data = load_pickle(only_run_dir(outdir) / "checkpoints" / "ckpt-00000004-train.pkl")
    modules = {k: data[k] for k in ("G", "D", "G_ema", "augment", "in_augment")}
    assert data["world_size"] == 2 and data["rank_digests"] == [misc.combined_digest(modules)] * 2


# ----------------------------------------------------------------------------
# Bad input: a clear error naming the option, before anything is written.


def test_error_missing_resolution_named(tmp_path):
    lr_only = make_tiny_dataset(tmp_path / "a", num_videos=1, num_frames=12, resolutions=(LR,))
    out = SCRIPT.cli_error(["--dataset", str(lr_only)], tmp_path / "o")
    assert "--dataset" in out and "0144x0256" in out
    hr_only = make_tiny_dataset(tmp_path / "b", num_videos=1, num_frames=12, resolutions=(HR,))
    out = SCRIPT.cli_error(["--dataset", str(hr_only)], tmp_path / "o")
    assert "--dataset" in out and "0036x0064" in out


def test_error_resolutions_list_different_clips(tmp_path):
    root = make_tiny_dataset(tmp_path / "a", num_videos=2, num_frames=12, resolutions=(LR,))
    other = make_tiny_dataset(tmp_path / "b", num_videos=3, num_frames=12, resolutions=(HR,))
    shutil.copytree(other / "0144x0256", root / "0144x0256")
    out = SCRIPT.cli_error(["--dataset", str(root)], tmp_path / "o")
    assert "--dataset" in out and "video_0002" in out and "same clips" in out


def test_error_no_clip_long_enough(tmp_path):
    root = make_tiny_dataset(tmp_path, num_videos=2, num_frames=8, resolutions=(LR, HR))
    out = SCRIPT.cli_error(["--dataset", str(root)], tmp_path / "o")
    assert "--dataset" in out and "10 frames" in out and "longest with 8 frames" in out


def test_error_batch_and_resume(dataset, tmp_path):
    out = SCRIPT.cli_error(["--dataset", str(dataset), "--batch", "3", "--grad-accum", "2"], tmp_path / "o")
    assert "--batch must be divisible by" in out
    lres_pickle = {k: 0 for k in tu.TRAIN_PICKLE_KEYS} | {"phase": "lres"}
    (tmp_path / "lres.pkl").write_bytes(pickle.dumps(lres_pickle))
    out = SCRIPT.cli_error(["--dataset", str(dataset), "--resume", str(tmp_path / "lres.pkl")], tmp_path / "o")
    assert "--resume" in out and "lres checkpoint" in out and "sres training" in out


def test_tiny_presets_chain(tmp_path):
    """A tiny low-res G's output is a tiny super-res G's input, and both phases read the same dataset."""
    import train_lres
    from long_video_gan import api

    configs = {}
    for name, module in [("lres", train_lres), ("sres", train_sres)]:
        opts = training_setup.apply_preset(
            dnnlib.EasyDict(preset="tiny", dataset=str(tmp_path), seed=0, metric=()), module.PRESETS
        )
        configs[name] = module.build_config(opts, torch.device("cpu"), 1)
    G_lres = dnnlib.util.construct_class_by_name(**configs["lres"].gan_kwargs["G_kwargs"]).eval()
    G_sres = dnnlib.util.construct_class_by_name(**configs["sres"].gan_kwargs["G_kwargs"]).eval()
    api.check_generator_pair(G_lres, G_sres)
    assert (G_sres.lr_height, G_sres.lr_width) == (G_lres.out_height, G_lres.out_width) == LR
    assert (configs["sres"].dataset_kwargs["lr_height"], configs["sres"].dataset_kwargs["lr_width"]) == LR
    assert (configs["lres"].dataset_kwargs["height"], configs["lres"].dataset_kwargs["width"]) == LR
    with torch.no_grad():
        chunk = next(iter(api.iter_video_chunks(G_lres, G_sres, seed=0, num_frames=2, segment_length=2)))
    assert chunk.video.shape == (1, 3, 2, *HR)


def test_paper_preset_on_cpu_shortens_sample_videos(dataset, tmp_path):
    """The paper preset's 256-frame samples took over 6 minutes on a CPU before the first step (issue 19, item 8)."""
    outdir = tmp_path / "o"
    args = ["--dataset", str(dataset), "--outdir", str(outdir), "--device", "cpu", "--wandb", "off", "--dry-run"]
    result = CliRunner().invoke(train_sres.main, args)
    assert result.exit_code == 0, result.output
    assert "Note: on a CPU the sample videos get 16 frames instead of the preset's 256" in result.output
    assert '"result_seq_length": 16' in result.output and not outdir.exists()


def test_max_minutes_reaches_the_training_loop(dataset, tmp_path):
    """--max-minutes (shared with train_lres.py, whose test runs it) is in the config the loop gets; 0 by default."""
    args = ["--dataset", str(dataset), "--outdir", str(tmp_path / "o"), "--device", "cpu", "--wandb", "off"]
    for extra, expected in (([], 0), (["--max-minutes", "90"], 90)):
        result = CliRunner().invoke(train_sres.main, [*args, *extra, "--dry-run"])
        assert result.exit_code == 0, result.output
        config = dry_run_config(result.output)
        assert config["max_minutes"] == expected
    result = CliRunner().invoke(train_sres.main, [*args, "--max-minutes", "-1", "--dry-run"])
    assert result.exit_code != 0 and "--max-minutes" in result.output


def test_paper_preset_metric_default():
    result = CliRunner().invoke(train_sres.main, ["--help"])
    assert result.exit_code == 0 and "runs/sres" in result.output and "[paper: fvd2048_16f]" in result.output
    assert train_sres.PRESETS["paper"]["metric"] == ("fvd2048_16f",) and train_sres.PRESETS["paper"]["batch"] == 32
