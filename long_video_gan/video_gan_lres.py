"""Low-resolution phase of LongVideoGAN training: long clips from noise, DiffAugment and temporal scale augmentation
before the video discriminator (long_video_gan/diff_augment.py).
"""

import torch

from long_video_gan import diff_augment as da
from long_video_gan import training_utils as tu
from long_video_gan import video_io
from long_video_gan.video_gan import VideoGAN

# ----------------------------------------------------------------------------


class LowResVideoGAN(VideoGAN):
    """G renders `seq_length + total_temporal_scale` frames and each clip is cut at a random offset (G step and D step),
    so clip starts are decorrelated from the 32-frame structure of G's temporal up-sampling. D sees every clip
    (real, fake, R1) after DiffAugment and temporal scale augmentation."""

    phase = "lres"
    batches_per_step = 1  # The D step's real batch.

    def __init__(
        self,
        seq_length: int = 128,  # Frames per clip seen by D.
        diffaug_policy: str = da.DEFAULT_POLICY,  # DiffAugment ops, comma separated; "" = none.
        temp_scale_augment: float = 1.0,  # Octaves of random temporal scaling; 0 = off.
        random_temp_translate: bool = True,  # Render extra frames and crop each clip at a random offset.
        **gan_kwargs,  # VideoGAN arguments.
    ):
        super().__init__(**gan_kwargs)
        self.seq_length = seq_length
        self.diffaug_policy = diffaug_policy
        self.temp_scale_augment = temp_scale_augment
        self.random_temp_translate = random_temp_translate

    # ------------------------------------------------------------------------

    def _extra_frames(self, G: torch.nn.Module) -> int:
        return int(G.total_temporal_scale) if self.random_temp_translate else 0

    def generate(
        self,
        G: torch.nn.Module,
        batch_size: int,
        magnitude_ema_beta: float = 1.0,
        emb: torch.Tensor | None = None,  # G's embedding noise for these clips; None = drawn here.
        offsets: torch.Tensor | None = None,  # Their crop offsets [N]; None = drawn here (after G's noise).
    ) -> torch.Tensor:
        """Fake clips `[N, 3, seq_length, H, W]`; with random translation each one starts at its own offset."""
        extra = self._extra_frames(G)
        video = G(batch_size, self.seq_length + extra, magnitude_ema_beta=magnitude_ema_beta, emb=emb)
        if extra == 0:
            return video  # [N, C, T, H, W]
        if offsets is None:
            offsets = torch.randint(0, extra, [batch_size], device=video.device)  # Uniform in [0, extra - 1].
        # Each clip's frames offset .. offset + seq_length - 1, gathered on the device (reading the offsets on the host
        # would make every step wait for the GPU).
        N, C, _, H, W = video.shape
        frames = offsets.to(torch.int64)[:, None] + torch.arange(self.seq_length, device=video.device)  # [N, T]
        index = frames[:, None, :, None, None].expand(N, C, self.seq_length, H, W)
        return torch.gather(video, 2, index)  # [N, C, T, H, W]

    def run_D(self, video: torch.Tensor) -> torch.Tensor:
        """DiffAugment, then temporal scale augmentation, then D (D zero-pads the frames to a square itself)."""
        if self.diffaug_policy:
            video = da.diff_augment(video, self.diffaug_policy)
        video = da.temporal_scale_augment(video, self.seq_length, max_octaves=self.temp_scale_augment)
        return self.D(video)

    # ------------------------------------------------------------------------

    def G_chunk_logits(self, chunk: dict) -> torch.Tensor:
        return self.run_D(self.generate(self.G, self.chunk_size))

    def D_batch(self, batch: dict) -> dict:
        # As the original's one fake pass: every clip's embedding noise, then every crop offset, for the whole
        # per-rank batch (the noise is small next to the fakes).
        extra = self._extra_frames(self.G)
        batch_size = batch["video"].shape[0]
        emb = self.G.sample_temporal_emb(batch_size, self.seq_length + extra)
        batch = {**batch, "emb": emb}
        if extra > 0:
            batch["offsets"] = torch.randint(0, extra, [batch_size], device=emb.device)
        return batch

    def D_fake_logits(self, chunk: dict, magnitude_ema_beta: float) -> torch.Tensor:
        with torch.no_grad():
            fake = self.generate(
                self.G, self.chunk_size, magnitude_ema_beta, emb=chunk["emb"], offsets=chunk.get("offsets")
            )
        return self.run_D(fake)

    def D_real_logits(self, chunk: dict) -> torch.Tensor:
        return self.run_D(chunk["video"])

    def R1_chunk(self, chunk: dict) -> tuple[torch.Tensor, torch.Tensor]:
        real = chunk["video"].detach().requires_grad_(True)
        return self.run_D(real), real

    # ------------------------------------------------------------------------
    # Samples, summaries, metrics.

    def prepare_samples(self, dataset, result_seq_length: int, seed: int, write_dir: str | None) -> None:
        """Fixes the sample settings; with `write_dir`, writes real-long.mp4 (one long clip per rank) and
        real-train.mp4 (a per-rank batch of training clips), gathered into grids."""
        self.sample_length = result_seq_length
        self.sample_seed = seed
        if write_dir is None:
            return
        longest = max(num_frames for _, _, num_frames in dataset.clips)
        long_dataset = type(dataset)(
            dataset.dataset_dir, seq_length=min(result_seq_length, longest), height=dataset.height, width=dataset.width
        )
        video = tu.read_clips(long_dataset, 1, seed)
        video_io.write_video_grid(video.to(self.device), f"{write_dir}/real-long.mp4", gather=True)
        video = tu.read_clips(dataset, self.batch_gpu, seed)
        video_io.write_video_grid(video.to(self.device), f"{write_dir}/real-train.mp4", gather=True)

    def write_fake_samples(self, path_stem: str) -> None:
        """`{path_stem}.mp4`: one clip per rank from G_ema with the rank's fixed seed, gathered into a grid."""
        gen = torch.Generator(self.device).manual_seed(self.sample_seed)
        with torch.no_grad():
            segments = self.G_ema.sample_video_segments(1, self.sample_length, segment_length=16, generator_emb=gen)
            video_io.write_video_grid(segments, f"{path_stem}.mp4", gather=True)

    def summary_inputs(self) -> list:
        # Random (not zero) input, so the summary's output statistics show what the layers do to a signal.
        gen = torch.Generator(self.device).manual_seed(0)
        shape = [1, 3, self.seq_length, self.G.out_height, self.G.out_width]
        video = torch.randn(shape, generator=gen, device=self.device)
        return [("G", self.G, [1, self.seq_length]), ("D", self.D, [video])]

    def metric_dataset_kwargs(self, dataset_kwargs: dict) -> dict:
        d = dataset_kwargs
        return dict(dataset_kwargs=dict(dataset_dir=d["dataset_dir"], height=d["height"], width=d["width"]))
