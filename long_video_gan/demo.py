"""`make demo`: generate a long LongVideoGAN (Brooks et al., NeurIPS 2022) video with the bundled demo models.

Run as `python -m long_video_gan.demo --outdir outputs/demo`. The models are the G_ema snapshots in
`long_video_gan/pretrained/` (how they were trained: pretrained/README.md): a low-res generator (36x64) and, where
bundled, a super-res generator (36x64 -> 144x256). With both, the demo writes a 144x256 video of `--len` frames, the
low-res video it was made from and a few frames as PNG; with only a low-res model, the low-res video and its frames.
There is no fallback to untrained networks: a missing low-res model is an error, a missing super-res model means no
super-res video. `generate.py` without `--lres` uses the same models (`bundled_model_path`).
"""

import os
import time

import click
import torch

from long_video_gan import api

PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained")

# Bundled files per phase, in order of preference: the demo models (safetensors, which load without unpickling, then
# pickle), then the older tiny low-res model.
BUNDLED_NAMES = dict(
    lres=("demo_lres.safetensors", "demo_lres.pkl", "tiny_lres.pkl"),
    sres=("demo_sres.safetensors", "demo_sres.pkl"),
)

# ----------------------------------------------------------------------------


def bundled_model_path(phase: str, pretrained_dir: str | None = None) -> str | None:
    """Path of the bundled generator of `phase` ('lres' or 'sres') in `pretrained_dir` (default: PRETRAINED_DIR), or
    None if none is bundled."""
    pretrained_dir = pretrained_dir or PRETRAINED_DIR
    if phase not in BUNDLED_NAMES:
        raise ValueError(f"phase must be one of {tuple(BUNDLED_NAMES)}, got {phase!r}")
    for name in BUNDLED_NAMES[phase]:
        path = os.path.join(pretrained_dir, name)
        if os.path.isfile(path):
            return path
    return None


def load_demo_models(
    device: torch.device, with_sres: bool = True, pretrained_dir: str | None = None
) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """(G_lres, G_sres or None) from the bundled files; G_sres is None without `with_sres` or a bundled file."""
    pretrained_dir = pretrained_dir or PRETRAINED_DIR
    lres_path = bundled_model_path("lres", pretrained_dir)
    if lres_path is None:
        names = ", ".join(BUNDLED_NAMES["lres"])
        raise click.ClickException(f"no bundled low-res model in {pretrained_dir} (expected one of {names})")
    print(f"Loading the bundled low-res model {lres_path}")
    G_lres = api.load_generator(lres_path, device=device, phase="lres")
    G_sres = None
    if with_sres:
        sres_path = bundled_model_path("sres", pretrained_dir)
        if sres_path is None:
            print("No bundled super-res model: writing the low-res video only.")
        else:
            print(f"Loading the bundled super-res model {sres_path}")
            G_sres = api.load_generator(sres_path, device=device, phase="sres")
            api.check_generator_pair(G_lres, G_sres)
    return G_lres, G_sres


def frame_indices(num_frames: int, count: int) -> list[int]:
    """`count` frame indices spread evenly from the first to the last frame (fewer if the video is shorter)."""
    if count <= 1 or num_frames == 1:
        return [0]
    return sorted({round(i * (num_frames - 1) / (count - 1)) for i in range(count)})


# ----------------------------------------------------------------------------


@click.command()
@click.option("--outdir", type=str, default="outputs/demo", show_default=True, help="Where to save the demo files.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--len", "num_frames", type=click.IntRange(min=1), default=301, show_default=True, help="Frames.")
@click.option("--pngs", type=click.IntRange(min=0), default=4, show_default=True, help="Frames saved as PNG.")
@click.option("--lres-only", is_flag=True, help="Skip the super-res model (low-res video only).")
@click.option("--device", type=str, default=None, help="Torch device. Default: CUDA if present, else CPU.")
def main(outdir: str, seed: int, num_frames: int, pngs: int, lres_only: bool, device: str | None):
    """Generate a long video with the bundled demo models: 144x256 (with the low-res video) and a few PNG frames.

    \b
    Example:
      python -m long_video_gan.demo --outdir outputs/demo --len 301
    """
    start = time.time()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    G_lres, G_sres = load_demo_models(device, with_sres=not lres_only)
    if device.type == "cpu":
        from torch_utils.ops import fast_cpu

        if fast_cpu.is_enabled():
            fast_cpu._init()  # Build or load the CPU kernels now, so a first-use compile message is not in the bar.
    os.makedirs(outdir, exist_ok=True)
    indices = frame_indices(num_frames, pngs) if pngs else []
    gen_start = time.time()
    paths = api.generate_video_files(
        G_lres,
        G_sres,
        seed=seed,
        num_frames=num_frames,
        outdir=outdir,
        save_lres=G_sres is not None,
        save_indices=indices,
        segment_length=16 if device.type == "cuda" else 4,
        progress=True,
    )
    gen_sec = time.time() - gen_start
    size = f"{G_sres.hr_height}x{G_sres.hr_width}" if G_sres is not None else f"{G_lres.out_height}x{G_lres.out_width}"
    rate = num_frames / gen_sec
    print(f"Generated {num_frames} frames at {size} in {gen_sec:.1f}s ({rate:.1f} frames/s on {device}).")
    for path in paths:
        print(f"Saved {os.path.abspath(path)}")
    print(f"Done in {time.time() - start:.1f}s.")


# ----------------------------------------------------------------------------

if __name__ == "__main__":
    main()
