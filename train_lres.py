"""Train the low-resolution generator of LongVideoGAN (Brooks et al., NeurIPS 2022) on 36x64 video clips."""

import click

import dnnlib
from long_video_gan import training_setup

# ----------------------------------------------------------------------------
# Presets: fill only the options the user left unset. "paper" is the original release; "tiny" trains tiny networks on
# 16-frame clips, which runs on a 2-core CPU. "demo" (the bundled demo model, long_video_gan/pretrained/README.md) sits
# between them: about 10x tiny's parameters (G 0.34 M, D 0.17 M; paper: tens of millions) at about 1.5x tiny's cost per
# step, on 16-frame clips of 4 videos, so that a shared 2-core CPU makes visible progress in hours (measured on an AMD
# EPYC, 1 thread: about 4 CPU-seconds per step; 9-10 s per step of wall time with the machine 3x oversubscribed).
# The demo preset's discriminator sees translated clips only (--diffaug translation): with the original's
# "color,translation,cutout" a D of this size stayed near chance for its first 1300 steps (D loss ~1.3, chance 1.39;
# trained alone against a frozen G for 80 steps: 1.2), while without colour and cutout it separated real from fake
# within 20 steps (0.9), so G got little signal and drifted between flat colour fields.

PRESETS = {
    "paper": dict(
        batch=64,
        grad_accum=2,
        gamma=1.0,
        steps=100_000,
        tick=500,
        snap=10,
        train_snap=100,
        metric=(),
        workers=2,
        seq_length=128,
        result_seq_length=256,
        tiny=False,
        diffaug="color,translation,cutout",
        mbstd=0,
    ),
    "tiny": dict(
        batch=4,
        grad_accum=2,
        gamma=1.0,
        steps=2000,
        tick=20,
        snap=5,
        train_snap=10,
        metric=(),
        workers=1,
        seq_length=16,
        result_seq_length=32,
        tiny=True,
        diffaug="color,translation,cutout",
        mbstd=0,
    ),
    "demo": dict(
        batch=4,
        grad_accum=1,
        gamma=1.0,
        steps=20_000,
        tick=10,
        snap=5,
        train_snap=5,
        metric=(),
        workers=1,
        seq_length=16,
        result_seq_length=128,
        tiny=False,
        demo=True,
        diffaug="translation",
        mbstd=0,
    ),
}

HEIGHT, WIDTH = 36, 64  # The low-res dataset resolution (directory 0036x0064/).

# The demo preset's networks (on top of the paper's defaults): a 64-channel embedding (16 blur widths of 4 noise
# channels) and latent, temporal blocks of 32 then 16 channels, spatial blocks of 16 then 8, and a discriminator of 8
# to 32 channels.
DEMO_G_KWARGS = dict(
    temporal_emb_dim=64,
    latent_w_dim=64,
    temporal_channels=(32, 32, 32, 32, 32, 16, 16),
    spatial_channels=(16, 16, 8, 8),
    embedding_kwargs=dict(blur_widths=16),
)
DEMO_D_KWARGS = dict(block_channels=(8, 8, 16, 32, 32), epilogue_kwargs=dict(channels=32))

# ----------------------------------------------------------------------------


def build_config(opts: dnnlib.EasyDict, device, world_size: int) -> dnnlib.EasyDict:
    """The training config (saved as config.json) from the resolved options."""
    from long_video_gan import discriminator_lres, generator_lres

    seq_length = opts.seq_length
    G_kwargs = dict(class_name="long_video_gan.generator_lres.VideoGenerator", out_height=HEIGHT, out_width=WIDTH)
    D_kwargs = dict(
        class_name="long_video_gan.discriminator_lres.VideoDiscriminator",
        seq_length=seq_length,
        max_edge=max(HEIGHT, WIDTH),
    )
    if opts.tiny:
        G_kwargs.update(generator_lres.TINY_KWARGS)
        D_kwargs.update(discriminator_lres.TINY_KWARGS)
    elif opts.get("demo"):
        G_kwargs.update(DEMO_G_KWARGS)
        D_kwargs.update(DEMO_D_KWARGS)
    if opts.mbstd > 0:
        D_kwargs["epilogue_kwargs"] = dict(D_kwargs.get("epilogue_kwargs", {}), mbstd_num_channels=opts.mbstd)
    dataset_kwargs = dict(
        class_name="long_video_gan.dataset.VideoDataset",
        dataset_dir=opts.dataset,
        seq_length=seq_length,
        height=HEIGHT,
        width=WIDTH,
        x_flip=True,
    )
    gan_kwargs = dict(
        class_name="long_video_gan.video_gan_lres.LowResVideoGAN",
        G_kwargs=G_kwargs,
        D_kwargs=D_kwargs,
        seq_length=seq_length,
        gamma=opts.gamma,
        r1_interval=16,
        G_lrate=0.003,
        D_lrate=0.002,
        G_betas=[0.0, 0.99],
        D_betas=[0.0, 0.99],
        lrate_warmup_steps=0,
        G_ema_beta=0.99985,
        G_ema_warmup_steps=25000,
        magnitude_ema_beta=0.999,
        diffaug_policy="" if opts.diffaug == "none" else opts.diffaug,
        temp_scale_augment=1.0,
        random_temp_translate=True,
    )
    return training_setup.run_config(
        "lres",
        opts,
        device,
        world_size,
        dataset_kwargs=dataset_kwargs,
        gan_kwargs=gan_kwargs,
    )


# ----------------------------------------------------------------------------
# The command line. Options without a default are None when unset (an empty tuple for --metric) and take the value of
# the chosen preset; the `[paper: ...]` notes are read from the "paper" preset.

POSITIVE = click.IntRange(min=1)


def _paper(key: str) -> str:
    return training_setup.paper_hint(PRESETS["paper"][key])


def _check_diffaug(ctx, param, value):
    """--diffaug: 'none' or comma-separated DiffAugment op names, each known and none repeated."""
    if value is None or value == "none":
        return value
    from long_video_gan.diff_augment import AUGMENT_FNS

    names = [name.strip() for name in value.split(",")]
    unknown = [name for name in names if name not in AUGMENT_FNS]
    if unknown or len(set(names)) != len(names):
        what = f"unknown op {unknown[0]!r}" if unknown else "an op repeated"
        raise click.BadParameter(f"{what} in {value!r}; expected 'none' or ops of {', '.join(AUGMENT_FNS)}")
    return ",".join(names)


@click.command()
@click.option(
    "--outdir", help="Parent directory of the run directories.", metavar="DIR", default="runs/lres", show_default=True
)
@click.option("--dataset", help="Dataset root (holds 0036x0064/).", metavar="DIR", required=True)
@click.option("--batch", help="Total batch over all ranks and accumulation rounds." + _paper("batch"), type=POSITIVE)
@click.option("--grad-accum", help="Gradient accumulation rounds." + _paper("grad_accum"), type=POSITIVE)
@click.option("--gamma", help="R1 weight." + _paper("gamma"), type=click.FloatRange(min=0))
@click.option(
    "--metric", "-m", help="Metric at each snapshot (repeatable; 'none' for none)." + _paper("metric"), multiple=True
)
@click.option("--seed", help="Random seed.", type=int, default=0, show_default=True)
@click.option("--steps", help="Training steps." + _paper("steps"), type=click.IntRange(min=0))
@click.option(
    "--resume",
    help="Train pickle to resume from, 'auto' (continue the newest matching run) or 'none'.",
    default="auto",
    show_default=True,
)
@click.option(
    "--preset",
    help="Settings for the options left unset.",
    type=click.Choice(list(PRESETS)),
    default="paper",
    show_default=True,
)
@click.option("--tick", help="Steps per tick (status line)." + _paper("tick"), type=POSITIVE)
@click.option("--snap", help="Ticks between G-EMA snapshots, samples and metrics." + _paper("snap"), type=POSITIVE)
@click.option(
    "--train-snap", help="Ticks between train pickles (multiple of --snap)." + _paper("train_snap"), type=POSITIVE
)
@click.option(
    "--wandb",
    help="W&B logging.  [default: online if logged in on a terminal, else off]",
    type=click.Choice(["online", "offline", "off"]),
)
@click.option(
    "--diffaug",
    help="DiffAugment ops applied to D's input, comma separated (color, translation, cutout; 'none' for none)."
    + _paper("diffaug"),
    callback=_check_diffaug,
)
@click.option(
    "--mbstd",
    help="Minibatch-stddev channels in D's epilogue, groups of 4 clips (0 = none, as in the original)."
    + _paper("mbstd"),
    type=click.IntRange(min=0),
)
@click.option("--device", help="Device.  [default: cuda if available, else cpu]", metavar="DEV")
@click.option("--workers", help="Data loader processes per rank." + _paper("workers"), type=click.IntRange(min=0))
@training_setup.max_minutes_option
@click.option("--dry-run", help="Print the resolved config and exit.", is_flag=True)
def main(**opts):
    """Train the low-resolution LongVideoGAN generator.

    \b
    Examples:
    # Paper settings on 8 GPUs (64 clips per step, 2 accumulation rounds).
    python -m torch.distributed.run --nproc_per_node=8 train_lres.py --dataset=datasets/horseback -m fvd2048_128f
    \b
    # Tiny networks on a CPU; rerunning the same command resumes it.
    python train_lres.py --dataset=datasets/tiny --preset=tiny --device=cpu
    \b
    # Print the resolved configuration only.
    python train_lres.py --dataset=datasets/horseback --dry-run
    """
    opts = training_setup.apply_preset(opts, PRESETS)
    device, world_size, rank = training_setup.resolve_launch(opts.device)
    training_setup.check_options(opts, world_size)
    chunk = opts.batch // (world_size * opts.grad_accum)  # Clips per D call.
    if opts.mbstd > 0 and chunk % min(4, chunk) != 0:
        raise training_setup.ConfigError(
            f"--mbstd needs the clips per D call (--batch / (world size x --grad-accum) = {chunk}) to be a multiple "
            f"of its group size 4, or below 4"
        )
    training_setup.check_outdir(opts.outdir)
    c = build_config(opts, device, world_size)
    training_setup.setup_and_train(
        c, outdir=opts.outdir, resume=opts.resume, wandb=opts.wandb, dry_run=opts.dry_run, rank=rank
    )


if __name__ == "__main__":
    main()
