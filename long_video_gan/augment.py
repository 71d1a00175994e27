"""Adaptive discriminator augmentation (ADA, Karras et al. 2020) for videos, as used by the super-resolution phase of
LongVideoGAN (Brooks et al., NeurIPS 2022): one random transform per video, shared by all of its frames.

Geometric ops compose one inverse 2-D transform that is applied in a single resampling pass (reflect-pad, 2x
symlet-6 up-sampling, bilinear sampling, 2x down-sampling, crop) at the original's sample positions, including its
half-sample shift around the up-sampling; colour ops compose one 4x4 RGB matrix. The op list, gating and draw
order are the original's (AugmentPipe and its forward pass).
"""

import math

import einops
import numpy as np
import torch
import torch.nn.functional as F

from torch_utils import distributed, persistence
from torch_utils.ops import grid_sample_gradfix, upfirdn2d

# ----------------------------------------------------------------------------

# Symlet-6 orthogonal wavelet low-pass (decomposition) coefficients, 12 taps, sum sqrt(2).
SYM6_COEFFS = [
    0.015404109327027373,
    0.0034907120842174702,
    -0.11799011114819057,
    -0.048311742585633,
    0.4910559419267466,
    0.787641141030194,
    0.3379294217276218,
    -0.07263752278646252,
    -0.021060292512300564,
    0.04472490177066578,
    0.0017677118642428036,
    -0.007800708325034148,
]

# The discriminator augmentation of the super-res phase: all pixel-blitting, geometric and colour ops at weight 1.
ADA_KWARGS = dict(
    xflip=1,
    rotate90=1,
    xint=1,
    scale=1,
    rotate=1,
    aniso=1,
    xfrac=1,
    brightness=1,
    contrast=1,
    lumaflip=1,
    hue=1,
    saturation=1,
)

# The fixed augmentation of the low-res conditioning (`in_augment`), run at p = IN_AUGMENT_P.
IN_AUGMENT_KWARGS = dict(
    scale=1,
    rotate=1,
    aniso=1,
    xfrac=1,
    noise=1,
    scale_std=0.08,
    rotate_max=0.016,
    aniso_std=0.08,
    xfrac_std=0.016,
    noise_std=0.08,
)
IN_AUGMENT_P = 0.5

# All ops, in the order they run.
_OP_NAMES = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
_OP_NAMES += ("brightness", "contrast", "lumaflip", "hue", "saturation", "noise", "cutout")

# ----------------------------------------------------------------------------
# Batched homogeneous matrices. Entries are tensors [N] or Python numbers; results are [N, 3, 3] or [N, 4, 4].


def _matrix(rows: list[list], batch_size: int, device: torch.device) -> torch.Tensor:
    entries = []
    for row in rows:
        for value in row:
            if not isinstance(value, torch.Tensor):
                value = torch.full([batch_size], float(value), device=device)
            entries.append(value.to(torch.float32).reshape(batch_size))
    size = len(rows)
    return torch.stack(entries, dim=1).reshape(batch_size, size, size)


def translate2d(tx, ty, batch_size, device) -> torch.Tensor:
    return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]], batch_size, device)


def scale2d(sx, sy, batch_size, device) -> torch.Tensor:
    return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], batch_size, device)


def rotate2d(theta: torch.Tensor, batch_size, device) -> torch.Tensor:
    c, s = torch.cos(theta), torch.sin(theta)
    return _matrix([[c, -s, 0], [s, c, 0], [0, 0, 1]], batch_size, device)


def translate3d(tx, ty, tz, batch_size, device) -> torch.Tensor:
    return _matrix([[1, 0, 0, tx], [0, 1, 0, ty], [0, 0, 1, tz], [0, 0, 0, 1]], batch_size, device)


def scale3d(sx, sy, sz, batch_size, device) -> torch.Tensor:
    return _matrix([[sx, 0, 0, 0], [0, sy, 0, 0], [0, 0, sz, 0], [0, 0, 0, 1]], batch_size, device)


def rotate3d(axis: list[float], theta: torch.Tensor, batch_size, device) -> torch.Tensor:
    """Rotation by theta about a unit axis (Rodrigues' formula), embedded in a 4x4 homogeneous matrix."""
    vx, vy, vz = axis
    c, s = torch.cos(theta), torch.sin(theta)
    d = 1 - c
    return _matrix(
        [
            [vx * vx * d + c, vx * vy * d - vz * s, vx * vz * d + vy * s, 0],
            [vy * vx * d + vz * s, vy * vy * d + c, vy * vz * d - vx * s, 0],
            [vz * vx * d - vy * s, vz * vy * d + vx * s, vz * vz * d + c, 0],
            [0, 0, 0, 1],
        ],
        batch_size,
        device,
    )


# The inverse forms used to build the output-to-input mapping of the geometric pass.
def translate2d_inv(tx, ty, batch_size, device) -> torch.Tensor:
    return translate2d(-tx, -ty, batch_size, device)


def scale2d_inv(sx, sy, batch_size, device) -> torch.Tensor:
    return scale2d(1 / sx, 1 / sy, batch_size, device)


def rotate2d_inv(theta, batch_size, device) -> torch.Tensor:
    return rotate2d(-theta, batch_size, device)


# ----------------------------------------------------------------------------


@persistence.persistent_class
class AugmentPipe(torch.nn.Module):
    """ADA pipeline on videos [N, C, T, H, W]; each op runs per video with probability multiplier * p."""

    def __init__(
        self,
        xflip: float = 0,  # Probability multiplier of x-flips.
        rotate90: float = 0,  # Probability multiplier of rotations by multiples of 90 degrees.
        xint: float = 0,  # Probability multiplier of integer translations.
        xint_max: float = 0.125,  # Range of integer translation, relative to the image size.
        scale: float = 0,  # Probability multiplier of isotropic scaling.
        rotate: float = 0,  # Probability multiplier of arbitrary rotation (split into a pre- and post-rotation).
        aniso: float = 0,  # Probability multiplier of anisotropic scaling.
        xfrac: float = 0,  # Probability multiplier of fractional translation.
        scale_std: float = 0.2,  # Log2 standard deviation of isotropic scaling.
        rotate_max: float = 1,  # Range of arbitrary rotation, 1 = full circle.
        aniso_std: float = 0.2,  # Log2 standard deviation of anisotropic scaling.
        xfrac_std: float = 0.125,  # Standard deviation of fractional translation, relative to the image size.
        brightness: float = 0,  # Probability multiplier of brightness.
        contrast: float = 0,  # Probability multiplier of contrast.
        lumaflip: float = 0,  # Probability multiplier of luma flip.
        hue: float = 0,  # Probability multiplier of hue rotation.
        saturation: float = 0,  # Probability multiplier of saturation.
        brightness_std: float = 0.2,  # Standard deviation of brightness.
        contrast_std: float = 0.5,  # Log2 standard deviation of contrast.
        hue_max: float = 1,  # Range of hue rotation, 1 = full circle.
        saturation_std: float = 1,  # Log2 standard deviation of saturation.
        noise: float = 0,  # Probability multiplier of additive RGB noise.
        cutout: float = 0,  # Probability multiplier of cutout.
        noise_std: float = 0.1,  # Scale of the noise standard deviation (sigma = |N(0, 1)| * noise_std).
        cutout_size: float = 0.5,  # Size of the cutout rectangle, relative to the image size.
    ):
        super().__init__()
        self.register_buffer("p", torch.zeros([]))  # Overall probability, set by the ADA controller.

        # Pixel blitting.
        self.xflip = float(xflip)
        self.rotate90 = float(rotate90)
        self.xint = float(xint)
        self.xint_max = float(xint_max)

        # General geometric transforms.
        self.scale = float(scale)
        self.rotate = float(rotate)
        self.aniso = float(aniso)
        self.xfrac = float(xfrac)
        self.scale_std = float(scale_std)
        self.rotate_max = float(rotate_max)
        self.aniso_std = float(aniso_std)
        self.xfrac_std = float(xfrac_std)

        # Colour transforms.
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.lumaflip = float(lumaflip)
        self.hue = float(hue)
        self.saturation = float(saturation)
        self.brightness_std = float(brightness_std)
        self.contrast_std = float(contrast_std)
        self.hue_max = float(hue_max)
        self.saturation_std = float(saturation_std)

        # Corruptions.
        self.noise = float(noise)
        self.cutout = float(cutout)
        self.noise_std = float(noise_std)
        self.cutout_size = float(cutout_size)

        # Low-pass filter of the geometric pass: symlet-6, normalized to unit sum.
        self.register_buffer("Hz_geom", upfirdn2d.setup_filter(SYM6_COEFFS))

    # ------------------------------------------------------------------------

    def _uses_geometry(self) -> bool:
        return any(
            v > 0 for v in [self.xflip, self.rotate90, self.xint, self.scale, self.rotate, self.aniso, self.xfrac]
        )

    def _uses_colour(self) -> bool:
        return any(v > 0 for v in [self.brightness, self.contrast, self.lumaflip, self.hue, self.saturation])

    def forward(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment `video` [N, C, T, H, W]; random draws come from `generator` (on the video's device) if given."""
        if not isinstance(video, torch.Tensor) or video.ndim != 5:
            raise ValueError(f"video must be a tensor [N, C, T, H, W], got shape {getattr(video, 'shape', None)}")
        batch_size, channels, num_frames, height, width = video.shape
        device = video.device
        p = self.p.to(device=device, dtype=torch.float32)

        def rand(*shape):
            return torch.rand([batch_size, *shape], device=device, generator=generator)

        def randn(*shape):
            return torch.randn([batch_size, *shape], device=device, generator=generator)

        def gate(multiplier, value, identity):
            # Keep `value` with probability multiplier * p, per video.
            return torch.where(rand() < multiplier * p, value, torch.full_like(value, identity))

        if self._uses_geometry():
            g_inv = self._draw_geometry(rand, randn, gate, batch_size, width, height, device)
            images = einops.rearrange(video, "n c t h w -> n (c t) h w")
            images = self._apply_geometry(images, g_inv)  # [N, C*T, H, W]
            video = einops.rearrange(images, "n (c t) h w -> n c t h w", c=channels)

        if self._uses_colour():
            if channels != 3:
                raise ValueError(f"colour augmentation needs 3 channels, got video with {channels}")
            c_mat = self._draw_colour(rand, randn, gate, batch_size, device)
            pixels = einops.rearrange(video, "n c t h w -> n c (t h w)")
            pixels = c_mat[:, :3, :3] @ pixels + c_mat[:, :3, 3:]  # [N, 3, T*H*W]
            video = einops.rearrange(pixels, "n c (t h w) -> n c t h w", t=num_frames, h=height)

        if self.noise > 0:
            sigma = gate(self.noise, randn().abs() * self.noise_std, 0)  # [N]
            noise = torch.randn(video.shape, device=device, generator=generator)  # [N, C, T, H, W]
            video = video + noise * sigma.reshape(batch_size, 1, 1, 1, 1)

        if self.cutout > 0:
            size = gate(self.cutout, torch.full([batch_size], self.cutout_size, device=device), 0)  # [N]
            centre = rand(2)  # [N, 2] as (x, y) in [0, 1)
            coord_x = (torch.arange(width, device=device) + 0.5) / width
            coord_y = (torch.arange(height, device=device) + 0.5) / height
            keep_x = (coord_x.reshape(1, -1) - centre[:, :1]).abs() >= size.reshape(-1, 1) / 2  # [N, W]
            keep_y = (coord_y.reshape(1, -1) - centre[:, 1:]).abs() >= size.reshape(-1, 1) / 2  # [N, H]
            keep = keep_y.unsqueeze(2) | keep_x.unsqueeze(1)  # [N, H, W]
            video = video * keep.reshape(batch_size, 1, 1, height, width).to(video.dtype)

        assert video.shape == (batch_size, channels, num_frames, height, width)
        return video

    # ------------------------------------------------------------------------

    def _draw_geometry(self, rand, randn, gate, batch_size, width, height, device) -> torch.Tensor:
        """Compose the inverse (output -> input) transform [N, 3, 3] in centred pixel coordinates."""
        args = (batch_size, device)
        g_inv = torch.eye(3, device=device).repeat(batch_size, 1, 1)

        if self.xflip > 0:
            i = gate(self.xflip, torch.floor(rand() * 2), 0)
            g_inv = g_inv @ scale2d_inv(1 - 2 * i, 1, *args)

        if self.rotate90 > 0:
            i = gate(self.rotate90, torch.floor(rand() * 4), 0)
            g_inv = g_inv @ rotate2d_inv(-np.pi / 2 * i, *args)

        if self.xint > 0:
            t = (rand(2) * 2 - 1) * self.xint_max  # [N, 2]
            t = torch.where(rand().unsqueeze(1) < self.xint * self.p.to(device), t, torch.zeros_like(t))
            g_inv = g_inv @ translate2d_inv(torch.round(t[:, 0] * width), torch.round(t[:, 1] * height), *args)

        if self.scale > 0:
            s = gate(self.scale, torch.exp2(randn() * self.scale_std), 1)
            g_inv = g_inv @ scale2d_inv(s, s, *args)

        # The rotation probability is split so that pre- or post-rotation happens with probability rotate * p.
        p_rot = 1 - torch.sqrt((1 - self.rotate * self.p.to(device)).clamp(0, 1))
        if self.rotate > 0:
            theta = (rand() * 2 - 1) * np.pi * self.rotate_max
            theta = torch.where(rand() < p_rot, theta, torch.zeros_like(theta))
            g_inv = g_inv @ rotate2d_inv(-theta, *args)

        if self.aniso > 0:
            s = gate(self.aniso, torch.exp2(randn() * self.aniso_std), 1)
            g_inv = g_inv @ scale2d_inv(s, 1 / s, *args)

        if self.rotate > 0:
            theta = (rand() * 2 - 1) * np.pi * self.rotate_max
            theta = torch.where(rand() < p_rot, theta, torch.zeros_like(theta))
            g_inv = g_inv @ rotate2d_inv(-theta, *args)

        if self.xfrac > 0:
            t = randn(2) * self.xfrac_std  # [N, 2]
            t = torch.where(rand().unsqueeze(1) < self.xfrac * self.p.to(device), t, torch.zeros_like(t))
            g_inv = g_inv @ translate2d_inv(t[:, 0] * width, t[:, 1] * height, *args)

        return g_inv

    def _apply_geometry(self, images: torch.Tensor, g_inv: torch.Tensor) -> torch.Tensor:
        """Resample images [N, C, H, W] at g_inv(output pixel) in one anti-aliased pass, at the original's positions.

        Reflect-pad, up-sample 2x with the symlet-6 filter, sample bilinearly on the grid of `_geometry_grid`,
        down-sample 2x with the same filter (correlation, so that up + down is the identity) and drop the `taps / 4`
        extra pixels per side.
        """
        batch_size, channels, height, width = images.shape
        pad = self.Hz_geom.shape[0] // 4
        (mx0, mx1, my0, my1), grid = self._geometry_grid(g_inv, height, width, images.device)
        images = F.pad(images, [mx0, mx1, my0, my1], mode="reflect")  # [N, C, Hp, Wp]
        images = upfirdn2d.upsample2d(images, self.Hz_geom, up=2)  # [N, C, 2 Hp, 2 Wp]
        images = grid_sample_gradfix.grid_sample(images, grid.to(images.dtype))  # [N, C, 2 (H + 2 pad), ...]
        images = upfirdn2d.downsample2d(images, self.Hz_geom, down=2, padding=-2 * pad, flip_filter=True)
        assert images.shape == (batch_size, channels, height, width)
        return images

    def _geometry_grid(self, g_inv: torch.Tensor, height: int, width: int, device: torch.device):
        """Reflect padding (x0, x1, y0, y1) and grid_sample grid [N, 2 (H + 2 pad), 2 (W + 2 pad), 2] of the pass.

        The grid covers the image plus `pad = taps / 4` pixels per side at twice the resolution. In the up-sampled
        frame the transform is conjugated by a shift of half an up-sampled sample, `T(-1/2) S(2) G S(1/2) T(1/2)`,
        as the original does. Flips, rotations by 90 degrees and integer translations then read up-sampled samples
        exactly; integer translations are exact shifts of the image, while a flip or a 90-degree rotation equals the
        pixel permutation followed by a short residual filter along the reversed axis (the symlet is not symmetric),
        whose central tap is 0.965 and whose DC gain is 1.
        """
        batch_size = g_inv.shape[0]
        pad = self.Hz_geom.shape[0] // 4  # Filter support per side, in input pixels (3 for the 12-tap symlet).
        g_inv = g_inv.to(device=device, dtype=torch.float32)
        args = (batch_size, device)

        # Reflect padding: the transformed corners of the image plus twice the filter support, at most size - 1.
        cx, cy = (width - 1) / 2, (height - 1) / 2
        corners = torch.tensor([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]], device=device)  # [4, xyz]
        corners = (g_inv @ corners.t())[:, :2, :].permute(1, 0, 2).flatten(1)  # [xy, N * 4]
        margin = torch.cat([-corners, corners]).max(dim=1).values  # [4]: x0, y0, x1, y1
        margin = margin + torch.tensor([2 * pad - cx, 2 * pad - cy] * 2, device=device)
        margin = margin.clamp(min=0).minimum(torch.tensor([width - 1, height - 1] * 2, device=device))
        mx0, my0, mx1, my1 = [int(v) for v in margin.ceil().tolist()]
        g_inv = translate2d((mx0 - mx1) / 2, (my0 - my1) / 2, *args) @ g_inv  # Centred on the padded image.

        # In up-sampled samples, with the half-sample conjugation.
        g_inv = scale2d(2, 2, *args) @ g_inv @ scale2d_inv(2, 2, *args)
        g_inv = translate2d(-0.5, -0.5, *args) @ g_inv @ translate2d_inv(-0.5, -0.5, *args)

        # In grid_sample's [-1, 1] coordinates of the up-sampled padded input and of the output grid.
        in_height, in_width = 2 * (height + my0 + my1), 2 * (width + mx0 + mx1)
        out_height, out_width = 2 * (height + 2 * pad), 2 * (width + 2 * pad)
        g_inv = scale2d(2 / in_width, 2 / in_height, *args) @ g_inv @ scale2d_inv(2 / out_width, 2 / out_height, *args)
        grid = F.affine_grid(g_inv[:, :2, :], [batch_size, 1, out_height, out_width], align_corners=False)
        return (mx0, mx1, my0, my1), grid

    def _draw_colour(self, rand, randn, gate, batch_size, device) -> torch.Tensor:
        """Compose the colour transform [N, 4, 4] acting on homogeneous RGB."""
        args = (batch_size, device)
        c_mat = torch.eye(4, device=device).repeat(batch_size, 1, 1)
        luma = [1 / math.sqrt(3)] * 3
        luma_proj = torch.zeros([4, 4], device=device)
        luma_proj[:3, :3] = 1 / 3  # Projection onto the luma axis (1, 1, 1) / sqrt(3).

        if self.brightness > 0:
            b = gate(self.brightness, randn() * self.brightness_std, 0)
            c_mat = translate3d(b, b, b, *args) @ c_mat

        if self.contrast > 0:
            c = gate(self.contrast, torch.exp2(randn() * self.contrast_std), 1)
            c_mat = scale3d(c, c, c, *args) @ c_mat

        if self.lumaflip > 0:
            i = gate(self.lumaflip, torch.floor(rand() * 2), 0)
            c_mat = (torch.eye(4, device=device) - 2 * luma_proj * i.reshape(-1, 1, 1)) @ c_mat  # Reflection.

        if self.hue > 0:
            theta = gate(self.hue, (rand() * 2 - 1) * np.pi * self.hue_max, 0)
            c_mat = rotate3d(luma, theta, *args) @ c_mat

        if self.saturation > 0:
            s = gate(self.saturation, torch.exp2(randn() * self.saturation_std), 1)
            orth_proj = torch.eye(4, device=device) - luma_proj
            orth_proj[3, 3] = 0
            identity_w = torch.zeros([4, 4], device=device)
            identity_w[3, 3] = 1
            c_mat = (luma_proj + identity_w + orth_proj * s.reshape(-1, 1, 1)) @ c_mat

        return c_mat

    def extra_repr(self) -> str:
        ops = [name for name in _OP_NAMES if getattr(self, name) > 0]
        return f"ops={ops}, p={float(self.p):g}"


# ----------------------------------------------------------------------------


def ada_pipe() -> AugmentPipe:
    """The super-res discriminator augmentation pipe (p starts at 0; the ADA controller moves it)."""
    return AugmentPipe(**ADA_KWARGS)


def in_augment_pipe() -> AugmentPipe:
    """The fixed low-res conditioning augmentation (`in_augment`) with p = 0.5."""
    pipe = AugmentPipe(**IN_AUGMENT_KWARGS)
    pipe.p.fill_(IN_AUGMENT_P)
    return pipe


# ----------------------------------------------------------------------------


@persistence.persistent_class
class AdaController:
    """Adjusts an AugmentPipe's p toward a target rate of positive real-logit signs, as ADA does.

    Usage in a training loop (D step, then every `interval` steps including step 0):

        ada = AdaController()
        ada.accumulate(real_logits.sign())  # The values reported as loss/D_sign_real.
        if ada.should_update(step):
            p = ada.update(augment_pipe)  # Report as progress/augment_p.
    """

    def __init__(
        self,
        target: float = 0.6,  # Target mean of sign(D(real)).
        interval: int = 4,  # Steps between updates.
        speed: float = 0.000125 * 4,  # Change of p per update (0.5 in 4,000 steps at interval 4).
        p_max: float = 0.5,  # Upper bound of p.
    ):
        if interval <= 0:
            raise ValueError(f"interval must be a positive integer, got {interval}")
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.target = float(target)
        self.interval = int(interval)
        self.speed = float(speed)
        self.p_max = float(p_max)
        self._stats = None  # float64 [sum, count] since the previous update, on the values' device.

    def accumulate(self, sign_real_values: torch.Tensor) -> None:
        """Add this rank's sign(D(real)) values (any shape) to the running sum."""
        values = torch.as_tensor(sign_real_values).detach().flatten().to(torch.float64)
        count = torch.tensor(float(values.numel()), dtype=torch.float64, device=values.device)
        stats = torch.stack([values.sum(), count])
        self._stats = stats if self._stats is None else self._stats + stats.to(self._stats.device)

    def should_update(self, step: int) -> bool:
        return step % self.interval == 0

    def update(self, pipe: AugmentPipe) -> float:
        """Move pipe.p by +-speed from the mean over all ranks since the last update; returns the new p.

        The sign of exactly zero counts as +1, so p rises when the mean equals the target. Without any accumulated
        values p is left unchanged. Every rank must call this at the same steps (it all-reduces).
        """
        stats = self._stats if self._stats is not None else torch.zeros([2], dtype=torch.float64)
        stats = stats.to(pipe.p.device)
        if distributed.get_world_size() > 1:
            torch.distributed.all_reduce(stats)
        self._stats = None
        total, count = stats.tolist()
        if count > 0:
            mean = total / count
            direction = 1.0 if mean - self.target >= 0 else -1.0
            with torch.no_grad():
                pipe.p.copy_((pipe.p + direction * self.speed).clamp(0, self.p_max))
        return float(pipe.p)


# ----------------------------------------------------------------------------
