"""Train the super-resolution generator of LongVideoGAN (Brooks et al., NeurIPS 2022): 36x64 -> 144x256 video."""

import click

import dnnlib
from long_video_gan import training_setup

# ----------------------------------------------------------------------------
# Presets: fill only the options the user left unset. "paper" is the original release; "tiny" trains tiny networks
# (TINY_G_KWARGS / TINY_D_KWARGS below) at the paper's resolutions, 36x64 -> 144x256, so that they chain with the tiny
# low-res networks of train_lres.py, on 2 high-res frames with 4 low-res context frames on each side, which runs on a
# 2-core CPU. "demo" (the bundled demo model, long_video_gan/pretrained/README.md) sits between them: DEMO_G_KWARGS /
# DEMO_D_KWARGS below (G 0.16 M parameters, 6 synthesis layers of up to 48 channels; D 0.38 M), same clips as tiny, so
# that a shared 2-core CPU makes visible progress in hours (measured on an AMD EPYC, 1 thread: about 4 CPU-seconds per
# step, 11-12 s of wall time with the machine 3x oversubscribed) and generates 144x256 frames at about 7 per
# CPU-second, which keeps `make demo` short.

PRESETS = {
    "paper": dict(
        batch=32,
        grad_accum=1,
        gamma=1.0,
        steps=275_000,
        tick=500,
        snap=10,
        train_snap=100,
        metric=("fvd2048_16f",),
        workers=2,
        seq_length=4,
        result_seq_length=256,
        tiny=False,
    ),
    "tiny": dict(
        batch=2,
        grad_accum=1,
        gamma=1.0,
        steps=2000,
        tick=20,
        snap=5,
        train_snap=10,
        metric=(),
        workers=1,
        seq_length=2,
        result_seq_length=8,
        tiny=True,
    ),
    "demo": dict(
        batch=2,
        grad_accum=1,
        gamma=1.0,
        steps=20_000,
        tick=10,
        snap=5,
        train_snap=5,
        metric=(),
        workers=1,
        seq_length=2,
        result_seq_length=8,
        tiny=False,
        demo=True,
    ),
}

LR_HEIGHT, LR_WIDTH = 36, 64  # Conditioning resolution (directory 0036x0064/).
HR_HEIGHT, HR_WIDTH = 144, 256  # Output resolution (directory 0144x0256/).
TEMPORAL_CONTEXT = 4  # Low-res frames on each side of every high-res frame.

# The tiny preset's networks: generator_sres / discriminator_sres TINY_KWARGS (made for 9x16 -> 36x64 tests), moved
# to 36x64 -> 144x256 with the same channel counts per sampling rate (channel bases x4, as the resolution) and G's
# synthesis cut to 2 layers, which keeps a training step about as fast as the 9x16 networks' on a CPU (measured:
# forward + backward of G and D for 2 clips, 1 thread: ~0.35 s, 4 layers ~0.7 s, 9x16 networks ~0.3 s).
TINY_G_KWARGS = dict(
    lr_height=LR_HEIGHT,
    lr_width=LR_WIDTH,
    hr_height=HR_HEIGHT,
    hr_width=HR_WIDTH,
    channel_base=512,
    num_layers=2,
    num_critical=1,
)
TINY_D_KWARGS = dict(lr_height=LR_HEIGHT, lr_width=LR_WIDTH, hr_height=HR_HEIGHT, hr_width=HR_WIDTH, channels_base=512)

# The demo preset's networks (on top of the paper's defaults): a 64-wide latent, 6 synthesis layers of at most 48
# channels (48, 48, 48, 45, 16, 16), and a discriminator of at most 64 channels (8 at 144x256).
DEMO_G_KWARGS = dict(latent_z_dim=64, latent_w_dim=64, channel_base=4096, channel_max=48, num_layers=6, num_critical=2)
DEMO_D_KWARGS = dict(channels_base=2048, channels_max=64)

# ----------------------------------------------------------------------------


def build_config(opts: dnnlib.EasyDict, device, world_size: int) -> dnnlib.EasyDict:
    """The training config (saved as config.json) from the resolved options."""
    from long_video_gan import augment, discriminator_sres, generator_sres

    seq_length = opts.seq_length
    G_kwargs = dict(class_name="long_video_gan.generator_sres.VideoGenerator")
    D_kwargs = dict(class_name="long_video_gan.discriminator_sres.VideoDiscriminator")
    sizes = dict(lr_height=LR_HEIGHT, lr_width=LR_WIDTH, hr_height=HR_HEIGHT, hr_width=HR_WIDTH)
    context = TEMPORAL_CONTEXT
    if opts.tiny:
        G_kwargs.update(generator_sres.TINY_KWARGS, **TINY_G_KWARGS)
        D_kwargs.update(discriminator_sres.TINY_KWARGS, **TINY_D_KWARGS)
        context = G_kwargs["temporal_context"]
    elif opts.get("demo"):
        G_kwargs.update(DEMO_G_KWARGS)
        D_kwargs.update(DEMO_D_KWARGS)
    G_kwargs.update(sizes, temporal_context=context)
    D_kwargs.update(sizes, seq_length=seq_length)
    dataset_kwargs = dict(
        class_name="long_video_gan.dataset.VideoDatasetTwoRes",
        dataset_dir=opts.dataset,
        seq_length=seq_length + 2 * context,
        x_flip=True,
        hr_frame_slice=[context, context + seq_length],  # Only the hr frames D sees, not the context.
        **sizes,
    )
    ada_interval = 4
    gan_kwargs = dict(
        class_name="long_video_gan.video_gan_sres.SuperResVideoGAN",
        G_kwargs=G_kwargs,
        D_kwargs=D_kwargs,
        gamma=opts.gamma,
        r1_interval=16,
        G_lrate=0.003,
        D_lrate=0.003,
        G_betas=[0.0, 0.99],
        D_betas=[0.0, 0.99],
        lrate_warmup_steps=0,
        G_ema_beta=0.99985,
        G_ema_warmup_steps=25000,
        magnitude_ema_beta=0.999,
        augment_kwargs=dict(class_name="long_video_gan.augment.AugmentPipe", **augment.ADA_KWARGS),
        in_augment_kwargs=dict(class_name="long_video_gan.augment.AugmentPipe", **augment.IN_AUGMENT_KWARGS),
        in_augment_p=augment.IN_AUGMENT_P,
        ada_kwargs=dict(
            class_name="long_video_gan.augment.AdaController",
            target=0.6,
            interval=ada_interval,
            speed=0.000125 * ada_interval,
            p_max=0.5,
        ),
        lr_cond_prob=0.1,
    )
    return training_setup.run_config(
        "sres",
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


@click.command()
@click.option(
    "--outdir", help="Parent directory of the run directories.", metavar="DIR", default="runs/sres", show_default=True
)
@click.option("--dataset", help="Dataset root (holds 0036x0064/ and 0144x0256/).", metavar="DIR", required=True)
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
@click.option("--device", help="Device.  [default: cuda if available, else cpu]", metavar="DEV")
@click.option("--workers", help="Data loader processes per rank." + _paper("workers"), type=click.IntRange(min=0))
@training_setup.max_minutes_option
@click.option("--dry-run", help="Print the resolved config and exit.", is_flag=True)
def main(**opts):
    """Train the super-resolution LongVideoGAN generator on real low-res / high-res clip pairs.

    \b
    Examples:
    # Paper settings on 8 GPUs (32 clips per step), FVD of 16-frame clips at every snapshot.
    python -m torch.distributed.run --nproc_per_node=8 train_sres.py --dataset=datasets/horseback
    \b
    # Tiny networks on a CPU, no metrics; rerunning the same command resumes it.
    python train_sres.py --dataset=datasets/tiny --preset=tiny --device=cpu
    """
    opts = training_setup.apply_preset(opts, PRESETS)
    device, world_size, rank = training_setup.resolve_launch(opts.device)
    training_setup.check_options(opts, world_size)
    training_setup.check_outdir(opts.outdir)
    c = build_config(opts, device, world_size)
    training_setup.setup_and_train(
        c, outdir=opts.outdir, resume=opts.resume, wandb=opts.wandb, dry_run=opts.dry_run, rank=rank
    )


if __name__ == "__main__":
    main()
