"""Training speed and memory of LongVideoGAN on this machine: seconds per step and peak resident memory.

Builds exactly the phase objects train_lres.py / train_sres.py build (from their presets), feeds synthetic clips
(no data loading), and times whole training steps: plain steps (G step + D step + G EMA) and the extra cost of a lazy
R1 step (every 16th step). Each (phase, preset) runs in its own process so the peak RSS is its own.

Examples:
    python benchmarks/bench_train.py                              # tiny presets of both phases
    python benchmarks/bench_train.py --preset paper --batch 1     # paper networks at batch 1 (slow on a CPU)
    python benchmarks/bench_train.py --phase lres --preset tiny --steps 5 --no-r1
    OMP_NUM_THREADS=1 python benchmarks/bench_train.py --preset demo --threads 1   # the bundled demo models
    LVG_FAST_CPU=0 python benchmarks/bench_train.py --phase sres --preset paper --batch 1 --seq-length 1

On the CPU, training runs filtered_lrelu through its memory-lean autograd path (torch_utils/ops/filtered_lrelu.py:
uint8 codes saved for backward); LVG_FAST_CPU=0 uses the reference ops instead, for comparison.
"""

import json
import os
import resource
import subprocess
import sys
import time

import click

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import cpu_description, peak_rss_gib  # noqa: E402

# ----------------------------------------------------------------------------


def _worker(
    phase: str, preset: str, batch: int | None, grad_accum: int | None, steps: int, r1: bool, seq_length: int | None
) -> dict:
    """Runs in a child process: builds the phase object and times its steps."""
    import torch

    import dnnlib
    from long_video_gan import training_setup
    from torch_utils import misc

    script = __import__("train_lres" if phase == "lres" else "train_sres")
    opts = dnnlib.EasyDict(
        preset=preset,
        batch=batch,
        grad_accum=grad_accum,
        gamma=None,
        metric=(),
        steps=None,
        tick=None,
        snap=None,
        train_snap=None,
        workers=None,
        dataset="bench",
        seed=0,
        wandb=None,
        device="cpu",
    )
    opts = training_setup.apply_preset(opts, script.PRESETS)
    if seq_length is not None:
        opts.seq_length = seq_length
    device = torch.device("cpu")
    c = script.build_config(opts, device, world_size=1)
    misc.set_precision_flags()
    misc.seed_all(0)

    t0 = time.time()
    gan = dnnlib.util.construct_class_by_name(
        **c.gan_kwargs, device=device, batch_gpu=opts.batch, grad_accum=opts.grad_accum
    )
    build_sec = time.time() - t0
    gen = torch.Generator().manual_seed(1)
    if phase == "lres":
        shape = [opts.batch, 3, c.seq_length, script.HEIGHT, script.WIDTH]
        batch_data = {"video": torch.rand(shape, generator=gen) * 2 - 1}
    else:
        context = c.gan_kwargs["G_kwargs"]["temporal_context"]
        lr = [opts.batch, 3, c.seq_length + 2 * context, script.LR_HEIGHT, script.LR_WIDTH]
        hr = [opts.batch, 3, c.seq_length, script.HR_HEIGHT, script.HR_WIDTH]
        batch_data = {
            "lr_video": torch.rand(lr, generator=gen) * 2 - 1,
            "hr_video": torch.rand(hr, generator=gen) * 2 - 1,
        }

    def next_batch():
        return batch_data

    gan.train_step(1, next_batch)  # Warm-up (not an R1 step).
    times = []
    for i in range(steps):
        t0 = time.time()
        gan.train_step(2 + i, next_batch)
        times.append(time.time() - t0)
    result = dict(
        phase=phase,
        preset=preset,
        batch=opts.batch,
        grad_accum=opts.grad_accum,
        seq_length=c.seq_length,
        params_G=sum(p.numel() for p in gan.G.parameters()),
        params_D=sum(p.numel() for p in gan.D.parameters()),
        build_sec=round(build_sec, 2),
        sec_per_step=round(sum(times) / len(times), 3),
        sec_per_step_min=round(min(times), 3),
    )
    if r1:
        t0 = time.time()
        gan.train_step(16, next_batch)  # Step 16 runs the lazy R1 step too.
        result["r1_step_sec"] = round(time.time() - t0, 3)
        # The R1 pass's own cost (can come out near zero, or below it by step-to-step noise, at small batches).
        result["r1_extra_sec"] = round(result["r1_step_sec"] - result["sec_per_step"], 3)
        result["sec_per_step_amortised"] = round(result["sec_per_step"] + max(result["r1_extra_sec"], 0) / 16, 3)
    result["peak_rss_gb"] = round(peak_rss_gib(), 2)
    return result


# ----------------------------------------------------------------------------


@click.command()
@click.option("--phase", type=click.Choice(["lres", "sres", "all"]), default="all", show_default=True)
@click.option("--preset", type=click.Choice(["tiny", "demo", "paper", "all"]), default="tiny", show_default=True)
@click.option("--batch", type=int, help="Clips per step (default: the preset's; paper runs usually use 1 here).")
@click.option("--grad-accum", type=int, help="Accumulation rounds (default: the preset's, or 1 with --batch 1).")
@click.option("--steps", type=int, default=3, show_default=True, help="Timed steps after one warm-up step.")
@click.option("--r1/--no-r1", default=True, show_default=True, help="Also time one R1 step.")
@click.option("--seq-length", type=int, help="Override the preset's clip length (frames seen by D).")
@click.option("--threads", type=int, help="torch intra-op threads (default: torch's choice, usually the core count).")
@click.option("--timeout", type=int, default=3600, show_default=True, help="Seconds allowed per configuration.")
@click.option(
    "--max-mem-gb",
    type=float,
    help="Address-space cap per configuration (default: half the RAM), so an "
    "oversized configuration fails with MemoryError instead of invoking the OOM killer.",
)
@click.option("--worker", hidden=True, is_flag=True)
def main(phase, preset, batch, grad_accum, steps, r1, seq_length, threads, timeout, max_mem_gb, worker):
    """Seconds per training step and peak RSS of the training phases on the CPU."""
    if grad_accum is None and batch == 1:
        grad_accum = 1
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    if worker:
        if max_mem_gb is None:
            max_mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 / 2
        limit = int(max_mem_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        try:
            print(json.dumps(_worker(phase, preset, batch, grad_accum, steps, r1, seq_length)))
        except (MemoryError, RuntimeError) as e:
            if not isinstance(e, MemoryError) and "memory" not in str(e).lower():
                raise
            print(json.dumps(dict(phase=phase, preset=preset, error=f"out of memory under a {max_mem_gb:.1f} GB cap")))
        return

    print(json.dumps(cpu_description()))
    phases = ["lres", "sres"] if phase == "all" else [phase]
    presets = ["tiny", "demo", "paper"] if preset == "all" else [preset]
    for ph in phases:
        for pr in presets:
            cmd = [
                sys.executable,
                os.path.abspath(__file__),
                "--worker",
                "--phase",
                ph,
                "--preset",
                pr,
                "--steps",
                str(steps),
                "--r1" if r1 else "--no-r1",
            ]
            if batch is not None:
                cmd += ["--batch", str(batch)]
            if grad_accum is not None:
                cmd += ["--grad-accum", str(grad_accum)]
            if threads is not None:
                cmd += ["--threads", str(threads)]
            if seq_length is not None:
                cmd += ["--seq-length", str(seq_length)]
            if max_mem_gb is not None:
                cmd += ["--max-mem-gb", str(max_mem_gb)]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
            except subprocess.TimeoutExpired:
                print(json.dumps(dict(phase=ph, preset=pr, error=f"timed out after {timeout} s")))
                continue
            if proc.returncode != 0:
                print(json.dumps(dict(phase=ph, preset=pr, error=proc.stderr.strip().splitlines()[-1:])))
                continue
            print(proc.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
