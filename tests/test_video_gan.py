"""Tests for long_video_gan/video_gan.py and video_gan_lres.py: the order and settings of one training step, checked
with small stand-in networks (magnitude-EMA betas, R1 cadence, batches consumed, optimiser settings, G EMA)."""

import pytest
import torch

from long_video_gan import training_utils as tu
from long_video_gan.video_gan import ChunkedBufferUpdate, split_batch
from long_video_gan.video_gan_lres import LowResVideoGAN
from torch_utils import misc

# ----------------------------------------------------------------------------


class StandInG(torch.nn.Module):
    """Renders `bias + noise * scale` clips of 8x16 and records the magnitude-EMA beta of every call."""

    calls = []
    stats = []  # The statistic of every updating call.

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones([]))
        self.bias = torch.nn.Parameter(torch.zeros([3, 1, 1, 1]))
        self.register_buffer("magnitude_ema", torch.ones([]))
        self.total_temporal_scale = 4

    def sample_temporal_emb(self, batch_size, seq_length, generator=None):
        return torch.randn([batch_size, 3, seq_length, 8, 16], generator=generator)

    def forward(self, batch_size, seq_length, magnitude_ema_beta=1.0, generator_emb=None, emb=None):
        StandInG.calls.append((batch_size, seq_length, magnitude_ema_beta))
        noise = self.sample_temporal_emb(batch_size, seq_length, generator_emb) if emb is None else emb
        if magnitude_ema_beta != 1:
            with torch.no_grad():
                StandInG.stats.append(noise.square().mean())
                self.magnitude_ema.lerp_(StandInG.stats[-1], 1 - magnitude_ema_beta)
        return noise * self.scale + self.bias


class StandInD(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.full([3, 1, 1, 1], 0.01))

    def forward(self, video):
        return (video * self.weight).mean(dim=[1, 2, 3, 4])[:, None]


def _gan(grad_accum=2, batch_gpu=4, r1_interval=16):
    torch.manual_seed(0)
    return LowResVideoGAN(
        r1_interval=r1_interval,
        G_kwargs=dict(class_name=f"{__name__}.StandInG"),
        D_kwargs=dict(class_name=f"{__name__}.StandInD"),
        device=torch.device("cpu"),
        batch_gpu=batch_gpu,
        grad_accum=grad_accum,
        seq_length=8,
    )


class Batches:
    def __init__(self, batch_gpu):
        self.count = 0
        self.batch_gpu = batch_gpu

    def __call__(self):
        self.count += 1
        return {"video": torch.rand([self.batch_gpu, 3, 8, 8, 16]) * 2 - 1}


# ----------------------------------------------------------------------------


def test_optimiser_settings_include_lazy_r1_correction():
    gan = _gan()
    (g,) = gan.G_opt.param_groups[:1]
    (d,) = gan.D_opt.param_groups
    assert g["lr"] == 0.003 and g["betas"] == (0.0, 0.99)
    assert d["lr"] == pytest.approx(0.002 * 16 / 17) and d["betas"][1] == pytest.approx(0.99 ** (16 / 17))
    assert d["betas"][1] == pytest.approx(0.9905855, abs=1e-7)


def test_step_order_betas_and_batches():
    gan = _gan(grad_accum=2, batch_gpu=4)
    batches = Batches(4)
    StandInG.calls.clear()
    gan.train_step(0, batches)
    # G step: 2 chunks of 2 clips, 8 + 4 frames rendered, magnitude EMAs read-only; D step: 2 chunks updating them with
    # 0.999, each from the step's starting value, the buffer ending at the mean of the two results.
    assert StandInG.calls == [(2, 12, 1.0), (2, 12, 1.0), (2, 12, 0.999), (2, 12, 0.999)]
    assert batches.count == 2  # D batch and the R1 batch of step 0.


def test_running_averages_advance_once_per_step_with_the_mean_statistic():
    # The D step's two chunks of fakes: the stand-in's EMA ends at lerp(mean of the chunks' statistics, start, 0.999),
    # one update per step as the original's single pass over the whole batch does.
    gan = _gan(grad_accum=2, batch_gpu=4)
    start = gan.G.magnitude_ema.clone()
    StandInG.stats.clear()
    gan.train_step(1, Batches(4))  # No R1 at step 1.
    assert len(StandInG.stats) == 2
    expected = start.lerp(torch.stack(StandInG.stats).mean(), 1 - 0.999)
    torch.testing.assert_close(gan.G.magnitude_ema, expected, rtol=1e-7, atol=0)


def test_chunked_buffer_update_leaves_untouched_buffers_bitwise():
    module = torch.nn.Module()
    module.register_buffer("ema", torch.tensor(2.0))
    module.register_buffer("fixed", torch.tensor([0.1, 0.7]))
    module.register_buffer("count", torch.tensor(3))
    update = ChunkedBufferUpdate(module)
    for value in (4.0, 8.0, 2.0):  # The third chunk leaves the buffer as it started: it still counts.
        module.ema.fill_(value)
        update.chunk_done()
        assert float(module.ema) == 2.0
    update.finish()
    assert float(module.ema) == float(torch.tensor((4.0 + 8.0 + 2.0) / 3))  # The mean, rounded once to float32.
    assert torch.equal(module.fixed, torch.tensor([0.1, 0.7])) and int(module.count) == 3


def test_r1_every_interval_steps():
    gan = _gan(grad_accum=1, batch_gpu=2, r1_interval=4)
    assert gan.D_opt.param_groups[0]["lr"] == pytest.approx(0.002 * 4 / 5)
    batches = Batches(2)
    for step in range(9):
        batches.count = 0
        gan.train_step(step, batches)
        assert batches.count == (2 if step % 4 == 0 else 1), step


def test_g_ema_follows_schedule_and_leaves_buffers_blended():
    gan = _gan(grad_accum=1, batch_gpu=2)
    ema_before = gan.G_ema.scale.detach().clone()
    gan.train_step(3, Batches(2))
    beta = tu.ema_beta(3)
    expected = ema_before + (1 - beta) * (gan.G.scale.detach() - ema_before)
    assert torch.allclose(gan.G_ema.scale, expected)
    # The EMA of the magnitude buffer is the blend too (buffers are averaged, not copied).
    assert not torch.equal(gan.G_ema.magnitude_ema, gan.G.magnitude_ema)


def test_only_trained_network_gets_gradients():
    gan = _gan(grad_accum=1, batch_gpu=2)
    gan.train_step(1, Batches(2))
    assert all(p.grad is None for p in gan.G.parameters()) and all(p.grad is None for p in gan.D.parameters())
    assert not any(p.requires_grad for p in list(gan.G.parameters()) + list(gan.D.parameters()))


def test_split_batch_checks_divisibility():
    chunks = split_batch({"video": torch.zeros(4, 1), "spacing": [1, 1, 1, 1]}, 2)
    assert [c["video"].shape[0] for c in chunks] == [2, 2]
    with pytest.raises(ValueError, match=r"batch\['video'\] has 3 items"):
        split_batch({"video": torch.zeros(3, 1)}, 2)


def test_checkpoint_state_round_trip():
    a, b = _gan(), _gan()
    a.train_step(1, Batches(4))
    state = a.checkpoint_state()
    assert state["G"].scale.device.type == "cpu" and not state["G"].training
    b.load_checkpoint_state(state)
    assert misc.module_digest(a.G, a.D, a.G_ema) == misc.module_digest(b.G, b.D, b.G_ema)
    assert b.G.training and b.D.training  # Back in train mode after loading.
