"""Low-resolution long-video generator of LongVideoGAN (Brooks et al., NeurIPS 2022, Sec. 3.1).

The generator is fully convolutional in time. All randomness comes from one long stream of temporally low-pass
filtered white noise (`BlurredNoise`), mapped per frame to latents that modulate a ladder of 3-D residual blocks:
six temporal blocks (five of which up-sample time by 2) followed by four spatial blocks and a ToRGB layer.

Parameter and buffer names, shapes and initialisation order follow the original release, so its state dicts load
with `load_state_dict(strict=True)`. This module is embedded in pickles: it imports only torch, numpy, scipy,
einops, torch_utils and dnnlib.

Shape letters: N batch, C channels, T frames, H height, W width, S latent width, K filter taps, B blur filters.
"""

import math
from collections.abc import Iterator, Sequence

import numpy as np
import scipy.signal
import torch
import torch.nn.functional as F
from einops import rearrange

from torch_utils import distributed, misc, persistence
from torch_utils.ops import bias_act, fast_cpu, upfirdn2d

# Tensors of this many elements or more are processed in chunks, because the CUDA kernels index with int32.
# Chunking is numerically neutral (the ops act element-wise or per channel).
_BIAS_ACT_MAX_NUMEL = 2**31 - 1
_UPSAMPLE_MAX_NUMEL = 2**31 - 2

# A tiny configuration for CPU tests and the `--preset tiny` of the training script: same layer table and
# sequence bookkeeping as the paper, a few channels per layer and a short blur bank.
TINY_KWARGS = dict(
    temporal_emb_dim=32,
    latent_w_dim=32,
    temporal_channels=(8, 8, 8, 8, 8, 8, 8),
    spatial_channels=(8, 8, 4, 4),
    embedding_kwargs=dict(blur_widths=8, max_sampling_rate=1000),
)

# ----------------------------------------------------------------------------
# Small helpers.


def _center_crop(x: torch.Tensor, dim: int, target: int) -> torch.Tensor:
    """Crop `x` along `dim` to `target` samples, starting at floor((size - target) / 2)."""
    size = x.shape[dim]
    assert 0 < target <= size, f"cannot centre-crop dimension {dim} of size {size} to {target}"
    start = (size - target) // 2
    return x.narrow(dim, start, target)


def _chunked_bias_act(x: torch.Tensor, b: torch.Tensor | None, **kwargs) -> torch.Tensor:
    """`bias_act` along dim 1, split along the largest other dimension when `x` is too large for int32 indexing."""
    if x.numel() < _BIAS_ACT_MAX_NUMEL:
        return bias_act.bias_act(x, b, **kwargs)
    sizes = list(x.shape)
    sizes[1] = 0  # The bias dimension must stay whole.
    dim = int(np.argmax(sizes))
    num_chunks = min(math.ceil(x.numel() / (_BIAS_ACT_MAX_NUMEL - 1)), x.shape[dim])
    return torch.cat([bias_act.bias_act(chunk, b, **kwargs) for chunk in x.tensor_split(num_chunks, dim=dim)], dim=dim)


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _per_frame(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a fully connected layer to every frame of a latent sequence."""
    N = x.shape[0]
    x = rearrange(x, "n c t -> (n t) c")  # [(N T), C]
    x = layer(x)
    return rearrange(x, "(n t) c -> n c t", n=N)  # [N, C', T]


def kaiser_lowpass(numtaps: int, cutoff: float, width: float, fs: float) -> np.ndarray:
    """Kaiser-window FIR low-pass (scipy.signal.firwin, designed in float64), returned as float32."""
    return scipy.signal.firwin(numtaps, cutoff=cutoff, width=width, fs=fs).astype(np.float32)


# ----------------------------------------------------------------------------
# Temporal latent representation (Sec. 3.1: temporally smooth noise at many time scales).


@persistence.persistent_class
class BlurredNoise(torch.nn.Module):
    def __init__(
        self,
        channels: int = 1024,  # Output channels = noise channels x blur_widths.
        min_sampling_rate: float = 250,  # Sampling rate (frames per "second") of the shortest filter.
        max_sampling_rate: float = 10000,  # Sampling rate of the longest filter; sets the bank length.
        blur_widths: int = 128,  # Number of low-pass filters applied to every noise channel.
        cutoff: float = 2.0,  # Cut-off frequency of every filter, in "Hz".
        width: float = 12.0,  # Kaiser transition width, in "Hz".
        sampling_rate_base: float = 2.0,  # Rates are spaced geometrically in this base; <= 1 means linearly.
        normalize_per_filter: float = 1.0,  # 1: every filtered output has unit variance; 0: raw filter gains.
    ):
        super().__init__()
        if channels % blur_widths != 0:
            raise ValueError(f"channels must be a multiple of blur_widths={blur_widths}, got {channels}")
        if not 0 < min_sampling_rate <= max_sampling_rate:
            raise ValueError(
                f"min_sampling_rate must be positive and at most max_sampling_rate={max_sampling_rate}, "
                f"got {min_sampling_rate}"
            )
        self.channels = channels
        self.min_sampling_rate = min_sampling_rate
        self.max_sampling_rate = max_sampling_rate
        self.blur_widths = blur_widths
        self.cutoff = cutoff
        self.width = width
        self.sampling_rate_base = sampling_rate_base
        self.normalize_per_filter = normalize_per_filter
        self.noise_channels = channels // blur_widths
        self.kernel_size = math.ceil(max_sampling_rate / 2)

        # Sampling rates; the clip makes the end rates exact (a rate a hair above 250 would give 126 taps).
        if sampling_rate_base > 1:
            log_base = np.log(sampling_rate_base)
            rates = np.logspace(
                np.log(min_sampling_rate) / log_base,
                np.log(max_sampling_rate) / log_base,
                blur_widths,
                base=sampling_rate_base,
            )
        else:
            rates = np.linspace(min_sampling_rate, max_sampling_rate, blur_widths)
        rates = np.clip(rates, min_sampling_rate, max_sampling_rate)

        # One filter per rate, right-aligned so that all filters end on the same noise sample.
        filters = np.zeros([blur_widths, self.kernel_size], dtype=np.float32)  # [B, K]
        for i, rate in enumerate(rates):
            taps = kaiser_lowpass(math.ceil(rate / 2), cutoff=cutoff, width=width, fs=rate)
            filters[i, self.kernel_size - len(taps) :] = taps
        filters = torch.from_numpy(filters)
        output_scale = 1 / torch.sqrt(filters.square().sum(dim=1))  # Unit variance for unit white noise.

        self.register_buffer("output_scale", output_scale.reshape(1, blur_widths, 1))  # [1, B, 1]
        self.register_buffer("blur_filters", filters.unsqueeze(1))  # [B, 1, K]

    def forward(self, batch_size: int, seq_length: int, generator: torch.Generator | None = None) -> torch.Tensor:
        # The only randomness of a low-res forward pass: one flat N(0, 1) draw on the filters' device.
        N, B, K = batch_size, self.blur_widths, self.kernel_size
        noise = torch.randn(
            [N, self.noise_channels, seq_length + K - 1], generator=generator, device=self.blur_filters.device
        )

        # Grouped cross-correlation (no kernel flip) of every noise channel with every filter.
        x = noise.reshape(N * self.noise_channels, 1, seq_length + K - 1).expand(-1, B, -1)  # [(N C), B, T + K - 1]
        x = F.conv1d(x, self.blur_filters, groups=B)  # [(N C), B, T]
        x = x * (1 + self.normalize_per_filter * (self.output_scale - 1))
        x = x.reshape(N, self.channels, seq_length)  # [N, C * B, T], channel index c * B + b

        misc.assert_shape(x, [N, self.channels, seq_length])
        return x

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, blur_widths={self.blur_widths}, kernel_size={self.kernel_size}, "
            f"sampling_rates=[{self.min_sampling_rate}, {self.max_sampling_rate}], cutoff={self.cutoff}, "
            f"width={self.width}"
        )


# ----------------------------------------------------------------------------
# Fully connected layer with equalized learning rate.


@persistence.persistent_class
class FullyConnectedLayer(torch.nn.Module):
    def __init__(
        self,
        in_features: int,  # Number of input features.
        out_features: int,  # Number of output features.
        bias: bool = True,  # Add a learned bias?
        activation: str = "linear",  # Activation name of bias_act ("linear", "lrelu", ...).
        lrate_mul: float = 1.0,  # Learning-rate multiplier of weight and bias.
        weight_std_init: float = 1.0,  # Standard deviation of the effective initial weights.
        bias_init: float = 0.0,  # Initial value of the effective bias.
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.lrate_mul = lrate_mul
        self.weight_std_init = weight_std_init
        self.bias_init = bias_init
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) * weight_std_init / lrate_mul)
        self.bias = torch.nn.Parameter(torch.full([out_features], float(bias_init) / lrate_mul)) if bias else None
        self.weight_gain = lrate_mul / np.sqrt(in_features)
        self.bias_gain = lrate_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        misc.assert_shape(x, [None, self.in_features])
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            x = torch.addmm(b.unsqueeze(0), x, w.t())  # [N, out]
        else:
            x = x.matmul(w.t())  # [N, out]
            x = bias_act.bias_act(x, b, act=self.activation)
        return x

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}, "
            f"lrate_mul={self.lrate_mul}"
        )


# ----------------------------------------------------------------------------
# Per-frame latent mapping.


@persistence.persistent_class
class LatentMappingNetwork(torch.nn.Module):
    def __init__(
        self,
        temporal_emb_dim: int = 1024,  # Channels of the temporal embedding (input).
        latent_w_dim: int = 1024,  # Width of the per-frame latent w (output).
        num_layers: int = 2,  # Number of fully connected layers.
        activation: str = "lrelu",  # Activation after every layer.
        lrate_mul: float = 0.01,  # Learning-rate multiplier of every layer.
        normalize_input: bool = True,  # Normalise the embedding to unit RMS over channels, per frame?
    ):
        super().__init__()
        self.temporal_emb_dim = temporal_emb_dim
        self.latent_w_dim = latent_w_dim
        self.num_layers = num_layers
        self.activation = activation
        self.lrate_mul = lrate_mul
        self.normalize_input = normalize_input
        for idx in range(num_layers):
            in_features = temporal_emb_dim if idx == 0 else latent_w_dim
            layer = FullyConnectedLayer(in_features, latent_w_dim, activation=activation, lrate_mul=lrate_mul)
            setattr(self, f"layer_{idx}", layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, _, T = x.shape
        misc.assert_shape(x, [N, self.temporal_emb_dim, T])
        if self.normalize_input:
            x = x / torch.sqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)
        x = rearrange(x, "n c t -> (n t) c")  # [(N T), C]
        for idx in range(self.num_layers):
            x = getattr(self, f"layer_{idx}")(x)
        x = rearrange(x, "(n t) s -> n s t", n=N)  # [N, S, T]
        misc.assert_shape(x, [N, self.latent_w_dim, T])
        return x

    def extra_repr(self) -> str:
        return (
            f"temporal_emb_dim={self.temporal_emb_dim}, latent_w_dim={self.latent_w_dim}, "
            f"num_layers={self.num_layers}, lrate_mul={self.lrate_mul}, normalize_input={self.normalize_input}"
        )


# ----------------------------------------------------------------------------
# Resamplers. All use upfirdn2d with zero extension at the borders; time is handled as the vertical axis of a
# 2-D image whose horizontal axis is the flattened H * W (or a single column for latent sequences).


@persistence.persistent_class
class LinearResample(torch.nn.Module):
    def __init__(
        self,
        scale: int = 2,  # Integer resampling factor.
        padding: int = 0,  # Replicate padding of the original; only 0 (zero borders) is implemented.
        padding_mode: str = "replicate",  # Kept for compatibility with the original constructor.
    ):
        super().__init__()
        if padding != 0:
            raise ValueError(f"padding must be 0 (the only value the release uses), got {padding}")
        self.scale = scale
        self.padding = padding
        self.padding_mode = padding_mode
        # Half-sample-centred linear interpolation weights, e.g. [1, 3, 3, 1] / 8 for scale 2.
        ramp = np.linspace(0.5 / scale, 1 - 0.5 / scale, scale)
        taps = np.concatenate([ramp, ramp[::-1]])
        self.register_buffer("filter", torch.tensor(taps / taps.sum(), dtype=torch.float32))  # [K]

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


def _num_upsample_chunks(out_numel: int, dim_size: int) -> int:
    """Number of pieces an up-sampler splits its input into so that each output stays below int32 indexing."""
    if out_numel < _UPSAMPLE_MAX_NUMEL:
        return 1
    return min(math.ceil(out_numel / _UPSAMPLE_MAX_NUMEL), dim_size)


def _temporal_resample(x: torch.Tensor, f: torch.Tensor, up: int = 1, down: int = 1) -> torch.Tensor:
    """Resample `x` ([N, C, T], or [N, C, T, H, W]) along time with the column filter `f` ([K])."""
    shape = list(x.shape)
    x2d = x.reshape(shape[0], shape[1], shape[2], -1)  # [N, C, T, H * W]
    f2d = f.unsqueeze(1)  # [K, 1]: filter along time only.
    if up > 1:
        dim = 0 if shape[0] >= shape[1] else 1
        num_chunks = _num_upsample_chunks(x2d.numel() * up, x2d.shape[dim])
        chunks = [upfirdn2d.upsample2d(c, f2d, up=[1, up]) for c in x2d.tensor_split(num_chunks, dim=dim)]
        y = torch.cat(chunks, dim=dim) if num_chunks > 1 else chunks[0]
    else:
        y = upfirdn2d.downsample2d(x2d, f2d, down=[1, down])
    return y.reshape(shape[:2] + [y.shape[2]] + shape[3:])


@persistence.persistent_class
class TemporalLinearUpsample(LinearResample):
    """Linear x2 up-sampling in time with zero borders: frame 2i = x[i-1]/4 + 3x[i]/4, 2i+1 = 3x[i]/4 + x[i+1]/4."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _temporal_resample(x, self.filter, up=self.scale)


@persistence.persistent_class
class TemporalLinearDownsample(LinearResample):
    """Linear /2 down-sampling in time with zero borders (unused by the generator)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _temporal_resample(x, self.filter, down=self.scale)


@persistence.persistent_class
class SpatialBilinearUpsample(LinearResample):
    """Bilinear x2 up-sampling of every frame (separable, zero borders)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, C, T, H, W = x.shape
        x = x.reshape(N, C * T, H, W)  # [N, C * T, H, W]
        dim = 0 if N >= C * T else 1
        num_chunks = _num_upsample_chunks(x.numel() * self.scale**2, x.shape[dim])
        chunks = [upfirdn2d.upsample2d(c, self.filter, up=self.scale) for c in x.tensor_split(num_chunks, dim=dim)]
        x = torch.cat(chunks, dim=dim) if num_chunks > 1 else chunks[0]
        return x.reshape(N, C, T, H * self.scale, W * self.scale)  # [N, C, T, H', W']


@persistence.persistent_class
class KaiserResample(torch.nn.Module):
    def __init__(
        self,
        scale: int = 2,  # Integer resampling factor.
        padding: int = 0,  # Replicate padding of the original; only 0 (zero borders) is implemented.
        padding_mode: str = "replicate",  # Kept for compatibility with the original constructor.
        filter_size: int = 6,  # Taps per unit of scale (12 taps for scale 2).
        cutoff: float = 1.0,  # Cutoff frequency of the filter design.
        width: float = 6.0,  # Transition-band width of the filter design.
        sampling_rate: float = 4.0,  # Sampling rate per unit of scale of the filter design.
    ):
        super().__init__()
        if padding != 0:
            raise ValueError(f"padding must be 0 (the only value the release uses), got {padding}")
        self.scale = scale
        self.padding = padding
        self.padding_mode = padding_mode
        self.filter_size = filter_size
        self.cutoff = cutoff
        self.width = width
        self.sampling_rate = sampling_rate
        taps = kaiser_lowpass(scale * filter_size, cutoff=cutoff, width=width, fs=scale * sampling_rate)
        self.register_buffer("filter", torch.from_numpy(taps))  # [K]

    def extra_repr(self) -> str:
        return f"scale={self.scale}, taps={self.scale * self.filter_size}, cutoff={self.cutoff}, width={self.width}"


@persistence.persistent_class
class TemporalKaiserDownsample(KaiserResample):
    """Anti-aliased /2 down-sampling of a latent sequence [N, C, T]; output j is centred between 2j and 2j+1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, C, T = x.shape
        if T % self.scale != 0:
            raise ValueError(f"sequence length must be a multiple of {self.scale}, got {T}")
        x = _temporal_resample(x, self.filter, down=self.scale)
        misc.assert_shape(x, [N, C, T // self.scale])
        return x


# ----------------------------------------------------------------------------
# Modulated convolution and magnitude normalisation.


def temporal_modulated_conv3d(
    x: torch.Tensor,  # Activations [N, Ci, T, H, W].
    weight: torch.Tensor,  # Shared weight [Co, Ci, kt, kh, kw].
    styles: torch.Tensor,  # Per-frame styles [N, Ci, T].
    padding: Sequence[int] = (0, 0, 0),  # Zero padding (pt, ph, pw).
    input_gain: torch.Tensor | None = None,  # Optional scalar multiplied into x.
    demodulate: bool = True,  # Normalise every output frame by its expected magnitude?
) -> torch.Tensor:
    """Conv3d whose input channels are scaled by a style per frame, with per-frame demodulation (Sec. 3.1)."""
    N, Ci, T, H, W = x.shape
    Co, _, kt, kh, kw = weight.shape
    misc.assert_shape(weight, [Co, Ci, kt, kh, kw])
    misc.assert_shape(styles, [N, Ci, T])

    # CPU inference: the same result with fewer passes over x (torch_utils/ops/fast_cpu.py).
    if fast_cpu.applies(x, weight, styles, input_gain):
        return fast_cpu.temporal_modulated_conv3d(x, weight, styles, padding, input_gain, demodulate)

    # Pre-normalise for numerical safety; both scales cancel in the demodulation.
    if demodulate:
        weight = weight / weight.abs().amax(dim=[1, 2, 3, 4], keepdim=True)
        styles = styles / styles.abs().amax(dim=[1, 2], keepdim=True)
    weight = weight / np.sqrt(Ci * kt * kh * kw)

    # Demodulation coefficients per output frame, from that frame's style only.
    dcoefs = None
    if demodulate:
        wsq = weight.float().square().sum(dim=[2, 3, 4])  # [Co, Ci]
        dcoefs = torch.einsum("oi,nit->not", wsq, styles.float().square())  # [N, Co, T]
        dcoefs = (dcoefs + 1e-8).rsqrt()

    # Modulate, convolve, demodulate.
    if input_gain is not None:
        x = x * input_gain
    x = x * styles.to(x.dtype)[..., None, None]  # [N, Ci, T, H, W]
    x = F.conv3d(x, weight.to(x.dtype), padding=tuple(padding))  # [N, Co, T, H, W]
    if dcoefs is not None:
        x = x * dcoefs.to(x.dtype)[..., None, None]
    return x


@persistence.persistent_class
class MagnitudeEMA(torch.nn.Module):
    """Running mean of x^2 (over all elements and ranks); returns the normalising gain rsqrt(EMA)."""

    def __init__(
        self,
        dist_sync: bool = True,  # All-reduce the measured magnitude across ranks when world size > 1?
    ):
        super().__init__()
        self.dist_sync = dist_sync
        self.register_buffer("magnitude_ema", torch.ones([]))

    def forward(self, x: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
        # beta alone decides whether to update (train()/eval() are ignored); beta == 1 is read-only.
        if beta != 1:
            with torch.no_grad():
                magnitude = x.detach().float().square().mean()
                world_size = distributed.get_world_size()
                if self.dist_sync and world_size > 1:
                    torch.distributed.all_reduce(magnitude)
                    magnitude = magnitude / world_size
                self.magnitude_ema.copy_(self.magnitude_ema.lerp(magnitude, 1 - beta))
        return self.magnitude_ema.rsqrt()  # The value after the update.

    def extra_repr(self) -> str:
        return f"dist_sync={self.dist_sync}"


# ----------------------------------------------------------------------------
# Synthesis blocks.


@persistence.persistent_class
class Synthesis3dResBlock(torch.nn.Module):
    def __init__(
        self,
        latent_dim: int,  # Width of the per-frame latent w.
        in_channels: int,  # Input channels.
        out_channels: int | None = None,  # Output channels; None = in_channels.
        out_width: int | None = None,  # Centre-crop the output to this width; None = no crop.
        out_height: int | None = None,  # Centre-crop the output to this height; None = no crop.
        temporal_ksize: int = 1,  # Kernel size in time of both convolutions.
        spatial_ksize: int = 1,  # Kernel size in height and width of both convolutions.
        temporal_up: bool = False,  # Up-sample x2 in time before the second bias/activation?
        spatial_up: bool = False,  # Up-sample x2 in space before the second bias/activation?
        activation: str = "lrelu",  # Activation after both convolutions.
        activation_clamp: float = 256.0,  # Clamp after the activations (protects fp16).
        magnitude_ema: bool = True,  # Normalise the inputs of both convolutions by running magnitudes?
        demodulate: bool = True,  # Stored for compatibility; both convolutions always demodulate.
        use_float16: bool = False,  # Compute in fp16 (CUDA only)?
    ):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.latent_dim = latent_dim
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.out_width = out_width
        self.out_height = out_height
        self.temporal_ksize = temporal_ksize
        self.spatial_ksize = spatial_ksize
        self.temporal_up = temporal_up
        self.spatial_up = spatial_up
        self.activation = activation
        self.activation_clamp = activation_clamp
        self.magnitude_ema = magnitude_ema
        self.demodulate = demodulate
        self.use_float16 = use_float16
        self.padding = (temporal_ksize // 2, spatial_ksize // 2, spatial_ksize // 2)

        # Random draws in the order of the original (affines first, then the convolution weights).
        self.affine_0 = FullyConnectedLayer(latent_dim, in_channels, bias_init=1.0)
        self.affine_1 = FullyConnectedLayer(latent_dim, in_channels, bias_init=1.0)
        ks = [temporal_ksize, spatial_ksize, spatial_ksize]
        self.weight_0 = torch.nn.Parameter(torch.randn([in_channels, in_channels] + ks))
        self.weight_1 = torch.nn.Parameter(torch.randn([out_channels, in_channels] + ks))
        self.weight_skip = torch.nn.Parameter(torch.randn([out_channels, in_channels, 1, 1, 1]))
        self.bias_0 = torch.nn.Parameter(torch.zeros([in_channels]))
        self.bias_1 = torch.nn.Parameter(torch.zeros([out_channels]))
        self.input_magnitude_ema_0 = MagnitudeEMA() if magnitude_ema else None
        self.input_magnitude_ema_1 = MagnitudeEMA() if magnitude_ema else None
        self.temporal_upsample = TemporalLinearUpsample(2) if temporal_up else None
        self.spatial_upsample = SpatialBilinearUpsample(2) if spatial_up else None

    def forward(
        self,
        x: torch.Tensor,  # [N, Ci, T_in, H, W]
        latent: torch.Tensor,  # [N, S, T_in]
        magnitude_ema_beta: float = 1.0,  # 1 = read-only magnitude EMAs.
        out_seq_length: int | None = None,  # Centre-crop time to this length; None = no crop.
        dtype: torch.dtype | None = None,  # Activation dtype; None = fp16 if use_float16 on CUDA, else fp32.
    ) -> torch.Tensor:
        N, _, T_in, H, W = x.shape
        misc.assert_shape(x, [N, self.in_channels, T_in, H, W])
        misc.assert_shape(latent, [N, self.latent_dim, T_in])
        if dtype is None:
            dtype = torch.float16 if self.use_float16 and x.device.type == "cuda" else torch.float32
        act_kwargs = dict(act=self.activation, clamp=self.activation_clamp)

        # First convolution, on the magnitude-normalised input.
        style_0 = _per_frame(self.affine_0, latent)  # [N, Ci, T_in]
        x = x.to(dtype)
        if self.input_magnitude_ema_0 is not None:
            x = x * self.input_magnitude_ema_0(x, magnitude_ema_beta)
        h = temporal_modulated_conv3d(x, self.weight_0, style_0, padding=self.padding, demodulate=True)
        h = _chunked_bias_act(h, self.bias_0.to(dtype), **act_kwargs)

        # Second convolution, its input normalised through input_gain.
        style_1 = _per_frame(self.affine_1, latent)  # [N, Ci, T_in]
        gain_1 = self.input_magnitude_ema_1(h, magnitude_ema_beta) if self.input_magnitude_ema_1 is not None else None
        h = temporal_modulated_conv3d(
            h, self.weight_1, style_1, padding=self.padding, input_gain=gain_1, demodulate=True
        )  # [N, Co, T_in, H, W]

        # Residual branch.
        x_skip = F.conv3d(x, (self.weight_skip / np.sqrt(self.in_channels)).to(dtype))  # [N, Co, T_in, H, W]
        h = (x_skip + h) * np.sqrt(0.5)

        # Up-sample and crop in time (the crop applies whether or not the block up-samples).
        if self.temporal_upsample is not None:
            h = self.temporal_upsample(h)  # [N, Co, 2 T_in, H, W]
        if out_seq_length is not None:
            h = _center_crop(h, 2, out_seq_length)

        # Up-sample and crop in space.
        if self.spatial_upsample is not None:
            h = self.spatial_upsample(h)  # [N, Co, T, 2 H, 2 W]
        if self.out_height is not None:
            h = _center_crop(h, 3, self.out_height)
        if self.out_width is not None:
            h = _center_crop(h, 4, self.out_width)

        # Second bias and activation, after resampling.
        h = _chunked_bias_act(h, self.bias_1.to(dtype), **act_kwargs)
        misc.assert_shape(h, [N, self.out_channels, None, None, None])
        assert h.dtype == dtype
        return h

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"kernel=({self.temporal_ksize}, {self.spatial_ksize}, {self.spatial_ksize}), "
            f"temporal_up={self.temporal_up}, spatial_up={self.spatial_up}, "
            f"out_size=({self.out_height}, {self.out_width}), use_float16={self.use_float16}"
        )


@persistence.persistent_class
class ToRGB(torch.nn.Module):
    def __init__(
        self,
        latent_dim: int,  # Width of the per-frame latent w.
        in_channels: int,  # Input channels.
        activation_clamp: float = 256.0,  # Clamp of the (linear) output.
        magnitude_ema: bool = True,  # Normalise the input by its running magnitude?
        use_float16: bool = False,  # Compute in fp16 (CUDA only)?
    ):
        super().__init__()
        self.latent_dim = latent_dim
        self.in_channels = in_channels
        self.activation_clamp = activation_clamp
        self.magnitude_ema = magnitude_ema
        self.use_float16 = use_float16
        self.affine = FullyConnectedLayer(latent_dim, in_channels, bias_init=1.0)
        self.weight = torch.nn.Parameter(torch.randn([3, in_channels, 1, 1, 1]))
        self.bias = torch.nn.Parameter(torch.zeros([3]))
        self.input_magnitude_ema = MagnitudeEMA() if magnitude_ema else None

    def forward(
        self,
        x: torch.Tensor,  # [N, Ci, T, H, W]
        latent: torch.Tensor,  # [N, S, T]
        magnitude_ema_beta: float = 1.0,  # 1 = read-only magnitude EMA.
        dtype: torch.dtype | None = None,  # Activation dtype; None = fp16 if use_float16 on CUDA, else fp32.
    ) -> torch.Tensor:
        N, _, T, H, W = x.shape
        misc.assert_shape(x, [N, self.in_channels, T, H, W])
        misc.assert_shape(latent, [N, self.latent_dim, T])
        if dtype is None:
            dtype = torch.float16 if self.use_float16 and x.device.type == "cuda" else torch.float32
        style = _per_frame(self.affine, latent)  # [N, Ci, T]
        x = x.to(dtype)
        gain = self.input_magnitude_ema(x, magnitude_ema_beta) if self.input_magnitude_ema is not None else None
        x = temporal_modulated_conv3d(x, self.weight, style, input_gain=gain, demodulate=False)  # [N, 3, T, H, W]
        x = _chunked_bias_act(x, self.bias.to(dtype), clamp=self.activation_clamp)
        misc.assert_shape(x, [N, 3, T, H, W])
        return x

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, use_float16={self.use_float16}"


# ----------------------------------------------------------------------------
# The low-res video generator.

# Layer table (the original's, for 36x64 output): which temporal blocks up-sample time, and the spatial ladder level
# (0 = coarsest) of every block's output. Spatial up-sampling happens where the level's size differs from the previous
# one.
_TEMPORAL_UP = (True, True, True, True, True, False)
_TEMPORAL_LEVELS = (0, 1, 1, 2, 2, 2)
_SPATIAL_LEVELS = (3, 3, 4, 4)
_NUM_LEVELS = 5


@persistence.persistent_class
class VideoGenerator(torch.nn.Module):
    def __init__(
        self,
        out_height: int = 36,  # Output frame height in pixels.
        out_width: int = 64,  # Output frame width in pixels.
        temporal_emb_dim: int = 1024,  # Channels of the BlurredNoise embedding.
        latent_w_dim: int = 1024,  # Width of the per-frame latent w.
        temporal_ksize: int = 3,  # Temporal kernel size of the temporal blocks.
        spatial_ksize: int = 3,  # Spatial kernel size of all blocks.
        temporal_padding: int = 8,  # Extra frames carried on each side at every temporal level.
        spatial_padding: int = 0,  # Extra pixels carried on each side at every spatial level.
        output_scale: float = 0.25,  # Multiplies the ToRGB output (which is clamped at +-256).
        num_fp16_layers: int = 0,  # Number of final blocks (ToRGB counted first) computed in fp16 on CUDA.
        embedding_kwargs: dict | None = None,  # Extra BlurredNoise arguments (channels = temporal_emb_dim).
        mapping_kwargs: dict | None = None,  # Extra LatentMappingNetwork arguments.
        temporal_channels: Sequence[int] = (512, 512, 512, 512, 512, 256, 256),  # Input, then temporal block outs.
        spatial_channels: Sequence[int] = (128, 128, 64, 64),  # Outputs of the four spatial blocks.
    ):
        super().__init__()
        embedding_kwargs = dict(embedding_kwargs or {})
        mapping_kwargs = dict(mapping_kwargs or {})
        if embedding_kwargs.get("channels", temporal_emb_dim) != temporal_emb_dim:
            raise ValueError(
                f"embedding_kwargs['channels'] must equal temporal_emb_dim={temporal_emb_dim}, "
                f"got {embedding_kwargs['channels']}"
            )
        embedding_kwargs.pop("channels", None)
        if len(temporal_channels) != len(_TEMPORAL_UP) + 1:
            raise ValueError(f"temporal_channels must have {len(_TEMPORAL_UP) + 1} entries, got {temporal_channels}")
        if len(spatial_channels) != len(_SPATIAL_LEVELS):
            raise ValueError(f"spatial_channels must have {len(_SPATIAL_LEVELS)} entries, got {spatial_channels}")
        if temporal_padding < 0 or spatial_padding < 0:
            raise ValueError(
                f"temporal_padding and spatial_padding must be >= 0, got {temporal_padding} and {spatial_padding}"
            )
        self.out_height = out_height
        self.out_width = out_width
        self.temporal_emb_dim = temporal_emb_dim
        self.latent_w_dim = latent_w_dim
        self.temporal_ksize = temporal_ksize
        self.spatial_ksize = spatial_ksize
        self.temporal_padding = temporal_padding
        self.spatial_padding = spatial_padding
        self.output_scale = output_scale
        self.num_fp16_layers = num_fp16_layers
        self.embedding_kwargs = embedding_kwargs
        self.mapping_kwargs = mapping_kwargs
        self.temporal_channels = tuple(temporal_channels)
        self.spatial_channels = tuple(spatial_channels)

        # Spatial ladder: sizes of the five levels, e.g. 3x4, 5x8, 9x16, 18x32, 36x64.
        long_edge = max(out_height, out_width)
        self.scales = [max(1, long_edge // 2 ** (2 + i)) for i in range(_NUM_LEVELS)]
        self.heights = [math.ceil(out_height / s) + 2 * spatial_padding for s in self.scales]
        self.widths = [math.ceil(out_width / s) + 2 * spatial_padding for s in self.scales]
        for i in range(1, _NUM_LEVELS):
            if self.heights[i] > 2 * self.heights[i - 1] or self.widths[i] > 2 * self.widths[i - 1]:
                raise ValueError(
                    f"out_height x out_width = {out_height}x{out_width} gives spatial levels {self.heights} x "
                    f"{self.widths} that x2 up-sampling cannot reach; use a long edge that is a power of two <= 64"
                )
        if self.scales[-1] != 1:
            raise ValueError(f"the long edge of out_height x out_width must be below 128, got {long_edge}")
        self.total_temporal_scale = 2 ** sum(_TEMPORAL_UP)
        self.total_spatial_scale = self.scales[0]
        self.num_layers = len(_TEMPORAL_UP) + len(_SPATIAL_LEVELS) + 1

        # Blocks, in the order of the original's random draws; fp16 on the last num_fp16_layers (ToRGB first).
        first_fp16 = self.num_layers - num_fp16_layers
        layer_idx = 0
        self.temporal_layers = torch.nn.ModuleList()
        prev_level = 0
        for i, (up, level) in enumerate(zip(_TEMPORAL_UP, _TEMPORAL_LEVELS)):
            self.temporal_layers.append(
                Synthesis3dResBlock(
                    latent_dim=latent_w_dim,
                    in_channels=temporal_channels[i],
                    out_channels=temporal_channels[i + 1],
                    out_width=self.widths[level],
                    out_height=self.heights[level],
                    temporal_ksize=temporal_ksize,
                    spatial_ksize=spatial_ksize,
                    temporal_up=up,
                    spatial_up=self._level_changes(prev_level, level),
                    use_float16=layer_idx >= first_fp16,
                )
            )
            prev_level, layer_idx = level, layer_idx + 1
        self.spatial_layers = torch.nn.ModuleList()
        in_channels = temporal_channels[-1]
        for i, level in enumerate(_SPATIAL_LEVELS):
            is_last = i == len(_SPATIAL_LEVELS) - 1
            self.spatial_layers.append(
                Synthesis3dResBlock(
                    latent_dim=latent_w_dim,
                    in_channels=in_channels,
                    out_channels=spatial_channels[i],
                    out_width=out_width if is_last else self.widths[level],
                    out_height=out_height if is_last else self.heights[level],
                    temporal_ksize=1,
                    spatial_ksize=spatial_ksize,
                    spatial_up=self._level_changes(prev_level, level),
                    use_float16=layer_idx >= first_fp16,
                )
            )
            in_channels, prev_level, layer_idx = spatial_channels[i], level, layer_idx + 1
        self.to_rgb = ToRGB(latent_w_dim, in_channels, use_float16=layer_idx >= first_fp16)

        # Learned spatial constant, temporal embedding, mapping and latent resampling.
        self.spatial_input = torch.nn.Parameter(
            torch.randn([1, temporal_channels[0], 1, self.heights[0], self.widths[0]])
        )
        self.temporal_emb = BlurredNoise(channels=temporal_emb_dim, **embedding_kwargs)
        self.latent_mapping = LatentMappingNetwork(temporal_emb_dim, latent_w_dim, **mapping_kwargs)
        self.temporal_downsample_latent = TemporalKaiserDownsample(2)
        self.w_to_temp_input = FullyConnectedLayer(latent_w_dim, temporal_channels[0])

    def _level_changes(self, prev_level: int, level: int) -> bool:
        return (self.heights[prev_level], self.widths[prev_level]) != (self.heights[level], self.widths[level])

    # ------------------------------------------------------------------------
    # Sequence-length bookkeeping: how many frames each temporal block takes and gives.

    def compute_seq_lengths(self, seq_length: int) -> tuple[int, list[int]]:
        """Return (input length T_in, [output length of temporal block 0..5]) for a video of `seq_length` frames.

        Every temporal level carries `temporal_padding` extra frames on each side; the last block crops them off.
        For L=128 and padding 8: (20, [24, 32, 48, 80, 144, 128]).
        """
        _check_positive_int("seq_length", seq_length)
        out_lengths = []
        scale = 1
        for i in reversed(range(len(self.temporal_layers))):
            is_last = i == len(self.temporal_layers) - 1
            out_lengths.insert(0, seq_length if is_last else math.ceil(seq_length / scale) + 2 * self.temporal_padding)
            if self.temporal_layers[i].temporal_up:
                scale *= 2
        in_length = math.ceil(seq_length / scale) + 2 * self.temporal_padding
        return in_length, out_lengths

    def compute_latent_lengths(self, seq_length: int) -> list[int]:
        """Lengths of the 12 latent sequences of `compute_latent_ws`: [w_input, w_T0..w_T5, w_S0..w_S3, w_rgb]."""
        in_length, out_lengths = self.compute_seq_lengths(seq_length)
        block_in_lengths = [in_length] + out_lengths[:-1]
        return [in_length] + block_in_lengths + [seq_length] * (len(self.spatial_layers) + 1)

    # ------------------------------------------------------------------------
    # Forward pieces.

    def sample_temporal_emb(
        self, batch_size: int, seq_length: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw the temporal embedding [N, temporal_emb_dim, 32 T_in] at full frame rate for a video of L frames."""
        _check_positive_int("batch_size", batch_size)
        in_length, _ = self.compute_seq_lengths(seq_length)
        return self.temporal_emb(batch_size, in_length * self.total_temporal_scale, generator=generator)

    def sample_temporal_input(
        self, batch_size: int, seq_length: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """N(0, 1) stand-in for `temporal_input` [N, C, T_in] (unused by the generator itself)."""
        in_length, _ = self.compute_seq_lengths(seq_length)
        return torch.randn(
            [batch_size, self.temporal_channels[0], in_length], generator=generator, device=self.spatial_input.device
        )

    def compute_latent_ws(self, emb: torch.Tensor, seq_length: int) -> list[torch.Tensor]:
        """Map the embedding to the 12 per-layer latents [w_input, w_T0..w_T5, w_S0..w_S3, w_rgb], each [N, S, T_k].

        Temporal block k receives the latent at its own frame rate (repeated Kaiser /2 down-sampling of the
        never-cropped full-rate sequence), centre-cropped to the block's input length.
        """
        in_length, out_lengths = self.compute_seq_lengths(seq_length)
        N = emb.shape[0]
        misc.assert_shape(emb, [N, self.temporal_emb_dim, in_length * self.total_temporal_scale])
        r = self.latent_mapping(emb)  # [N, S, 32 T_in]

        # Spatial blocks and ToRGB run at the output length.
        latent_ws = [_center_crop(r, 2, seq_length) for _ in range(len(self.spatial_layers) + 1)]

        # Temporal blocks, last to first, each at half the rate of the next one if that one up-samples.
        block_in_lengths = [in_length] + out_lengths[:-1]
        for i in reversed(range(len(self.temporal_layers))):
            if self.temporal_layers[i].temporal_up:
                r = self.temporal_downsample_latent(r)  # [N, S, T / 2]
            latent_ws.insert(0, _center_crop(r, 2, block_in_lengths[i]))
        latent_ws.insert(0, latent_ws[0])  # w_input, feeds w_to_temp_input.

        for w, length in zip(latent_ws, self.compute_latent_lengths(seq_length)):
            misc.assert_shape(w, [N, self.latent_w_dim, length])
        return latent_ws

    def synthesize_video(
        self,
        temporal_input: torch.Tensor,  # [N, C, T_in]
        latent_ws: list[torch.Tensor],  # 11 latents: w_T0..w_T5, w_S0..w_S3, w_rgb.
        seq_length: int,  # Output frames L.
        magnitude_ema_beta: float = 1.0,  # 1 = read-only magnitude EMAs.
        dtype: torch.dtype | None = None,  # Activation dtype of every block; None = per-block default.
        return_features: bool = False,  # Also return every block output?
    ):
        """Render [N, 3, L, H, W]; with return_features, a list of the 10 block outputs followed by the video."""
        in_length, out_lengths = self.compute_seq_lengths(seq_length)
        N = temporal_input.shape[0]
        misc.assert_shape(temporal_input, [N, self.temporal_channels[0], in_length])
        if len(latent_ws) != self.num_layers:
            raise ValueError(f"latent_ws must have {self.num_layers} entries, got {len(latent_ws)}")

        # Temporal input broadcast over the learned spatial constant.
        x = (temporal_input[..., None, None] + self.spatial_input) * np.sqrt(0.5)  # [N, C, T_in, H0, W0]
        features = []
        for block, w, length in zip(self.temporal_layers, latent_ws, out_lengths):
            x = block(x, w, magnitude_ema_beta=magnitude_ema_beta, out_seq_length=length, dtype=dtype)
            features.append(x)
        for block, w in zip(self.spatial_layers, latent_ws[len(self.temporal_layers) :]):
            x = block(x, w, magnitude_ema_beta=magnitude_ema_beta, dtype=dtype)
            features.append(x)
        x = self.to_rgb(x, latent_ws[-1], magnitude_ema_beta=magnitude_ema_beta, dtype=dtype)

        video = x.float() * self.output_scale  # [N, 3, L, H, W]
        misc.assert_shape(video, [N, 3, seq_length, self.out_height, self.out_width])
        assert video.dtype == torch.float32
        return features + [video] if return_features else video

    def forward(
        self,
        batch_size: int,  # Number of videos N.
        seq_length: int,  # Frames per video L.
        magnitude_ema_beta: float = 1.0,  # 1 = read-only magnitude EMAs; 0.999 in the D step of training.
        generator_emb: torch.Generator | None = None,  # RNG of the embedding noise; None = device default.
        dtype: torch.dtype | None = None,  # Activation dtype of every block; None = per-block default.
        emb: torch.Tensor | None = None,  # Precomputed sample_temporal_emb output; then no noise is drawn.
    ) -> torch.Tensor:
        """Generate [N, 3, L, out_height, out_width] float32 videos (range bounded by +-64, not clamped to +-1)."""
        if emb is None:
            emb = self.sample_temporal_emb(batch_size, seq_length, generator=generator_emb)
        elif emb.shape[0] != batch_size:
            raise ValueError(f"emb must have batch_size={batch_size} rows, got shape {tuple(emb.shape)}")
        latent_ws = self.compute_latent_ws(emb, seq_length)
        w_input = latent_ws.pop(0)
        temporal_input = _per_frame(self.w_to_temp_input, w_input)  # [N, C, T_in]
        return self.synthesize_video(
            temporal_input, latent_ws, seq_length, magnitude_ema_beta=magnitude_ema_beta, dtype=dtype
        )

    def sample_video_segments(
        self,
        batch_size: int,  # Number of videos N.
        seq_length: int,  # Frames per video L.
        segment_length: int = 8,  # Frames per yielded segment (the last one may be shorter).
        generator_emb: torch.Generator | None = None,  # RNG of the embedding noise; None = device default.
        dtype: torch.dtype | None = None,  # Activation dtype of every block; None = per-block default.
    ) -> Iterator[torch.Tensor]:
        """Yield the video in consecutive segments along time.

        The whole video is rendered in one pass when the first segment is requested (no noise is drawn before),
        so this saves no memory; the segments are views of one tensor.
        """
        _check_positive_int("segment_length", segment_length)
        video = self.forward(batch_size, seq_length, generator_emb=generator_emb, dtype=dtype)
        yield from video.split(segment_length, dim=2)

    def extra_repr(self) -> str:
        return (
            f"out_size=({self.out_height}, {self.out_width}), temporal_emb_dim={self.temporal_emb_dim}, "
            f"latent_w_dim={self.latent_w_dim}, temporal_padding={self.temporal_padding}, "
            f"temporal_channels={self.temporal_channels}, spatial_channels={self.spatial_channels}, "
            f"num_fp16_layers={self.num_fp16_layers}"
        )
