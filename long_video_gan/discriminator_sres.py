"""Super-resolution video discriminator of LongVideoGAN (Brooks et al., NeurIPS 2022, Sec. 3.2): a StyleGAN2-ADA
style residual image discriminator that sees a short high-res clip, stacked in channels, next to its up-sampled
low-res conditioning clip.
"""

import math

import einops
import numpy as np
import torch
import torch.nn.functional as F

from torch_utils import misc, persistence
from torch_utils.ops import bias_act, conv2d_resample, upfirdn2d

# ----------------------------------------------------------------------------


@persistence.persistent_class
class LinearResample(torch.nn.Module):
    """Base of the half-sample-centred linear resamplers; holds the normalized linear-interpolation filter."""

    def __init__(
        self,
        scale: int = 2,  # Integer resampling factor.
        padding: int = 0,  # Replicate padding of the original; only 0 (zero borders) is implemented.
        padding_mode: str = "replicate",  # Kept for compatibility with the original constructor.
    ):
        super().__init__()
        if int(scale) != scale or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        if padding != 0:
            raise ValueError(f"padding must be 0 (the only value the release uses), got {padding}")
        self.scale = int(scale)
        self.padding = padding
        self.padding_mode = padding_mode
        half = np.linspace(0.5 / self.scale, 1 - 0.5 / self.scale, self.scale)
        taps = np.concatenate([half, half[::-1]])
        self.register_buffer("filter", torch.as_tensor(taps / taps.sum(), dtype=torch.float32))

    def extra_repr(self) -> str:
        return f"scale={self.scale:d}, padding={self.padding:d}"


@persistence.persistent_class
class SpatialBilinearUpsample(LinearResample):
    """Linear x`scale` interpolation in height and width (align_corners=False, zero outside the frame)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        misc.assert_shape(x, [None, None, None, None, None])
        batch_size, channels, num_frames, height, width = x.shape
        x = einops.rearrange(x, "n c t h w -> n (c t) h w")
        x = upfirdn2d.upsample2d(x, self.filter, up=self.scale)  # [N, C*T, H*s, W*s]
        x = einops.rearrange(x, "n (c t) h w -> n c t h w", c=channels)
        misc.assert_shape(x, [batch_size, channels, num_frames, height * self.scale, width * self.scale])
        return x


# ----------------------------------------------------------------------------


@persistence.persistent_class
class FullyConnectedLayer(torch.nn.Module):
    """Equalized-learning-rate dense layer with fused bias and activation."""

    def __init__(
        self,
        in_features: int,  # Number of input features.
        out_features: int,  # Number of output features.
        bias: bool = True,  # Add a learned bias?
        activation: str = "linear",  # Activation name of bias_act ("linear", "lrelu", ...).
        lr_multiplier: float = 1.0,  # Learning-rate multiplier of weight and bias.
        bias_init: float = 0.0,  # Initial value of the effective bias.
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], float(bias_init) / lr_multiplier)) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

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
        return f"in_features={self.in_features:d}, out_features={self.out_features:d}, activation={self.activation:s}"


# ----------------------------------------------------------------------------


@persistence.persistent_class
class Conv2dLayer(torch.nn.Module):
    """Equalized-learning-rate 2-D convolution with optional FIR up/down-sampling, fused bias, activation, clamp."""

    def __init__(
        self,
        in_channels: int,  # Input channels.
        out_channels: int,  # Output channels.
        kernel_size: int,  # Square kernel size.
        bias: bool = True,  # Whether to add a bias.
        activation: str = "linear",  # Activation name of bias_act.
        up: int = 1,  # Integer up-sampling factor.
        down: int = 1,  # Integer down-sampling factor.
        resample_filter: list[float] = (1, 3, 3, 1),  # 1-D resampling filter (made a normalized 2-D buffer).
        conv_clamp: float | None = None,  # Clamp of the output after the activation gain; None = no clamp.
        channels_last: bool = False,  # Memory format hint (no effect on values).
        trainable: bool = True,  # Parameters (True) or fixed buffers (False).
        dropout_p: float = 0.0,  # Dropout probability; only 0 is supported (the release's value).
    ):
        super().__init__()
        if dropout_p != 0:
            raise ValueError(f"dropout_p must be 0 (the only value the release uses), got {dropout_p}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.channels_last = channels_last
        self.dropout_p = dropout_p
        self.register_buffer("resample_filter", upfirdn2d.setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * (kernel_size**2))
        self.act_gain = bias_act.activation_funcs[activation].def_gain

        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size])
        bias_value = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = torch.nn.Parameter(weight)
            self.bias = torch.nn.Parameter(bias_value) if bias_value is not None else None
        else:
            self.register_buffer("weight", weight)
            self.register_buffer("bias", bias_value)

    def forward(self, x: torch.Tensor, gain: float = 1) -> torch.Tensor:
        misc.assert_shape(x, [None, self.in_channels, None, None])
        w = self.weight * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        x = conv2d_resample.conv2d_resample(
            x=x,
            w=w.to(x.dtype),
            f=self.resample_filter,
            up=self.up,
            down=self.down,
            padding=self.padding,
            flip_weight=(self.up == 1),
        )  # [N, O, H * up / down, W * up / down]
        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        x = bias_act.bias_act(x, b, act=self.activation, gain=act_gain, clamp=act_clamp)
        return x

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels:d}, out_channels={self.out_channels:d}, kernel_size={self.kernel_size:d},"
            f" activation={self.activation:s}, up={self.up:d}, down={self.down:d}, conv_clamp={self.conv_clamp}"
        )


# ----------------------------------------------------------------------------


@persistence.persistent_class
class DiscriminatorBlock(torch.nn.Module):
    """Residual block at one resolution: two 3x3 convs (the second halves the size) plus a 1x1 skip."""

    def __init__(
        self,
        in_channels: int,  # Input feature channels; 0 for the first block, which reads the image via fromrgb.
        tmp_channels: int,  # Channels inside the block.
        out_channels: int,  # Output channels.
        resolution: int,  # Input resolution of the block.
        img_channels: int,  # Channels of the image input (frames folded into channels).
        architecture: str = "resnet",  # "resnet" (with skip) or "orig" (without).
        activation: str = "lrelu",  # Activation name of bias_act.
        resample_filter: list[float] = (1, 3, 3, 1),  # 1-D down-sampling filter.
        conv_clamp: float | None = None,  # Clamp of the conv outputs; None = no clamp.
        use_fp16: bool = False,  # Compute in float16 on CUDA.
        fp16_channels_last: bool = False,  # Memory format hint for fp16 (no effect on values).
    ):
        super().__init__()
        if architecture not in ("resnet", "orig"):
            raise ValueError(f"architecture must be 'resnet' or 'orig', got {architecture!r}")
        self.in_channels = in_channels
        self.tmp_channels = tmp_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.register_buffer("resample_filter", upfirdn2d.setup_filter(list(resample_filter)))

        if in_channels == 0:
            self.fromrgb = Conv2dLayer(
                img_channels, tmp_channels, kernel_size=1, activation=activation, conv_clamp=conv_clamp
            )
        self.conv0 = Conv2dLayer(
            tmp_channels, tmp_channels, kernel_size=3, activation=activation, conv_clamp=conv_clamp
        )
        self.conv1 = Conv2dLayer(
            tmp_channels,
            out_channels,
            kernel_size=3,
            activation=activation,
            down=2,
            resample_filter=resample_filter,
            conv_clamp=conv_clamp,
        )
        if architecture == "resnet":
            self.skip = Conv2dLayer(
                tmp_channels, out_channels, kernel_size=1, bias=False, down=2, resample_filter=resample_filter
            )

    def forward(
        self, x: torch.Tensor | None, img: torch.Tensor, force_fp32: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = torch.float16 if (self.use_fp16 and not force_fp32 and img.device.type == "cuda") else torch.float32

        # Input features, or the image through fromrgb in the first block.
        if x is not None:
            misc.assert_shape(x, [None, self.in_channels, self.resolution, self.resolution])
            x = x.to(dtype)
        if self.in_channels == 0:
            misc.assert_shape(img, [None, self.img_channels, self.resolution, self.resolution])
            y = self.fromrgb(img.to(dtype))  # [N, C_tmp, R, R]
            x = x + y if x is not None else y

        # Main branch, plus the skip branch; sqrt(0.5) keeps the variance (the clamps act before this gain).
        if self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))  # [N, C_out, R / 2, R / 2]
            x = self.conv0(x)  # [N, C_tmp, R, R]
            x = self.conv1(x, gain=math.sqrt(0.5))  # [N, C_out, R / 2, R / 2]
            x = y.add_(x)
        else:
            x = self.conv0(x)
            x = self.conv1(x)

        misc.assert_shape(x, [None, self.out_channels, self.resolution // 2, self.resolution // 2])
        assert x.dtype == dtype
        return x, img

    def extra_repr(self) -> str:
        return (
            f"resolution={self.resolution:d}, in_channels={self.in_channels:d}, tmp_channels={self.tmp_channels:d},"
            f" out_channels={self.out_channels:d}, architecture={self.architecture:s}, use_fp16={self.use_fp16}"
        )


# ----------------------------------------------------------------------------


@persistence.persistent_class
class MinibatchStdLayer(torch.nn.Module):
    """Appends the per-group standard deviation of the features as extra constant channels."""

    def __init__(
        self,
        group_size: int,  # Samples per group (capped by the batch size).
        num_channels: int = 1,  # Number of appended channels (feature slices).
    ):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch_size, channels, height, width = x.shape
        group = min(self.group_size, batch_size)
        if batch_size % group != 0:
            raise ValueError(f"batch size {batch_size} must be a multiple of the mbstd group size {group}")
        slices = self.num_channels
        # Sample n belongs to group n mod (N / G).
        y = x.reshape(group, -1, slices, channels // slices, height, width)  # [G, N/G, F, C/F, H, W]
        y = y - y.mean(dim=0)
        y = (y.square().mean(dim=0) + 1e-8).sqrt()  # [N/G, F, C/F, H, W]
        y = y.mean(dim=[2, 3, 4])  # [N/G, F]
        y = y.reshape(-1, slices, 1, 1).repeat(group, 1, height, width)  # [N, F, H, W]
        return torch.cat([x, y], dim=1)  # [N, C + F, H, W]

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels:d}"


# ----------------------------------------------------------------------------


@persistence.persistent_class
class DiscriminatorEpilogue(torch.nn.Module):
    """Final 4x4 stage: optional minibatch-stddev, 3x3 conv, dense layer, dense output logit (always float32)."""

    def __init__(
        self,
        in_channels: int,  # Input feature channels.
        resolution: int,  # Input resolution (4).
        mbstd_group_size: int = 4,  # Minibatch-stddev group size.
        mbstd_num_channels: int = 0,  # Minibatch-stddev channels; 0 disables the layer (as in the release).
        activation: str = "lrelu",  # Activation name of bias_act.
        conv_clamp: float | None = None,  # Clamp of the conv output; None = no clamp.
    ):
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(
            in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation=activation, conv_clamp=conv_clamp
        )
        self.fc = FullyConnectedLayer(in_channels * (resolution**2), in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        misc.assert_shape(x, [None, self.in_channels, self.resolution, self.resolution])
        x = x.to(torch.float32)
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)  # [N, C, 4, 4]
        x = self.fc(x.flatten(1))  # [N, C]; input index c * 16 + h * 4 + w
        x = self.out(x)  # [N, 1]
        return x

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels:d}, resolution={self.resolution:d}"


# ----------------------------------------------------------------------------


@persistence.persistent_class
class VideoDiscriminator(torch.nn.Module):
    """Scores a high-res clip [N, 3, T, H, W] given its low-res clip (at low or high resolution); returns [N, 1]."""

    def __init__(
        self,
        channels: int = 3,  # Channels per frame.
        seq_length: int = 4,  # Frames per clip (the original dataclass default is 8; training uses 4).
        lr_height: int = 36,  # Low-res height (the original default is 32; training uses 36).
        lr_width: int = 64,  # Low-res width (the original default is 32; training uses 64).
        hr_height: int = 144,  # High-res height (the original default is 256; training uses 144).
        hr_width: int = 256,  # High-res width (the original default is 256; training uses 256).
        channels_base: int = 16384,  # Channels at resolution r: min(channels_base // r, channels_max).
        channels_max: int = 512,  # Maximum channels per block.
        num_fp16_res: int = 4,  # Blocks at the highest num_fp16_res resolutions use fp16 on CUDA (min res 8).
        conv_clamp: float | None = 256,  # Clamp of the conv outputs.
        minibatch_std_group_size: int = 4,  # Minibatch-stddev group size.
        minibatch_std_num_channels: int = 0,  # Minibatch-stddev channels; 0 = off (as in the release).
        architecture: str = "resnet",  # Block architecture.
        pool_mode: str = "fully_connected",  # Epilogue pooling; only "fully_connected" exists.
    ):
        super().__init__()
        for name, value in [
            ("channels", channels),
            ("seq_length", seq_length),
            ("lr_height", lr_height),
            ("lr_width", lr_width),
            ("hr_height", hr_height),
            ("hr_width", hr_width),
        ]:
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if pool_mode != "fully_connected":
            raise ValueError(f"pool_mode must be 'fully_connected', got {pool_mode!r}")
        img_resolution = max(hr_height, hr_width)
        resolution_log2 = int(np.log2(img_resolution))
        if 2**resolution_log2 != img_resolution or img_resolution < 8:
            raise ValueError(f"max(hr_height, hr_width) must be a power of two >= 8, got {img_resolution}")
        if hr_width % lr_width != 0 or hr_height % lr_height != 0 or hr_width // lr_width != hr_height // lr_height:
            raise ValueError(
                f"hr size {hr_height}x{hr_width} must be an integer multiple of lr size {lr_height}x{lr_width}"
            )
        self.channels = channels
        self.seq_length = seq_length
        self.lr_height = lr_height
        self.lr_width = lr_width
        self.hr_height = hr_height
        self.hr_width = hr_width
        self.img_resolution = img_resolution
        self.img_channels = 2 * channels * seq_length
        self.num_fp16_res = num_fp16_res

        # Residual blocks from the full square resolution down to 8, then the 4x4 epilogue.
        self.block_resolutions = [2**i for i in range(resolution_log2, 2, -1)]
        channels_dict = {res: min(channels_base // res, channels_max) for res in self.block_resolutions + [4]}
        fp16_resolution = max(2 ** (resolution_log2 + 1 - num_fp16_res), 8)
        for res in self.block_resolutions:
            block = DiscriminatorBlock(
                in_channels=channels_dict[res] if res < img_resolution else 0,
                tmp_channels=channels_dict[res],
                out_channels=channels_dict[res // 2],
                resolution=res,
                img_channels=self.img_channels,
                architecture=architecture,
                conv_clamp=conv_clamp,
                use_fp16=res >= fp16_resolution,
            )
            setattr(self, f"b{res}", block)
        self.b4 = DiscriminatorEpilogue(
            channels_dict[4],
            resolution=4,
            mbstd_group_size=minibatch_std_group_size,
            mbstd_num_channels=minibatch_std_num_channels,
            conv_clamp=conv_clamp,
        )
        self.upsample = SpatialBilinearUpsample(scale=hr_width // lr_width)

    def forward(self, lr_video: torch.Tensor, hr_video: torch.Tensor, force_fp32: bool = False) -> torch.Tensor:
        batch_size = hr_video.shape[0]
        for name, video in [("lr_video", lr_video), ("hr_video", hr_video)]:
            if video.ndim != 5 or video.shape[0] != batch_size or video.shape[1:3] != (self.channels, self.seq_length):
                raise ValueError(
                    f"{name} must be [{batch_size}, {self.channels}, {self.seq_length}, H, W], got {list(video.shape)}"
                )
        misc.assert_shape(hr_video, [batch_size, self.channels, self.seq_length, self.hr_height, self.hr_width])

        # Bring the conditioning to high resolution unless it already is.
        if lr_video.shape[-2:] == (self.lr_height, self.lr_width):
            lr_video = self.upsample(lr_video.to(torch.float32))  # [N, C, T, H, W]
        elif lr_video.shape[-2:] != (self.hr_height, self.hr_width):
            raise ValueError(
                f"lr_video must be {self.lr_height}x{self.lr_width} or {self.hr_height}x{self.hr_width},"
                f" got {lr_video.shape[-2]}x{lr_video.shape[-1]}"
            )

        # Low-res channels first, zero-pad to a square, fold time into channels (index c * T + t).
        x = torch.cat([lr_video.to(torch.float32), hr_video.to(torch.float32)], dim=1)  # [N, 2C, T, H, W]
        pad_y = self.img_resolution - self.hr_height
        pad_x = self.img_resolution - self.hr_width
        x = F.pad(x, [pad_x // 2, pad_x - pad_x // 2, pad_y // 2, pad_y - pad_y // 2])  # [N, 2C, T, R, R]
        img = einops.rearrange(x, "n c t h w -> n (c t) h w")

        # Blocks and epilogue.
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f"b{res}")(x, img, force_fp32=force_fp32)
        x = self.b4(x)  # [N, 1]

        misc.assert_shape(x, [batch_size, 1])
        assert x.dtype == torch.float32
        return x

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels:d}, seq_length={self.seq_length:d}, lr={self.lr_width:d}x{self.lr_height:d},"
            f" hr={self.hr_width:d}x{self.hr_height:d}, num_fp16_res={self.num_fp16_res:d}"
        )


# ----------------------------------------------------------------------------

# A small configuration for CPU tests, matching generator_sres.TINY_KWARGS (lr 9x16, hr 36x64, 4 frames): blocks
# 64 -> 8 with 4 to 16 channels.
TINY_KWARGS = dict(
    channels=3,
    seq_length=4,
    lr_height=9,
    lr_width=16,
    hr_height=36,
    hr_width=64,
    channels_base=256,
    channels_max=16,
)

# ----------------------------------------------------------------------------
