"""Plot colour similarity versus frame separation for LongVideoGAN (Brooks et al., NeurIPS 2022) videos and a dataset.

Whether a generator makes new content over time shows in how fast the colours of its frames drift away from those of
the first frame; the same curve of real clips is the target (measure: long_video_gan/color_similarity.py).
"""

import os
import textwrap

import click
import torch
import tqdm

import dnnlib
from generate import load_generator_option, resolve_device
from long_video_gan import api
from long_video_gan import color_similarity as cs
from long_video_gan.dataset import VideoDataset

PLOT_FORMATS = (".png", ".pdf")
REPORT_SEPARATIONS = (1, 4, 16, 32, 64, 128, 256, 512)  # Rows of the printed summary (those within --len).

# ----------------------------------------------------------------------------


def generated_similarities(
    G_lres: torch.nn.Module,
    G_sres: torch.nn.Module | None,
    num_frames: int,
    num_samples: int,
    batch_size: int,
    seed: int,
    segment_length: int,
    progress: bool = True,
) -> torch.Tensor:
    """Colour similarity `[num_samples, num_frames]` of generated videos, streamed `batch_size` videos at a time.

    One generator seeded with `seed` on the low-res generator's device supplies every batch's noise in turn.
    """
    generator = torch.Generator(device=api.generator_device(G_lres)).manual_seed(seed)
    results = []
    with tqdm.tqdm(total=num_samples, unit="video", desc="Generated", disable=not progress) as bar:
        for start in range(0, num_samples, batch_size):
            n = min(batch_size, num_samples - start)
            acc = cs.SimilarityAccumulator()
            chunks = api.iter_video_chunks(
                G_lres,
                G_sres,
                num_frames=num_frames,
                generator=generator,
                batch_size=n,
                segment_length=segment_length,
                dtype=torch.float32,
            )
            for chunk in chunks:
                acc.add(torch.from_numpy(api.to_uint8(chunk.video)))  # [n, T, H, W, 3]
            results.append(acc.result())
            bar.update(n)
    return torch.cat(results)


def dataset_similarities(dataset: VideoDataset, num_samples: int, seed: int, progress: bool = True) -> torch.Tensor:
    """Colour similarity `[num_samples, T]` of random real clips: clips drawn uniformly with replacement, each with a
    random start (the dataset's own draw, made from the global torch RNG, which is seeded here and restored after)."""
    index_gen = torch.Generator().manual_seed(seed)
    indices = torch.randint(len(dataset), [num_samples], generator=index_gen).tolist()
    results = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for idx in tqdm.tqdm(indices, unit="clip", desc="Dataset", disable=not progress):
            video = dataset[idx]["video"]  # [3, T, H, W] float32, 2·v/255 − 1 of the JPEG's uint8 values
            frames = ((video + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)  # The uint8 values again.
            results.append(cs.color_similarity(frames.permute(1, 2, 3, 0)[None]))  # [1, T]
    return torch.cat(results)


def plot_curves(curves: list[tuple[str, torch.Tensor]], path: str, title: str) -> None:
    """Mean ± sample std of each `[N, T]` similarity set against frame separation; PNG or PDF by the extension,
    written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=150)
    for label, sims in curves:
        mean, std = (t.numpy() for t in cs.similarity_stats(sims))
        x = range(len(mean))
        (line,) = ax.plot(x, mean, label=f"{label} (n={sims.shape[0]})")
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("Frame separation")
    ax.set_ylabel("Colour similarity to frame 0")
    ax.set_xlim(0, max(s.shape[1] for _, s in curves) - 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    ax.set_title(textwrap.fill(title, width=80), fontsize=8)  # Long file names wrap instead of leaving the figure.
    fig.tight_layout()
    try:
        with dnnlib.util.atomic_write(path) as f:
            fig.savefig(f, format=os.path.splitext(path)[1][1:].lower())
    finally:
        plt.close(fig)


# ----------------------------------------------------------------------------


@click.command(context_settings=dict(help_option_names=["-h", "--help"]))
@click.option("--path", "out_path", type=str, required=True, help="Output plot: a .png or .pdf file.")
@click.option("--dataset", "dataset_dir", type=str, required=True, help="Dataset root (holds HHHHxWWWW/ directories).")
@click.option("--lres", "lres_path", type=str, required=True, help="Low-res generator: pickle or .safetensors.")
@click.option(
    "--sres", "sres_path", type=str, default=None, help="Super-res generator; without it the low-res videos are used."
)
@click.option(
    "--len",
    "max_separation",
    type=click.IntRange(min=1),
    default=128,
    show_default=True,
    help="Largest frame separation (clips of len+1 frames).",
)
@click.option(
    "--samples",
    "num_samples",
    type=click.IntRange(min=2),
    default=1000,
    show_default=True,
    help="Generated videos, and real clips.",
)
@click.option(
    "--batch", "batch_size", type=click.IntRange(min=1), default=10, show_default=True, help="Videos generated at once."
)
@click.option("--device", type=str, default=None, help="Torch device, e.g. cpu or cuda:0. Default: CUDA if present.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the generator noise and the real clips.")
def main(out_path, dataset_dir, lres_path, sres_path, max_separation, num_samples, batch_size, device, seed):
    """Plot colour similarity to the first frame versus frame separation, generated videos next to real clips.

    Every frame's RGB colours are quantised to 20 levels per channel and its colour histogram is intersected with
    the first frame's; the plot shows the mean and ± one sample standard deviation over --samples videos (and as
    many random real clips of the same length, at the output resolution: the super-res one with --sres, else the
    low-res one). Generators may be pickles or .safetensors files.

    \b
    Examples:
      python plot_color_similarity.py --path color_similarity.pdf --dataset datasets/horseback \\
          --lres horseback_lres.pkl --sres horseback_sres.pkl
      python plot_color_similarity.py --path lres.png --dataset datasets/horseback --lres lres.safetensors \\
          --samples 100 --device cpu
    """
    # Check everything before any work.
    ext = os.path.splitext(out_path)[1].lower()
    if ext not in PLOT_FORMATS:
        raise click.ClickException(f"--path must end in .png or .pdf (the format follows it), got {out_path!r}")
    out_dir = os.path.dirname(os.path.abspath(out_path))
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as err:
        raise click.ClickException(f"--path: cannot create directory {out_dir!r} ({err.strerror or err})") from err
    if not os.access(out_dir, os.W_OK):
        raise click.ClickException(f"--path: cannot write to directory {out_dir!r}")
    if not os.path.isdir(dataset_dir):
        raise click.ClickException(f"--dataset: {dataset_dir!r} is not a directory")
    device = resolve_device(device)
    torch.backends.cudnn.allow_tf32 = False  # Strict fp32, as generate.py.
    torch.backends.cuda.matmul.allow_tf32 = False

    print(f'Loading low-res generator from "{lres_path}"...')
    G_lres = load_generator_option("--lres", lres_path, device, "lres")
    G_sres = None
    height, width = int(G_lres.out_height), int(G_lres.out_width)
    if sres_path is not None:
        print(f'Loading super-res generator from "{sres_path}"...')
        G_sres = load_generator_option("--sres", sres_path, device, "sres")
        try:
            api.check_generator_pair(G_lres, G_sres)
        except ValueError as err:
            raise click.ClickException(f"--sres: {err}") from err
        height, width = int(G_sres.hr_height), int(G_sres.hr_width)
    num_frames = max_separation + 1
    try:
        dataset = VideoDataset(dataset_dir, seq_length=num_frames, height=height, width=width)
    except (OSError, ValueError) as err:
        raise click.ClickException(f"--dataset: {err}") from err

    print(f"Dataset: {dataset}")
    real = dataset_similarities(dataset, num_samples, seed)
    # Super-res frames per video per step: generate.py's defaults (16 on CUDA; on the CPU 4 frames of one video, about
    # 2 GB for the release-size network), with about as many frames per step for a CPU batch. Same frames either way.
    segment_length = 16 if device.type == "cuda" else max(1, 4 // batch_size)
    fake = generated_similarities(G_lres, G_sres, num_frames, num_samples, batch_size, seed, segment_length)

    which = "super-res" if G_sres is not None else "low-res"
    title = f"{os.path.basename(lres_path)}" + (f" + {os.path.basename(sres_path)}" if G_sres is not None else "")
    title += f" ({which}, {height}x{width}) vs {os.path.basename(os.path.normpath(dataset_dir))}"
    plot_curves([("Generated", fake), ("Dataset", real)], out_path, title)

    print(f"{'separation':>10}  {'generated':>15}  {'dataset':>15}")
    fake_stats, real_stats = cs.similarity_stats(fake), cs.similarity_stats(real)
    for sep in [s for s in REPORT_SEPARATIONS if s <= max_separation]:
        row = [f"{stats[0][sep]:.3f} ± {stats[1][sep]:.3f}" for stats in (fake_stats, real_stats)]
        print(f"{sep:>10}  {row[0]:>15}  {row[1]:>15}")
    print(f"Saved {out_path}")


# ----------------------------------------------------------------------------

if __name__ == "__main__":
    main()
