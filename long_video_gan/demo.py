"""`make demo`: generate a short LongVideoGAN (Brooks et al., NeurIPS 2022) video with the bundled tiny model.

Run as `python -m long_video_gan.demo --outdir outputs/demo`. Uses `long_video_gan/pretrained/tiny_lres.pkl` (and
`tiny_sres.pkl`) when bundled; otherwise it builds randomly initialised tiny networks, says so, and still goes
through the same generation code as generate.py (long_video_gan.api.generate_video_files).
"""

import os
import time

import click
import torch

from long_video_gan import api, generator_lres, generator_sres

PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained")
LRES_PKL = os.path.join(PRETRAINED_DIR, "tiny_lres.pkl")
SRES_PKL = os.path.join(PRETRAINED_DIR, "tiny_sres.pkl")

# ----------------------------------------------------------------------------


def _random_lres(seed: int, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(seed)
    return generator_lres.VideoGenerator(**generator_lres.TINY_KWARGS).eval().requires_grad_(False).to(device)


def _random_sres(G_lres: torch.nn.Module, seed: int, device: torch.device) -> torch.nn.Module | None:
    """A random tiny super-res G whose input size is the low-res output (×4 up), or None if that config fails."""
    height, width = G_lres.out_height, G_lres.out_width
    kwargs = dict(
        generator_sres.TINY_KWARGS, lr_height=height, lr_width=width, hr_height=4 * height, hr_width=4 * width
    )
    kwargs["channel_base"] = max(kwargs.get("channel_base", 0), 1024)  # Enough channels for the 144×256 ladder.
    torch.manual_seed(seed)
    try:
        return generator_sres.VideoGenerator(**kwargs).eval().requires_grad_(False).to(device)
    except ValueError as err:
        print(f"Skipping the super-res part: no tiny super-res config for {height}x{width} ({err}).")
        return None


def load_demo_models(device: torch.device, with_sres: bool) -> tuple[torch.nn.Module, torch.nn.Module | None, bool]:
    """(G_lres, G_sres or None, trained?) from the bundled pickles, else random tiny networks."""
    if os.path.isfile(LRES_PKL):
        print(f"Loading the bundled tiny low-res model {LRES_PKL}")
        G_lres = api.load_generator(LRES_PKL, device=device, phase="lres")
        trained = True
    else:
        print("No bundled model found (long_video_gan/pretrained/tiny_lres.pkl): using an UNTRAINED, randomly")
        print("initialised tiny generator. The video shows the generation pipeline, not learned content.")
        G_lres = _random_lres(0, device)
        trained = False
    G_sres = None
    if with_sres:
        if os.path.isfile(SRES_PKL):
            print(f"Loading the bundled tiny super-res model {SRES_PKL}")
            G_sres = api.load_generator(SRES_PKL, device=device, phase="sres")
        else:
            print("No bundled super-res model: using an UNTRAINED, randomly initialised tiny super-res generator.")
            G_sres = _random_sres(G_lres, 1, device)
        if G_sres is not None and (G_sres.lr_height, G_sres.lr_width) != (G_lres.out_height, G_lres.out_width):
            print("Skipping the super-res part: the super-res input size does not match the low-res output.")
            G_sres = None
    return G_lres, G_sres, trained


# ----------------------------------------------------------------------------


@click.command()
@click.option("--outdir", type=str, default="outputs/demo", show_default=True, help="Where to save the demo files.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--len", "num_frames", type=click.IntRange(min=1), default=120, show_default=True, help="Low-res frames.")
@click.option(
    "--sres-len", type=click.IntRange(min=0), default=8, show_default=True, help="Super-res frames (0 = none)."
)
@click.option("--device", type=str, default=None, help="Torch device. Default: CUDA if present, else CPU.")
def main(outdir: str, seed: int, num_frames: int, sres_len: int, device: str | None):
    """Generate a short low-res video (and a few super-res frames) with the bundled tiny model.

    \b
    Example:
      python -m long_video_gan.demo --outdir outputs/demo
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    os.makedirs(outdir, exist_ok=True)
    G_lres, G_sres, trained = load_demo_models(device, with_sres=sres_len > 0)

    start = time.time()
    paths = api.generate_video_files(
        G_lres, seed=seed, num_frames=num_frames, outdir=outdir, save_indices=[0, -1], progress=True
    )
    if G_sres is not None:
        paths += api.generate_video_files(
            G_lres,
            G_sres,
            seed=seed,
            num_frames=sres_len,
            outdir=outdir,
            save_lres=True,
            segment_length=4,
            progress=True,
        )
    for path in paths:
        print(f"Saved {path}")
    print(f"Done in {time.time() - start:.1f}s on {device}{'' if trained else ' (untrained model)'}.")


# ----------------------------------------------------------------------------

if __name__ == "__main__":
    main()
