"""The training loop shared by both phases of LongVideoGAN, low-resolution and super-resolution.

`training_loop(**c)`, with `c` the training script's config (config.json; each key is a parameter), runs on every
rank: it builds the dataset and the phase object (`gan_kwargs.class_name`, e.g.
`long_video_gan.video_gan_lres.LowResVideoGAN`), resumes from a train pickle if one is given, and then alternates
training steps with tick work: a status line and `stats.jsonl` every tick, G-EMA pickles, sample videos and metrics
every `ticks_per_G_ema_ckpt` ticks, train pickles every `ticks_per_train_ckpt` ticks and at the end.

Resuming is exact: a train pickle holds the networks, optimisers, augmentation state, step, the RNG states of every
rank and the number of data batches consumed, and all tick work (samples, metrics, summaries) runs with the RNG
states saved and restored, so N uninterrupted steps equal N/2 steps, a kill and a resume (bitwise on the CPU).

Departures from the original: checkpoints hold CPU tensors and are written atomically; a train pickle is also written
at the final step (the original super-resolution loop skipped it); module summaries are printed once at start instead
of at every snapshot; every rank's parameters are compared by digest (not tensor by tensor) before each snapshot.
"""

import contextlib
import json
import os
import pickle
import time

import torch

import dnnlib
from long_video_gan import training_utils as tu
from torch_utils import distributed, misc, training_stats
from torch_utils.distributed import print0

# ----------------------------------------------------------------------------


class preserve_rng:
    """Context manager that restores every global RNG (torch CPU and the device's CUDA one, numpy, Python) on exit,
    so sampling, metrics and summaries do not shift the training's random streams."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        self.state = misc.get_rng_state(self.device)

    def __exit__(self, *exc):
        misc.set_rng_state(self.state, self.device)
        return False


# ----------------------------------------------------------------------------


def training_loop(
    run_dir: str,  # Run directory (exists; config.json written by the caller).
    phase: str,  # "lres" or "sres".
    gan_kwargs: dict,  # Phase object: class_name, G_kwargs, D_kwargs, losses, augmentation, optimiser settings.
    dataset_kwargs: dict,  # Training dataset with class_name.
    device: str,  # Device of this rank, e.g. "cpu" or "cuda:0".
    seed: int = 0,  # Run seed: network init, data order, per-rank seeds rank + seed * world_size.
    total_batch: int = 64,  # Clips per step over all ranks and accumulation chunks.
    grad_accum: int = 1,  # Accumulation chunks per step.
    total_steps: int = 100000,  # Training steps.
    max_minutes: float = 0,  # Stop at the first tick after this many minutes in the main loop (0: no limit).
    steps_per_tick: int = 500,  # Steps between status lines.
    ticks_per_G_ema_ckpt: int = 10,  # Ticks between G-EMA pickles, samples and metrics.
    ticks_per_train_ckpt: int = 100,  # Ticks between train pickles (a multiple of ticks_per_G_ema_ckpt).
    result_seq_length: int = 256,  # Frames of the sample videos.
    metrics: list | tuple = (),  # Metric names evaluated at every G-EMA snapshot.
    metric_kwargs: dict | None = None,  # Extra MetricOptions.
    loader_kwargs: dict | None = None,  # num_workers, prefetch_factor, pin_memory.
    allow_tf32: bool = False,  # TF32 in CUDA matmuls and cuDNN convolutions (the original: off).
    allow_fp16_reduce: bool = False,  # Reduced-precision reductions in fp16 matmuls (the original: off).
    benchmark: bool = False,  # cuDNN autotuning (the original: off; its choice can differ between runs).
    world_size: int | None = None,  # Ranks the config was made for; must be the process group's size.
    wandb_mode: str = "off",  # "online", "offline" or "off".
    wandb_project: str | None = None,  # W&B project name.
    resume_data: dict | None = None,  # A loaded train pickle (from training_utils.load_train_checkpoint).
    resume_path: str | None = None,  # Where it came from (for the log).
    # The run's description in config.json, read back by the resume check (training_setup.config_differences:
    # dataset_identity, and dataset_dir for checkpoints from before content digests); the loop takes the dataset
    # and clip length from dataset_kwargs and gan_kwargs.
    dataset_dir: str | None = None,  # --dataset as given.
    dataset_identity: dict | None = None,  # Content digest and absolute path of the dataset.
    seq_length: int | None = None,  # Frames per training clip (as in dataset_kwargs).
    preset: str | None = None,  # The --preset the options were filled from.
) -> None:
    device = torch.device(device)
    rank = distributed.get_rank()
    if world_size is None:
        world_size = distributed.get_world_size()
    elif world_size != distributed.get_world_size():
        raise ValueError(f"the config is for {world_size} rank(s), this run has {distributed.get_world_size()}")
    batch_gpu = total_batch // world_size
    if batch_gpu * world_size != total_batch or batch_gpu % grad_accum != 0:
        raise ValueError(f"total_batch {total_batch} must be a multiple of world size {world_size} x {grad_accum}")
    if ticks_per_train_ckpt % ticks_per_G_ema_ckpt != 0:
        raise ValueError(
            f"ticks_per_train_ckpt ({ticks_per_train_ckpt}) must be a multiple of ticks_per_G_ema_ckpt "
            f"({ticks_per_G_ema_ckpt})"
        )
    misc.set_precision_flags(allow_tf32, allow_fp16_reduce, benchmark)
    _enable_grid_sample_gradfix()
    # stdout and stderr also go to log.txt (appended to on resume).
    log = dnnlib.util.Logger(os.path.join(run_dir, "log.txt"), file_mode="a") if rank == 0 else contextlib.nullcontext()
    with log:
        start_step = int(resume_data["step"]) if resume_data is not None else 0
        print0(f"Run directory: {run_dir}")
        print0(
            f"Phase {phase}: {world_size} rank(s) on {device}, {total_batch} clips per step ({batch_gpu} per rank, "
            f"{grad_accum} accumulation chunk(s)), steps {start_step} -> {total_steps}"
        )

        # Networks and dataset are built from the run seed (identical on every rank), then each rank gets its own seed.
        misc.seed_all(seed)
        print0("Loading dataset...")
        dataset = dnnlib.util.construct_class_by_name(**dataset_kwargs)
        print0(f"Dataset: {dataset}")
        print0("Constructing networks...")
        gan = dnnlib.util.construct_class_by_name(
            **gan_kwargs, device=device, batch_gpu=batch_gpu, grad_accum=grad_accum
        )
        if gan.phase != phase:
            raise ValueError(f"gan_kwargs.class_name builds a {gan.phase} phase object, expected {phase}")

        loader_seed, loader_position = seed, 0
        if resume_data is not None:
            print0(f"Resuming from {resume_path} (step {start_step})...")
            gan.load_checkpoint_state(resume_data)
        else:
            gan.broadcast_from_rank0()
        misc.seed_all(misc.rank_seed(seed, rank, world_size))
        if resume_data is not None:
            rng_states = resume_data["rng_states"]
            same_devices = device.type != "cuda" or all("torch_cuda" in state for state in rng_states)
            if len(rng_states) == world_size and same_devices:
                misc.set_rng_state(rng_states[rank], device)
                loader_position = int(resume_data["loader_position"])
            else:
                # Another world size or device type: exact continuation is impossible; reseed from the step so that
                # no random stream or data order repeats.
                print0(
                    f"Warning: the checkpoint was written by {len(rng_states)} rank(s)"
                    f"{'' if same_devices else ' on CPU'}, this run has {world_size} on {device.type}; random streams "
                    f"and data order restart (results will differ from an uninterrupted run)."
                )
                misc.seed_all(misc.rank_seed(seed + start_step, rank, world_size))
                loader_seed = seed + start_step
        loader = misc.InfiniteLoader(
            dataset,
            batch_gpu,
            seed=loader_seed,
            rank=rank,
            world_size=world_size,
            start_batches=loader_position,
            **(loader_kwargs or {}),
        )

        # Start-up output: samples of real data, module summaries.
        samples_dir = os.path.join(run_dir, "samples")
        if rank == 0:
            os.makedirs(samples_dir, exist_ok=True)
            os.makedirs(os.path.join(run_dir, "checkpoints"), exist_ok=True)
        sample_seed = misc.rank_seed(seed, rank, world_size)
        with preserve_rng(device):
            print0("Preparing sample inputs...")
            gan.prepare_samples(dataset, result_seq_length, sample_seed, write_dir=None if resume_data else samples_dir)
            if rank == 0:
                with torch.no_grad():
                    for name, module, inputs in gan.summary_inputs():
                        print(f"{name}:")
                        misc.print_module_summary(module, inputs)

        # Resumed runs drop what a killed predecessor logged after the checkpoint, and its unfinished temp files.
        if rank == 0 and resume_data is not None:
            for sub in ("samples", "checkpoints"):
                for name in os.listdir(os.path.join(run_dir, sub)):
                    if ".tmp" in name:
                        os.remove(os.path.join(run_dir, sub, name))
            tu.trim_jsonl(os.path.join(run_dir, "stats.jsonl"), start_step, lambda r: r["progress/step"]["mean"])
            for name in metrics:
                tu.trim_jsonl(os.path.join(run_dir, f"metric-{name}.jsonl"), start_step, lambda r: r["step"])
        wandb = tu.WandbLogger(
            wandb_mode,
            wandb_project,
            run_dir,
            config=_read_config(run_dir),
            resume_id=(resume_data or {}).get("wandb_id"),
        )

        # What the tick work reads: fixed for the run.
        run = dnnlib.EasyDict(
            run_dir=run_dir,
            samples_dir=samples_dir,
            device=device,
            rank=rank,
            world_size=world_size,
            seed=seed,
            gan=gan,
            loader=loader,
            wandb=wandb,
            metrics=list(metrics),
            metric_kwargs=metric_kwargs or {},
            dataset_kwargs=dataset_kwargs,
        )

        # Main loop.
        print0(f"Training for {total_steps - start_step} steps...")
        collector = training_stats.Collector(regex=".*")
        start_time = time.time()
        clock = dnnlib.EasyDict(
            start=start_time, tick_start=start_time, tick_start_step=start_step, maintenance_sec=0.0
        )
        step = start_step

        def next_batch():
            return next(loader)

        while True:
            done = step >= total_steps
            if not done and max_minutes > 0 and step > start_step and step % steps_per_tick == 0:
                # Rank 0's clock decides, so that every rank stops at the same step.
                done = distributed.broadcast_object(time.time() - start_time >= max_minutes * 60)
                if done:
                    print0(f"Stopping at step {step}: --max-minutes={max_minutes:g} reached; rerun to continue.")
            if done or step % steps_per_tick == 0:
                clock.tick_end = time.time()
                tick = -(-step // steps_per_tick)  # The final tick counts as a tick even when it is short.
                if step > start_step:
                    _report_tick(run, collector, step, tick, clock)
                is_resume_start = resume_data is not None and step == start_step
                if not is_resume_start and (done or tick % ticks_per_G_ema_ckpt == 0):
                    with preserve_rng(device):
                        _snapshot(run, step, write_train=done or tick % ticks_per_train_ckpt == 0)
                clock.tick_start, clock.tick_start_step = time.time(), step
                clock.maintenance_sec = clock.tick_start - clock.tick_end
            if done:
                break
            gan.train_step(step, next_batch)
            step += 1

        distributed.barrier()
        wandb.finish()
        print0("Exiting...")


def _enable_grid_sample_gradfix() -> None:
    # The R1 penalty of the super-resolution phase takes second-order gradients through the ADA pipeline's
    # grid_sample, which need the gradfix.
    try:
        from torch_utils.ops import grid_sample_gradfix

        grid_sample_gradfix.enabled = True
    except ImportError:
        pass


# ----------------------------------------------------------------------------


def _read_config(run_dir: str) -> dict:
    try:
        with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return {}


def _report_tick(run: dnnlib.EasyDict, collector, step: int, tick: int, clock: dnnlib.EasyDict) -> None:
    """Status line (rank 0), statistics collected over ranks into stats.jsonl and W&B. `clock`: the times (time.time())
    of the start of training, of this tick's start and end, the step the tick started at, and the seconds the
    previous tick work took."""
    total_sec = clock.tick_end - clock.start
    sec_per_step = (clock.tick_end - clock.tick_start) / max(step - clock.tick_start_step, 1)
    maintenance_sec = clock.maintenance_sec
    cpu_mem = tu.cpu_mem_gb()
    gpu_mem = gpu_reserved = 0.0
    if run.device.type == "cuda":
        gpu_mem = torch.cuda.max_memory_allocated(run.device) / 2**30
        gpu_reserved = torch.cuda.max_memory_reserved(run.device) / 2**30
        torch.cuda.reset_peak_memory_stats(run.device)
    training_stats.report0("progress/step", step)
    training_stats.report0("progress/tick", tick)
    training_stats.report0("timing/total_sec", total_sec)
    training_stats.report0("timing/sec_per_step", sec_per_step)
    training_stats.report0("timing/maintenance_sec", maintenance_sec)
    training_stats.report0("resources/cpu_mem_gb", cpu_mem)
    training_stats.report0("resources/peak_gpu_mem_gb", gpu_mem)
    training_stats.report0("resources/peak_gpu_mem_reserved_gb", gpu_reserved)
    print0(tu.status_line(step, tick, total_sec, sec_per_step, maintenance_sec, cpu_mem, gpu_mem, gpu_reserved))
    collector.update()
    if run.rank == 0:
        stats = {name: dict(value) for name, value in collector.as_dict().items()}
        tu.append_jsonl(os.path.join(run.run_dir, "stats.jsonl"), dict(stats, timestamp=time.time()))
        run.wandb.log({name: value["mean"] for name, value in stats.items()}, step=step)


def _snapshot(run: dnnlib.EasyDict, step: int, write_train: bool) -> None:
    """G-EMA pickle, the train pickle if `write_train`, sample video and metrics; runs on every rank."""
    gan, run_dir, rank, world_size = run.gan, run.run_dir, run.rank, run.world_size
    digests = misc.check_rank_consistency(gan.modules())
    rng_states = distributed.all_gather_objects(misc.get_rng_state(run.device))
    ema_path = tu.checkpoint_path(run_dir, step, "G-ema")
    if rank == 0:
        with dnnlib.util.atomic_write(ema_path) as f:
            pickle.dump(tu.snapshot_module(gan.G_ema), f)
        if write_train:
            data = gan.checkpoint_state()
            data.update(
                phase=gan.phase,
                step=step,
                rng_states=rng_states,
                loader_position=run.loader.position,
                seed=run.seed,
                world_size=world_size,
                rank_digests=digests,
                wandb_id=run.wandb.run_id,
                config=_read_config(run_dir),
            )
            with dnnlib.util.atomic_write(tu.checkpoint_path(run_dir, step, "train")) as f:
                pickle.dump(data, f)
        print0(f"Saved {os.path.relpath(ema_path, run_dir)}" + (" and train pickle" if write_train else ""))

    gan.write_fake_samples(os.path.join(run.samples_dir, f"fake-{step:08d}"))

    for name in run.metrics:
        from metrics import metric_main

        result = metric_main.calc_metric(
            metric=name,
            G=gan.G_ema,
            num_gpus=world_size,
            rank=rank,
            device=run.device,
            **gan.metric_dataset_kwargs(run.dataset_kwargs),
            **run.metric_kwargs,
        )
        if rank == 0:
            record = dict(result, step=step, G_ema_ckpt_path=ema_path)
            tu.append_jsonl(os.path.join(run_dir, f"metric-{name}.jsonl"), record)
            print(f"Metric {name} at step {step}: {dict(result.results)}")
            run.wandb.log({f"metric/{k}": v for k, v in result.results.items()}, step=step)
    distributed.barrier()
