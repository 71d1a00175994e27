"""Check that streamed generation equals one-shot generation for the release-size LongVideoGAN generators.

Random-init networks at the default configurations (36x64 low-res, 144x256 super-res). The low-res check compares
every frame of a `--len`-frame video streamed in `--window`-frame windows with the one-shot forward; the super-res
check compares `--sres-len` frames streamed over the low-res stream with the original generate.py computation
(one-shot low-res, then 16-frame super-res segments with one z). Prints the max abs differences and timings; exits
non-zero when a difference exceeds `--tol`. The super-res part takes several seconds per frame on a CPU.

    python benchmarks/check_streaming_release.py --len 301 --window 64 --sres-len 16
"""

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from long_video_gan import generator_lres, generator_sres, streaming  # noqa: E402

# ----------------------------------------------------------------------------


def check_lres(G: torch.nn.Module, num_frames: int, window: int, seed: int) -> float:
    with torch.no_grad():
        start = time.time()
        # The original generate.py renders ceil(len/16)*16 frames (its noise length follows), then trims.
        ref = G(1, streaming.original_lres_length(num_frames), generator_emb=torch.Generator().manual_seed(seed))
        t_ref = time.time() - start
        start = time.time()
        chunks = streaming.stream_video(
            G, num_frames=num_frames, generator=torch.Generator().manual_seed(seed), window=window
        )
        video = torch.cat([c.video for c in chunks], dim=2)
        t_stream = time.time() - start
    diff = (video - ref[:, :, :num_frames]).abs().max().item()
    print(
        f"lres  {num_frames} frames, window {window}: max abs diff {diff:.3g}  (one-shot {t_ref:.1f}s, "
        f"streamed {t_stream:.1f}s)"
    )
    return diff


def check_sres(G_lres: torch.nn.Module, G_sres: torch.nn.Module, num_frames: int, seed: int) -> float:
    ctx = G_sres.temporal_context
    with torch.no_grad():
        start = time.time()
        gen = torch.Generator().manual_seed(seed)
        lr_len = -(-num_frames // 16) * 16 + 2 * ctx
        lr = G_lres(1, lr_len, generator_emb=gen)
        hr_ref = torch.cat(list(G_sres.sample_video_segments(lr, 16, generator_z=gen)), dim=2)[:, :, :num_frames]
        t_ref = time.time() - start
        start = time.time()
        chunks = streaming.stream_video(
            G_lres,
            G_sres,
            num_frames=num_frames,
            generator=torch.Generator().manual_seed(seed),
            window=64,
            segment_length=4,
        )
        hr = torch.cat([c.video for c in chunks], dim=2)
        t_stream = time.time() - start
    diff = (hr - hr_ref).abs().max().item()
    print(
        f"sres  {num_frames} frames at {G_sres.hr_height}x{G_sres.hr_width}, segments of 4: max abs diff "
        f"{diff:.3g}  (original {t_ref:.1f}s, streamed {t_stream:.1f}s)"
    )
    return diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--len", type=int, default=301, help="low-res frames to compare")
    parser.add_argument("--window", type=int, default=64, help="low-res streaming window")
    parser.add_argument("--sres-len", type=int, default=16, help="super-res frames to compare (0 = skip)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tol", type=float, default=1e-5)
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    torch.manual_seed(0)
    G_lres = generator_lres.VideoGenerator().eval().requires_grad_(False)
    worst = check_lres(G_lres, args.len, args.window, args.seed)
    if args.sres_len > 0:
        torch.manual_seed(1)
        G_sres = generator_sres.VideoGenerator().eval().requires_grad_(False)
        worst = max(worst, check_sres(G_lres, G_sres, args.sres_len, args.seed))
    print("OK" if worst <= args.tol else f"FAILED: {worst:.3g} > {args.tol}")
    sys.exit(0 if worst <= args.tol else 1)


if __name__ == "__main__":
    main()
