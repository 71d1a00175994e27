"""Metric protocol with stand-in detectors and generators: registry, the three generator modes, sampling, weights,
the content-keyed cache, repeated runs, JSONL reports, and statistics gathered over two gloo processes."""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import dnnlib
from metrics import detectors, metric_main, metric_utils
from tests.data_utils import make_tiny_dataset

# ----------------------------------------------------------------------------
# Stand-ins.


class StubDetector(detectors.FeatureDetector):
    """Cheap deterministic features: per-channel mean, std and max of the uint8 input (9 values); probabilities
    when asked for class outputs. Records every input shape."""

    seen: list = []

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        assert x.dtype == torch.uint8
        StubDetector.seen.append(tuple(x.shape))
        x = x.to(torch.float32) / 255
        dims = tuple(range(2, x.ndim))
        features = torch.cat([x.mean(dims), x.std(dims), x.amax(dims)], dim=1)  # [N, 9]
        if kwargs.get("no_output_bias") or self.kind == "c3d":
            return (features * 5).softmax(dim=1)
        return features


def install_stub_detectors():
    for kind in ("i3d", "inception", "c3d"):
        detectors.set_detector_override(
            kind,
            lambda device, kind=kind: StubDetector(
                kind, f"stub-{kind}", "test", os.path.abspath(__file__), torch.nn.Identity()
            ),
        )


def remove_stub_detectors():
    for kind in ("i3d", "inception", "c3d"):
        detectors.set_detector_override(kind, None)


class StubLres(torch.nn.Module):
    """Low-res G stand-in: uniform noise plus a per-frame ramp, so crops and subsampling are visible."""

    total_temporal_scale = 32
    calls: list = []

    def __init__(self, height=36, width=64):
        super().__init__()
        self.out_height, self.out_width = height, width
        self.scale = torch.nn.Parameter(torch.ones([]))

    def forward(self, batch_size, seq_length, generator_emb=None):
        StubLres.calls.append((batch_size, seq_length))
        noise = torch.rand(batch_size, 3, 1, self.out_height, self.out_width, generator=generator_emb)
        ramp = torch.linspace(-0.5, 0.5, seq_length).view(1, 1, -1, 1, 1)
        return (noise * 0.5 + ramp) * self.scale  # [N, 3, L, H, W]


class StubSres(torch.nn.Module):
    """Super-res G stand-in: drops temporal_context frames on each side and upsamples 2x (nearest)."""

    temporal_context = 4
    hr_height, hr_width = 72, 128
    calls: list = []

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones([]))

    def forward(self, lr_video, generator_z=None):
        StubSres.calls.append(tuple(lr_video.shape))
        c = self.temporal_context
        x = lr_video[:, :, c:-c]
        x = x.repeat_interleave(2, dim=3).repeat_interleave(2, dim=4)
        z = torch.randn(x.shape[0], 1, 1, 1, 1, generator=generator_z) * 0.01
        return (x + z) * self.scale  # [N, 3, T, 72, 128]


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    return str(
        make_tiny_dataset(
            tmp_path_factory.mktemp("metrics-data"),
            num_videos=3,
            num_frames=[140, 60, 30],
            resolutions=((36, 64), (72, 128)),
        )
    )


@pytest.fixture()
def env(tmp_path):
    """Private dnnlib cache, stand-in detectors, cleared call logs."""
    dnnlib.util.set_cache_dir(str(tmp_path / "cache"))
    install_stub_detectors()
    StubDetector.seen.clear()
    StubLres.calls.clear()
    StubSres.calls.clear()
    yield tmp_path
    remove_stub_detectors()
    dnnlib.util.set_cache_dir(None)


def lres_kwargs(root, **kw):
    return dict(
        G=StubLres(),
        dataset_kwargs=dict(dataset_dir=root, height=36, width=64),
        loader_kwargs=dict(num_workers=0),
        **kw,
    )


# ----------------------------------------------------------------------------
# Registry and reporting.


def test_registry_has_the_original_metric_names():
    assert set(metric_main.list_valid_metrics()) == {
        "fvd2048_128f",
        "fvd2048_16f",
        "fvd2048_128f_subsample8f",
        "fid50k_full",
        "fid50k",
        "kid50k_full",
        "is50k",
        "isv2048_ucf",
    }
    with pytest.raises(ValueError, match="unknown name 'fvd'.*fvd2048_16f"):
        metric_main.calc_metric("fvd")


def test_options_validate_inputs():
    with pytest.raises(ValueError, match="num_gen"):
        metric_utils.MetricOptions(num_gen=0)
    with pytest.raises(ValueError, match="detector_source"):
        metric_utils.MetricOptions(detector_source="cloud")
    with pytest.raises(ValueError, match="rank"):
        metric_utils.MetricOptions(num_gpus=2, rank=2)


def test_fvd_lres_alone_result_format_and_report(env, dataset_root):
    result = metric_main.calc_metric("fvd2048_16f", **lres_kwargs(dataset_root, num_gen=6, max_real=5))
    assert set(result) == {"results", "metric", "total_time", "total_time_str", "world_size", "detectors"}
    assert result.metric == "fvd2048_16f" and result.world_size == 1
    assert np.isfinite(result.results.fvd2048_16f) and result.results.fvd2048_16f > 0
    assert result.detectors["i3d"]["name"] == "stub-i3d" and len(result.detectors["i3d"]["sha256"]) == 64
    # Batch 4 (= 64 // 16) per step in chunks of min(4, 4): two steps for 6 samples, each 16 + 32 frames.
    assert StubLres.calls == [(4, 48), (4, 48)]
    assert all(shape[2] == 16 for shape in StubDetector.seen)

    path = env / "out" / "metric-fvd2048_16f.jsonl"
    line = metric_main.report_metric(result, str(path), step=100)
    metric_main.report_metric(result, str(path), step=200)
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert rows[0] == json.loads(line) and [r["step"] for r in rows] == [100, 200]
    assert rows[1]["results"]["fvd2048_16f"] == result.results.fvd2048_16f


def test_jsonl_appends_from_processes_side_by_side_keep_every_line(tmp_path):
    # Each append rewrites the file and renames it; without a lock, writers lose each other's lines.
    path, root = tmp_path / "results.jsonl", os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = (
        "import sys, time; from metrics import metric_main\n"
        "while time.time() < float(sys.argv[3]): time.sleep(0.001)\n"  # Start together.
        'for i in range(200): metric_main.append_jsonl(sys.argv[1], \'{"writer": %s, "i": %d}\' % (sys.argv[2], i))'
    )
    start = str(time.time() + 5)
    writers = [subprocess.Popen([sys.executable, "-c", code, str(path), str(w), start], cwd=root) for w in range(3)]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0]
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted((r["writer"], r["i"]) for r in rows) == [(w, i) for w in range(3) for i in range(200)]
    assert os.listdir(tmp_path) == ["results.jsonl"]  # No temporary or lock files left.


def test_jsonl_lock_without_fcntl_uses_a_hidden_lock_file(tmp_path, monkeypatch):
    # Where fcntl is missing (Windows) the directory cannot be flocked: a ProcessLock on a hidden file stands in.
    monkeypatch.setattr(metric_main, "fcntl", None)
    path = tmp_path / "results.jsonl"
    for i in range(2):
        metric_main.append_jsonl(str(path), json.dumps({"i": i}))
    assert [json.loads(line)["i"] for line in path.read_text().splitlines()] == [0, 1]
    assert sorted(os.listdir(tmp_path)) == [".metrics-jsonl.lock", "results.jsonl"]


def test_num_runs_gives_per_run_mean_and_std(env, dataset_root):
    result = metric_main.calc_metric("fvd2048_16f", num_runs=2, **lres_kwargs(dataset_root, num_gen=4, max_real=4))
    r = result.results
    assert set(r) == {"fvd2048_16f_run01", "fvd2048_16f_run02", "fvd2048_16f_mean", "fvd2048_16f_std"}
    assert r.fvd2048_16f_run01 != r.fvd2048_16f_run02  # Different generator noise per run.
    assert r.fvd2048_16f_mean == pytest.approx((r.fvd2048_16f_run01 + r.fvd2048_16f_run02) / 2)
    assert r.fvd2048_16f_std == pytest.approx(abs(r.fvd2048_16f_run01 - r.fvd2048_16f_run02) / 2)
    # Same seed -> same value.
    again = metric_main.calc_metric("fvd2048_16f", **lres_kwargs(dataset_root, num_gen=4, max_real=4))
    assert again.results.fvd2048_16f == r.fvd2048_16f_run01


def test_metrics_leave_the_global_rng_untouched(env, dataset_root):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    kwargs = dict(lres_kwargs(dataset_root, num_gen=2, max_real=2), loader_kwargs=dict(num_workers=1))
    metric_main.calc_metric("fvd2048_16f", **kwargs)
    assert torch.equal(torch.get_rng_state(), state)


# ----------------------------------------------------------------------------
# Generator modes (lres alone, lres + sres, real low-res conditioning) and two fixed bugs of the original there: the
# crop loop over batch_size instead of batch_gen, and a conditioning clip length without the subsampling factor.


def test_subsample8f_renders_128_frames_and_keeps_every_8th(env, dataset_root):
    metric_main.calc_metric("fvd2048_128f_subsample8f", **lres_kwargs(dataset_root, num_gen=4, max_real=2))
    assert StubLres.calls == [(4, 128 + 32)]
    # Real clips (spacing 8 over a 121-frame span) and generated clips both reach the detector with 16 frames.
    assert all(shape[2] == 16 for shape in StubDetector.seen)


def test_lres_plus_sres_mode_crops_context_and_scores_at_hr_size(env, dataset_root):
    opts = dict(
        G=StubSres(),
        lr_G=StubLres(),
        dataset_kwargs=dict(dataset_dir=dataset_root, height=72, width=128),
        loader_kwargs=dict(num_workers=0),
        num_gen=4,
        max_real=2,
    )
    result = metric_main.calc_metric("fvd2048_16f", **opts)
    assert np.isfinite(result.results.fvd2048_16f)
    assert StubLres.calls == [(4, 16 + 8 + 32)]
    assert StubSres.calls == [(4, 3, 24, 36, 64)]  # Random crop of 16 + 2 * temporal_context frames.
    assert all(shape[2:] == (16, 72, 128) for shape in StubDetector.seen)


def test_kid_and_is_work_with_batches_above_4(env, dataset_root):
    # The original indexed crop offsets with batch_size (16) instead of batch_gen (4) and crashed here.
    opts = dict(
        G=StubSres(),
        lr_G=StubLres(),
        dataset_kwargs=dict(dataset_dir=dataset_root, height=72, width=128),
        loader_kwargs=dict(num_workers=0),
        num_gen=12,
        max_real=6,
    )
    kid = metric_main.calc_metric("kid50k_full", **opts)
    assert np.isfinite(kid.results.kid50k_full)
    assert StubLres.calls == [(4, 1 + 8 + 32)] * 3  # One step of 12 (16 capped at num_gen) in chunks of 4.
    StubLres.calls.clear()
    inception = metric_main.calc_metric("is50k", **opts)
    assert inception.results.is50k_mean >= 1.0 and inception.results.is50k_std >= 0
    assert StubLres.calls == [(4, 41)] * 3
    vis = metric_main.calc_metric("isv2048_ucf", **dict(lres_kwargs(dataset_root), num_gen=10))
    assert vis.results.isv2048_ucf_mean >= 1.0


def test_real_subset_spread_takes_frames_over_the_whole_dataset(env, dataset_root):
    first, spread = metric_utils.MetricOptions(), metric_utils.MetricOptions(real_subset="spread")
    items, count = metric_utils._capped_items(first, 230, 4, seed=0)
    assert count == 4 and sorted(i for i, _ in items) == [0, 1, 2, 3]  # The original: one clip's first frames.
    items, count = metric_utils._capped_items(spread, 230, 4, seed=0)
    assert count == 4 and sorted(i for i, _ in items) == [0, 57, 115, 172]
    assert sorted(p for _, p in items) == [0, 1, 2, 3]
    assert sorted(i for i, _ in metric_utils._capped_items(spread, 230, None, seed=0)[0]) == list(range(230))
    with pytest.raises(ValueError, match="real_subset must be one of"):
        metric_utils.MetricOptions(real_subset="random")

    # End to end: the two subsets are different real sets, cached apart; "first" keeps its old cache key.
    results = {}
    for subset in ("first", "spread", "first"):
        kwargs = lres_kwargs(dataset_root, num_gen=4, max_real=4, real_subset=subset)
        results.setdefault(subset, []).append(metric_main.calc_metric("fid50k_full", **kwargs).results.fid50k_full)
    assert results["first"][0] == results["first"][1] != results["spread"][0]
    cache_root = dnnlib.make_cache_dir_path("long-video-gan-metrics")
    cached = [f for _, _, files in os.walk(cache_root) for f in files if f.endswith(".pkl")]
    assert len(cached) == 2, cached


def test_real_conditioning_mode_uses_subsampled_length(env, dataset_root):
    # Mode 3: real low-res clips; for subsample8f they need 128 + 2 * 4 frames (the original used 16 + 8).
    opts = dict(
        G=StubSres(),
        dataset_kwargs=dict(dataset_dir=dataset_root, height=72, width=128),
        cond_dataset_kwargs=dict(dataset_dir=dataset_root, height=36, width=64),
        loader_kwargs=dict(num_workers=0),
        num_gen=2,
        max_real=2,
    )
    result = metric_main.calc_metric("fvd2048_128f_subsample8f", **opts)
    assert np.isfinite(result.results.fvd2048_128f_subsample8f)
    assert StubSres.calls and all(shape[2] == 136 for shape in StubSres.calls)

    # Image metrics condition on 9-frame windows, the first num_gen of them in dataset order.
    StubSres.calls.clear()
    fid = metric_main.calc_metric("fid50k_full", **dict(opts, num_gen=6))
    assert np.isfinite(fid.results.fid50k_full)
    assert [shape[2] for shape in StubSres.calls] == [9, 9]  # Batch 4 in chunks of 4: 4 + 2 windows.


# ----------------------------------------------------------------------------
# Real statistics: weights, determinism, cache.


def test_fid_full_weights_every_clip_equally(env, dataset_root):
    opts = metric_utils.MetricOptions(**lres_kwargs(dataset_root))
    stats = metric_utils.compute_feature_stats_for_dataset(
        opts,
        "inception",
        dict(return_features=True),
        max_items=None,
        batch_size=16,
        use_weights=True,
        capture_mean_cov=True,
        capture_all=True,
    )
    assert stats.num_items == 140 + 60 + 30
    # Explicit: mean of the three per-clip means, read frame by frame in dataset order.
    from long_video_gan.dataset import VideoDatasetPerImage

    dataset = VideoDatasetPerImage(dataset_root, 36, 64)
    det = detectors.get_detector("inception")
    rows = torch.cat([det(metric_utils.to_uint8(dataset[i]["video"][:, 0][None])) for i in range(len(dataset))])
    rows = rows.numpy().astype(np.float64)
    clip_means = [rows[:140].mean(0), rows[140:200].mean(0), rows[200:].mean(0)]
    mean, _ = stats.get_mean_cov()
    np.testing.assert_allclose(mean, np.mean(clip_means, axis=0), rtol=1e-6)
    assert not np.allclose(mean, rows.mean(0), rtol=1e-3)  # Differs from the per-frame mean.
    # The rows gathered are all frames once, in a shuffled order.
    np.testing.assert_allclose(np.sort(stats.get_all(), axis=0), np.sort(rows, axis=0), rtol=1e-6)


def test_real_video_windows_do_not_depend_on_batch_or_workers(env, dataset_root):
    def stats(batch_size, workers):
        opts = metric_utils.MetricOptions(**dict(lres_kwargs(dataset_root), loader_kwargs=dict(num_workers=workers)))
        return metric_utils.compute_feature_stats_for_dataset(
            opts,
            "i3d",
            dict(return_features=True),
            max_items=5,
            num_frames=16,
            batch_size=batch_size,
            cache=False,
            capture_all=True,
        ).get_all()

    a = stats(2, 0)
    np.testing.assert_array_equal(a, stats(5, 1))
    assert len({tuple(row) for row in a}) == 5  # Five different windows.


def test_cache_is_keyed_by_content_not_path(env, dataset_root):
    calls = []

    def run(root, **kw):
        opts = metric_utils.MetricOptions(**dict(lres_kwargs(root), **kw))
        before = len(StubDetector.seen)
        stats = metric_utils.compute_feature_stats_for_dataset(
            opts,
            "i3d",
            dict(return_features=True),
            max_items=3,
            num_frames=16,
            batch_size=4,
            capture_mean_cov=True,
        )
        calls.append(len(StubDetector.seen) - before)
        return stats.get_mean_cov()[0]

    first = run(dataset_root)
    files = [os.path.join(d, f) for d, _, fs in os.walk(env / "cache") for f in fs]
    assert len(files) == 1 and files[0].endswith(".pkl") and "long-video-gan-metrics" in files[0]
    np.testing.assert_array_equal(run(dataset_root), first)  # Cache hit: detector not called.
    assert calls == [1, 0]

    # A copy under another name and place hits the same entry; different content misses it.
    copy_root = shutil.copytree(dataset_root, str(env / "elsewhere" / "renamed_copy"))
    np.testing.assert_array_equal(run(copy_root), first)
    assert calls[-1] == 0
    run(dataset_root, replace_cache=True)
    assert calls[-1] == 1
    run(dataset_root, seed=1)
    assert calls[-1] == 1
    other = make_tiny_dataset(env / "other", num_videos=2, num_frames=20, seed=5)
    run(str(other))
    assert calls[-1] == 1


# ----------------------------------------------------------------------------
# Two processes (gloo).


def _two_rank_worker(rank, init_file, root, out_dir):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        dnnlib.util.set_cache_dir(os.path.join(out_dir, "cache"))
        install_stub_detectors()
        opts = metric_utils.MetricOptions(**lres_kwargs(root))
        assert opts.num_gpus == 2 and opts.rank == rank
        stats = metric_utils.compute_feature_stats_for_dataset(
            opts,
            "i3d",
            dict(return_features=True),
            max_items=5,
            num_frames=16,
            batch_size=2,
            cache=False,
            capture_all=True,
        )
        result = metric_main.calc_metric("fvd2048_16f", **lres_kwargs(root, num_gen=4, max_real=3))
        np.save(os.path.join(out_dir, f"rank{rank}.npy"), stats.get_all())
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(result, f)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_gather_the_same_real_windows(env, dataset_root):
    torch.multiprocessing.spawn(_two_rank_worker, args=(str(env / "init"), dataset_root, str(env)), nprocs=2)
    single = metric_utils.compute_feature_stats_for_dataset(
        metric_utils.MetricOptions(**lres_kwargs(dataset_root)),
        "i3d",
        dict(return_features=True),
        max_items=5,
        num_frames=16,
        batch_size=2,
        cache=False,
        capture_all=True,
    ).get_all()
    for rank in range(2):
        np.testing.assert_array_equal(np.load(env / f"rank{rank}.npy"), single)
    results = [json.loads((env / f"rank{rank}.json").read_text()) for rank in range(2)]
    assert results[0]["results"] == results[1]["results"] and results[0]["world_size"] == 2
    assert np.isfinite(results[0]["results"]["fvd2048_16f"])


# ----------------------------------------------------------------------------
