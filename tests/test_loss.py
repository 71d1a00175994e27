"""Tests for long_video_gan/loss.py: logistic GAN losses and the R1 penalty on small stand-in discriminators."""

import pytest
import torch

from long_video_gan import diff_augment as da
from long_video_gan import loss


class LinearD(torch.nn.Module):
    """logit_n = sum(w * x_n) + b: its input gradient is w for every sample."""

    def __init__(self, shape, seed=0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.weight = torch.nn.Parameter(torch.randn(shape, generator=gen))
        self.bias = torch.nn.Parameter(torch.tensor([0.3]))

    def forward(self, x):
        return (x * self.weight).sum(dim=list(range(1, x.ndim)))[:, None] + self.bias


class ConstantD(torch.nn.Module):
    """Ignores its input."""

    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.tensor([0.7]))

    def forward(self, x):
        return self.bias.expand(x.shape[0], 1)


def _video(n=4, seed=1):
    return torch.randn([n, 3, 4, 6, 8], generator=torch.Generator().manual_seed(seed))


def test_loss_values_on_linear_d():
    d = LinearD([3, 4, 6, 8])
    real, fake = _video(seed=1), _video(seed=2)
    lr, lf = d(real), d(fake)
    softplus = lambda v: torch.log1p(torch.exp(v))  # noqa: E731
    assert torch.allclose(loss.generator_loss(lf), softplus(-lf).mean())
    assert torch.allclose(loss.discriminator_fake_loss(lf), softplus(lf).mean())
    assert torch.allclose(loss.discriminator_real_loss(lr), softplus(-lr).mean())


def test_loss_known_values():
    logits = torch.tensor([[0.0], [2.0]])
    assert loss.generator_loss(logits).item() == pytest.approx((0.6931471805599453 + 0.12692801104297263) / 2)
    assert loss.discriminator_fake_loss(logits).item() == pytest.approx((0.6931471805599453 + 2.1269280110429727) / 2)


def test_loss_rejects_bad_logits_shape():
    with pytest.raises(ValueError, match="fake_logits"):
        loss.generator_loss(torch.zeros(4))
    with pytest.raises(ValueError, match="real_logits"):
        loss.discriminator_real_loss(torch.zeros(4, 2))


def test_r1_zero_for_d_that_ignores_input():
    d = ConstantD()
    x = _video().requires_grad_(True)
    penalty = loss.r1_penalty(d(x), x)
    assert torch.equal(penalty, torch.zeros(4))
    loss.r1_loss(penalty, gamma=10.0).mean().backward()  # Still differentiable; zero gradient.
    assert d.bias.grad is not None and d.bias.grad.item() == 0


def test_r1_analytic_for_linear_d():
    d = LinearD([3, 4, 6, 8])
    x = _video().requires_grad_(True)
    penalty = loss.r1_penalty(d(x), x)
    expected = d.weight.detach().square().sum()
    assert torch.allclose(penalty, expected.expand(4), rtol=1e-6)
    gamma = 2.5
    r1 = loss.r1_loss(penalty, gamma)  # Per sample.
    assert r1.shape == (4,) and torch.allclose(r1, (expected * gamma / 2).expand(4), rtol=1e-6)
    r1.mean().backward()  # d/dw of gamma/2 * sum(w^2) = gamma * w.
    assert torch.allclose(d.weight.grad, gamma * d.weight.detach(), rtol=1e-5)


def test_r1_through_augmentation_uses_unaugmented_input():
    # Brightness adds a constant per clip, so the input gradient of D(brightness(x)) is still w.
    d = LinearD([3, 4, 6, 8])
    x = _video().requires_grad_(True)
    logits = d(da.rand_brightness(x, generator=torch.Generator().manual_seed(3)))
    penalty = loss.r1_penalty(logits, x)
    assert torch.allclose(penalty, d.weight.detach().square().sum().expand(4), rtol=1e-6)
    # Cutout zeroes a box, so the gradient there vanishes and the penalty shrinks.
    logits = d(da.rand_cutout(x, generator=torch.Generator().manual_seed(3)))
    assert (loss.r1_penalty(logits, x) < d.weight.detach().square().sum()).all()


def test_r1_requires_grad_input_named():
    d = LinearD([3, 4, 6, 8])
    x = _video()
    with pytest.raises(ValueError, match="real_input"):
        loss.r1_penalty(d(x), x)
