"""CPU speed of both LongVideoGAN generators: reference path against fast path (ops/fast_cpu.py), and both against
this machine's floor.

The work of a network is counted from the convolutions it runs (dense convolutions only; the reference path's
depthwise resampling filters are reported apart): about 315 GFLOP per super-resolved 144x256 frame and about
5.2 GFLOP per low-res frame at 128 frames. The floor is that work divided by the machine's peak, measured here as the
best rate of a large matrix product (fp32, and bf16 where the CPU has native bf16). Both paths run in this process on
the release-size networks (random init: speed does not depend on the weights), each timed run between two peak
measurements whose mean sets its floor, and the whole sequence repeats, so that load from other processes shows up as
spread between repeats. The peak RSS of super-resolving a 16-frame segment is measured in a fresh process.

Examples:
    python benchmarks/bench_speed.py                                  # everything quoted in reports (long on 2 cores)
    python benchmarks/bench_speed.py --sres-frames 2 --lres-lengths 128 --repeats 1
    python benchmarks/bench_speed.py --no-ref-above 128               # reference low-res path only at 128 frames
"""

import copy
import json
import math
import os
import subprocess
import sys
import time

import click
import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import dnnlib  # noqa: E402
from benchmarks.common import FLAGS_OF_INTEREST, cpu_description, peak_rss_gib  # noqa: E402
from long_video_gan import generator_lres, generator_sres  # noqa: E402
from torch_utils.ops import fast_cpu  # noqa: E402

# ----------------------------------------------------------------------------
# Machine.


def matmul_peak(dtype: torch.dtype, n: int = 4096, reps: int = 3) -> float:
    """Best GFLOP/s of an n x n x n matrix product in `dtype` (one warm-up, then `reps` timed runs)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn([n, n], generator=g).to(dtype)
    b = torch.randn([n, n], generator=g).to(dtype)
    torch.mm(a, b)
    best = math.inf
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


# ----------------------------------------------------------------------------
# Work: the convolutions a forward pass runs, counted on the meta device (no arithmetic).


class _ConvCounter(TorchDispatchMode):
    """Counts multiply-adds of every aten.convolution: dense ones, and depthwise ones (one input channel per group)."""

    def __init__(self):
        super().__init__()
        self.dense_flop = 0
        self.depthwise_flop = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.aten.convolution.default:
            weight = args[1]
            flop = 2 * out.numel() * weight.shape[1] * math.prod(weight.shape[2:])
            if weight.shape[1] == 1:
                self.depthwise_flop += flop
            else:
                self.dense_flop += flop
        return out


def count_work(G: torch.nn.Module, run) -> tuple:
    """(dense GFLOP, depthwise GFLOP) of `run(G_meta)`, a forward pass of a meta-device copy of G."""
    G_meta = copy.deepcopy(G).to("meta")
    with torch.no_grad(), _ConvCounter() as counter:
        run(G_meta)
    return counter.dense_flop / 1e9, counter.depthwise_flop / 1e9


# ----------------------------------------------------------------------------
# Timing helpers.


def timed(fn) -> tuple:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def psnr(test: torch.Tensor, ref: torch.Tensor) -> tuple:
    """PSNR in dB of uint8 frames as the video writer makes them, and of float frames over the reference's range."""

    def to_uint8(v):
        return (v * 127.5 + 128).clamp(0, 255).to(torch.uint8).float()

    mse8 = (to_uint8(test) - to_uint8(ref)).square().mean().item()
    psnr8 = math.inf if mse8 == 0 else 10 * math.log10(255**2 / mse8)
    span = (ref.max() - ref.min()).item()
    msef = (test.float() - ref).square().mean().item()
    psnrf = math.inf if msef == 0 else 10 * math.log10(span**2 / msef)
    return psnr8, psnrf


def timed_with_peak(fn, dtype: torch.dtype = torch.float32) -> tuple:
    """`(seconds, output, peak)`: run `fn` between two peak measurements; `peak` is their mean, the best estimate of
    what the machine offered during the run when other processes come and go (both are kept in the figures)."""
    before = matmul_peak(dtype)
    seconds, out = timed(fn)
    after = matmul_peak(dtype)
    return seconds, out, dict(mean=(before + after) / 2, before=before, after=after)


def report(name: str, frames: int, work: float, seconds: float, peaks: dict, ref_seconds: float = None) -> dict:
    """Print one line for a timed path; return its figures."""
    peak = peaks["mean"]
    per_frame = seconds / frames
    floor = work / peak  # Seconds per frame at the measured peak.
    row = dict(
        name=name,
        frames=frames,
        seconds=seconds,
        fps=frames / seconds,
        gflops=work * frames / seconds,
        peak=peak,
        peak_before=peaks["before"],
        peak_after=peaks["after"],
        floor_s_per_frame=floor,
        x_floor=per_frame / floor,
    )
    line = (
        f"  {name:<20} {row['fps']:9.4f} frames/s {per_frame:8.3f} s/frame {row['gflops']:7.1f} GFLOP/s"
        f"  {row['x_floor']:5.2f} x floor ({floor:.3f} s/frame at {peak:.0f} GFLOP/s, peak before/after "
        f"{peaks['before']:.0f}/{peaks['after']:.0f})"
    )
    if ref_seconds is not None:
        row["speedup"] = ref_seconds / seconds
        line += f"  {row['speedup']:5.2f} x faster than ref"
    print(line, flush=True)
    return row


def time_repeats(run, warm_up, frames: int, work: float, repeats: int, run_ref: bool, bf16: bool) -> list:
    """Warm up the fast paths with `warm_up()` (fp32, and bf16 with `bf16`), then `repeats` times: time `run()` (a
    call producing `frames` frames of `work` GFLOP each) on the fast path, on the reference path with `run_ref`, and
    in bf16 with `bf16`, each between two peak measurements. Prints a line per timed path; returns a row per repeat
    (the fast fp32 figures, with the reference's under "ref" and bf16's under "bf16")."""
    warm_up()
    if bf16:
        with fast_cpu.conv_dtype(torch.bfloat16):
            warm_up()
    rows = []
    for rep in range(repeats):
        print(f" repeat {rep + 1}/{repeats}", flush=True)
        t_fast, y_fast, peak = timed_with_peak(run)
        t_ref = None
        if run_ref:
            with fast_cpu.disabled():
                t_ref, y_ref, peak_ref = timed_with_peak(run)
            ref_row = report("reference fp32", frames, work, t_ref, peak_ref)
        row = report("fast fp32", frames, work, t_fast, peak, t_ref)
        if run_ref:
            row["ref"] = ref_row
            row["max_abs_diff"] = (y_fast - y_ref).abs().max().item()
            print(f"  fast vs reference: max abs diff {row['max_abs_diff']:.2e}", flush=True)
            del y_ref  # Freed before the bf16 run: a long low-res video's reference output is large.
        if bf16:
            with fast_cpu.conv_dtype(torch.bfloat16):
                t16, y16, peak16 = timed_with_peak(run, torch.bfloat16)
            row16 = report("fast bf16", frames, work, t16, peak16, t_ref)
            row16["psnr_uint8"], row16["psnr_float"] = psnr(y16, y_fast)
            print(
                f"  bf16 vs fp32 frames: PSNR {row16['psnr_uint8']:.1f} dB (uint8 frames), "
                f"{row16['psnr_float']:.1f} dB (float, over the fp32 range)",
                flush=True,
            )
            row["bf16"] = row16
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------
# Generators.


def bench_sres(frames: int, repeats: int, run_ref: bool, bf16: bool, tiny: bool = False) -> dict:
    torch.manual_seed(0)
    G = generator_sres.VideoGenerator(**(generator_sres.TINY_KWARGS if tiny else {})).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    context = 2 * G.temporal_context
    lr = torch.randn([1, 3, frames + context, G.lr_height, G.lr_width], generator=g).clamp(-1, 1)
    z = torch.randn([1, G.latent_z_dim], generator=g)
    work, depthwise = count_work(G, lambda Gm: Gm.SG3(z.to("meta"), lr[:, :, : 1 + context].to("meta")))
    print(
        f"\nSuper-res generator, {frames} frames of {G.hr_width}x{G.hr_height} per call: {work:.1f} GFLOP/frame of "
        f"convolutions (the reference path adds {depthwise:.1f} GFLOP/frame of depthwise filtering)",
        flush=True,
    )

    def run():
        return G.SG3(z, lr)

    def warm_up():  # Of the fast paths (kernel build, weight caches, convolution primitives), on one frame.
        return G.SG3(z, lr[:, :, : 1 + context])

    rows = time_repeats(run, warm_up, frames, work, repeats, run_ref, bf16)
    size = f"{G.hr_width}x{G.hr_height}"
    return dict(size=size, work_gflop_per_frame=work, depthwise_gflop_per_frame=depthwise, repeats=rows)


def bench_lres(length: int, repeats: int, run_ref: bool, bf16: bool, tiny: bool = False) -> dict:
    torch.manual_seed(0)
    G = generator_lres.VideoGenerator(**(generator_lres.TINY_KWARGS if tiny else {})).eval().requires_grad_(False)
    in_length, _ = G.compute_seq_lengths(length)
    emb_meta = torch.zeros([1, G.temporal_emb_dim, in_length * G.total_temporal_scale], device="meta")
    work, depthwise = count_work(G, lambda Gm: Gm(1, length, emb=emb_meta))
    work /= length
    print(
        f"\nLow-res generator, {length} frames of {G.out_width}x{G.out_height} per call: {work:.2f} GFLOP/frame of "
        f"convolutions (plus {depthwise / length:.3f} GFLOP/frame of depthwise filtering in the noise filter bank)",
        flush=True,
    )

    def run(seq_length=length):
        return G(1, seq_length, generator_emb=torch.Generator().manual_seed(2))

    rows = time_repeats(run, lambda: run(32), length, work, repeats, run_ref, bf16)  # Warm-up on a short video.
    return dict(length=length, work_gflop_per_frame=work, repeats=rows)


def _summary_line(label: str, entry: dict) -> str:
    """Best repeat of each figure: the fast path's time over its floor, the reference's, and the speed-up."""
    rows = entry["repeats"]
    fast = min(rows, key=lambda r: r["x_floor"])
    line = f"  {label:<22} fast {fast['fps']:8.4f} frames/s = {fast['x_floor']:4.2f} x floor"
    refs = [r for r in rows if "ref" in r]
    if refs:
        line += f"; {max(r['speedup'] for r in refs):5.2f} x the reference"
        line += f" (reference at best {min(r['ref']['x_floor'] for r in refs):4.2f} x floor)"
    bf = [r["bf16"] for r in rows if "bf16" in r]
    if bf:
        best = min(bf, key=lambda r: r["x_floor"])
        line += f"\n  {'':<22} bf16 {best['fps']:8.4f} frames/s = {best['x_floor']:4.2f} x bf16 floor, PSNR vs fp32 "
        line += f"{min(r['psnr_uint8'] for r in bf):.1f} dB (uint8 frames)"
    return line


def print_summary(results: dict) -> None:
    print("\nSummary (best repeat; each floor uses the mean of the peaks measured just before and after that run):")
    if "sres" in results:
        print(_summary_line(f"super-res {results['sres']['size']}", results["sres"]))
    for entry in results.get("lres", []):
        print(_summary_line(f"low-res, {entry['length']} frames", entry))
    for key in ("sres_segment_rss", "sres_segment_rss_bf16"):
        if key in results:
            r = results[key]
            print(f"  super-res {r['segment']}-frame segment ({r['dtype']}): peak RSS {r['peak_rss_gib']:.2f} GiB")


# ----------------------------------------------------------------------------
# Peak RSS of one super-res segment, in a fresh process.


def _rss_child(segment: int, dtype: str, tiny: bool) -> None:
    torch.manual_seed(0)
    G = generator_sres.VideoGenerator(**(generator_sres.TINY_KWARGS if tiny else {})).eval().requires_grad_(False)
    lr = torch.randn([1, 3, segment + 2 * G.temporal_context, G.lr_height, G.lr_width]).clamp(-1, 1)
    conv_dtype = dict(fp32=torch.float32, bf16=torch.bfloat16)[dtype]
    with torch.no_grad(), fast_cpu.conv_dtype(conv_dtype):
        start = time.perf_counter()
        for video in G.sample_video_segments(lr, segment_length=segment, generator_z=torch.Generator().manual_seed(1)):
            assert video.shape[2] == segment
        seconds = time.perf_counter() - start
    print(json.dumps(dict(segment=segment, dtype=dtype, peak_rss_gib=peak_rss_gib(), seconds=seconds)))


def measure_segment_rss(segment: int, dtype: str, tiny: bool = False) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--rss-child", str(segment), "--rss-dtype", dtype]
    cmd += ["--tiny"] if tiny else []
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise click.ClickException(f"segment RSS measurement failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(
        f"\nSuper-res {segment}-frame segment, fast path {dtype}, fresh process: peak RSS "
        f"{result['peak_rss_gib']:.2f} GiB ({result['seconds']:.1f} s)",
        flush=True,
    )
    return result


# ----------------------------------------------------------------------------


def _parse_lengths(value: str) -> list:
    try:
        lengths = [int(v) for v in value.split(",") if v.strip()]
    except ValueError as err:
        raise click.BadParameter(f"expected comma-separated frame counts such as 128,2048, got {value!r}") from err
    if any(v <= 0 for v in lengths):
        raise click.BadParameter(f"frame counts must be positive, got {value!r}")
    return lengths


@click.command(context_settings=dict(help_option_names=["-h", "--help"]))
@click.option(
    "--sres-frames",
    type=click.IntRange(min=0),
    default=4,
    show_default=True,
    help="Super-res frames per timed call (0 skips the super-res generator).",
)
@click.option(
    "--lres-lengths",
    type=str,
    default="128,2048",
    show_default=True,
    help="Low-res video lengths to time, comma-separated ('' skips the low-res generator).",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Repeats of each peak / fast / reference sequence.",
)
@click.option(
    "--no-ref-above",
    type=click.IntRange(min=0),
    default=None,
    help="Skip the reference low-res path for lengths above this (it is slow and memory-hungry).",
)
@click.option("--ref/--no-ref", "run_ref", default=True, show_default=True, help="Time the reference paths too.")
@click.option("--bf16/--no-bf16", "bf16", default=None, help="Time bf16 too [default: where the CPU has native bf16].")
@click.option(
    "--rss-segment",
    type=click.IntRange(min=0),
    default=16,
    show_default=True,
    help="Super-res segment length for the peak-RSS measurement (0 skips it).",
)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch intra-op threads [default: torch's].")
@click.option("--json", "json_path", type=str, default=None, help="Also write the figures to this JSON file.")
@click.option("--tiny", is_flag=True, help="Tiny test networks instead of the release sizes (smoke tests only).")
@click.option("--rss-child", type=int, default=None, hidden=True)
@click.option("--rss-dtype", type=click.Choice(["fp32", "bf16"]), default="fp32", hidden=True)
def main(sres_frames, lres_lengths, repeats, no_ref_above, run_ref, bf16, rss_segment, threads, json_path, tiny,
         rss_child, rss_dtype):  # fmt: skip
    """Time the reference and fast CPU paths of both generators against the measured matmul peak."""
    if threads is not None:
        torch.set_num_threads(threads)
    if rss_child is not None:
        _rss_child(rss_child, rss_dtype, tiny)
        return
    lengths = _parse_lengths(lres_lengths)
    bf16_ok, bf16_reason = fast_cpu.bf16_support()
    if bf16 is None:
        bf16 = bf16_ok
    elif bf16 and not bf16_ok:
        print(f"Warning: --bf16 on a CPU without native bf16 ({bf16_reason}).")

    machine = cpu_description()
    print(f"CPU: {machine['cpu']}; {machine['cores']} logical CPUs; torch {machine['torch']}, "
          f"{machine['threads']} threads, capability {machine['capability']}")  # fmt: skip
    print("Flags: " + ", ".join(f"{name}={'yes' if name in machine['flags'] else 'no'}" for name in FLAGS_OF_INTEREST))
    print(f"bf16: {bf16_reason}")
    print(f"Load average before: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    fast_ok = fast_cpu._init()
    print(f"Fast-path C++ kernels: {'built' if fast_ok else 'NOT available (resampling falls back to the reference)'}")
    peak32 = matmul_peak(torch.float32)
    peak16 = matmul_peak(torch.bfloat16) if bf16 else None
    print(f"Matmul peak: fp32 {peak32:.0f} GFLOP/s" + (f", bf16 {peak16:.0f} GFLOP/s" if peak16 else ""), flush=True)

    results = dict(cpu=machine["cpu"], flags=sorted(machine["flags"]), threads=machine["threads"], peak_fp32=peak32,
                   peak_bf16=peak16, machine=machine)  # fmt: skip
    with torch.no_grad():
        if sres_frames > 0:
            results["sres"] = bench_sres(sres_frames, repeats, run_ref, bf16, tiny)
        results["lres"] = []
        for length in lengths:
            ref_here = run_ref and (no_ref_above is None or length <= no_ref_above)
            results["lres"].append(bench_lres(length, repeats, ref_here, bf16, tiny))
    if rss_segment > 0:
        results["sres_segment_rss"] = measure_segment_rss(rss_segment, "fp32", tiny)
        if bf16:
            results["sres_segment_rss_bf16"] = measure_segment_rss(rss_segment, "bf16", tiny)
    print_summary(results)
    print(f"\nLoad average after: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if json_path:
        with dnnlib.util.atomic_write(json_path, "w") as f:
            json.dump(results, f, indent=2, default=float)


# ----------------------------------------------------------------------------

if __name__ == "__main__":
    main()
