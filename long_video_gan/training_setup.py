"""Plain functions that `train_lres.py` and `train_sres.py` call, in this order, between their parsed options and
`training_loop`: `apply_preset`, `resolve_launch`, `check_options`, `check_outdir`, `run_config` (from the script's
own `build_config`), then `setup_and_train` with the finished config (dataset check, run directory, resume, launch).

Every check runs before any training work and raises `ConfigError` (a `click.ClickException`: the command ends with
the message and exit status 1, not a traceback) with a message that names the command-line option at fault. Range
checks of single options are the scripts' click types; the checks here relate options to each other or to files.
Under `torch.distributed.run` every rank runs this code; rank 0 chooses the run directory and tells the others.
"""

import json
import os
import sys
import zipfile

import click
import torch

import dnnlib
from long_video_gan import training_utils as tu
from torch_utils import distributed

# ----------------------------------------------------------------------------


class ConfigError(click.ClickException):
    """A bad command-line option; the message names it."""


def paper_hint(value) -> str:
    """The `[paper: ...]` note of an option's help, from the value of the script's "paper" preset (so --help cannot
    drift from what a run with that preset gets); empty for an empty --metric list."""
    if isinstance(value, tuple):
        return f"  [paper: {', '.join(value)}]" if value else ""
    return f"  [paper: {value}]"


# --max-minutes, the same in both training scripts.
max_minutes_option = click.option(
    "--max-minutes",
    help="Stop at the first tick after this many minutes of training, writing a G-EMA snapshot and a train pickle; "
    "rerunning the command continues the run (for job time limits; 0 = none).",
    type=click.FloatRange(min=0),
    default=0,
    show_default=True,
)


def apply_preset(opts: dict, presets: dict) -> dnnlib.EasyDict:
    """Fills the options the user left unset (None, or an empty tuple for multiple options) from `presets[--preset]`;
    `--metric none` means no metric."""
    opts = dnnlib.EasyDict(opts)
    if opts.preset not in presets:
        raise ConfigError(f"--preset: unknown preset '{opts.preset}'; valid: {', '.join(presets)}")
    for key, value in presets[opts.preset].items():
        if opts.get(key) is None or opts.get(key) == ():
            opts[key] = value
    if list(opts.metric) == ["none"]:
        opts.metric = ()
    return opts


def resolve_launch(device_option: str | None) -> tuple[torch.device, int, int]:
    """(device, world size, rank) of this process: --device resolved, the world from `torch.distributed.run`'s
    environment (1 rank for a plain launch)."""
    try:
        device = distributed.resolve_device(device_option)
    except ValueError as e:
        raise ConfigError(f"--device: {e}") from None
    return device, int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))


def check_options(opts: dnnlib.EasyDict, world_size: int) -> None:
    """Checks that relate options to each other and the metric names (no file access); each option's own range is
    its click type."""
    if opts.batch % (world_size * opts.grad_accum) != 0:
        raise ConfigError(
            f"--batch must be divisible by world size x --grad-accum = {world_size} x {opts.grad_accum} = "
            f"{world_size * opts.grad_accum}, got {opts.batch}"
        )
    if opts.train_snap % opts.snap != 0:
        raise ConfigError(f"--train-snap must be a multiple of --snap ({opts.snap}), got {opts.train_snap}")
    if opts.metric:
        try:
            from metrics import metric_main
        except ImportError as e:
            raise ConfigError(f"--metric: the metrics package cannot be imported ({e})") from None
        for name in opts.metric:
            if not metric_main.is_valid_metric(name):
                valid = ", ".join(metric_main.list_valid_metrics())
                raise ConfigError(f"--metric: unknown name '{name}'; valid: {valid} (or 'none')")


def check_outdir(outdir: str) -> None:
    try:
        tu.check_writable_dir(outdir)
    except PermissionError as e:
        raise ConfigError(f"--outdir: {e}") from None


def check_dataset(dataset_kwargs: dict) -> None:
    """Opens the training dataset once: missing resolution directories, clips that differ between resolutions and
    clips too short for the clip length are reported here."""
    try:
        dataset = dnnlib.util.construct_class_by_name(**dataset_kwargs)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"--dataset: {e}") from None
    dataset.close()


# ----------------------------------------------------------------------------


def run_config(
    phase: str,
    opts: dnnlib.EasyDict,
    device,
    world_size: int,
    *,
    dataset_kwargs: dict,
    gan_kwargs: dict,
) -> dnnlib.EasyDict:
    """The training config of either phase (what its `build_config` returns, saved as config.json): the settings both
    phases take from the same options, plus the phase's dataset and GAN. Each key is a parameter of `training_loop`.
    The precision flags are those the original trains with: no TF32, no reduced-precision fp16 reductions, no cuDNN
    autotuning (whose algorithm choice can differ between runs and break exact reproducibility)."""
    return dnnlib.EasyDict(
        phase=phase,
        run_dir=None,
        dataset_dir=opts.dataset,
        seq_length=opts.seq_length,
        seed=opts.seed,
        benchmark=False,
        allow_fp16_reduce=False,
        allow_tf32=False,
        total_steps=opts.steps,
        max_minutes=opts.get("max_minutes", 0),  # A command-line option only (not in the presets): 0 when unset.
        steps_per_tick=opts.tick,
        ticks_per_G_ema_ckpt=opts.snap,
        ticks_per_train_ckpt=opts.train_snap,
        result_seq_length=opts.result_seq_length,
        total_batch=opts.batch,
        grad_accum=opts.grad_accum,
        metrics=list(opts.metric),
        loader_kwargs=dict(num_workers=opts.workers, prefetch_factor=2, pin_memory=device.type == "cuda"),
        metric_kwargs=dict(normalize_weighting=True, single_sample_per_video=False, replace_cache=False, verbose=False),
        dataset_kwargs=dataset_kwargs,
        gan_kwargs=gan_kwargs,
        preset=opts.preset,
        device=str(device),
        world_size=world_size,
        wandb_project=f"long-video-gan-{phase}",
    )


# ----------------------------------------------------------------------------

# Settings that must match between a run and the checkpoint it resumes from.
RESUME_KEYS = ("gan_kwargs", "dataset_kwargs", "total_batch", "grad_accum", "seed")


def _normalised(value):
    return json.loads(json.dumps(value))


def _dataset_difference(old: dict, new: dict) -> str | None:
    """'dataset: ...' if the run resumed from was trained on other data than `new` reads, else None.

    Compared by content digest (tu.dataset_identity), so a dataset that moved still resumes; a checkpoint from
    before digests were recorded is compared by the dataset's absolute path."""
    old_id, new_id = old.get("dataset_identity"), new.get("dataset_identity")
    if not isinstance(new_id, dict):
        return None
    if isinstance(old_id, dict) and "digest" in old_id:
        if old_id["digest"] == new_id["digest"]:
            return None
        return (
            f"dataset: '{old_id.get('path')}' (content digest {old_id['digest'][:12]}) -> '{new_id['path']}' "
            f"(content digest {new_id['digest'][:12]}): other data"
        )
    old_dir = old.get("dataset_dir")
    if old_dir is not None and os.path.abspath(old_dir) != new_id["path"]:
        return f"dataset: '{os.path.abspath(old_dir)}' -> '{new_id['path']}'"
    return None


def config_differences(old: dict, new: dict) -> list[str]:
    """`key: old -> new` for each resume-relevant setting that differs; the dataset by its identity (content
    digest), so a moved dataset resumes and another one does not."""
    diffs = []
    dataset_diff = _dataset_difference(old, new)
    if dataset_diff is not None:
        diffs.append(dataset_diff)
    for key in RESUME_KEYS:
        a, b = _normalised(old.get(key)), _normalised(new.get(key))
        if key == "dataset_kwargs" and isinstance(a, dict) and isinstance(b, dict):
            a, b = (
                {k: v for k, v in a.items() if k != "dataset_dir"},
                {k: v for k, v in b.items() if k != "dataset_dir"},
            )
        diffs += _value_differences(key, a, b)
    return diffs


def _value_differences(name: str, a, b) -> list[str]:
    """`name: a -> b`, descending into dicts so that the message names the innermost keys that differ
    (`gan_kwargs.diffaug_policy: ...`, not the whole of gan_kwargs)."""
    if a == b:
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        diffs = []
        for k in list(a) + [k for k in b if k not in a]:
            diffs += _value_differences(f"{name}.{k}", a.get(k), b.get(k))
        return diffs
    return [f"{name}: {json.dumps(a)} -> {json.dumps(b)}"]


def resolve_run(c: dnnlib.EasyDict, outdir: str, resume: str, desc: str) -> tuple[str | None, str | None, dict | None]:
    """(run dir to continue or None for a new one, resume pickle path, loaded pickle) for `--resume`.

    `auto`: the newest train pickle of the newest run dir under `outdir` whose name ends with `desc` (a rerun of the
    same command continues it); `none`: always a new run; a path: resume from that pickle in a new run dir.
    """
    run_dir = path = None
    if resume == "auto":
        latest = tu.find_latest_run_dir(outdir, desc)
        found = tu.find_latest_train_checkpoint(latest) if latest else None
        if found:
            run_dir, path = latest, found[0]
    elif resume != "none":
        path = resume
    if path is None:
        return None, None, None

    try:
        data = tu.load_train_checkpoint(path, c.phase)
    except tu.CheckpointError as e:
        raise ConfigError(f"--resume: {e}") from None
    diffs = config_differences(data.get("config") or {}, c)
    if diffs:
        hint = "; pass --resume=none to start a new run" if resume == "auto" else ""
        raise ConfigError(f"--resume: '{path}' was trained with other settings ({'; '.join(diffs)}){hint}")
    if data["step"] >= c.total_steps and resume != "auto":
        raise ConfigError(f"--resume: '{path}' is at step {data['step']}, not below --steps={c.total_steps}")
    return run_dir, path, data


# ----------------------------------------------------------------------------


def setup_and_train(
    c: dnnlib.EasyDict, *, outdir: str, resume: str, wandb: str | None, dry_run: bool, rank: int
) -> None:
    """Everything between the script's finished config `c` and `training_loop`: the dataset check, the run directory
    (--outdir, named after `tu.run_desc` of the config), --resume, --dry-run, then the launch. All checks run before
    the process group is joined or anything is written, and raise ConfigError for bad input."""
    c.wandb_mode = tu.resolve_wandb_mode(wandb)
    check_dataset(c.dataset_kwargs)
    try:
        c.dataset_identity = tu.dataset_identity(c.dataset_kwargs)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ConfigError(f"--dataset: cannot read the partitions' listings ({e})") from None
    shorten_cpu_samples(c, announce=rank == 0)
    desc = tu.run_desc(c.dataset_dir, c.total_batch, c.grad_accum, c.gan_kwargs["gamma"])
    run_lock = None
    if resume == "auto" and rank == 0 and not dry_run:
        # A second copy of this command refuses at once instead of training into the same run directory.
        latest = tu.find_latest_run_dir(outdir, desc)
        if latest is not None:
            run_lock = _lock_run_dir(latest)
    try:
        _setup_and_train_locked(c, outdir, resume, dry_run, rank, desc)
    finally:
        if run_lock is not None:
            run_lock.release()


def _lock_run_dir(run_dir: str):
    try:
        return tu.lock_run_dir(run_dir)
    except tu.RunDirBusyError as e:
        raise ConfigError(
            f"{e}: another copy of this command is training there; wait for it to end, or pass --resume=none to start "
            f"a separate run"
        ) from None


# On a CPU the sample videos written at start-up and at every snapshot are cut to this many frames (super-res
# generation at the paper's size takes ~1.4 s per frame on 2 cores, so the paper's 256 frames took over 6 minutes
# before the first step; 256 low-res frames take ~100 s).
CPU_SAMPLE_FRAMES = dict(lres=32, sres=16)


def shorten_cpu_samples(c: dnnlib.EasyDict, announce: bool) -> None:
    """Cuts `c.result_seq_length` to CPU_SAMPLE_FRAMES[c.phase] on a CPU, saying so."""
    limit = CPU_SAMPLE_FRAMES[c.phase]
    if torch.device(c.device).type == "cpu" and c.result_seq_length > limit:
        if announce:
            print(
                f"Note: on a CPU the sample videos get {limit} frames instead of the preset's {c.result_seq_length} "
                f"(those would take minutes at start-up and at every snapshot)."
            )
        c.result_seq_length = limit


def _setup_and_train_locked(c, outdir, resume, dry_run, rank, desc) -> None:
    """The rest of `setup_and_train`, with the newest matching run directory locked when there is one."""
    run_dir, resume_path, resume_data = resolve_run(c, outdir, resume, desc)
    c.resume_path = resume_path
    if resume_data is not None and resume == "auto" and resume_data["step"] >= c.total_steps:
        if rank == 0:
            print(
                f"{run_dir} is complete (step {resume_data['step']} of --steps={c.total_steps}); nothing to do. "
                f"Raise --steps to continue it, or pass --resume=none to start a new run."
            )
        return
    if dry_run:
        if rank == 0:
            c.run_dir = run_dir or tu.get_next_run_dir(outdir, desc)
            print(json.dumps(c, indent=2))
            print("Dry run; exiting.")
        return

    # Join the process group (gloo on CPU, NCCL on CUDA); rank 0 picks the run directory and tells the others.
    device = torch.device(c.device)
    distributed.init(backend="gloo" if device.type == "cpu" else "nccl")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    new_run = run_dir is None
    if new_run and distributed.get_rank() == 0:
        run_dir = tu.get_next_run_dir(outdir, desc)
    c.run_dir = distributed.broadcast_object(run_dir)
    new_run_lock = None
    outdir_existed = os.path.isdir(outdir)
    try:
        if distributed.get_rank() == 0:
            if new_run:
                os.makedirs(c.run_dir, exist_ok=True)
                new_run_lock = _lock_run_dir(c.run_dir)  # Refuses if a copy started at the same moment took it.
            with dnnlib.util.atomic_write(os.path.join(c.run_dir, "config.json"), "wb") as f:
                f.write(json.dumps(c, indent=2).encode("utf-8"))
        distributed.barrier()

        from long_video_gan.training_loop import training_loop

        try:
            training_loop(**c, resume_data=resume_data)
        except BaseException:
            # A new run that failed before its first checkpoint leaves no run directory behind (the error was shown).
            if new_run and new_run_lock is not None and tu.remove_run_dir_without_checkpoints(c.run_dir):
                print(f"Removed {c.run_dir}: the run failed before its first checkpoint.", file=sys.stderr)
                if not outdir_existed:
                    try:
                        os.rmdir(outdir)  # Made for this run only; removed only if nothing else is there.
                    except OSError:
                        pass
            raise
    finally:
        if new_run_lock is not None:
            new_run_lock.release()
        distributed.shutdown()
