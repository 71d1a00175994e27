"""Generation speed and memory of LongVideoGAN: frames per second and peak resident memory per video length.

Streams videos with the release-size networks (random init: speed and memory do not depend on the weights) through
long_video_gan.streaming, the code behind generate.py, and, for comparison, renders short videos one-shot like the
original. Every configuration runs in a fresh process so its peak RSS is its own; streamed frames are converted to
uint8 (as for the encoder) and dropped. Streaming memory must not grow with the length (at most 2 GB for 10,000
low-res frames).

Examples:
    python benchmarks/bench_generate.py                                   # lres 128 / 1,024 / 10,000, sres 4 frames
    python benchmarks/bench_generate.py --lres-frames 128,1024 --no-oneshot --sres-frames 0
    python benchmarks/bench_generate.py --device cuda --json results.json
"""

import json
import os
import platform
import subprocess
import sys
import time

import click

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import cpu_description, peak_rss_gib  # noqa: E402

# ----------------------------------------------------------------------------
# Worker: one configuration in this process.


def _rss_now_mb() -> float:
    import gc

    import psutil

    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def _worker(config: dict) -> dict:
    import torch

    from long_video_gan import api, generator_lres, generator_sres, streaming

    device = torch.device(config["device"])
    if config.get("threads"):
        torch.set_num_threads(config["threads"])
    torch.backends.cudnn.allow_tf32 = False  # Strict fp32, as generate.py.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    num_frames = config["frames"]
    result = dict(config)

    if config["kind"] in ("lres_stream", "lres_oneshot"):
        G = generator_lres.VideoGenerator().eval().requires_grad_(False).to(device)
        result["rss_after_build_mb"] = _rss_now_mb()
        start = time.perf_counter()
        if config["kind"] == "lres_stream":
            chunks = streaming.stream_video(
                G, num_frames=num_frames, generator=torch.Generator(device).manual_seed(0), window=config["window"]
            )
            done = 0
            for chunk in chunks:
                api.to_uint8(chunk.video)
                done += chunk.video.shape[2]
            assert done == num_frames
        else:
            with torch.no_grad():
                video = G(1, num_frames, generator_emb=torch.Generator(device).manual_seed(0))
            api.to_uint8(video)
    else:
        G = generator_sres.VideoGenerator().eval().requires_grad_(False).to(device)
        result["rss_after_build_mb"] = _rss_now_mb()
        ctx = G.temporal_context
        gen = torch.Generator(device).manual_seed(0)
        lr = torch.randn([1, 3, num_frames + 2 * ctx, G.lr_height, G.lr_width], generator=gen, device=device).tanh()
        z = G.sample_latent_z(1, generator_z=gen)
        start = time.perf_counter()
        chunks = streaming.iter_sres_chunks(G, iter(lr.split(8, dim=2)), z, num_frames, config["segment"])
        for hr, _ in chunks:
            api.to_uint8(hr)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    seconds = time.perf_counter() - start
    # The worker's own peak (VmHWM): its ru_maxrss, or the parent's RUSAGE_CHILDREN, would include the parent's peak.
    result.update(seconds=seconds, fps=num_frames / seconds, peak_rss_mb=peak_rss_gib() * 1024)
    return result


# ----------------------------------------------------------------------------
# Driver.


def _run_in_subprocess(config: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker failed for {config}:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _parse_list(value: str) -> list[int]:
    return [int(v) for v in value.split(",") if v.strip() and int(v) > 0]


@click.command()
@click.option("--lres-frames", type=str, default="128,1024,10000", show_default=True, help="Low-res video lengths.")
@click.option("--window", type=int, default=128, show_default=True, help="Streaming window (low-res frames).")
@click.option("--oneshot/--no-oneshot", default=True, show_default=True, help="Also time one-shot lres up to 1,024.")
@click.option("--sres-frames", type=int, default=4, show_default=True, help="Super-res frames (0 = skip).")
@click.option("--segment", type=int, default=2, show_default=True, help="Super-res frames per step.")
@click.option("--device", type=str, default=None, help="Torch device. Default: CUDA if present, else CPU.")
@click.option("--threads", type=int, default=0, help="Torch CPU threads per run (0 = torch default).")
@click.option("--json", "json_path", type=str, default=None, help="Also write the results to this JSON file.")
@click.option("--worker", type=str, default=None, hidden=True)
def main(lres_frames, window, oneshot, sres_frames, segment, device, threads, json_path, worker):
    """Measure frames/s and peak RSS of streamed generation (and one-shot for comparison)."""
    if worker is not None:
        print(json.dumps(_worker(json.loads(worker))))
        return
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    configs = []
    for n in _parse_list(lres_frames):
        configs.append(dict(kind="lres_stream", frames=n, window=window, device=device, threads=threads))
        if oneshot and n <= 1024:
            configs.append(dict(kind="lres_oneshot", frames=n, device=device, threads=threads))
    if sres_frames > 0:
        configs.append(dict(kind="sres_stream", frames=sres_frames, segment=segment, device=device, threads=threads))

    machine = cpu_description()
    print(
        f"Machine: {platform.node()}, {machine['cpu']}, {machine['cores']} CPUs, torch {machine['torch']}, "
        f"{threads or machine['threads']} threads, device {device}, load average {os.getloadavg()[0]:.1f}"
    )
    columns = ["frames", "window", "seconds", "frames/s", "peak RSS MB", "RSS built"]
    widths = [7, 7, 9, 9, 12, 12]
    print(f"{'config':<14} " + " ".join(f"{c:>{w}}" for c, w in zip(columns, widths)))
    results = []
    for config in configs:
        r = _run_in_subprocess(config)
        # The largest peak among the finished workers so far (formerly the parent's RUSAGE_CHILDREN ru_maxrss, which
        # also counted the parent's own peak).
        r["children_max_rss_mb"] = max([r["peak_rss_mb"]] + [q["peak_rss_mb"] for q in results])
        results.append(r)
        step = r.get("window", r.get("segment", "-"))
        print(
            f"{r['kind']:<14} {r['frames']:>7} {step:>7} {r['seconds']:>9.1f} {r['fps']:>9.2f} "
            f"{r['peak_rss_mb']:>12.0f} {r['rss_after_build_mb']:>12.0f}"
            + (f"  (CUDA peak {r['peak_cuda_mb']:.0f} MB)" if "peak_cuda_mb" in r else ""),
            flush=True,
        )
    if json_path:
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)


# ----------------------------------------------------------------------------

if __name__ == "__main__":
    main()
