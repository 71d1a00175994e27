"""One training step of each phase with the tiny networks: G's running averages under gradient accumulation, the
order of random draws, and equality with stored numbers (issue 20)."""

import pytest
import torch

from long_video_gan import augment, discriminator_sres, generator_sres
from long_video_gan.video_gan_sres import SuperResVideoGAN

pytestmark = pytest.mark.usefixtures("single_thread")

# ----------------------------------------------------------------------------------------------------------------------


def sres_gan(grad_accum: int = 1, batch_gpu: int = 2, ada: bool = True, in_augment: bool = True) -> SuperResVideoGAN:
    torch.manual_seed(0)
    return SuperResVideoGAN(
        G_kwargs=dict(class_name="long_video_gan.generator_sres.VideoGenerator", **generator_sres.TINY_KWARGS),
        D_kwargs=dict(
            class_name="long_video_gan.discriminator_sres.VideoDiscriminator", **discriminator_sres.TINY_KWARGS
        ),
        device=torch.device("cpu"),
        batch_gpu=batch_gpu,
        grad_accum=grad_accum,
        D_lrate=0.003,
        augment_kwargs=dict(class_name="long_video_gan.augment.AugmentPipe", **augment.ADA_KWARGS) if ada else None,
        in_augment_kwargs=(
            dict(class_name="long_video_gan.augment.AugmentPipe", **augment.IN_AUGMENT_KWARGS) if in_augment else None
        ),
    )


def sres_batch(batch_size: int, seed: int, same_clips: bool = False) -> dict:
    g = torch.Generator().manual_seed(seed)
    k = generator_sres.TINY_KWARGS
    n = 1 if same_clips else batch_size
    lr = torch.rand([n, 3, 4 + 2 * k["temporal_context"], k["lr_height"], k["lr_width"]], generator=g) * 2 - 1
    hr = torch.rand([n, 3, 4, k["hr_height"], k["hr_width"]], generator=g) * 2 - 1
    return {"lr_video": lr.expand(batch_size, -1, -1, -1, -1), "hr_video": hr.expand(batch_size, -1, -1, -1, -1)}


def running_averages(G: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: b.detach().clone() for n, b in G.named_buffers() if n.endswith(("magnitude_ema", "w_avg"))}


# ----------------------------------------------------------------------------------------------------------------------


def test_sres_running_averages_advance_once_per_step_whatever_the_chunking(monkeypatch):
    # Two identical clips with one fixed z: the fakes of a 2-chunk step are those of a 1-chunk step, so G's magnitude
    # EMAs and w_avg must end the step equal (they moved twice as far with 2 chunks before issue 20).
    results = {}
    for accum in (1, 2):
        gan = sres_gan(grad_accum=accum, ada=False, in_augment=False)
        z = torch.randn([1, gan.G.latent_z_dim], generator=torch.Generator().manual_seed(5))
        monkeypatch.setattr(gan.G, "sample_latent_z", lambda batch_size, generator_z=None: z.expand(batch_size, -1))
        start = running_averages(gan.G)
        gan.train_step(1, lambda: sres_batch(2, seed=1, same_clips=True))
        results[accum] = running_averages(gan.G)
    assert len(results[1]) == 6  # One magnitude EMA per synthesis layer (4 and ToRGB) and the mapping's w_avg.
    for name, one_chunk in results[1].items():
        assert not torch.equal(one_chunk, start[name]), name
        torch.testing.assert_close(results[2][name], one_chunk, rtol=1e-5, atol=1e-7, msg=name)
