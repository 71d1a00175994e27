"""Super-resolution phase of LongVideoGAN training: G super-resolves real low-res clips; D judges high-res clips
together with their low-res conditioning, after adaptive augmentation (long_video_gan/augment.py).
"""

import copy

import torch

import dnnlib
from long_video_gan import training_utils as tu
from long_video_gan import video_io
from long_video_gan.video_gan import VideoGAN
from torch_utils import misc, training_stats

# ----------------------------------------------------------------------------


class SuperResVideoGAN(VideoGAN):
    """Batches hold `lr_video` [N, 3, T + 2*context, h, w] and `hr_video` [N, 3, T, H, W] (the centre T frames).

    * `in_augment` (fixed p) perturbs every low-res clip before it is used, independently for each use: the clip that
      conditions G and the clip paired with the real hr clip are augmented separately in the D step, both for the
      whole per-rank batch before G runs, as in the original.
    * `run_D`: lr up-sampled by `D.upsample`, lr and hr augmented jointly by ADA (one transform for both), then the lr
      input is zeroed per sample with probability `1 - lr_cond_prob`.
    * ADA: `augment.p` moves every `ada_interval` steps (step 0 included) toward a 0.6 rate of positive real logits.
    """

    phase = "sres"
    batches_per_step = 2  # The G step's lr clips and the D step's batch.

    def __init__(
        self,
        augment_kwargs: dict | None = None,  # ADA pipe on D's input, with class_name; None = no ADA.
        in_augment_kwargs: dict | None = None,  # Fixed-p pipe on the lr conditioning, with class_name; None = none.
        in_augment_p: float = 0.5,  # Probability of the conditioning augmentation.
        ada_kwargs: dict | None = None,  # ADA controller arguments, with class_name (target, interval, speed, ...).
        lr_cond_prob: float = 0.1,  # Probability that D sees the lr conditioning of a sample (else zeros).
        **gan_kwargs,  # VideoGAN arguments.
    ):
        super().__init__(**gan_kwargs)
        self.temporal_context = int(self.G.temporal_context)
        self.lr_cond_prob = lr_cond_prob
        self.augment = None
        self.in_augment = None
        self.ada = None
        if augment_kwargs is not None:
            self.augment = dnnlib.util.construct_class_by_name(**augment_kwargs).train().requires_grad_(False)
            self.augment.to(self.device)
            self.ada = dnnlib.util.construct_class_by_name(**(ada_kwargs or {"class_name": _ADA_CONTROLLER}))
        if in_augment_kwargs is not None:
            self.in_augment = dnnlib.util.construct_class_by_name(**in_augment_kwargs).train().requires_grad_(False)
            self.in_augment.to(self.device)
            with torch.no_grad():
                self.in_augment.p.fill_(in_augment_p)

    # ------------------------------------------------------------------------

    def centre(self, lr_video: torch.Tensor) -> torch.Tensor:
        """The centre frames of a conditioning clip, those paired with the hr frames."""
        c = self.temporal_context
        return lr_video[:, :, c : lr_video.shape[2] - c]  # [N, C, T, h, w]

    def condition(self, lr_video: torch.Tensor) -> torch.Tensor:
        """One independent draw of the conditioning augmentation."""
        return lr_video if self.in_augment is None else self.in_augment(lr_video)

    def run_D(self, lr_video: torch.Tensor, hr_video: torch.Tensor) -> torch.Tensor:
        num_frames = hr_video.shape[2]
        lr_up = self.D.upsample(lr_video)  # [N, C, T, H, W]
        if self.augment is not None:
            both = self.augment(torch.cat([lr_up, hr_video], dim=2))  # [N, C, 2T, H, W]; one transform for both.
            lr_up, hr_video = both[:, :, :num_frames], both[:, :, num_frames:]
        keep = torch.rand([lr_up.shape[0], 1, 1, 1, 1], device=lr_up.device) < self.lr_cond_prob
        lr_up = torch.where(keep, lr_up, torch.zeros_like(lr_up))
        return self.D(lr_up, hr_video)

    # ------------------------------------------------------------------------

    def extra_modules(self) -> dict[str, torch.nn.Module]:
        modules = {}
        if self.augment is not None:
            modules["augment"] = self.augment
        if self.in_augment is not None:
            modules["in_augment"] = self.in_augment
        return modules

    def G_batch(self, next_batch) -> dict:
        return {"lr_video": next_batch()["lr_video"]}

    def G_chunk_logits(self, chunk: dict) -> torch.Tensor:
        lr = self.condition(chunk["lr_video"])
        fake = self.G(lr)  # [N, C, T, H, W]
        return self.run_D(self.centre(lr), fake)

    def D_batch(self, batch: dict) -> dict:
        # As the original, before any fake is generated: the conditioning of the fakes, then that of the reals, then
        # every z, each for the whole per-rank batch (low-res clips and z are small next to the fakes).
        lr_fake = self.condition(batch["lr_video"])
        lr_real = self.condition(batch["lr_video"])
        z = self.G.sample_latent_z(batch["lr_video"].shape[0])
        return {**batch, "lr_fake": lr_fake, "lr_real": lr_real, "z": z}

    def D_fake_logits(self, chunk: dict, magnitude_ema_beta: float) -> torch.Tensor:
        with torch.no_grad():
            fake = self.G(chunk["lr_fake"], magnitude_ema_beta=magnitude_ema_beta, z=chunk["z"])
        return self.run_D(self.centre(chunk["lr_fake"]), fake)

    def D_real_logits(self, chunk: dict) -> torch.Tensor:
        return self.run_D(self.centre(chunk["lr_real"]), chunk["hr_video"])

    def R1_chunk(self, chunk: dict) -> tuple[torch.Tensor, torch.Tensor]:
        # Gradient w.r.t. the hr clip only; the conditioning carries none.
        lr = self.condition(self.centre(chunk["lr_video"]))
        hr = chunk["hr_video"].detach().requires_grad_(True)
        return self.run_D(lr, hr), hr

    def observe_real_logits(self, real_logits: torch.Tensor) -> None:
        if self.ada is not None:
            self.ada.accumulate(real_logits.sign())

    def after_D(self, step: int) -> None:
        if self.ada is not None and self.ada.should_update(step):
            training_stats.report0("progress/augment_p", self.ada.update(self.augment))

    # ------------------------------------------------------------------------

    def extra_state(self) -> dict:
        state = {}
        if self.augment is not None:
            state["augment"] = tu.snapshot_module(self.augment)
            state["real_sign_collector"] = _controller_to(self.ada, torch.device("cpu"))
        if self.in_augment is not None:
            state["in_augment"] = tu.snapshot_module(self.in_augment)
        return state

    def load_extra_state(self, data: dict) -> None:
        for name in ("augment", "in_augment"):
            module = getattr(self, name)
            if module is not None:
                if data.get(name) is None:
                    raise ValueError(f"the train pickle has no '{name}' although this run uses it")
                misc.copy_params_and_buffers(data[name], module, require_all=True)
        if self.ada is not None:
            self.ada.__dict__.update(_controller_to(data["real_sign_collector"], self.device).__dict__)

    # ------------------------------------------------------------------------
    # Samples, summaries, metrics.

    def prepare_samples(self, dataset, result_seq_length: int, seed: int, write_dir: str | None) -> None:
        """Fixes one real low-res clip per rank (`result_seq_length` output frames plus the context, shortened to
        the longest clip if needed); with `write_dir`, writes it as real-lr.mp4 and its hr frames as real-hr.mp4."""
        context = self.temporal_context
        longest = max(num_frames for _, _, num_frames in dataset.clips)
        num_out = min(result_seq_length, longest - 2 * context)
        self.sample_segment = max(d for d in range(1, min(num_out, 16) + 1) if num_out % d == 0)
        self.sample_seed = seed
        sample_dataset = type(dataset)(
            dataset.dataset_dir,
            seq_length=num_out + 2 * context,
            lr_height=dataset.lr_height,
            lr_width=dataset.lr_width,
            hr_height=dataset.hr_height,
            hr_width=dataset.hr_width,
            hr_frame_slice=None if write_dir else (0, 0),
        )
        (item,) = tu.read_items(sample_dataset, 1, seed)
        self.sample_lr = item["lr_video"][None].to(self.device)  # [1, C, T + 2*context, h, w]
        if write_dir is not None:
            video_io.write_video_grid(self.sample_lr, f"{write_dir}/real-lr.mp4", gather=True)
            video_io.write_video_grid(item["hr_video"][None].to(self.device), f"{write_dir}/real-hr.mp4", gather=True)

    def write_fake_samples(self, path_stem: str) -> None:
        """`{path_stem}-hr.mp4`: G_ema super-resolving each rank's fixed real clip, gathered into a grid."""
        gen = torch.Generator(self.device).manual_seed(self.sample_seed)
        with torch.no_grad():
            segments = self.G_ema.sample_video_segments(self.sample_lr, self.sample_segment, generator_z=gen)
            video_io.write_video_grid(segments, f"{path_stem}-hr.mp4", gather=True)

    def summary_inputs(self) -> list:
        G, D, c = self.G, self.D, self.temporal_context
        # Random (not zero) input, so the summary's output statistics show what the layers do to a signal.
        gen = torch.Generator(self.device).manual_seed(0)
        lr = torch.randn([1, 3, D.seq_length + 2 * c, G.lr_height, G.lr_width], generator=gen, device=self.device)
        hr = torch.randn([1, 3, D.seq_length, G.hr_height, G.hr_width], generator=gen, device=self.device)
        return [("G", G, [lr]), ("D", D, [self.centre(lr), hr])]

    def metric_dataset_kwargs(self, dataset_kwargs: dict) -> dict:
        d = dataset_kwargs
        return dict(
            dataset_kwargs=dict(dataset_dir=d["dataset_dir"], height=d["hr_height"], width=d["hr_width"]),
            cond_dataset_kwargs=dict(dataset_dir=d["dataset_dir"], height=d["lr_height"], width=d["lr_width"]),
        )


_ADA_CONTROLLER = "long_video_gan.augment.AdaController"


def _controller_to(controller, device: torch.device):
    """A copy of an ADA controller with its accumulated tensors (signs since the last update) on `device`."""
    controller = copy.deepcopy(controller)
    for name, value in vars(controller).items():
        if isinstance(value, torch.Tensor):
            setattr(controller, name, value.to(device))
    return controller
