"""Generate long videos with LongVideoGAN (Brooks et al., NeurIPS 2022): low-res, optionally super-resolved."""

import os
import re
import tempfile

import click
import torch

from long_video_gan import api
from torch_utils.ops import fast_cpu

# ----------------------------------------------------------------------------


def parse_seeds(value: str | int | list) -> list[int]:
    """'3' → [3]; '1-4' → [1, 2, 3, 4]; '1,5,7-9' → [1, 5, 7, 8, 9]."""
    if isinstance(value, list):
        return value
    if isinstance(value, int):
        return [value]
    seeds = []
    for part in str(value).split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if match is None:
            raise click.BadParameter(f"expected a seed, a range a-b or a comma list such as 1,5,7-9, got {value!r}")
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) is not None else lo
        if hi < lo:
            raise click.BadParameter(f"range {part.strip()!r} is empty (end before start)")
        seeds.extend(range(lo, hi + 1))
    return seeds


def _check_outdir(outdir: str) -> None:
    """Check, before any work and without creating anything, that `outdir` exists as a writable directory or can be
    created (its nearest existing ancestor is a writable directory)."""
    path = os.path.abspath(outdir)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    try:
        if not os.path.isdir(path):
            raise NotADirectoryError(f"{path!r} is not a directory")
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write_test_"):
            pass
    except OSError as err:
        raise click.ClickException(f"--outdir: cannot write to {outdir!r} ({err.strerror or err})") from err


def _make_outdir(outdir: str) -> bool:
    """Create `outdir` if needed; return whether it was created here (and so may be removed again if left empty)."""
    if os.path.isdir(outdir):
        return False
    try:
        os.makedirs(outdir)
    except OSError as err:
        raise click.ClickException(f"--outdir: cannot create {outdir!r} ({err.strerror or err})") from err
    return True


def _remove_if_empty(path: str) -> None:
    try:
        os.rmdir(path)  # Fails (and keeps it) unless it is empty.
    except OSError:
        pass


def resolve_device(device: str | None) -> torch.device:
    """The torch device for a `--device` value (None: CUDA when available, else CPU); a one-line error if unusable."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise click.ClickException(f"--device: unknown device {device!r} ({err})") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise click.ClickException(f"--device: {device!r} requested but CUDA is not available")
    return resolved


def load_generator_option(option: str, path: str, device: torch.device, phase: str) -> torch.nn.Module:
    """`api.load_generator` for a CLI option: a bad file is a one-line error naming the option."""
    try:
        return api.load_generator(path, device=device, phase=phase)
    except (FileNotFoundError, ValueError, OSError) as err:
        raise click.ClickException(f"{option}: {err}") from err


# ----------------------------------------------------------------------------


@click.command(context_settings=dict(help_option_names=["-h", "--help"]))
@click.option("--outdir", type=str, required=True, help="Where to save the output videos and frames.")
@click.option(
    "--seeds", "--seed", "seeds", type=str, required=True, help="Random seed(s): 3, 1-4 or 1,5,7-9. One video per seed."
)
@click.option(
    "--lres",
    "lres_path",
    type=str,
    default=None,
    help="Low-res generator .pkl/.safetensors: path or URL. Default: the bundled demo models (low-res, and super-res "
    "unless --sres is given; long_video_gan/pretrained/README.md).",
)
@click.option("--sres", "sres_path", type=str, default=None, help="Super-res generator .pkl/.safetensors: path or URL.")
@click.option("--len", "num_frames", type=int, default=301, show_default=True, help="Video length in frames.")
@click.option(
    "--save-lres",
    type=bool,
    default=False,
    is_flag=False,
    flag_value=True,
    show_default=True,
    help="Also save the low-res video (with --sres). Accepts --save-lres, --save-lres=True or --save-lres True.",
)
@click.option(
    "--save-index", "-i", "save_indices", type=int, multiple=True, help="Frame index to save as PNG (repeat)."
)
@click.option("--device", type=str, default=None, help="Torch device, e.g. cpu or cuda:0. Default: CUDA if present.")
@click.option(
    "--dtype",
    type=click.Choice(["fp32", "bf16"]),
    default="fp32",
    show_default=True,
    help="Computation precision. bf16: CPU only, convolutions in bfloat16 (CPUs with avx512_bf16/amx_bf16).",
)
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=30, show_default=True, help="Video fps.")
@click.option("--bitrate", type=str, default="16M", show_default=True, help="H.264 bitrate (ignored with --quality).")
@click.option(
    "--quality",
    type=click.FloatRange(1, 10),
    default=None,
    help="Constant quality 1-10 (CRF 51·(1−q/10)) instead of bitrate.",
)
@click.option(
    "--window", type=click.IntRange(min=1), default=128, show_default=True, help="Low-res frames computed per step."
)
@click.option(
    "--segment",
    "segment_length",
    type=click.IntRange(min=1),
    default=None,
    help="Super-res frames computed per step. Default: 16 on CUDA (the original's), 4 on CPU (peak about 1.2 GB; "
    "larger steps are not faster there).",
)
def main(
    outdir,
    seeds,
    lres_path,
    sres_path,
    num_frames,
    save_lres,
    save_indices,
    device,
    dtype,
    fps,
    bitrate,
    quality,
    window,
    segment_length,
):
    """Generate videos of any length with a low-res generator and, optionally, a super-res generator.

    Frames are computed in temporal windows and written as they are made, so memory does not grow with --len;
    the result equals the original's one-shot generation for the same seed (same RNG device, float rounding aside).
    Writes seed=S_len=L_sres.mp4 (with --sres) or seed=S_len=L_lres.mp4 (without), seed=S_len=L_lres.mp4 with
    --sres and --save-lres, and seed=S_len=L_frame=IIII.png for each --save-index (negative indices count from
    the end; the file name holds the resolved index). Several seeds give one set of files per seed.

    \b
    Examples:
      python generate.py --outdir=out --seed=0 --lres=horseback_lres.pkl --sres=horseback_sres.pkl --len=301
      python generate.py --outdir=out --seed=0 --len=301  # the bundled demo models
      python generate.py --outdir=out --seeds=0-3 --lres=horseback_lres.pkl --len=1000 -i 0 -i -1
      python generate.py --outdir=out --seed=0 --lres=horseback_lres.pkl --sres=horseback_sres.pkl \\
          --save-lres=True --len=10000 --device=cpu
    """
    # Validate everything before any work.
    try:
        seeds = parse_seeds(seeds)
    except click.BadParameter as err:
        raise click.ClickException(f"--seeds: {err.message}") from err
    if num_frames <= 0:
        raise click.ClickException(f"--len must be a positive number of frames, got {num_frames}")
    try:
        api.normalize_indices(save_indices, num_frames)
    except ValueError as err:
        raise click.ClickException(f"--save-index: {err} (--len={num_frames})") from err
    try:
        api.check_bitrate(bitrate)
    except ValueError as err:
        raise click.ClickException(f"--bitrate: {err}") from err
    device = resolve_device(device)
    _check_outdir(outdir)
    if dtype == "bf16":
        # Convolutions in bfloat16, activations and everything else float32 (torch_utils/ops/fast_cpu.py).
        try:
            fast_cpu.require_bf16(device)
        except ValueError as err:
            raise click.ClickException(f"--dtype bf16: {err}") from err
    torch_dtype = dict(fp32=torch.float32, bf16=torch.bfloat16)[dtype]  # Means the same in the API (streaming.py).
    if segment_length is None:
        segment_length = 16 if device.type == "cuda" else 4

    # Strict fp32 (CPU-equal results): TF32 would change GPU results by about 1e-3 relative.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False

    if lres_path is None:  # The bundled demo models (long_video_gan/pretrained/).
        from long_video_gan import demo

        lres_path = demo.bundled_model_path("lres")
        if lres_path is None:
            raise click.ClickException("--lres: not given, and no bundled low-res model in long_video_gan/pretrained/")
        if sres_path is None:
            sres_path = demo.bundled_model_path("sres")
    print(f'Loading low-res generator from "{lres_path}"...')
    G_lres = load_generator_option("--lres", lres_path, device, "lres")
    G_sres = None
    if sres_path is not None:
        print(f'Loading super-res generator from "{sres_path}"...')
        G_sres = load_generator_option("--sres", sres_path, device, "sres")
    elif save_lres:
        print("Note: without --sres the low-res video is the output; --save-lres changes nothing.")
    try:
        api.check_generator_pair(G_lres, G_sres)
    except ValueError as err:
        raise click.ClickException(f"--sres: {err}") from err

    if device.type == "cpu" and fast_cpu.is_enabled():
        fast_cpu._init()  # Build or load the CPU kernels now, so a first-use compile message is not inside the bar.

    created = _make_outdir(outdir)
    try:
        for seed in seeds:
            paths = api.generate_video_files(
                G_lres,
                G_sres,
                seed=seed,
                num_frames=num_frames,
                outdir=outdir,
                save_lres=save_lres,
                save_indices=save_indices,
                fps=fps,
                bitrate=None if quality is not None else bitrate,
                quality=quality,
                window=window,
                segment_length=segment_length,
                dtype=torch_dtype,
                progress=True,
            )
            for path in paths:
                print(f"Saved {path}")
    finally:
        if created:
            _remove_if_empty(outdir)  # A run that failed before its first file leaves no empty directory behind.


# ----------------------------------------------------------------------------

if __name__ == "__main__":
    main()
