"""FVD and FID with the real packaged detectors on real footage: a dataset against itself scores ~0, two disjoint
halves of one video (alternate chunks) score small, two different sources score large (small sizes; the figures are
printed)."""

import io
import json
import os
import zipfile

import av
import numpy as np
import PIL.Image
import pytest

import dnnlib
from metrics import frechet_inception_distance, metric_main, metric_utils
from tests.data_utils import bikes_path

# ----------------------------------------------------------------------------


def decode(source: str, count: int, fmt=None) -> np.ndarray:
    """First `count` frames of a file or lavfi source, resized to 64x36: uint8 [T, 36, 64, 3]."""
    frames = []
    with av.open(source, format=fmt) as container:
        for frame in container.decode(video=0):
            frames.append(np.asarray(frame.to_image().resize((64, 36), PIL.Image.BILINEAR)))
            if len(frames) == count:
                break
    return np.stack(frames)


def write_dataset(root: str, clips: dict) -> str:
    """A one-partition dataset at 36x64 (stored ZIP of JPEG frames plus frame_paths.json)."""
    res_dir = os.path.join(root, "0036x0064")
    os.makedirs(res_dir, exist_ok=True)
    frame_paths = {}
    with zipfile.ZipFile(os.path.join(res_dir, "partition_0000.zip"), "w", zipfile.ZIP_STORED) as zf:
        for clip, frames in clips.items():
            frame_paths[clip] = []
            for i, frame in enumerate(frames):
                buf = io.BytesIO()
                PIL.Image.fromarray(frame).save(buf, format="JPEG", quality=95)
                zf.writestr(f"{clip}/frame_{i:06d}.jpg", buf.getvalue())
                frame_paths[clip].append(f"frame_{i:06d}.jpg")
        zf.writestr("frame_paths.json", json.dumps(frame_paths, indent=2, sort_keys=True))
    return root


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sanity")
    dnnlib.util.set_cache_dir(str(tmp / "cache"))
    bikes = decode(str(bikes_path()), 250)
    mandel = decode("mandelbrot=size=320x240:rate=25", 120, fmt="lavfi")
    # Two disjoint halves of bikes.mp4 that both span the whole video: alternate 25-frame chunks.
    roots = dict(
        first_half=write_dataset(str(tmp / "bikes_a"), {f"a{i}": bikes[50 * i : 50 * i + 25] for i in range(5)}),
        second_half=write_dataset(str(tmp / "bikes_b"), {f"b{i}": bikes[50 * i + 25 : 50 * i + 50] for i in range(5)}),
        mandelbrot=write_dataset(str(tmp / "mandel"), {f"m{i}": mandel[i * 40 : (i + 1) * 40] for i in range(3)}),
    )
    yield roots
    dnnlib.util.set_cache_dir(None)


def score(metric: str, real: str, other: str, n: int) -> float:
    result = metric_main.calc_metric(
        metric,
        dataset_kwargs=dict(dataset_dir=real, height=36, width=64),
        generator_as_dataset=True,
        gen_dataset_kwargs=dict(dataset_dir=other, height=36, width=64),
        num_gen=n,
        max_real=n,
        detector_source="packaged",
        loader_kwargs=dict(num_workers=0),
    )
    assert result.detectors and all(d["source"] == "packaged" for d in result.detectors.values())
    return next(iter(result.results.values()))


@pytest.mark.slow
def test_fvd_self_halves_and_other_source(sources):
    n = 4
    same = score("fvd2048_16f", sources["first_half"], sources["first_half"], n)  # Other random windows.
    halves = score("fvd2048_16f", sources["first_half"], sources["second_half"], n)
    other = score("fvd2048_16f", sources["first_half"], sources["mandelbrot"], n)
    print(
        f"FVD (16 frames, {n} vs {n} clips, packaged I3D): self {same:.1f}, halves {halves:.1f}, "
        f"bikes-vs-mandelbrot {other:.1f}"
    )
    assert 0 <= same < 0.25 * other
    assert halves < 0.5 * other


def fid_few_frames(real: str, other: str, n: int) -> float:
    """FID as fid50k_full computes it, from all rows via the exact few-rows form (scipy's sqrtm of a 2048x2048
    matrix takes minutes on a busy 2-core CPU; the forms agree, see test_metrics_stats). The first n frames of these
    datasets all come from their first clip, so the per-clip weights are uniform here."""
    opts = metric_utils.MetricOptions(
        dataset_kwargs=dict(dataset_dir=real, height=36, width=64),
        generator_as_dataset=True,
        gen_dataset_kwargs=dict(dataset_dir=other, height=36, width=64),
        detector_source="packaged",
        loader_kwargs=dict(num_workers=0),
    )
    kwargs = frechet_inception_distance.DETECTOR_KWARGS
    real_stats = metric_utils.compute_feature_stats_for_dataset(
        opts, "inception", kwargs, max_items=n, batch_size=64, use_weights=True, capture_all=True
    )
    gen_stats = metric_utils.compute_feature_stats_for_generator(
        opts, "inception", kwargs, num_items=n, batch_size=4, capture_all=True
    )
    assert opts.detectors_used["inception"]["source"] == "packaged"
    return frechet_inception_distance.frechet_distance_from_features(gen_stats.get_all(), real_stats.get_all())


@pytest.mark.slow
def test_fid_self_halves_and_other_source(sources):
    n = 6
    # Image metrics take the first n frames in dataset order (as the original), so "self" compares identical frames.
    same = fid_few_frames(sources["first_half"], sources["first_half"], n)
    halves = fid_few_frames(sources["first_half"], sources["second_half"], n)
    other = fid_few_frames(sources["first_half"], sources["mandelbrot"], n)
    print(
        f"FID ({n} vs {n} frames, packaged Inception): self {same:.4f}, halves {halves:.1f}, "
        f"bikes-vs-mandelbrot {other:.1f}"
    )
    assert abs(same) < 1e-3 * other
    assert halves < 0.5 * other


# ----------------------------------------------------------------------------
