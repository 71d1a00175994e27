"""The training step shared by both LongVideoGAN phases: G step, D step, lazy R1, G EMA.

`VideoGAN` owns G, D, G_ema and their Adam optimisers and runs one step; the phases fill in how fakes are made and
how D is run (`video_gan_lres.LowResVideoGAN`, `video_gan_sres.SuperResVideoGAN`). One step:

1. learning rates for this step (warm-up, none by default);
2. G step: per accumulation chunk, fakes with gradients, `softplus(-D(fake))`, backward; sync with gain 1/accum;
3. D step on one real batch: the draws the original makes for the whole batch before its one fake pass (phase
   hook `D_batch`), then per chunk, fakes without gradients (G's running averages updated), `softplus(D(fake))` and
   `softplus(-D(real))` backward separately; sync with gain 1/accum;
4. every `r1_interval` steps (step 0 included), R1 on a fresh real batch, gradients scaled by `r1_interval/accum`;
5. phase hook (sres: the ADA probability update);
6. G EMA update.

Departure from the original: the D step generates its fakes per accumulation chunk instead of for the whole per-rank
batch at once, so memory does not grow with `--grad-accum`. G's running averages (the magnitude EMAs of both phases,
the super-res mapping's `w_avg`) still advance once per step: each chunk's pass updates them from the step's starting
value, as if it were the whole batch, and after the last chunk each buffer is set to the mean of the chunks' results.
The updates are lerps, linear in the batch statistic, and the chunks are equal, so the buffers take the original's one
update per step with the mean of the chunks' statistics as the batch statistic, whatever the chunking. What differs
is only what a chunk's own pass sees: its gains come from its own statistics instead of the whole batch's, so the
fakes (and the statistics of later layers, which depend on those gains) differ slightly; with accum = 1 nothing
differs. The random draws keep the original's order at any accumulation: what the original draws for the whole batch
before its one fake pass (super-res: both conditioning augmentations and every z; low-res: every clip's embedding
noise and crop offset) is drawn for the whole batch first (`D_batch`), and the per-chunk D passes follow.
"""

import copy

import torch

import dnnlib
from long_video_gan import loss as losses
from long_video_gan import training_utils as tu
from torch_utils import distributed, misc, training_stats

# ----------------------------------------------------------------------------


def split_batch(batch: dict, num_chunks: int) -> list[dict]:
    """Splits every tensor of a batch dict into `num_chunks` equal parts along dimension 0."""
    chunks = [dict() for _ in range(num_chunks)]
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            if value.shape[0] % num_chunks != 0:
                raise ValueError(f"batch['{key}'] has {value.shape[0]} items, not a multiple of {num_chunks} chunks")
            for chunk, part in zip(chunks, value.chunk(num_chunks)):
                chunk[key] = part
    return chunks


class ChunkedBufferUpdate:
    """Makes a module's running-average buffers advance once per step when its updating pass runs once per chunk.

    Call `chunk_done()` after each chunk's updating pass and `finish()` after the last. Every floating-point buffer
    that a pass changes is put back to its value at the start of the step after each chunk, and finally set to the
    mean over the chunks of the values the passes left. For buffers updated by one lerp per pass, `b <- lerp(m, b,
    beta)` with `m` a mean over the pass's batch, this equals one update with the mean over all equal chunks.
    """

    def __init__(self, module: torch.nn.Module):
        self.module = module
        self.start = {name: buf.detach().clone() for name, buf in module.named_buffers() if buf.is_floating_point()}
        self.values = {}  # Name -> the buffer's value after each chunk, for the buffers a pass changed.
        self.num_chunks = 0

    @torch.no_grad()
    def chunk_done(self) -> None:
        for name, buf in self.module.named_buffers():
            start = self.start.get(name)
            if start is None or (name not in self.values and torch.equal(buf, start)):
                continue
            self.values.setdefault(name, [start] * self.num_chunks).append(buf.detach().clone())
            buf.copy_(start)
        self.num_chunks += 1

    @torch.no_grad()
    def finish(self) -> None:
        buffers = dict(self.module.named_buffers())
        for name, values in self.values.items():
            buffers[name].copy_(torch.stack(values).to(torch.float64).mean(dim=0))
        self.values = {}


class VideoGAN:
    """Networks, optimisers and one training step; subclasses define the phase-specific pieces."""

    phase = None  # "lres" or "sres"; recorded in train pickles.
    batches_per_step = None  # Data batches a step consumes, excluding R1 (which takes one more every r1_interval).

    def __init__(
        self,
        G_kwargs: dict,  # Generator constructor arguments, with class_name.
        D_kwargs: dict,  # Discriminator constructor arguments, with class_name.
        device: torch.device,  # Device of this rank.
        batch_gpu: int,  # Clips per rank per step (all accumulation chunks together).
        grad_accum: int = 1,  # Accumulation chunks per step, for G and D alike.
        gamma: float = 1.0,  # R1 weight.
        r1_interval: int = 16,  # Steps between R1 steps (lazy regularisation); 0 = no R1.
        G_lrate: float = 0.003,  # G learning rate.
        D_lrate: float = 0.002,  # D learning rate before the lazy-regularisation correction.
        G_betas: tuple = (0.0, 0.99),  # G Adam betas.
        D_betas: tuple = (0.0, 0.99),  # D Adam betas before the correction.
        lrate_warmup_steps: int = 0,  # Linear warm-up of both learning rates: lr * min((step+1)/(warmup+1), 1).
        G_ema_beta: float = 0.99985,  # Steady-state G EMA decay per step.
        G_ema_warmup_steps: int = 25000,  # G EMA warm-up: beta ramps up as beta^((W+1)/(step+1)) (tu.ema_beta).
        magnitude_ema_beta: float = 0.999,  # Magnitude-EMA decay per step, used in the D-step generator pass only.
    ):
        if batch_gpu % grad_accum != 0:
            raise ValueError(f"batch_gpu ({batch_gpu}) must be a multiple of grad_accum ({grad_accum})")
        self.device = device
        self.batch_gpu = batch_gpu
        self.grad_accum = grad_accum
        self.chunk_size = batch_gpu // grad_accum
        self.gamma = gamma
        self.r1_interval = r1_interval
        self.lrate_warmup_steps = lrate_warmup_steps
        self.G_ema_beta = G_ema_beta
        self.G_ema_warmup_steps = G_ema_warmup_steps
        self.magnitude_ema_beta = magnitude_ema_beta

        # Networks: built on the CPU from the global RNG (the caller seeds it), then moved.
        self.G = dnnlib.util.construct_class_by_name(**G_kwargs).train().requires_grad_(False).to(device)
        self.D = dnnlib.util.construct_class_by_name(**D_kwargs).train().requires_grad_(False).to(device)
        self.G_ema = copy.deepcopy(self.G).eval()

        # Adam; D's lr and beta2 carry the usual lazy-regularisation correction r / (r + 1).
        ratio = r1_interval / (r1_interval + 1) if r1_interval > 0 else 1.0
        self.G_lrate = G_lrate
        self.D_lrate = D_lrate * ratio
        D_betas = tuple(b**ratio for b in D_betas)
        self.G_opt = torch.optim.Adam(self.G.parameters(), lr=self.G_lrate, betas=tuple(G_betas))
        self.D_opt = torch.optim.Adam(self.D.parameters(), lr=self.D_lrate, betas=D_betas)

    # ------------------------------------------------------------------------
    # Phase hooks.

    def extra_modules(self) -> dict[str, torch.nn.Module]:
        """Further modules whose state is trained or adapted (sres: the augmentation pipes)."""
        return {}

    def G_batch(self, next_batch) -> dict:
        """Data for the G step (lres: none)."""
        return {}

    def G_chunk_logits(self, chunk: dict) -> torch.Tensor:
        """D logits of fakes made with gradients through G."""
        raise NotImplementedError

    def D_batch(self, batch: dict) -> dict:
        """The D step's per-rank batch with the draws the original makes for the whole batch before any fake is
        generated (its fakes come from one pass), added as tensors split into the chunks with the data."""
        return batch

    def D_fake_logits(self, chunk: dict, magnitude_ema_beta: float) -> torch.Tensor:
        """D logits of fakes made without gradients (D step), updating G's magnitude EMAs with the given beta."""
        raise NotImplementedError

    def D_real_logits(self, chunk: dict) -> torch.Tensor:
        """D logits of the chunk's real clips (D step)."""
        raise NotImplementedError

    def R1_chunk(self, chunk: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(real logits, the un-augmented input they were computed from, with requires_grad)."""
        raise NotImplementedError

    def observe_real_logits(self, real_logits: torch.Tensor) -> None:
        """Sees the D step's real logits (sres: feeds the ADA controller)."""

    def after_D(self, step: int) -> None:
        """Runs after the D and R1 steps (sres: ADA controller)."""

    def extra_state(self) -> dict:
        """Further train-pickle entries (CPU copies)."""
        return {}

    def load_extra_state(self, data: dict) -> None:
        pass

    # ------------------------------------------------------------------------

    def modules(self) -> dict[str, torch.nn.Module]:
        """Every module whose parameters or buffers must agree across ranks."""
        return {"G": self.G, "D": self.D, "G_ema": self.G_ema, **self.extra_modules()}

    def broadcast_from_rank0(self) -> None:
        """Gives every rank rank 0's parameters and buffers (once, at construction; there is no DDP wrapper)."""
        for module in self.modules().values():
            distributed.broadcast_module(module)

    def to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def update_lrates(self, step: int) -> None:
        warmup = min((step + 1) / (self.lrate_warmup_steps + 1), 1.0)
        for opt, lrate in [(self.G_opt, self.G_lrate), (self.D_opt, self.D_lrate)]:
            for group in opt.param_groups:
                group["lr"] = lrate * warmup
        training_stats.report0("progress/G_lrate", self.G_lrate * warmup)
        training_stats.report0("progress/D_lrate", self.D_lrate * warmup)

    def _optimizer_step(self, module: torch.nn.Module, opt: torch.optim.Optimizer, gain: float) -> None:
        module.requires_grad_(False)
        distributed.sync_grads(module.parameters(), gain=gain)
        opt.step()
        opt.zero_grad(set_to_none=True)

    # ------------------------------------------------------------------------

    def train_step(self, step: int, next_batch) -> None:
        """One full training step; `next_batch()` returns the next real batch of this rank (a dict of tensors)."""
        self.update_lrates(step)

        # G step.
        chunks = split_batch(self.to_device(self.G_batch(next_batch)), self.grad_accum)
        self.G_opt.zero_grad(set_to_none=True)
        self.G.requires_grad_(True)
        for chunk in chunks:
            logits = self.G_chunk_logits(chunk)
            training_stats.report("loss/G_score", logits)
            training_stats.report("loss/G_sign", logits.sign())
            training_stats.report("loss/G_loss", torch.nn.functional.softplus(-logits))
            losses.generator_loss(logits).backward()
        self._optimizer_step(self.G, self.G_opt, gain=1 / self.grad_accum)

        # D step (fakes made per chunk, see the module docstring).
        chunks = split_batch(self.D_batch(self.to_device(next_batch())), self.grad_accum)
        running_averages = ChunkedBufferUpdate(self.G) if len(chunks) > 1 else None
        self.D_opt.zero_grad(set_to_none=True)
        self.D.requires_grad_(True)
        for chunk in chunks:
            fake_logits = self.D_fake_logits(chunk, self.magnitude_ema_beta)
            if running_averages is not None:
                running_averages.chunk_done()
            fake_loss = losses.discriminator_fake_loss(fake_logits)
            fake_loss.backward()
            real_logits = self.D_real_logits(chunk)
            real_loss = losses.discriminator_real_loss(real_logits)
            real_loss.backward()
            training_stats.report("loss/D_score_fake", fake_logits)
            training_stats.report("loss/D_score_real", real_logits)
            training_stats.report("loss/D_sign_fake", fake_logits.sign())
            training_stats.report("loss/D_sign_real", real_logits.sign())
            training_stats.report(
                "loss/D_loss", torch.nn.functional.softplus(fake_logits) + torch.nn.functional.softplus(-real_logits)
            )
            self.observe_real_logits(real_logits)
        if running_averages is not None:
            running_averages.finish()
        self._optimizer_step(self.D, self.D_opt, gain=1 / self.grad_accum)

        # Lazy R1 on a fresh real batch.
        if self.r1_interval > 0 and step % self.r1_interval == 0:
            chunks = split_batch(self.to_device(next_batch()), self.grad_accum)
            self.D.requires_grad_(True)
            for chunk in chunks:
                logits, real_input = self.R1_chunk(chunk)
                penalty = losses.r1_penalty(logits, real_input)
                r1 = losses.r1_loss(penalty, self.gamma)  # [N]
                training_stats.report("loss/r1_penalty", penalty)
                training_stats.report("loss/r1_loss", r1)
                r1.mean().backward()
            self._optimizer_step(self.D, self.D_opt, gain=self.r1_interval / self.grad_accum)

        self.after_D(step)

        # G EMA over parameters and buffers.
        beta = tu.ema_beta(step, self.G_ema_beta, self.G_ema_warmup_steps)
        tu.update_ema(self.G_ema, self.G, beta)
        training_stats.report0("progress/G_ema_beta", beta)

    # ------------------------------------------------------------------------
    # Checkpoints.

    def checkpoint_state(self) -> dict:
        """Everything of the networks and optimisers a resume needs, as CPU copies (modules in eval mode)."""
        return {
            "G": tu.snapshot_module(self.G),
            "D": tu.snapshot_module(self.D),
            "G_ema": tu.snapshot_module(self.G_ema),
            "G_opt": tu.to_cpu(self.G_opt.state_dict()),
            "D_opt": tu.to_cpu(self.D_opt.state_dict()),
            **self.extra_state(),
        }

    def load_checkpoint_state(self, data: dict) -> None:
        """Copies networks and optimiser states of a train pickle into this object (modules stay in train mode)."""
        for name in ("G", "D", "G_ema"):
            misc.copy_params_and_buffers(data[name], getattr(self, name), require_all=True)
        self.G_opt.load_state_dict(data["G_opt"])
        self.D_opt.load_state_dict(data["D_opt"])
        self.load_extra_state(data)
