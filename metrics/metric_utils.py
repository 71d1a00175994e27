"""Shared machinery of the LongVideoGAN metrics (Brooks et al. 2022, the metrics of its evaluation): options,
feature statistics, the real-data statistics cache, and the sampling of real and generated clips.

Protocol (the original release's sampling of real and generated clips), with these deliberate differences from
the original release:

* Every random choice is seeded (``MetricOptions.seed``): real windows are a function of (seed, position), so real
  statistics do not depend on the number of ranks, workers or the batch size; generator noise comes from
  ``torch.Generator`` objects seeded per rank and run. The original drew from unseeded global RNGs.
* The real-data cache is keyed by the dataset's content (ZIP names and the CRC32 and size of every entry), the
  detector's SHA-256 and the options, not by the dataset path (the original pickled the dataset object, path
  included).
* The crop of generated clips loops over the samples actually generated, so metrics with a batch above 4 work
  (KID, IS, video IS; the original failed with an index error), and with real conditioning the low-res clip length
  includes the subsampling factor, so ``fvd2048_128f_subsample8f`` works during super-resolution training (the
  original failed its frame-count check).
* ``num_gen`` / ``max_real`` override the paper counts for quick runs (the defaults keep the paper protocol).
"""

import copy
import glob
import hashlib
import os
import pickle
import sys
import zipfile
from typing import Any

import numpy as np
import torch

import dnnlib
from metrics import detectors as detectors_lib
from metrics.i3d import _NumpyOnlyUnpickler

CACHE_PROTOCOL = "lvg-metrics-v1"  # Bump when the sampling protocol changes, so old cache files are not reused.

# ----------------------------------------------------------------------------

# How a cap (max_real, or num_gen for real conditioning frames) picks frames of an image metric: "first" takes the
# dataset's first N frames (the original's rule; with a small cap that is one or a few clips), "spread" takes N frames
# evenly spaced over the whole dataset (our addition, for quick runs whose real set should cover every clip).
REAL_SUBSETS = ("first", "spread")


class MetricOptions:
    """Everything a metric needs: networks, datasets, device/ranks, detector choice and run-size overrides.

    Example (low-res generator alone, 16 generated and at most 16 real clips, packaged detectors):

        opts = MetricOptions(G=G, dataset_kwargs=dict(dataset_dir="data/horseback", height=36, width=64),
                             num_gen=16, max_real=16, detector_source="packaged")
        fvd = metric_main.calc_metric("fvd2048_16f", **opts.__dict__)
    """

    def __init__(
        self,
        G: torch.nn.Module | None = None,  # Generator: lres G (mode 1/2's last stage is sres G when lr_G is set).
        lr_G: torch.nn.Module | None = None,  # Low-res generator feeding a super-res G (mode 2).
        G_kwargs: dict | None = None,  # Extra keyword arguments for every G call.
        dataset_kwargs: dict | None = None,  # Real data: dict(dataset_dir=, height=, width=).
        cond_dataset_kwargs: dict | None = None,  # Real low-res conditioning for a super-res G (mode 3).
        loader_kwargs: dict | None = None,  # DataLoader options; None = 2 workers, prefetch 2.
        num_gpus: int | None = None,  # World size; None = from torch.distributed (1 without a process group).
        rank: int | None = None,  # This process's rank; None = from torch.distributed (0 without one).
        device: torch.device | None = None,  # Device of G and the detectors; None = G's device, else CPU.
        progress: Any = None,  # Unused hook kept for the original's signature.
        cache: bool = True,  # Load/save real-data statistics in the dnnlib cache.
        gen_dataset_kwargs: dict | None = None,  # With generator_as_dataset: a dataset that stands in for G.
        generator_as_dataset: bool = False,  # Score gen_dataset_kwargs instead of G (never cached).
        normalize_weighting: bool = True,  # Image metrics: weight each frame 1/frames-of-its-clip (clips equal).
        single_sample_per_video: bool = False,  # Video metrics: one window per clip (no repeats).
        verbose: bool = False,  # Print progress (rank 0 only).
        show_progress: bool = False,  # Progress bars and the detectors used, without the rest of verbose (rank 0).
        replace_cache: bool = False,  # Recompute real statistics and overwrite the cache file.
        detector_source: str = "auto",  # "auto", "official" or "packaged" (see metrics/detectors.py).
        detector_dir: str | None = None,  # Directory with the original detector files; None = $LVG_DETECTOR_DIR.
        detector_download: bool | None = None,  # Try to download original detectors; None = unless offline env.
        num_gen: int | None = None,  # Override of the generated sample count (None = the metric's, e.g. 2048).
        max_real: int | None = None,  # Cap on real samples (None = the metric's).
        batch_gen: int | None = None,  # Samples per generator call; None = min(batch_size, 4).
        seed: int = 0,  # Seed of real-window sampling and generator noise.
        real_subset: str = "first",  # Capped image items: "first" N (the original) or N "spread" over the dataset.
        **unused,  # Tolerate extra keys of the original's options.
    ):
        self.G = G
        self.lr_G = lr_G
        self.G_kwargs = dnnlib.EasyDict(G_kwargs or {})
        self.dataset_kwargs = dnnlib.EasyDict(dataset_kwargs or {})
        self.cond_dataset_kwargs = dnnlib.EasyDict(cond_dataset_kwargs) if cond_dataset_kwargs is not None else None
        self.loader_kwargs = loader_kwargs
        if num_gpus is None or rank is None:
            dist = torch.distributed.is_available() and torch.distributed.is_initialized()
            num_gpus = torch.distributed.get_world_size() if dist else 1
            rank = torch.distributed.get_rank() if dist else 0
        if not 0 <= rank < num_gpus:
            raise ValueError(f"rank must be in [0, num_gpus={num_gpus}), got {rank}")
        self.num_gpus = num_gpus
        self.rank = rank
        if device is None:
            param = next(G.parameters(), None) if isinstance(G, torch.nn.Module) else None
            device = param.device if param is not None else torch.device("cpu")
        self.device = torch.device(device)
        self.progress = progress
        self.cache = cache
        self.gen_dataset_kwargs = dnnlib.EasyDict(gen_dataset_kwargs or {})
        self.generator_as_dataset = generator_as_dataset
        self.normalize_weighting = normalize_weighting
        self.single_sample_per_video = single_sample_per_video
        self.verbose = verbose and rank == 0
        self.show_progress = (show_progress or verbose) and rank == 0
        self.replace_cache = replace_cache
        if detector_source not in detectors_lib.SOURCES:
            raise ValueError(f"detector_source must be one of {detectors_lib.SOURCES}, got {detector_source!r}")
        self.detector_source = detector_source
        self.detector_dir = detector_dir
        self.detector_download = detector_download
        for name, value in (("num_gen", num_gen), ("max_real", max_real), ("batch_gen", batch_gen)):
            if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        self.num_gen = num_gen
        self.max_real = max_real
        self.batch_gen = batch_gen
        self.seed = int(seed)
        if real_subset not in REAL_SUBSETS:
            raise ValueError(f"real_subset must be one of {REAL_SUBSETS}, got {real_subset!r}")
        self.real_subset = real_subset
        self.run_index = 0  # Repetition index, set by calc_metric; changes the generator seed.
        self.detectors_used: dict[str, dict] = {}  # kind -> detector record, filled as detectors are loaded.


def get_detector(opts: MetricOptions, kind: str, need_classifier: bool = False) -> detectors_lib.FeatureDetector:
    """The detector for `kind` under the options' source/dir/download settings; records what was used."""
    detector = detectors_lib.get_detector(
        kind,
        opts.device,
        source=opts.detector_source,
        detector_dir=opts.detector_dir,
        download=opts.detector_download,
        need_classifier=need_classifier,
    )
    if opts.show_progress and kind not in opts.detectors_used:
        print(detectors_lib.describe_detector(detector), file=sys.stderr, flush=True)
    opts.detectors_used[kind] = detector.info
    return detector


# ----------------------------------------------------------------------------
# Small helpers.


def derive_seed(*parts) -> int:
    """A 63-bit seed from any tuple of ints/strings (stable across processes and Python versions)."""
    digest = hashlib.blake2b(repr(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def to_uint8(video: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> uint8 with the release's mapping (x * 127.5 + 128, clamped, truncated: rounds to nearest).

    For real frames decoded as 2v/255 - 1 this returns v exactly.
    """
    return (video.to(torch.float32) * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def run_detector(detector, video_uint8: torch.Tensor, image: bool, detector_kwargs: dict) -> torch.Tensor:
    """Features of uint8 videos [N, C, T, H, W]: per clip (video detectors) or per frame (image detectors)."""
    assert video_uint8.ndim == 5 and video_uint8.dtype == torch.uint8, (video_uint8.shape, video_uint8.dtype)
    if video_uint8.shape[1] == 1:
        video_uint8 = video_uint8.repeat(1, 3, 1, 1, 1)  # One-channel input is repeated to RGB, as in the original.
    if image:
        n, c, t, h, w = video_uint8.shape
        video_uint8 = video_uint8.permute(0, 2, 1, 3, 4).reshape(n * t, c, h, w)  # [N*T, C, H, W]
    features = detector(video_uint8, **detector_kwargs)
    assert features.ndim == 2 and features.shape[0] == video_uint8.shape[0], features.shape
    return features.to(torch.float32)


# ----------------------------------------------------------------------------


class FeatureStats:
    """Running statistics of detector features: all rows and/or a float64 weighted mean and covariance.

    With per-row weights w: mean = Σ w·x / Σ w and cov = Σ x (w·x)ᵀ / Σ w − mean·meanᵀ. Stops accepting rows at
    max_items. Rows from several ranks are gathered and interleaved (rank 0's first row, rank 1's first row, ...).

    Example:
        stats = FeatureStats(capture_mean_cov=True)
        stats.append(np.random.randn(100, 8), weights=np.full(100, 0.5))
        mean, cov = stats.get_mean_cov()
    """

    def __init__(self, capture_all: bool = False, capture_mean_cov: bool = False, max_items: int | None = None):
        self.capture_all = capture_all
        self.capture_mean_cov = capture_mean_cov
        self.max_items = max_items
        self.num_items = 0
        self.num_features = None
        self.all_features: list[np.ndarray] | None = None
        self.raw_mean: np.ndarray | None = None
        self.raw_cov: np.ndarray | None = None
        self.weight = 0.0

    def set_num_features(self, num_features: int) -> None:
        if self.num_features is not None:
            if num_features != self.num_features:
                raise ValueError(f"features must have {self.num_features} columns, got {num_features}")
            return
        self.num_features = num_features
        self.all_features = []
        self.raw_mean = np.zeros([num_features], dtype=np.float64)
        self.raw_cov = np.zeros([num_features, num_features], dtype=np.float64)

    def is_full(self) -> bool:
        return self.max_items is not None and self.num_items >= self.max_items

    def append(self, x: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Add rows x [N, F] with optional weights [N] (default 1); rows beyond max_items are dropped."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"features must be 2-D [N, F], got shape {x.shape}")
        if weights is not None:
            weights = np.asarray(weights, dtype=np.float64).reshape(-1)
            if weights.shape[0] != x.shape[0]:
                raise ValueError(f"weights must have one entry per row ({x.shape[0]}), got {weights.shape[0]}")
        if self.max_items is not None and self.num_items + x.shape[0] > self.max_items:
            if self.num_items >= self.max_items:
                return
            keep = self.max_items - self.num_items
            x = x[:keep]
            weights = weights[:keep] if weights is not None else None
        self.set_num_features(x.shape[1])
        self.num_items += x.shape[0]
        if self.capture_all:
            self.all_features.append(x)
        if self.capture_mean_cov:
            x64 = x.astype(np.float64)
            wx = x64 if weights is None else x64 * weights[:, None]
            self.raw_mean += wx.sum(axis=0)
            self.raw_cov += x64.T @ wx
            self.weight += float(x.shape[0] if weights is None else weights.sum())

    def append_torch(
        self, x: torch.Tensor, weights: torch.Tensor | None = None, num_gpus: int = 1, rank: int = 0
    ) -> None:
        """Gather rows (and weights) from all ranks, interleaved by rank, then append. All ranks must call this
        with the same number of rows."""
        assert x.ndim == 2 and 0 <= rank < num_gpus, (x.shape, rank, num_gpus)
        if weights is not None:
            assert weights.shape == (x.shape[0],), weights.shape
        if num_gpus > 1:
            x = _all_gather_interleaved(x.to(torch.float32))
            if weights is not None:
                weights = _all_gather_interleaved(weights.to(torch.float64)[:, None].to(x.device))[:, 0]
        self.append(x.detach().cpu().numpy(), None if weights is None else weights.detach().cpu().numpy())

    def get_all(self) -> np.ndarray:
        if not self.capture_all:
            raise ValueError("get_all needs capture_all=True")
        if not self.all_features:
            raise ValueError("no features were captured")
        return np.concatenate(self.all_features, axis=0)

    def get_all_torch(self) -> torch.Tensor:
        return torch.from_numpy(self.get_all())

    def get_mean_cov(self) -> tuple:
        """(mean [F], cov [F, F]) in float64."""
        if not self.capture_mean_cov:
            raise ValueError("get_mean_cov needs capture_mean_cov=True")
        if self.num_items == 0 or self.weight <= 0:
            raise ValueError(f"no features (or zero total weight) to compute statistics from: {self.num_items} items")
        mean = self.raw_mean / self.weight
        cov = self.raw_cov / self.weight - np.outer(mean, mean)
        return mean, cov

    def save(self, pkl_file: str) -> None:
        """Write the statistics atomically as a pickled plain dict (numpy arrays and Python scalars only)."""
        with dnnlib.util.atomic_write(pkl_file, "wb") as f:
            pickle.dump(dict(self.__dict__), f)

    @staticmethod
    def load(pkl_file: str) -> "FeatureStats":
        """Read statistics written by save (only numpy/plain data is accepted)."""
        with open(pkl_file, "rb") as f:
            state = _NumpyOnlyUnpickler(f).load()
        if not isinstance(state, dict) or "num_items" not in state:
            raise ValueError(f"{pkl_file!r} does not hold FeatureStats")
        obj = FeatureStats(capture_all=state["capture_all"], max_items=state["max_items"])
        obj.__dict__.update(state)
        return obj


def _all_gather_interleaved(x: torch.Tensor) -> torch.Tensor:
    """[N, F] on every rank -> [N * world, F] with row i of rank r at position i * world + r."""
    world = torch.distributed.get_world_size()
    parts = [torch.empty_like(x) for _ in range(world)]
    torch.distributed.all_gather(parts, x.contiguous())
    return torch.stack(parts, dim=1).flatten(0, 1)  # [N * world, F]


def _broadcast_flag(value: bool, opts: MetricOptions) -> bool:
    if opts.num_gpus == 1:
        return value
    flag = torch.as_tensor(float(value), dtype=torch.float32, device=_collective_device(opts))
    torch.distributed.broadcast(flag, src=0)
    return bool(flag.item())


def _collective_device(opts: MetricOptions) -> torch.device:
    """NCCL needs CUDA tensors; gloo works on CPU tensors."""
    backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else "gloo"
    return opts.device if backend == "nccl" else torch.device("cpu")


def _to_gather_device(x: torch.Tensor, opts: MetricOptions) -> torch.Tensor:
    return x.to(_collective_device(opts)) if opts.num_gpus > 1 else x


# ----------------------------------------------------------------------------
# Dataset content fingerprint and the real-data cache.

_fingerprint_cache: dict[tuple, str] = {}


def dataset_fingerprint(dataset_dir: str, height: int, width: int) -> str:
    """Hex digest of one resolution of a dataset: partition names plus name, CRC32 and size of every ZIP entry.

    Reads only the ZIP central directories (no frame data); independent of the path and of file times.
    """
    from long_video_gan.dataset import find_partitions

    _, zips = find_partitions(dataset_dir, height, width)
    stat_key = tuple((str(os.path.abspath(z)), os.stat(z).st_size, os.stat(z).st_mtime_ns) for z in zips)
    if stat_key not in _fingerprint_cache:
        h = hashlib.blake2b(digest_size=16)
        for z in zips:
            h.update(f"partition {z.name}\n".encode("utf-8"))
            with zipfile.ZipFile(z) as zf:
                for info in zf.infolist():
                    h.update(f"{info.filename}\0{info.CRC:08x}\0{info.file_size}\n".encode("utf-8"))
        _fingerprint_cache[stat_key] = h.hexdigest()
    return _fingerprint_cache[stat_key]


def cache_file_path(opts: MetricOptions, detector: detectors_lib.FeatureDetector, key_items: dict) -> str:
    """<dnnlib cache>/long-video-gan-metrics/<dataset basename>/<detector name>/<16-hex tag>.pkl.

    The tag hashes the repr of the key items sorted by name (the basename is only for humans to read).
    """
    items = dict(key_items, detector_sha256=detector.sha256, protocol=CACHE_PROTOCOL)
    tag = hashlib.blake2b(repr(sorted(items.items())).encode("utf-8"), digest_size=8).hexdigest()
    base = os.path.basename(os.path.normpath(str(opts.dataset_kwargs.dataset_dir)))
    return dnnlib.make_cache_dir_path("long-video-gan-metrics", base, detector.name, f"{tag}.pkl")


def find_cached_file(cache_file: str) -> str | None:
    """The cache file itself, or a file with the same tag under another dataset basename (same content elsewhere)."""
    if os.path.isfile(cache_file):
        return cache_file
    detector_dir = os.path.dirname(cache_file)
    root = os.path.dirname(os.path.dirname(detector_dir))
    pattern = os.path.join(
        glob.escape(root), "*", glob.escape(os.path.basename(detector_dir)), glob.escape(os.path.basename(cache_file))
    )
    matches = sorted(glob.glob(pattern))
    return matches[0] if matches else None


# ----------------------------------------------------------------------------
# Sampling positions and iterating datasets.


def rank_positions(num_items: int, num_gpus: int, rank: int) -> list[int]:
    """Positions this rank processes: rank, rank + W, ... wrapping modulo num_items, ceil(num_items/W) of them.

    Gathering the ranks' rows interleaved yields positions 0, 1, 2, ... (then duplicates, cut by max_items).
    """
    per_rank = -(-num_items // num_gpus)
    return [(i * num_gpus + rank) % num_items for i in range(per_rank)]


class _SeededItems(torch.utils.data.Dataset):
    """Items of a dataset at given (dataset index, global position) pairs; each item's random draws (window start,
    spacing) come from a CPU RNG seeded by (seed, position), independent of workers and ranks."""

    def __init__(self, dataset, items: list[tuple], seed: int):
        self.dataset = dataset
        self.items = items
        self.seed = seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        index, position = self.items[i]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "item", position))
            item = self.dataset[index]
        return {k: v for k, v in item.items() if k in ("video", "lr_video", "num_samples_from_source")}


def _make_loader(opts: MetricOptions, dataset, batch_size: int) -> torch.utils.data.DataLoader:
    if opts.loader_kwargs is not None:
        kwargs = dict(opts.loader_kwargs)
    else:
        kwargs = dict(num_workers=2, prefetch_factor=2, pin_memory=opts.device.type == "cuda")
    kwargs.pop("drop_last", None)
    kwargs.pop("persistent_workers", None)  # One pass only.
    kwargs.pop("shuffle", None)
    if kwargs.get("num_workers", 0) == 0:
        kwargs.pop("prefetch_factor", None)
    kwargs.pop("generator", None)
    # An own generator, so that starting workers draws nothing from the global RNG (training's streams stay put).
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        drop_last=False,
        generator=torch.Generator().manual_seed(0),
        **kwargs,
    )


def _video_dataset(dataset_kwargs, seq_length: int, spacing: int = 1):
    from long_video_gan.dataset import VideoDataset

    return VideoDataset(
        dataset_kwargs.dataset_dir,
        seq_length=seq_length,
        height=dataset_kwargs.height,
        width=dataset_kwargs.width,
        min_spacing=spacing,
        max_spacing=spacing,
        x_flip=False,
    )


def _per_image_dataset(dataset_kwargs, seq_length: int = 1):
    from long_video_gan.dataset import VideoDatasetPerImage

    return VideoDatasetPerImage(
        dataset_kwargs.dataset_dir,
        height=dataset_kwargs.height,
        width=dataset_kwargs.width,
        seq_length=seq_length,
        x_flip=False,
    )


def _random_window_items(opts: MetricOptions, dataset_len: int, num_items: int, seed: int) -> tuple:
    """Clip-uniform random windows (an endless shuffled pass over the clips, as in the original): (items, count)."""
    g = torch.Generator().manual_seed(derive_seed(seed, "clip-order"))
    if opts.single_sample_per_video:
        num_items = min(num_items, dataset_len)
        order = torch.randperm(num_items, generator=g).tolist()
    else:
        order = []
        while len(order) < num_items:
            order += torch.randperm(dataset_len, generator=g).tolist()
    positions = rank_positions(num_items, opts.num_gpus, opts.rank)
    return [(order[p], p) for p in positions], num_items


def _capped_items(opts: MetricOptions, dataset_len: int, cap: int | None, seed: int) -> tuple:
    """min(len, cap) items, shuffled: the first ones in dataset order (the original's capped subsets) or, with
    opts.real_subset == "spread", ones evenly spaced over the dataset (item i * len // n for i < n)."""
    num_items = dataset_len if cap is None else min(dataset_len, cap)
    if opts.real_subset == "spread":
        chosen = [i * dataset_len // num_items for i in range(num_items)]
    else:
        chosen = list(range(num_items))
    g = torch.Generator().manual_seed(derive_seed(seed, "item-order"))
    order = torch.randperm(num_items, generator=g).tolist()
    positions = rank_positions(num_items, opts.num_gpus, opts.rank)
    return [(chosen[order[p]], p) for p in positions], num_items


def _progress(opts: MetricOptions, total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="item", disable=not opts.show_progress, leave=False, dynamic_ncols=True)


# ----------------------------------------------------------------------------
# Real-data statistics.


def compute_feature_stats_for_dataset(
    opts: MetricOptions,
    detector_kind: str,  # "i3d", "inception" or "c3d".
    detector_kwargs: dict,  # Passed to the detector (e.g. return_features=True).
    max_items: int | None,  # Real items to use; None = all (image metrics).
    num_frames: int | None = None,  # Video metrics: frames per clip; None = image metric (one item per frame).
    subsample_factor: int = 1,  # Video metrics: spacing between the clip's frames.
    batch_size: int = 64,  # Items per detector call on each rank.
    use_weights: bool = False,  # Image metrics: weight frames 1/frames-of-clip when normalize_weighting.
    need_classifier: bool = False,  # The detector must output class probabilities.
    dataset_kwargs: dict | None = None,  # Dataset to read; None = opts.dataset_kwargs.
    cache: bool | None = None,  # None = opts.cache.
    desc: str = "real",  # Progress-bar label.
    seed: int | None = None,  # Seed of the window sampling; None = opts.seed.
    **stats_kwargs,  # capture_all / capture_mean_cov.
) -> FeatureStats:
    """Statistics of real clips (video metrics) or frames (image metrics), loaded from or saved to the cache."""
    seed = opts.seed if seed is None else seed
    dataset_kwargs = dnnlib.EasyDict(dataset_kwargs if dataset_kwargs is not None else opts.dataset_kwargs)
    for key in ("dataset_dir", "height", "width"):
        if key not in dataset_kwargs:
            raise ValueError(f"dataset_kwargs must give dataset_dir, height and width; missing {key!r}")
    image = num_frames is None
    detector = get_detector(opts, detector_kind, need_classifier=need_classifier)
    if image:
        dataset = _per_image_dataset(dataset_kwargs)
    else:
        dataset = _video_dataset(dataset_kwargs, num_frames, subsample_factor)
    cache = opts.cache if cache is None else cache

    # Cache lookup (decided on rank 0, broadcast).
    cache_file = None
    if cache:
        key_items = dict(
            dataset_content=dataset_fingerprint(
                dataset_kwargs.dataset_dir, dataset_kwargs.height, dataset_kwargs.width
            ),
            dataset_class=type(dataset).__name__,
            dataset_args=dict(
                height=dataset_kwargs.height,
                width=dataset_kwargs.width,
                seq_length=num_frames,
                spacing=subsample_factor,
            ),
            detector_kwargs=sorted(detector_kwargs.items()),
            feature_stats_cls="FeatureStats",
            max_items=max_items,
            normalize_weighting=bool(opts.normalize_weighting and use_weights),
            single_sample_per_video=bool(opts.single_sample_per_video and not image),
            stats_kwargs=sorted(stats_kwargs.items()),
            seed=seed,
        )
        if image and opts.real_subset != "first":
            key_items["real_subset"] = opts.real_subset  # Absent for "first", so older cache files stay valid.
        cache_file = cache_file_path(opts, detector, key_items)
        found = find_cached_file(cache_file) if opts.rank == 0 and not opts.replace_cache else None
        if _broadcast_flag(found is not None, opts):
            found = found if opts.rank == 0 else find_cached_file(cache_file)
            if found is not None:
                if opts.verbose:
                    print(f"Loading cached real statistics {found}")
                return FeatureStats.load(found)
            raise FileNotFoundError(f"rank {opts.rank}: cache file {cache_file} found by rank 0 is not visible here")

    # Which items this rank reads.
    if image:
        items, num_items = _capped_items(opts, len(dataset), max_items, seed)
    else:
        items, num_items = _random_window_items(opts, len(dataset), max_items, seed)
    if num_items == 0:
        raise ValueError(f"dataset {dataset_kwargs.dataset_dir!r} has no usable items for this metric ({dataset!r})")
    stats = FeatureStats(max_items=num_items, **stats_kwargs)
    loader = _make_loader(opts, _SeededItems(dataset, items, seed), batch_size)

    with torch.no_grad(), _progress(opts, num_items, f"{desc} {detector_kind}") as bar:
        for batch in loader:
            video = to_uint8(batch["video"].to(opts.device))  # [N, C, T, H, W]
            features = run_detector(detector, video, image, detector_kwargs)
            weights = None
            if use_weights:
                n = batch["num_samples_from_source"].to(torch.float64)
                weights = 1.0 / n if opts.normalize_weighting else torch.ones_like(n)
                weights = _to_gather_device(weights, opts)
            stats.append_torch(_to_gather_device(features, opts), weights, opts.num_gpus, opts.rank)
            bar.update(min(features.shape[0] * opts.num_gpus, num_items - bar.n))
    assert stats.num_items == num_items, (stats.num_items, num_items)

    if cache_file is not None and opts.rank == 0:
        stats.save(cache_file)
    return stats


# ----------------------------------------------------------------------------
# Generated-data statistics.


def _random_crop(video: torch.Tensor, length: int, max_offset: int, generator: torch.Generator) -> torch.Tensor:
    """Crop each sample of [N, C, T, H, W] to `length` frames at its own offset in [0, max_offset)."""
    offsets = torch.randint(0, max_offset, (video.shape[0],), generator=generator).tolist()
    assert video.shape[2] >= max_offset - 1 + length, (video.shape, length, max_offset)
    return torch.stack([video[i, :, o : o + length] for i, o in enumerate(offsets)])  # [N, C, length, H, W]


def generate_videos(
    opts: MetricOptions,
    G,
    lr_G,
    num: int,
    length: int,
    gen: torch.Generator,
    cpu_gen: torch.Generator,
    cond: torch.Tensor | None = None,
) -> torch.Tensor:
    """Generate `num` videos of `length` frames in one of three modes (below) -> [N, 3, length, H, W]."""
    if cond is not None:
        # Mode 3: super-res G on real low-res clips with temporal_context frames on each side.
        video = G(cond.to(opts.device, torch.float32), generator_z=gen, **opts.G_kwargs)
    elif lr_G is not None:
        # Mode 2: low-res G renders extra frames; a random crop keeps length + 2 * temporal_context; super-res G.
        context = int(G.temporal_context)
        scale = int(lr_G.total_temporal_scale)
        lr_video = lr_G(num, length + 2 * context + scale, generator_emb=gen)
        lr_video = _random_crop(lr_video, length + 2 * context, scale, cpu_gen)
        video = G(lr_video, generator_z=gen, **opts.G_kwargs)
    else:
        # Mode 1: low-res G alone, random crop of the frames it renders beyond `length`.
        scale = int(G.total_temporal_scale)
        video = G(num, length + scale, generator_emb=gen, **opts.G_kwargs)
        video = _random_crop(video, length, scale, cpu_gen)
    if video.ndim != 5 or video.shape[0] != num or video.shape[2] != length:
        raise ValueError(f"generator returned shape {list(video.shape)}, expected [{num}, 3, {length}, H, W]")
    return video


def compute_feature_stats_for_generator(
    opts: MetricOptions,
    detector_kind: str,  # "i3d", "inception" or "c3d".
    detector_kwargs: dict,  # Passed to the detector.
    num_items: int,  # Generated items (clips or frames).
    num_frames: int | None = None,  # Video metrics: frames per clip; None = image metric (one frame per sample).
    subsample_factor: int = 1,  # Keep every n-th generated frame.
    batch_size: int = 16,  # Items per step on each rank (original: FVD 64 // frames, FID 4, KID/IS 16, VIS 64).
    need_classifier: bool = False,  # The detector must output class probabilities.
    run_index: int = 0,  # Repetition index (num_runs > 1); changes the generator seed.
    desc: str = "generated",  # Progress-bar label.
    **stats_kwargs,  # capture_all / capture_mean_cov.
) -> FeatureStats:
    """Statistics of generated clips (video metrics) or frames (image metrics)."""
    if opts.generator_as_dataset:
        return compute_feature_stats_for_dataset(
            opts,
            detector_kind,
            detector_kwargs,
            max_items=num_items,
            num_frames=num_frames,
            subsample_factor=subsample_factor,
            batch_size=batch_size,
            need_classifier=need_classifier,
            dataset_kwargs=opts.gen_dataset_kwargs,
            cache=False,
            use_weights=False,
            desc=desc,
            seed=derive_seed(opts.seed, "gen-dataset", run_index),
            **stats_kwargs,
        )
    if opts.G is None:
        raise ValueError("the metric needs a generator: MetricOptions.G is None")
    image = num_frames is None
    length = (1 if image else num_frames) * subsample_factor
    batch_size = min(batch_size, -(-num_items // opts.num_gpus))  # Never generate more than a rank's share.
    batch_gen = opts.batch_gen or min(batch_size, 4)
    detector = get_detector(opts, detector_kind, need_classifier=need_classifier)
    G = copy.deepcopy(opts.G).eval().requires_grad_(False).to(opts.device)
    lr_G = None
    if opts.lr_G is not None and opts.cond_dataset_kwargs is None:
        lr_G = copy.deepcopy(opts.lr_G).eval().requires_grad_(False).to(opts.device)
    gen = torch.Generator(opts.device).manual_seed(derive_seed(opts.seed, "G", run_index, opts.rank))
    cpu_gen = torch.Generator().manual_seed(derive_seed(opts.seed, "crop", run_index, opts.rank))

    # Mode 3: real low-res conditioning; the clip length includes the subsampling (the original's did not).
    cond_iter = None
    if opts.cond_dataset_kwargs is not None:
        context = int(G.temporal_context)
        cond_kwargs = dnnlib.EasyDict(opts.cond_dataset_kwargs)
        cond_seed = derive_seed(opts.seed, "cond", run_index)
        if image:
            dataset = _per_image_dataset(cond_kwargs, seq_length=1 + 2 * context)
            items, cond_total = _capped_items(opts, len(dataset), num_items, cond_seed)
            num_items = cond_total
        else:
            dataset = _video_dataset(cond_kwargs, length + 2 * context)
            items, _ = _random_window_items(opts, len(dataset), num_items, cond_seed)
        cond_iter = iter(_make_loader(opts, _SeededItems(dataset, items, cond_seed), batch_size))

    stats = FeatureStats(max_items=num_items, **stats_kwargs)
    with torch.no_grad(), _progress(opts, num_items, f"{desc} {detector_kind}") as bar:
        while not stats.is_full():
            weights = None
            if cond_iter is not None:
                batch = next(cond_iter)
                cond = batch["video"]
                if image:
                    n = batch["num_samples_from_source"].to(torch.float64)
                    weights = 1.0 / n if opts.normalize_weighting else torch.ones_like(n)
                chunks = [cond[i : i + batch_gen] for i in range(0, cond.shape[0], batch_gen)]
                videos = [generate_videos(opts, G, lr_G, c.shape[0], length, gen, cpu_gen, cond=c) for c in chunks]
            else:
                sizes = [min(batch_gen, batch_size - i) for i in range(0, batch_size, batch_gen)]
                videos = [generate_videos(opts, G, lr_G, s, length, gen, cpu_gen) for s in sizes]
            video = torch.cat(videos)[:, :, ::subsample_factor]  # [N, 3, T, H, W]
            features = run_detector(detector, to_uint8(video), image, detector_kwargs)
            if weights is not None:
                weights = _to_gather_device(weights, opts)
            stats.append_torch(_to_gather_device(features, opts), weights, opts.num_gpus, opts.rank)
            bar.update(min(features.shape[0] * opts.num_gpus, num_items - bar.n))
    return stats


# ----------------------------------------------------------------------------
