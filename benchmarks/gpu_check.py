"""The GPU check: the one command to run on a machine with an NVIDIA GPU, to prove the project's CUDA path there.

    python benchmarks/gpu_check.py            # on a GPU machine: about 5-10 minutes on one GPU
    python benchmarks/gpu_check.py --fake     # on any machine: every stage with fake CUDA tensors (shapes only)

One line per stage, PASS or FAIL, with its figures and time:

1. pytest -m gpu        the GPU tests of the suite (tests/test_ops_cuda.py...).
2. kernels              each compiled op (bias_act, upfirdn2d, filtered_lrelu) against its reference path, per
                        dtype (float16, bfloat16, float32, float64): forward and input gradients, max relative error.
3. generators           the default-size generators on CUDA against the CPU on the same weights and noise: strict
                        fp32 (TF32 off, no fp16 layers) within 1e-4, and with the super-res fp16 layers the PSNR of
                        the uint8 frames.
4. training             steps of each phase at the paper preset (batch 1 per GPU, grad-accum 1) in a one-rank NCCL
                        group; losses and parameters finite.
5. generation           301 frames of both phases streamed (frames/s, torch.cuda.max_memory_allocated).
6. features             the packaged I3D and Inception detectors' features on CUDA against the CPU.

With `--fake` (torch_utils/fake_cuda.py) every tensor sits on "cuda" without data: stages check devices, dtypes and
shapes and that nothing reads a value on the host inside a step; the kernels stage runs the kernels' element code on
CPU tensors (host-loop plugins, torch_utils/ops/standin.py) and compares numbers; the pytest stage collects the GPU
tests without running them. The suite runs `--fake` (tests/test_fake_cuda.py). Without `--fake` and without a GPU the
script says so and exits with status 2. Exit status 1 when any stage fails.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dnnlib  # noqa: E402
from torch_utils import fake_cuda as fc  # noqa: E402

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


class StageFailed(Exception):
    """A stage's check failed; the message is its figures."""


# ----------------------------------------------------------------------------
# Helpers.


def _short(dtype: torch.dtype) -> str:
    return {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.float64: "fp64"}[dtype]


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@contextlib.contextmanager
def _strict_fp32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _paper_config(phase: str):
    """The training config of `phase` at the paper preset, as train_lres.py / train_sres.py build it."""
    import train_lres
    import train_sres

    script = train_lres if phase == "lres" else train_sres
    opts = dnnlib.EasyDict(script.PRESETS["paper"], dataset="<gpu_check>", seed=0, preset="paper")
    return script.build_config(opts, torch.device("cuda"), 1)


def _build(kwargs: dict, fake: bool, **extra):
    """A network (or phase object) from class_name kwargs: random initialisation, or data-less under --fake."""
    with fc.build_without_data() if fake else contextlib.nullcontext():
        return dnnlib.util.construct_class_by_name(**kwargs, **extra)


def _check_on_cuda(t: torch.Tensor, what: str, dtype=torch.float32) -> None:
    if t.device.type != "cuda" or t.dtype != dtype:
        raise StageFailed(f"{what}: {t.dtype} on {t.device}, expected {dtype} on cuda")


def _psnr_uint8(a: torch.Tensor, b: torch.Tensor) -> float:
    from long_video_gan import video_io

    a, b = video_io.float_to_uint8(a).double(), video_io.float_to_uint8(b).double()
    mse = (a - b).square().mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


# ----------------------------------------------------------------------------
# Stages: each returns its figures (a short string) or raises StageFailed.


def stage_pytest(fake: bool) -> str:
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests"]
    if fake:
        cmd.append("--collect-only")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    lines = (result.stdout + result.stderr).strip().splitlines()
    summary = lines[-1] if lines else "(no output)"
    if fake:
        m = re.search(r"(\d+)(?:/\d+)? tests? collected", summary)
        if result.returncode != 0 or not m:
            raise StageFailed(f"collection failed: {summary}")
        return f"{m.group(1)} GPU tests collected (fake: not run)"
    if result.returncode != 0 or "passed" not in summary or "failed" in summary or "error" in summary:
        tail = " | ".join(lines[-5:])
        raise StageFailed(tail)
    return summary.strip("= ")


def stage_kernels(fake: bool) -> str:
    from torch_utils.ops import bias_act, filtered_lrelu, standin, upfirdn2d

    ops = {"bias_act": bias_act, "upfirdn2d": upfirdn2d, "filtered_lrelu": filtered_lrelu}
    if fake:
        context, device = standin.kernels_on_cpu(standin.host_plugins()), torch.device("cpu")
    else:
        context, device = contextlib.nullcontext(), torch.device("cuda")
        for name, module in ops.items():
            if not module._init():
                raise StageFailed(f"{name}: the CUDA plugin did not build (see the warning above)")
    figures, problems = [], []
    with context:
        for name, module in ops.items():
            worst = []
            for dtype in DTYPES:
                errors = []
                problem = module._self_check(device, dtype, errors)
                worst.append(f"{_short(dtype)} {max(errors, default=float('nan')):.1e}")
                if problem is not None:
                    problems.append(f"{name} {_short(dtype)}: {problem}")
            figures.append(f"{name} [{', '.join(worst)}]")
    where = "host-loop element code on the CPU" if fake else "CUDA"
    if problems:
        raise StageFailed("; ".join(problems))
    return f"{where}: max rel. error " + "; ".join(figures)


def stage_generators(fake: bool) -> str:
    """Default-size generators: CUDA against CPU (real), or shapes/devices/dtypes on fake CUDA."""
    cfg = {phase: _paper_config(phase).gan_kwargs for phase in ("lres", "sres")}
    torch.manual_seed(1)
    G_lres = _build(cfg["lres"]["G_kwargs"], fake).eval().requires_grad_(False)
    G32 = _build(cfg["sres"]["G_kwargs"], fake, num_fp16_res=0).eval().requires_grad_(False)
    G16 = _build(cfg["sres"]["G_kwargs"], fake).eval().requires_grad_(False)
    if not fake:
        G16.load_state_dict(G32.state_dict())
    frames = 16
    gen = torch.Generator().manual_seed(2)
    emb = G_lres.sample_temporal_emb(1, frames, generator=gen)  # CPU noise, the same for both devices
    lr = torch.randn([1, 3, 4 + 2 * G32.temporal_context, 36, 64], generator=gen).clamp(-1, 1)
    z = G32.sample_latent_z(1, generator_z=gen)
    cuda = torch.device("cuda")
    with torch.no_grad():
        with _strict_fp32():
            lres_gpu = G_lres.to(cuda)(1, frames, emb=emb.to(cuda))
            sres_gpu = G32.to(cuda)(lr.to(cuda), z=z.to(cuda))
        sres16_gpu = G16.to(cuda)(lr.to(cuda), z=z.to(cuda))
        for t, what in [(lres_gpu, "lres"), (sres_gpu, "sres fp32"), (sres16_gpu, "sres fp16 layers")]:
            _check_on_cuda(t, what)
        if fake:
            return (
                f"lres {list(lres_gpu.shape)}, sres {list(sres_gpu.shape)} float32 on cuda with and without the fp16 "
                "layers (fake: no CPU comparison)"
            )
        lres_cpu = G_lres.cpu()(1, frames, emb=emb)
        sres_cpu = G32.cpu()(lr, z=z)
    err_lres = (lres_gpu.cpu() - lres_cpu).abs().max().item()
    err_sres = (sres_gpu.cpu() - sres_cpu).abs().max().item()
    psnr = _psnr_uint8(sres16_gpu.cpu(), sres_cpu)
    figures = f"fp32 max abs error lres {err_lres:.1e}, sres {err_sres:.1e}; fp16 layers: PSNR {psnr:.1f} dB (uint8)"
    if not (err_lres <= 1e-4 and err_sres <= 1e-4 and psnr >= 30):
        raise StageFailed(figures + " (need <= 1e-4, >= 30 dB)")
    return figures


def _batch(phase: str, c) -> dict:
    g = torch.Generator().manual_seed(3)
    ds = c.dataset_kwargs

    def clip(t, h, w):
        return (torch.rand([1, 3, t, h, w], generator=g) * 2 - 1).contiguous()

    if phase == "lres":
        return {"video": clip(ds["seq_length"], ds["height"], ds["width"])}
    t0, t1 = ds["hr_frame_slice"]
    return {
        "lr_video": clip(ds["seq_length"], ds["lr_height"], ds["lr_width"]),
        "hr_video": clip(t1 - t0, ds["hr_height"], ds["hr_width"]),
    }


def stage_training(fake: bool, steps: int, phases=("lres", "sres")) -> str:
    from torch_utils import training_stats

    group = None
    if not fake and not torch.distributed.is_initialized():
        store = torch.distributed.HashStore()
        torch.distributed.init_process_group("nccl", store=store, rank=0, world_size=1)
        group = True
    figures = []
    try:
        for phase in phases:
            c = _paper_config(phase)
            torch.manual_seed(4)
            device = torch.device("cuda")
            gan = _build(c.gan_kwargs, fake, device=device, batch_gpu=1, grad_accum=1)
            n = 1 if fake else steps
            collector = None if fake else training_stats.Collector(regex="loss/.*")  # (Fake values cannot be read.)
            t0 = time.time()
            for step in range(n):
                batches = iter([_batch(phase, c) for _ in range(3)])  # CPU tensors, as the data loader gives
                gan.train_step(step, lambda: next(batches))
            _sync()
            seconds = (time.time() - t0) / n
            for name, module in gan.modules().items():
                for p in module.parameters():
                    _check_on_cuda(p, f"{phase} {name} parameter")
            if fake:
                figures.append(f"{phase}: {n} step on cuda (fake)")
                continue
            collector.update()
            losses = {name: collector.mean(name) for name in collector.names() if collector.num(name) > 0}
            flat = torch.cat([p.detach().flatten() for m in gan.modules().values() for p in m.parameters()])
            check = torch.tensor([sum(losses.values())], device=device)
            torch.distributed.all_reduce(check)  # Through NCCL.
            if not all(math.isfinite(v) for v in losses.values()) or not torch.isfinite(flat).all().item():
                raise StageFailed(f"{phase}: non-finite losses or parameters: {losses}")
            figures.append(
                f"{phase}: {n} steps, {seconds:.2f} s/step, G_loss {losses.get('loss/G_loss', float('nan')):.3f}"
            )
    finally:
        if group:
            torch.distributed.destroy_process_group()
    return "; ".join(figures)


def stage_generation(fake: bool, num_frames: int) -> str:
    from long_video_gan import api

    cfg = {phase: _paper_config(phase).gan_kwargs for phase in ("lres", "sres")}
    torch.manual_seed(5)
    cuda = torch.device("cuda")
    G_lres = _build(cfg["lres"]["G_kwargs"], fake).eval().requires_grad_(False).to(cuda)
    G_sres = _build(cfg["sres"]["G_kwargs"], fake).eval().requires_grad_(False).to(cuda)
    if not fake:
        torch.cuda.reset_peak_memory_stats()
    _sync()
    t0 = time.time()
    count, shapes = 0, set()
    with torch.no_grad():
        for chunk in api.iter_video_chunks(G_lres, G_sres, seed=0, num_frames=num_frames):
            _check_on_cuda(chunk.video, "streamed frames")
            count += chunk.video.shape[2]
            shapes.add(tuple(chunk.video.shape[3:]))
    _sync()
    seconds = time.time() - t0
    if count != num_frames or shapes != {(144, 256)}:
        raise StageFailed(f"{count} frames of sizes {sorted(shapes)}, expected {num_frames} of 144x256")
    if fake:
        return f"{count} frames of 144x256 streamed on cuda (fake)"
    memory = torch.cuda.max_memory_allocated() / 2**30
    return f"{count} frames in {seconds:.1f} s ({count / seconds:.1f} frames/s), max_memory_allocated {memory:.2f} GiB"


def stage_features(fake: bool) -> str:
    from metrics import detectors

    g = torch.Generator().manual_seed(6)
    video = torch.randint(0, 256, [2, 3, 16, 64, 64], generator=g, dtype=torch.uint8)
    images = torch.randint(0, 256, [4, 3, 144, 256], generator=g, dtype=torch.uint8)
    cuda = torch.device("cuda")
    figures = []
    for kind, x, kwargs in [("i3d", video, dict(rescale=True, resize=True)), ("inception", images, {})]:
        if fake:
            det = fc.move_to_cuda(detectors.get_detector(kind, device=torch.device("cpu"), source="packaged"))
        else:
            det = detectors.get_detector(kind, device=cuda, source="packaged")
        with torch.no_grad():
            got = det(x.to(cuda), return_features=True, **kwargs)
        _check_on_cuda(got, f"{kind} features")
        if fake:
            detectors._detector_cache.clear()  # It held the CPU detector that was just moved to fake CUDA.
            figures.append(f"{kind} {list(got.shape)} on cuda (fake)")
            continue
        cpu_det = detectors.get_detector(kind, device=torch.device("cpu"), source="packaged")
        with torch.no_grad():
            expected = cpu_det(x, return_features=True, **kwargs)
        err = ((got.cpu() - expected).abs().max() / (1 + expected.abs().max())).item()
        figures.append(f"{kind} max rel. error {err:.1e}")
        if not err <= 1e-2:
            raise StageFailed("; ".join(figures) + " (need <= 1e-2)")
    return "; ".join(figures)


# ----------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fake", action="store_true", help="every stage with fake CUDA tensors (no GPU needed)")
    parser.add_argument("--stages", default="pytest,kernels,generators,training,generation,features")
    parser.add_argument("--steps", type=int, default=10, help="training steps per phase (GPU only)")
    parser.add_argument("--frames", type=int, default=301, help="frames to stream")
    args = parser.parse_args(argv)

    if not args.fake and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run it on a GPU machine, or with --fake for the fake-CUDA check")
        return 2
    stages = {
        "pytest": ("pytest -m gpu", lambda: stage_pytest(args.fake)),
        "kernels": ("kernels vs reference", lambda: stage_kernels(args.fake)),
        "generators": ("generators CUDA vs CPU", lambda: stage_generators(args.fake)),
        "training": ("training steps (paper preset)", lambda: stage_training(args.fake, args.steps)),
        "generation": (f"generation, {args.frames} frames", lambda: stage_generation(args.fake, args.frames)),
        "features": ("I3D / Inception features", lambda: stage_features(args.fake)),
    }
    chosen = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in stages]
    if unknown:
        parser.error(f"--stages: unknown {unknown}; valid: {', '.join(stages)}")

    device = "fake CUDA (meta tensors), CPU" if args.fake else torch.cuda.get_device_name(0)
    print(f"gpu_check on {device}; torch {torch.__version__}")
    failed = 0
    for key in chosen:
        title, fn = stages[key]
        t0 = time.time()
        try:
            # Stages other than pytest and kernels run with every tensor on (fake) CUDA.
            fake_context = (
                fc.fake_cuda() if args.fake and key not in ("pytest", "kernels") else contextlib.nullcontext()
            )
            with fake_context:
                figures, status = fn(), "PASS"
        except StageFailed as e:
            figures, status = str(e), "FAIL"
        except Exception as e:  # noqa: BLE001 - report the stage as failed and go on with the others
            last = traceback.extract_tb(e.__traceback__)[-1]
            figures = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} ({last.filename}:{last.lineno})"
            status = "FAIL"
        failed += status == "FAIL"
        print(f"{status} {title:<32} {figures} ({time.time() - t0:.1f} s)", flush=True)
    print(f"gpu_check: {len(chosen) - failed} of {len(chosen)} stages passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
