"""Low-resolution video discriminator of LongVideoGAN (Brooks et al., NeurIPS 2022, Sec. 3.1).

A residual 3-D convolutional discriminator that sees a whole long clip (128 frames at 36x64 in the paper): four
blocks halve space (and, after the first, time), then a 1-D convolutional head over time and two fully connected
layers give one logit per video.

Parameter and buffer names, shapes and dtypes follow the original release, so its state dicts load with
`load_state_dict(strict=True)`. This module is embedded in pickles: it imports only torch, numpy, einops and
torch_utils.

Shape letters: N batch, C channels, T frames, H height, W width.
"""

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from torch_utils import misc, persistence
from torch_utils.ops import bias_act, upfirdn2d

# A tiny configuration for CPU tests and the `--preset tiny` of the training script (use it with seq_length=16
# and max_edge=64): the paper's block structure with a few channels.
TINY_KWARGS = dict(
    block_channels=(4, 4, 8, 8, 16),
    epilogue_kwargs=dict(channels=16),
)

# Spatial size of the features entering the epilogue.
_EPILOGUE_RES = 4

# ----------------------------------------------------------------------------
# Layers.


@persistence.persistent_class
class Downsample3d(torch.nn.Module):
    def __init__(
        self,
        spatial_down: bool,  # Halve height and width?
        temporal_down: bool,  # Halve time?
        downsample_filter: Sequence[float] = (1, 3, 3, 1),  # 1-D FIR taps, normalised to sum 1.
    ):
        super().__init__()
        self.spatial_down = spatial_down
        self.temporal_down = temporal_down
        f = torch.as_tensor(downsample_filter, dtype=torch.float32)
        self.register_buffer("_downsample_filter", f / f.sum())  # [K]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, C, T, H, W = x.shape
        f = self._downsample_filter

        # Space: frames folded into channels, separable FIR, keep every second row and column.
        if self.spatial_down:
            x = x.reshape(N, C * T, H, W)  # [N, C * T, H, W]
            x = upfirdn2d.downsample2d(x, f, down=2)  # [N, C * T, H / 2, W / 2]
            H, W = x.shape[2], x.shape[3]
            x = x.reshape(N, C, T, H, W)  # [N, C, T, H, W]

        # Time: the vertical axis of a [T, H * W] image, filtered by a column filter.
        if self.temporal_down:
            x = x.reshape(N, C, T, H * W)  # [N, C, T, H * W]
            x = upfirdn2d.downsample2d(x, f.unsqueeze(1), down=[1, 2])  # [N, C, T / 2, H * W]
            T = x.shape[2]
            x = x.reshape(N, C, T, H, W)  # [N, C, T, H, W]
        return x

    def extra_repr(self) -> str:
        return f"spatial_down={self.spatial_down}, temporal_down={self.temporal_down}"


@persistence.persistent_class
class Conv3dLayer(torch.nn.Module):
    def __init__(
        self,
        in_channels: int,  # Input channels.
        out_channels: int,  # Output channels.
        spatial_ksize: int,  # Kernel size in height and width.
        temporal_ksize: int,  # Kernel size in time.
        bias: bool = True,  # Add a learned bias (parameter `_bias`)?
        spatial_down: bool = False,  # Halve height and width after the convolution?
        temporal_down: bool = False,  # Halve time after the convolution?
        activation: str = "linear",  # Activation name of bias_act.
        conv_clamp: float | None = None,  # Clamp the output to +-conv_clamp; None = no clamp.
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.spatial_ksize = spatial_ksize
        self.temporal_ksize = temporal_ksize
        self.spatial_down = spatial_down
        self.temporal_down = temporal_down
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.padding = (temporal_ksize // 2, spatial_ksize // 2, spatial_ksize // 2)
        self.weight_gain = 1 / np.sqrt(in_channels * temporal_ksize * spatial_ksize**2)
        self.weight = torch.nn.Parameter(
            torch.randn([out_channels, in_channels, temporal_ksize, spatial_ksize, spatial_ksize])
        )
        self._bias = torch.nn.Parameter(torch.zeros([out_channels])) if bias else None
        self.downsample = Downsample3d(spatial_down, temporal_down) if spatial_down or temporal_down else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        misc.assert_shape(x, [None, self.in_channels, None, None, None])
        w = (self.weight * self.weight_gain).to(x.dtype)
        x = F.conv3d(x, w, padding=self.padding)  # [N, Co, T, H, W]
        if self.downsample is not None:
            x = self.downsample(x)
        b = self._bias.to(x.dtype) if self._bias is not None else None
        return bias_act.bias_act(x, b, act=self.activation, clamp=self.conv_clamp)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"kernel=({self.temporal_ksize}, {self.spatial_ksize}, {self.spatial_ksize}), "
            f"activation={self.activation}, conv_clamp={self.conv_clamp}"
        )


@persistence.persistent_class
class Conv1dLayer(torch.nn.Module):
    def __init__(
        self,
        in_channels: int,  # Input channels.
        out_channels: int,  # Output channels.
        ksize: int,  # Kernel size in time ("same" zero padding).
        bias: bool = True,  # Add a learned bias (parameter `_bias`)?
        activation: str = "linear",  # Activation name of bias_act (no clamp).
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.ksize = ksize
        self.activation = activation
        self.weight_gain = 1 / np.sqrt(in_channels * ksize)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, ksize]))
        self._bias = torch.nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        misc.assert_shape(x, [None, self.in_channels, None])
        w = (self.weight * self.weight_gain).to(x.dtype)
        x = F.conv1d(x, w, padding=self.ksize // 2)  # [N, Co, T]
        b = self._bias.to(x.dtype) if self._bias is not None else None
        return bias_act.bias_act(x, b, act=self.activation)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, ksize={self.ksize}, "
            f"activation={self.activation}"
        )


@persistence.persistent_class
class FullyConnectedLayer(torch.nn.Module):
    def __init__(
        self,
        in_features: int,  # Number of input features.
        out_features: int,  # Number of output features.
        bias: bool = True,  # Add a learned bias?
        activation: str = "linear",  # Activation name of bias_act ("linear", "lrelu", ...); no clamp.
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight_gain = 1 / np.sqrt(in_features)
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]))
        self.bias = torch.nn.Parameter(torch.zeros([out_features])) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        misc.assert_shape(x, [None, self.in_features])
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())  # [N, out]
        x = x.matmul(w.t())  # [N, out]
        return bias_act.bias_act(x, b, act=self.activation)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


# ----------------------------------------------------------------------------
# Blocks.


@persistence.persistent_class
class DiscriminatorBlock(torch.nn.Module):
    def __init__(
        self,
        in_channels: int,  # Channels of the residual features.
        out_channels: int,  # Output channels.
        vid_channels: int = 0,  # >0: the block takes the video itself and maps it with a 1x1x1 conv_vid.
        spatial_ksize: int = 3,  # Kernel size in height and width of conv_0.
        temporal_ksize: int = 5,  # Kernel size in time of conv_0.
        spatial_ksize_1: int | None = None,  # Kernel size in space of conv_1; None = spatial_ksize.
        temporal_ksize_1: int | None = None,  # Kernel size in time of conv_1; None = temporal_ksize.
        spatial_down: bool = True,  # Halve height and width?
        temporal_down: bool = True,  # Halve time?
        conv_clamp: float = 256,  # Clamp of every layer.
        use_fp16: bool = False,  # Compute in fp16 (CUDA only)?
    ):
        super().__init__()
        spatial_ksize_1 = spatial_ksize if spatial_ksize_1 is None else spatial_ksize_1
        temporal_ksize_1 = temporal_ksize if temporal_ksize_1 is None else temporal_ksize_1
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.vid_channels = vid_channels
        self.spatial_down = spatial_down
        self.temporal_down = temporal_down
        self.conv_clamp = conv_clamp
        self.use_fp16 = use_fp16
        down_kwargs = dict(spatial_down=spatial_down, temporal_down=temporal_down)

        self.conv_vid = None
        if vid_channels > 0:
            self.conv_vid = Conv3dLayer(vid_channels, in_channels, 1, 1, activation="lrelu", conv_clamp=conv_clamp)
        self.conv_0 = Conv3dLayer(
            in_channels, in_channels, spatial_ksize, temporal_ksize, activation="lrelu", conv_clamp=conv_clamp
        )
        self.conv_1 = Conv3dLayer(
            in_channels,
            out_channels,
            spatial_ksize_1,
            temporal_ksize_1,
            activation="lrelu",
            conv_clamp=conv_clamp,
            **down_kwargs,
        )
        self.conv_skip = Conv3dLayer(in_channels, out_channels, 1, 1, bias=False, conv_clamp=conv_clamp, **down_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        in_channels = self.vid_channels if self.conv_vid is not None else self.in_channels
        misc.assert_shape(x, [None, in_channels, None, None, None])
        dtype = torch.float16 if self.use_fp16 and x.device.type == "cuda" else torch.float32
        x = x.to(dtype)
        if self.conv_vid is not None:
            x = self.conv_vid(x)

        # Residual block; conv_0 and the skip both read x.
        y = self.conv_skip(x)
        x = self.conv_1(self.conv_0(x))
        x = (x + y) * np.sqrt(0.5)  # [N, Co, T', H', W']

        misc.assert_shape(x, [None, self.out_channels, None, None, None])
        assert x.dtype == dtype
        return x

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, vid_channels={self.vid_channels}, "
            f"spatial_down={self.spatial_down}, temporal_down={self.temporal_down}, use_fp16={self.use_fp16}"
        )


@persistence.persistent_class
class VideoMinibatchStdLayer(torch.nn.Module):
    """Appends, per frame, the standard deviation of the features across a group of videos as extra channels.

    Not in the original release (its low-res discriminator has no minibatch-stddev layer); an option that lets
    the discriminator see how much the videos of a batch differ, against mode collapse. Sample n belongs to group
    n mod (N / G); the population std (+1e-8 inside the square root) is averaged over the C/F channels of each of
    F channel slices and over height and width, but kept per frame, so the appended maps vary in time only.
    """

    def __init__(
        self,
        group_size: int,  # Videos per group (capped by the batch size).
        num_channels: int = 1,  # Number of appended channels (feature slices).
    ):
        super().__init__()
        if group_size < 1 or num_channels < 1:
            raise ValueError(f"group_size and num_channels must be >= 1, got {group_size} and {num_channels}")
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, C, T, H, W = x.shape
        group = min(self.group_size, N)
        if N % group != 0:
            raise ValueError(f"batch size {N} must be a multiple of the mbstd group size {group}")
        if C % self.num_channels != 0:
            raise ValueError(f"{C} feature channels do not split into {self.num_channels} mbstd slices")
        y = x.reshape(group, N // group, self.num_channels, C // self.num_channels, T, H, W)
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt()  # [N/G, F, C/F, T, H, W]
        y = y.mean(dim=[2, 4, 5])  # [N/G, F, T]
        y = y[..., None, None].repeat(group, 1, 1, H, W)  # [N, F, T, H, W]
        return torch.cat([x, y], dim=1)  # [N, C + F, T, H, W]

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"


# ----------------------------------------------------------------------------


@persistence.persistent_class
class DiscriminatorEpilogue(torch.nn.Module):
    def __init__(
        self,
        in_res: int = 4,  # Height and width of the input features.
        in_seq_length: int = 16,  # Frames of the input features.
        in_channels: int = 512,  # Channels of the input features.
        channels: int = 1024,  # Width of the 1-D convolutions and hidden fully connected layers.
        temporal_ksize: int = 3,  # Kernel size of conv1d_1 onwards (conv1d_0 is 1x1).
        num_conv1d_layers: int = 4,  # Number of 1-D convolutions.
        num_linear_layers: int = 2,  # Number of fully connected layers (the last one gives the logit).
        conv_clamp: float = 256,  # Stored for compatibility; the epilogue layers are not clamped.
        num_downsamples: int = 0,  # Temporal /2 down-sampling in the 1-D convolutions; only 0 is implemented.
        mbstd_group_size: int = 4,  # Minibatch-stddev group size (our addition; see VideoMinibatchStdLayer).
        mbstd_num_channels: int = 0,  # Minibatch-stddev channels; 0 disables the layer (as in the release).
    ):
        super().__init__()
        if num_downsamples != 0:
            raise ValueError(f"num_downsamples must be 0 (the only value the release uses), got {num_downsamples}")
        if mbstd_num_channels < 0:
            raise ValueError(f"mbstd_num_channels must be >= 0 (0 = off), got {mbstd_num_channels}")
        if num_conv1d_layers < 1 or num_linear_layers < 1:
            raise ValueError(
                f"num_conv1d_layers and num_linear_layers must be >= 1, got {num_conv1d_layers} and {num_linear_layers}"
            )
        self.in_res = in_res
        self.in_seq_length = in_seq_length
        self.in_channels = in_channels
        self.channels = channels
        self.temporal_ksize = temporal_ksize
        self.num_conv1d_layers = num_conv1d_layers
        self.num_linear_layers = num_linear_layers
        self.conv_clamp = conv_clamp
        self.num_downsamples = num_downsamples
        self.mbstd_group_size = mbstd_group_size
        self.mbstd_num_channels = mbstd_num_channels
        self.mbstd = VideoMinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None

        for idx in range(num_conv1d_layers):
            in_ch = (in_channels + mbstd_num_channels) * in_res**2 if idx == 0 else channels
            ksize = 1 if idx == 0 else temporal_ksize
            setattr(self, f"conv1d_{idx}", Conv1dLayer(in_ch, channels, ksize, activation="lrelu"))
        for idx in range(num_linear_layers):
            is_last = idx == num_linear_layers - 1
            in_features = channels * in_seq_length if idx == 0 else channels
            layer = FullyConnectedLayer(
                in_features, 1 if is_last else channels, activation="linear" if is_last else "lrelu"
            )
            setattr(self, f"linear_{idx}", layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N = x.shape[0]
        misc.assert_shape(x, [N, self.in_channels, self.in_seq_length, self.in_res, self.in_res])
        x = x.float()
        if self.mbstd is not None:
            x = self.mbstd(x)  # [N, C + F, T, H, W]
        x = rearrange(x, "n c t h w -> n (c h w) t")  # [N, C * H * W, T]
        for idx in range(self.num_conv1d_layers):
            x = getattr(self, f"conv1d_{idx}")(x)  # [N, C', T]
        x = rearrange(x, "n c t -> n (c t)")  # [N, C' * T], channel-major
        for idx in range(self.num_linear_layers):
            x = getattr(self, f"linear_{idx}")(x)
        misc.assert_shape(x, [N, 1])
        return x

    def extra_repr(self) -> str:
        return (
            f"in_res={self.in_res}, in_seq_length={self.in_seq_length}, in_channels={self.in_channels}, "
            f"channels={self.channels}, mbstd_num_channels={self.mbstd_num_channels}"
        )


# ----------------------------------------------------------------------------
# The low-res video discriminator.


@persistence.persistent_class
class VideoDiscriminator(torch.nn.Module):
    """Video discriminator for clips of exactly `seq_length` frames of at most `max_edge` x `max_edge` pixels.

    Block 0 works per frame (temporal kernel 1); block i >= 1 halves time iff seq_length >= 2^(i+1), so the
    epilogue sees at least 2 frames. The halvings must be exact: seq_length must be divisible by 2^k, k the
    number of halving blocks. With the paper's four blocks, seq_length may be 1, 2, 3, 4, 6, 8, 12 or any multiple
    of 8 from 16 on (128 in training: epilogue length 16; 16 in the tiny preset: length 2).
    Spatially, the last blocks halve the padded square until it is 4x4 (block 0 only if max_edge > 32), so
    max_edge must be 4 * 2^j with j <= number of blocks (64 in training).
    """

    def __init__(
        self,
        seq_length: int,  # Frames per clip; fixes the epilogue length (see the class docstring).
        max_edge: int,  # Frames are zero-padded to a max_edge x max_edge square (max(H, W) of the data).
        channels: int = 3,  # Video channels.
        channels_base: int = 2048,  # Unused (kept for compatibility; widths come from block_channels).
        channels_max: int = 512,  # Unused (kept for compatibility).
        spatial_ksize: int = 3,  # Kernel size in height and width of the block convolutions.
        temporal_ksize: int = 5,  # Kernel size in time of the block convolutions (block 0 uses 1).
        spatial_ksize_1: int | None = None,  # Spatial kernel of every conv_1; None = spatial_ksize.
        temporal_ksize_1: int | None = None,  # Temporal kernel of every conv_1; None = temporal_ksize.
        conv_clamp: float = 256,  # Clamp of every block layer.
        num_fp16_res: int = 0,  # Block i (0 = highest resolution) runs in fp16 on CUDA iff num_fp16_res > i.
        epilogue_kwargs: dict | None = None,  # Extra DiscriminatorEpilogue arguments (e.g. channels).
        block_channels: Sequence[int] = (32, 64, 128, 256, 512),  # conv_vid output, then the output of each block.
    ):
        super().__init__()
        epilogue_kwargs = dict(epilogue_kwargs or {})
        for key in ("in_res", "in_seq_length", "in_channels"):
            if key in epilogue_kwargs:
                raise ValueError(f"epilogue_kwargs must not set {key!r}; it is derived from the input size")
        if isinstance(seq_length, bool) or not isinstance(seq_length, (int, np.integer)) or seq_length < 1:
            raise ValueError(f"seq_length must be a positive integer, got {seq_length!r}")
        if len(block_channels) < 2:
            raise ValueError(f"block_channels must have at least 2 entries, got {block_channels}")
        num_blocks = len(block_channels) - 1
        self.seq_length = seq_length
        self.max_edge = max_edge
        self.channels = channels
        self.channels_base = channels_base
        self.channels_max = channels_max
        self.conv_clamp = conv_clamp
        self.num_fp16_res = num_fp16_res
        self.epilogue_kwargs = epilogue_kwargs
        self.block_channels = tuple(block_channels)

        # Which blocks halve space (the last ones, down to 4x4) and time (all but block 0, while >= 2 frames remain).
        spatial_down = [max_edge > _EPILOGUE_RES * 2 ** (num_blocks - 1 - i) for i in range(num_blocks)]
        temporal_down = [i > 0 and seq_length >= 2 ** (i + 1) for i in range(num_blocks)]
        self.spatail_scale = 2 ** sum(spatial_down)  # (sic) attribute name of the original.
        self.temporal_scale = 2 ** sum(temporal_down)
        if max_edge != _EPILOGUE_RES * self.spatail_scale:
            raise ValueError(f"max_edge must be 4 * 2^j with j <= {num_blocks} (e.g. 64), got {max_edge}")
        if seq_length % self.temporal_scale != 0:
            raise ValueError(
                f"seq_length must be divisible by {self.temporal_scale} (the blocks halve time "
                f"{sum(temporal_down)} times), got {seq_length}"
            )

        self.blocks = torch.nn.ModuleList()
        for i in range(num_blocks):
            self.blocks.append(
                DiscriminatorBlock(
                    block_channels[i],
                    block_channels[i + 1],
                    vid_channels=channels if i == 0 else 0,
                    spatial_ksize=spatial_ksize,
                    temporal_ksize=1 if i == 0 else temporal_ksize,
                    spatial_ksize_1=spatial_ksize_1,
                    temporal_ksize_1=1 if i == 0 else temporal_ksize_1,
                    spatial_down=spatial_down[i],
                    temporal_down=temporal_down[i],
                    conv_clamp=conv_clamp,
                    use_fp16=num_fp16_res > i,
                )
            )
        self.epilogue = DiscriminatorEpilogue(
            in_res=_EPILOGUE_RES,
            in_seq_length=seq_length // self.temporal_scale,
            in_channels=block_channels[-1],
            **epilogue_kwargs,
        )

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        N, _, _, H, W = video.shape
        misc.assert_shape(video, [N, self.channels, self.seq_length, H, W])
        if H > self.max_edge or W > self.max_edge:
            raise ValueError(f"video frames must fit in max_edge={self.max_edge}, got {H}x{W}")

        # Zero-pad to a square (e.g. 14 rows above and below a 36x64 frame).
        pad_h, pad_w = self.max_edge - H, self.max_edge - W
        x = F.pad(video, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])  # [N, C, T, E, E]

        for block in self.blocks:
            x = block(x)
        x = self.epilogue(x)  # [N, 1]

        misc.assert_shape(x, [N, 1])
        assert x.dtype == torch.float32
        return x

    def extra_repr(self) -> str:
        return (
            f"seq_length={self.seq_length}, max_edge={self.max_edge}, block_channels={self.block_channels}, "
            f"num_fp16_res={self.num_fp16_res}"
        )
