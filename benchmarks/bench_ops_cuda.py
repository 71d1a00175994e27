"""Benchmark of the CUDA kernels of torch_utils.ops against their reference paths, at the shapes the LongVideoGAN
networks use: bias_act, upfirdn2d (resampling) and filtered_lrelu (super-resolution synthesis layers).

For each case: milliseconds per call of the reference path and of the kernel, forward only and forward + backward,
the speed-up, and the largest difference between the two outputs (a sanity check; tests/test_ops_cuda.py is the
correctness test). Needs a CUDA device; the first run compiles the plugins (a few minutes).

    python benchmarks/bench_ops_cuda.py                         # fp16 and fp32, the numbers quoted in reports
    python benchmarks/bench_ops_cuda.py --dtypes fp16 --iters 100 --json bench_ops.json
    python benchmarks/bench_ops_cuda.py --ops filtered_lrelu --batch 8
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch_utils.ops import bias_act, filtered_lrelu, upfirdn2d  # noqa: E402

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}

# ----------------------------------------------------------------------------


def _taps(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    f = torch.rand([n], generator=g) + 0.1
    return f / f.sum()


def _layer_padding(in_size: int, out_size: int, up: int, down: int, fu_taps: int, fd_taps: int) -> tuple[int, int]:
    """filtered_lrelu padding (p0, p1) along one axis that gives out_size samples."""
    total = out_size * down - in_size * up + (fu_taps - 1) + (fd_taps - 1) - (down - 1)
    return total // 2, total - total // 2


def make_cases(batch: int, device: torch.device) -> list[dict]:
    """Benchmark cases: name, op, input shape and a function `fn(x, impl)`."""
    f4 = upfirdn2d.setup_filter([1, 3, 3, 1], device=device)
    f12 = upfirdn2d.setup_filter(_taps(12, seed=1).tolist(), device=device)  # 1-D: separable
    f_time = upfirdn2d.setup_filter([1, 3, 3, 1], device=device, separable=True).unsqueeze(1)  # [4, 1]
    fu12, fd12, fu24 = [f.to(device) for f in (_taps(12, 2), _taps(12, 3), _taps(24, 4))]
    cases = []

    def add(op, name, shape, fn, params=None):
        cases.append(dict(op=op, name=name, shape=[batch] + shape, fn=fn, params=params or []))

    # bias_act: lres generator/discriminator activations on videos [N, C, T, H, W] and on feature vectors.
    add(
        "bias_act",
        "lrelu clamp 256, [N,C,T,H,W]",
        [256, 16, 36, 64],
        lambda x, b, impl: bias_act.bias_act(x, b, act="lrelu", clamp=256, impl=impl),
        params=["bias"],
    )
    add(
        "bias_act",
        "lrelu, [N,C]",
        [4096],
        lambda x, b, impl: bias_act.bias_act(x, b, act="lrelu", impl=impl),
        params=["bias"],
    )
    add(
        "bias_act",
        "swish, [N,C,H,W]",
        [128, 64, 64],
        lambda x, b, impl: bias_act.bias_act(x, b, act="swish", impl=impl),
        params=["bias"],
    )

    # upfirdn2d: 2x up/down-sampling, time resampling as [N, C, T, H*W], the augmentation's 12-tap filter.
    add(
        "upfirdn2d",
        "upsample2d x2, 4x4 taps",
        [256, 36, 64],
        lambda x, impl: upfirdn2d.upsample2d(x, f4, up=2, impl=impl),
    )
    add(
        "upfirdn2d",
        "downsample2d /2, 4x4 taps",
        [256, 72, 128],
        lambda x, impl: upfirdn2d.downsample2d(x, f4, down=2, impl=impl),
    )
    add(
        "upfirdn2d",
        "time downsample /2, [4,1] taps",
        [256, 16, 36 * 64],
        lambda x, impl: upfirdn2d.downsample2d(x, f_time, down=[1, 2], impl=impl),
    )
    add(
        "upfirdn2d",
        "upsample2d x2, 12 separable taps",
        [3, 160, 272],
        lambda x, impl: upfirdn2d.upsample2d(x, f12, up=2, impl=impl),
    )

    # filtered_lrelu: super-resolution synthesis layers (generator_sres) and the ToRGB form.
    for name, channels, (in_h, in_w), fu, up, (out_h, out_w) in [
        ("layer 0-2: 38x31 up 2", 512, (31, 38), fu12, 2, (29, 36)),
        ("layer 3: 38x31 up 4", 512, (31, 38), fu24, 4, (38, 52)),
        ("layer 10: 278x166 up 2", 256, (166, 278), fu12, 2, (164, 276)),
    ]:
        px = _layer_padding(in_w, out_w, up, 2, fu.numel(), fd12.numel())
        py = _layer_padding(in_h, out_h, up, 2, fu.numel(), fd12.numel())
        kwargs = dict(up=up, down=2, padding=[*px, *py], clamp=256)
        add("filtered_lrelu", name, [channels, in_h, in_w],
            lambda x, b, impl, fu=fu, kwargs=kwargs: filtered_lrelu.filtered_lrelu(x, fu, fd12, b, **kwargs, impl=impl),
            params=["bias"])  # fmt: skip
    add("filtered_lrelu", "ToRGB: bias + clamp", [3, 144, 256],
        lambda x, b, impl: filtered_lrelu.filtered_lrelu(x, None, None, b, gain=1, slope=1, clamp=256, impl=impl),
        params=["bias"])  # fmt: skip
    return cases


def time_ms(fn, iters: int, warmup: int = 3) -> float:
    """Median milliseconds per call of fn(), timed with CUDA events."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return float(np.median(times))


def run_case(case: dict, dtype: torch.dtype, device: torch.device, iters: int, backward: bool) -> dict:
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(case["shape"], generator=g, device=device, dtype=torch.float32).to(dtype)
    args = [x]
    if "bias" in case["params"]:
        args.append(torch.randn([case["shape"][1]], generator=g, device=device, dtype=torch.float32).to(dtype))
    result = dict(op=case["op"], case=case["name"], shape=case["shape"], dtype=str(dtype).replace("torch.", ""))
    with torch.no_grad():
        y_ref, y = case["fn"](*args, "ref"), case["fn"](*args, "cuda")
        result["max_abs_diff"] = (y.float() - y_ref.float()).abs().max().item()
        result["max_abs_ref"] = y_ref.float().abs().max().item()
    for impl in ("ref", "cuda"):
        with torch.no_grad():
            result[f"{impl}_fwd_ms"] = time_ms(lambda: case["fn"](*args, impl), iters)
        if backward:
            leaves = [a.detach().requires_grad_() for a in args]
            dy = torch.ones_like(y)

            def step():
                out = case["fn"](*leaves, impl)
                torch.autograd.grad(out, leaves, dy)

            result[f"{impl}_fwd_bwd_ms"] = time_ms(step, iters)
    return result


# ----------------------------------------------------------------------------


@click.command()
@click.option("--ops", default="bias_act,upfirdn2d,filtered_lrelu", show_default=True, help="Comma-separated ops.")
@click.option("--dtypes", default="fp16,fp32", show_default=True, help="Comma-separated: fp16, bf16, fp32.")
@click.option("--batch", type=click.IntRange(min=1), default=4, show_default=True, help="Batch size of every case.")
@click.option("--iters", type=click.IntRange(min=1), default=30, show_default=True, help="Timed calls per number.")
@click.option("--backward/--no-backward", default=True, show_default=True, help="Also time forward + backward.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write results here.")
def main(ops: str, dtypes: str, batch: int, iters: int, backward: bool, json_path: str | None):
    """Time the CUDA kernels of bias_act, upfirdn2d and filtered_lrelu against their reference paths."""
    if not torch.cuda.is_available():
        raise click.ClickException("needs a CUDA device (this benchmark times the CUDA kernels)")
    op_names = [name.strip() for name in ops.split(",") if name.strip()]
    modules = {"bias_act": bias_act, "upfirdn2d": upfirdn2d, "filtered_lrelu": filtered_lrelu}
    for name in op_names:
        if name not in modules:
            raise click.ClickException(f"--ops: unknown op {name!r}; valid: {', '.join(modules)}")
    dtype_list = []
    for name in dtypes.split(","):
        if name.strip() not in DTYPES:
            raise click.ClickException(f"--dtypes: unknown dtype {name.strip()!r}; valid: {', '.join(DTYPES)}")
        dtype_list.append(DTYPES[name.strip()])
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True  # The reference path's convolutions at their best, for a fair comparison.
    torch.backends.cudnn.allow_tf32 = False  # Exact fp32 in the reference path, like the kernels.
    for name in op_names:
        if not modules[name]._init():
            raise click.ClickException(f"{name}: the CUDA plugin did not build (see the warning above)")

    print(f"Device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}, batch {batch}, {iters} iterations")
    header = f"{'op':<15} {'case':<34} {'dtype':<8} {'ref fwd':>8} {'cuda fwd':>8} {'x':>5}"
    if backward:
        header += f" {'ref f+b':>8} {'cuda f+b':>8} {'x':>5}"
    header += f" {'max diff':>9}"
    print(header + "\n" + "-" * len(header))
    results = []
    for case in make_cases(batch, device):
        if case["op"] not in op_names:
            continue
        for dtype in dtype_list:
            r = run_case(case, dtype, device, iters, backward)
            results.append(r)
            line = f"{r['op']:<15} {r['case']:<34} {r['dtype']:<8} {r['ref_fwd_ms']:8.3f} {r['cuda_fwd_ms']:8.3f}"
            line += f" {r['ref_fwd_ms'] / r['cuda_fwd_ms']:5.1f}"
            if backward:
                line += f" {r['ref_fwd_bwd_ms']:8.3f} {r['cuda_fwd_bwd_ms']:8.3f}"
                line += f" {r['ref_fwd_bwd_ms'] / r['cuda_fwd_bwd_ms']:5.1f}"
            line += f" {r['max_abs_diff']:9.2e}"
            print(line, flush=True)
    print("(milliseconds per call, median; x = reference time / kernel time)")
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=2))
        print(f"Wrote {json_path}")


if __name__ == "__main__":
    main()
