"""GAN losses of LongVideoGAN, those of StyleGAN2: the non-saturating logistic loss and the lazy R1 penalty (the
squared gradient of D at real clips, taken every 16 steps on a fresh real batch).

The discriminator returns one logit per clip, `[N, 1]`. The phase-specific training steps (`video_gan_lres.py`,
`video_gan_sres.py`) call these functions per accumulation chunk and do the backward passes themselves.
"""

import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------


def _check_logits(logits: torch.Tensor, name: str) -> None:
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[1] != 1:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"{name} must be discriminator logits of shape [N, 1], got {got}")


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """G step: `mean softplus(-D(G(.)))`, the non-saturating generator loss."""
    _check_logits(fake_logits, "fake_logits")
    return F.softplus(-fake_logits.float()).mean()


def discriminator_fake_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """D step, generated clips: `mean softplus(D(fake))`."""
    _check_logits(fake_logits, "fake_logits")
    return F.softplus(fake_logits.float()).mean()


def discriminator_real_loss(real_logits: torch.Tensor) -> torch.Tensor:
    """D step, real clips: `mean softplus(-D(real))`."""
    _check_logits(real_logits, "real_logits")
    return F.softplus(-real_logits.float()).mean()


# ----------------------------------------------------------------------------


def r1_penalty(real_logits: torch.Tensor, real_input: torch.Tensor) -> torch.Tensor:
    """Per-sample squared gradient norm `sum_{c,t,h,w} (d sum D(x) / dx)^2`, shape `[N]`.

    `real_input` must be the un-augmented clip with `requires_grad=True` from which `real_logits` were computed
    (through the augmentations). The graph is kept (`create_graph=True`) so the penalty can be back-propagated into
    D's parameters. A D whose output does not depend on its input gives exact zeros.
    """
    _check_logits(real_logits, "real_logits")
    if not real_input.requires_grad:
        raise ValueError("real_input must require grad (call real_input.requires_grad_(True) before running D)")
    (grad,) = torch.autograd.grad(
        outputs=real_logits.float().sum(), inputs=real_input, create_graph=True, allow_unused=True
    )
    if grad is None:  # D ignores its input: zero penalty, still connected to D's graph so backward() works.
        return real_input.new_zeros([real_input.shape[0]], dtype=torch.float32) + real_logits.float().sum() * 0
    return grad.float().square().sum(dim=list(range(1, grad.ndim)))  # [N]


def r1_loss(penalty: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-sample R1 loss `penalty * gamma/2`, shape `[N]` (gamma >= 0, the R1 weight); the training step logs it and
    back-propagates its mean. The lazy-regularisation factor (interval / grad_accum) is applied to gradients."""
    return penalty * (gamma / 2)
