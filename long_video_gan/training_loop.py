"""The training loop shared by both phases of LongVideoGAN, low-resolution and super-resolution.

`training_loop(**c)` runs on every rank: it builds the dataset and the phase object (`gan_kwargs.class_name`, e.g.
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

import json
import os
import pickle
import time

import torch

import dnnlib
from long_video_gan import training_utils as tu
from torch_utils import distributed, misc, training_stats
from torch_utils.distributed import print0

# ----------------------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------------------


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
    steps_per_tick: int = 500,  # Steps between status lines.
    ticks_per_G_ema_ckpt: int = 10,  # Ticks between G-EMA pickles, samples and metrics.
    ticks_per_train_ckpt: int = 100,  # Ticks between train pickles (a multiple of ticks_per_G_ema_ckpt).
    result_seq_length: int = 256,  # Frames of the sample videos.
    metrics: list | tuple = (),  # Metric names evaluated at every G-EMA snapshot.
    metric_kwargs: dict | None = None,  # Extra MetricOptions.
    loader_kwargs: dict | None = None,  # num_workers, prefetch_factor, pin_memory.
    wandb_mode: str = "off",  # "online", "offline" or "off".
    wandb_project: str | None = None,  # W&B project name.
    resume_data: dict | None = None,  # A loaded train pickle (from training_utils.load_train_checkpoint).
    resume_path: str | None = None,  # Where it came from (for the log).
    **_info,  # Further config.json entries (dataset sizes, flags), informational only.
) -> None:
    device = torch.device(device)
    rank, world_size = distributed.get_rank(), distributed.get_world_size()
    batch_gpu = total_batch // world_size
    if batch_gpu * world_size != total_batch or batch_gpu % grad_accum != 0:
        raise ValueError(f"total_batch {total_batch} must be a multiple of world size {world_size} x {grad_accum}")
    if ticks_per_train_ckpt % ticks_per_G_ema_ckpt != 0:
        raise ValueError(
            f"ticks_per_train_ckpt ({ticks_per_train_ckpt}) must be a multiple of ticks_per_G_ema_ckpt "
            f"({ticks_per_G_ema_ckpt})"
        )
    tu.set_precision_flags()
    _enable_grid_sample_gradfix()
    # stdout and stderr also go to log.txt (appended to on resume).
    tee = dnnlib.util.Logger(os.path.join(run_dir, "log.txt"), file_mode="a") if rank == 0 else None
    try:
        _train(
            run_dir=run_dir,
            phase=phase,
            gan_kwargs=gan_kwargs,
            dataset_kwargs=dataset_kwargs,
            device=device,
            seed=seed,
            total_batch=total_batch,
            grad_accum=grad_accum,
            total_steps=total_steps,
            steps_per_tick=steps_per_tick,
            ticks_per_G_ema_ckpt=ticks_per_G_ema_ckpt,
            ticks_per_train_ckpt=ticks_per_train_ckpt,
            result_seq_length=result_seq_length,
            metrics=list(metrics),
            metric_kwargs=metric_kwargs,
            loader_kwargs=loader_kwargs,
            wandb_mode=wandb_mode,
            wandb_project=wandb_project,
            resume_data=resume_data,
            resume_path=resume_path,
            rank=rank,
            world_size=world_size,
            batch_gpu=batch_gpu,
        )
    finally:
        if tee is not None:
            tee.close()


def _enable_grid_sample_gradfix() -> None:
    # The R1 penalty of the super-resolution phase takes second-order gradients through the ADA pipeline's
    # grid_sample, which need the gradfix.
    try:
        from torch_utils.ops import grid_sample_gradfix

        grid_sample_gradfix.enabled = True
    except ImportError:
        pass


def _train(
    run_dir,
    phase,
    gan_kwargs,
    dataset_kwargs,
    device,
    seed,
    total_batch,
    grad_accum,
    total_steps,
    steps_per_tick,
    ticks_per_G_ema_ckpt,
    ticks_per_train_ckpt,
    result_seq_length,
    metrics,
    metric_kwargs,
    loader_kwargs,
    wandb_mode,
    wandb_project,
    resume_data,
    resume_path,
    rank,
    world_size,
    batch_gpu,
):
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
    gan = dnnlib.util.construct_class_by_name(**gan_kwargs, device=device, batch_gpu=batch_gpu, grad_accum=grad_accum)
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
            # Another world size or device type: exact continuation is impossible; reseed from the step so that no
            # random stream or data order repeats.
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

    # Main loop.
    print0(f"Training for {total_steps - start_step} steps...")
    collector = training_stats.Collector(regex=".*")
    start_time = time.time()
    tick_start_time, tick_start_step = start_time, start_step
    maintenance_sec = 0.0
    step = start_step

    def next_batch():
        return next(loader)

    while True:
        done = step >= total_steps
        if done or step % steps_per_tick == 0:
            tick_end_time = time.time()
            tick = -(-step // steps_per_tick)  # The final tick counts as a tick even when it is short.
            if step > start_step:
                _report_tick(
                    collector,
                    step,
                    tick,
                    start_time,
                    tick_start_time,
                    tick_end_time,
                    tick_start_step,
                    maintenance_sec,
                    device,
                    run_dir,
                    wandb,
                )
            is_resume_start = resume_data is not None and step == start_step
            if not is_resume_start and (done or tick % ticks_per_G_ema_ckpt == 0):
                write_train = done or tick % ticks_per_train_ckpt == 0
                with preserve_rng(device):
                    _snapshot(
                        gan,
                        step,
                        run_dir,
                        samples_dir,
                        write_train,
                        seed,
                        loader,
                        wandb,
                        metrics,
                        metric_kwargs,
                        dataset_kwargs,
                        device,
                        rank,
                        world_size,
                    )
            tick_start_time, tick_start_step = time.time(), step
            maintenance_sec = tick_start_time - tick_end_time
        if done:
            break
        gan.train_step(step, next_batch)
        step += 1

    distributed.barrier()
    wandb.finish()
    print0("Exiting...")


# ----------------------------------------------------------------------------------------------------------------------


def _read_config(run_dir: str) -> dict:
    try:
        with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return {}


def _report_tick(
    collector,
    step,
    tick,
    start_time,
    tick_start_time,
    tick_end_time,
    tick_start_step,
    maintenance_sec,
    device,
    run_dir,
    wandb,
):
    """Status line (rank 0), statistics collected over ranks into stats.jsonl and W&B."""
    total_sec = tick_end_time - start_time
    sec_per_step = (tick_end_time - tick_start_time) / max(step - tick_start_step, 1)
    cpu_mem = tu.cpu_mem_gb()
    gpu_mem = gpu_reserved = 0.0
    if device.type == "cuda":
        gpu_mem = torch.cuda.max_memory_allocated(device) / 2**30
        gpu_reserved = torch.cuda.max_memory_reserved(device) / 2**30
        torch.cuda.reset_peak_memory_stats(device)
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
    if distributed.get_rank() == 0:
        stats = {name: dict(value) for name, value in collector.as_dict().items()}
        tu.append_jsonl(os.path.join(run_dir, "stats.jsonl"), dict(stats, timestamp=time.time()))
        wandb.log({name: value["mean"] for name, value in stats.items()}, step=step)


def _snapshot(
    gan,
    step,
    run_dir,
    samples_dir,
    write_train,
    seed,
    loader,
    wandb,
    metrics,
    metric_kwargs,
    dataset_kwargs,
    device,
    rank,
    world_size,
):
    """G-EMA pickle, optional train pickle, sample video and metrics; runs on every rank."""
    digests = misc.check_rank_consistency(gan.modules())
    rng_states = distributed.all_gather_objects(misc.get_rng_state(device))
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
                loader_position=loader.position,
                seed=seed,
                world_size=world_size,
                rank_digests=digests,
                wandb_id=wandb.run_id,
                config=_read_config(run_dir),
            )
            with dnnlib.util.atomic_write(tu.checkpoint_path(run_dir, step, "train")) as f:
                pickle.dump(data, f)
        print0(f"Saved {os.path.relpath(ema_path, run_dir)}" + (" and train pickle" if write_train else ""))

    gan.write_fake_samples(os.path.join(samples_dir, f"fake-{step:08d}"))

    for name in metrics:
        from metrics import metric_main

        result = metric_main.calc_metric(
            metric=name,
            G=gan.G_ema,
            num_gpus=world_size,
            rank=rank,
            device=device,
            **gan.metric_dataset_kwargs(dataset_kwargs),
            **(metric_kwargs or {}),
        )
        if rank == 0:
            record = dict(result, step=step, G_ema_ckpt_path=ema_path)
            tu.append_jsonl(os.path.join(run_dir, f"metric-{name}.jsonl"), record)
            print(f"Metric {name} at step {step}: {dict(result.results)}")
            wandb.log({f"metric/{k}": v for k, v in result.results.items()}, step=step)
    distributed.barrier()
