"""Statistics of the metrics: Fréchet distance, weighted FeatureStats, KID, IS, cache files, rank interleaving."""

import os
import pickle

import numpy as np
import pytest
import torch

from metrics.frechet_inception_distance import frechet_distance, frechet_distance_from_features
from metrics.inception_score import inception_score
from metrics.kernel_inception_distance import kernel_distance
from metrics.metric_utils import FeatureStats, rank_positions

# ----------------------------------------------------------------------------
# Fréchet distance.


def test_frechet_distance_closed_form_for_commuting_covariances():
    rng = np.random.default_rng(0)
    d = 6
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    a, b = rng.uniform(0.1, 3.0, size=d), rng.uniform(0.1, 3.0, size=d)
    # Diagonal covariances commute: the trace term is Σ (√a − √b)².
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)

    # A shared rotation keeps them commuting and the distance unchanged.
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_zero_for_identical_gaussians_and_symmetric():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 4))
    mu, sigma = x.mean(0), np.cov(x, rowvar=False)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-9
    y = rng.normal(size=(50, 4)) + 1
    mu2, sigma2 = y.mean(0), np.cov(y, rowvar=False)
    assert frechet_distance(mu, sigma, mu2, sigma2) == pytest.approx(frechet_distance(mu2, sigma2, mu, sigma))


def test_frechet_distance_eigh_method_equals_sqrtm():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(200, 30)), rng.normal(size=(150, 30)) * 1.5 + 0.3
    args = (a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert frechet_distance(*args, method="eigh") == pytest.approx(frechet_distance(*args), rel=1e-9)
    d = 5
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    va, vb = rng.uniform(0.1, 3.0, size=d), rng.uniform(0.1, 3.0, size=d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(va) - np.sqrt(vb)) ** 2)
    assert frechet_distance(mu1, np.diag(va), mu2, np.diag(vb), method="eigh") == pytest.approx(expected)


def test_frechet_distance_from_features_equals_covariance_form():
    rng = np.random.default_rng(8)
    for n1, n2, d in [(7, 5, 20), (60, 40, 6)]:  # Fewer rows than dimensions (singular covariances), and more.
        x1, x2 = rng.normal(size=(n1, d)), rng.normal(size=(n2, d)) * 0.7 + 0.2
        args = (x1.mean(0), np.cov(x1, rowvar=False, bias=True), x2.mean(0), np.cov(x2, rowvar=False, bias=True))
        expected = frechet_distance(*args, method="eigh")
        assert frechet_distance_from_features(x1, x2) == pytest.approx(expected, rel=1e-8, abs=1e-9)
        if n1 > d:
            assert frechet_distance_from_features(x1, x2) == pytest.approx(frechet_distance(*args), rel=1e-8)
    assert abs(frechet_distance_from_features(x1, x1)) < 1e-9


def test_frechet_distance_rejects_mismatched_shapes_and_methods():
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="method must be"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(3), method="svd")


# ----------------------------------------------------------------------------
# FeatureStats.


def test_feature_stats_weighted_mean_cov_equal_explicit_formulas():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 5)).astype(np.float32)
    w = rng.uniform(0.1, 2.0, size=40)
    stats = FeatureStats(capture_mean_cov=True)
    for i in range(0, 40, 7):  # Uneven chunks.
        stats.append(x[i : i + 7], weights=w[i : i + 7])
    mean, cov = stats.get_mean_cov()
    x64 = x.astype(np.float64)
    mean_ref = (w[:, None] * x64).sum(0) / w.sum()
    cov_ref = (x64 - mean_ref).T @ (w[:, None] * (x64 - mean_ref)) / w.sum()
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-12)
    np.testing.assert_allclose(cov, cov_ref, rtol=1e-9, atol=1e-12)
    assert stats.num_items == 40 and stats.weight == pytest.approx(w.sum())

    # Unit weights = the plain (population) mean and covariance.
    plain = FeatureStats(capture_mean_cov=True)
    plain.append(x)
    np.testing.assert_allclose(plain.get_mean_cov()[1], np.cov(x64, rowvar=False, bias=True), rtol=1e-9, atol=1e-12)

    # Integer weights = repeating rows.
    reps = np.array([1, 3] * 20)
    repeated = FeatureStats(capture_mean_cov=True)
    repeated.append(np.repeat(x, reps, axis=0))
    weighted = FeatureStats(capture_mean_cov=True)
    weighted.append(x, weights=reps)
    for a, b in zip(repeated.get_mean_cov(), weighted.get_mean_cov()):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_feature_stats_truncates_at_max_items_with_weights():
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    stats = FeatureStats(capture_all=True, capture_mean_cov=True, max_items=7)
    stats.append(x[:4], weights=np.ones(4))
    stats.append(x[4:], weights=np.arange(6) + 1.0)  # Only the first 3 rows (weights 1, 2, 3) are kept.
    assert stats.is_full() and stats.num_items == 7
    np.testing.assert_array_equal(stats.get_all(), x[:7])
    assert stats.weight == pytest.approx(4 + 1 + 2 + 3)
    stats.append(x)  # Ignored once full.
    assert stats.num_items == 7


def test_feature_stats_errors_name_the_problem():
    stats = FeatureStats(capture_mean_cov=True)
    with pytest.raises(ValueError, match="no features"):
        stats.get_mean_cov()
    with pytest.raises(ValueError, match="2-D"):
        stats.append(np.zeros(3))
    with pytest.raises(ValueError, match="weights"):
        stats.append(np.zeros((3, 2)), weights=np.ones(2))
    stats.append(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="2 columns"):
        stats.append(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="capture_all"):
        stats.get_all()


def test_feature_stats_save_load_round_trip_and_refuse_foreign_pickles(tmp_path):
    rng = np.random.default_rng(3)
    stats = FeatureStats(capture_all=True, capture_mean_cov=True, max_items=100)
    stats.append(rng.normal(size=(30, 4)), weights=rng.uniform(size=30))
    path = str(tmp_path / "sub" / "stats.pkl")
    stats.save(path)
    assert sorted(os.listdir(tmp_path / "sub")) == ["stats.pkl"]  # No temp file left behind.
    loaded = FeatureStats.load(path)
    assert set(loaded.__dict__) >= {
        "capture_all",
        "capture_mean_cov",
        "max_items",
        "num_items",
        "num_features",
        "all_features",
        "raw_mean",
        "raw_cov",
        "weight",
    }
    for a, b in zip(stats.get_mean_cov(), loaded.get_mean_cov()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(stats.get_all(), loaded.get_all())

    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps({"num_items": os.getcwd}))  # A global that is not a numpy reconstructor.
    with pytest.raises(pickle.UnpicklingError, match="posix.getcwd|os.getcwd|nt.getcwd"):
        FeatureStats.load(str(bad))


def test_rank_positions_interleave_to_every_position_once():
    for num_items, world in [(10, 1), (10, 3), (7, 2), (4, 4), (3, 5)]:
        per_rank = [rank_positions(num_items, world, r) for r in range(world)]
        assert len({len(p) for p in per_rank}) == 1  # Equal counts, so collectives line up.
        interleaved = [per_rank[r][i] for i in range(len(per_rank[0])) for r in range(world)]
        assert interleaved[:num_items] == list(range(num_items))


def test_append_torch_single_rank_matches_numpy_append():
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    w = torch.rand(5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a, b = FeatureStats(capture_mean_cov=True), FeatureStats(capture_mean_cov=True)
    a.append_torch(x, w)
    b.append(x.numpy(), w.numpy())
    np.testing.assert_array_equal(a.get_mean_cov()[1], b.get_mean_cov()[1])


# ----------------------------------------------------------------------------
# KID and IS.


def _kid_direct(real, gen, num_subsets, m, seed):
    """KID written out with explicit pair loops (same draws as the implementation: gen rows, then real rows)."""
    rng = np.random.RandomState(seed)
    d = real.shape[1]
    k = lambda a, b: (a @ b / d + 1) ** 3
    total = 0.0
    for _ in range(num_subsets):
        x = gen[rng.choice(len(gen), m, replace=False)]
        y = real[rng.choice(len(real), m, replace=False)]
        same = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
        cross = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
        total += same / (m - 1) - 2 * cross / m
    return total / (num_subsets * m)


def test_kid_equals_direct_computation_and_orders_distributions():
    rng = np.random.default_rng(4)
    real = rng.normal(size=(30, 8))
    gen = rng.normal(size=(25, 8)) + 0.5
    got = kernel_distance(real, gen, num_subsets=3, max_subset_size=10, rng=np.random.RandomState(7))
    assert got == pytest.approx(_kid_direct(real, gen, 3, 10, 7), rel=1e-10)

    same = kernel_distance(real[:15], real[15:], num_subsets=20, max_subset_size=15, rng=np.random.RandomState(0))
    shifted = kernel_distance(real, gen + 2.0, num_subsets=20, max_subset_size=15, rng=np.random.RandomState(0))
    assert abs(same) < 0.1 * shifted
    with pytest.raises(ValueError, match="at least 2"):
        kernel_distance(real[:1], gen)


def test_inception_score_equals_direct_computation():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(23, 7)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    mean, std = inception_score(probs, num_splits=4)
    scores = []
    for i in range(4):
        part = probs[i * 23 // 4 : (i + 1) * 23 // 4]  # Splits of 5, 6, 6, 6 rows.
        marginal = part.mean(0)
        kl = [np.sum(p * np.log(p / marginal)) for p in part]
        scores.append(np.exp(np.mean(kl)))
    assert mean == pytest.approx(np.mean(scores), rel=1e-12)
    assert std == pytest.approx(np.std(scores), rel=1e-9)

    # Extremes: identical predictions give 1; confident, evenly spread predictions give the class count.
    assert inception_score(np.full((20, 5), 0.2), num_splits=2)[0] == pytest.approx(1.0)
    onehot = np.full((20, 5), 1e-12)
    onehot[np.arange(20), np.arange(20) % 5] = 1.0
    assert inception_score(onehot, num_splits=2)[0] == pytest.approx(5.0, rel=1e-6)
    with pytest.raises(ValueError, match="num_splits"):
        inception_score(probs[:3], num_splits=10)


# ----------------------------------------------------------------------------
