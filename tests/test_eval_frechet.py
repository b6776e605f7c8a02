"""Frechet distance, KID, streaming statistics and the statistics cache against known values."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from scipy import linalg

from mammogan_tf.errors import InputError
from mammogan_tf.evaluation.frechet import (RunningStatistics, activation_statistics, cached_statistics,
                                            frechet_distance, frechet_distance_from_stats, kid,
                                            trace_sqrt_product)

REL = 1e-9


@pytest.fixture(scope="module")
def vectors(reference_dir):
    expected = json.loads((reference_dir / "fid_kid_vectors.json").read_text())
    i, j = np.arange(10)[:, None], np.arange(4)[None, :]
    return np.sin(i * (j + 1)), np.cos(i * (j + 1)) + 0.5, expected


def test_reference_frechet_distance(vectors):
    x, y, expected = vectors
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecated scipy arguments, no complex parts
        value = frechet_distance(x, y)
    assert value == pytest.approx(expected["frechet_distance_ddof1"], rel=REL)
    assert value == pytest.approx(1.207593332697007, rel=REL)
    assert frechet_distance(x, y, ddof=0) == pytest.approx(expected["frechet_distance_ddof0"], rel=REL)


def test_reference_kid(vectors):
    x, y, expected = vectors
    mean, std = kid(x, y, subset_size=1000, n_subsets=100, seed=0)
    assert mean == pytest.approx(expected["kid_all_samples"], rel=REL)
    assert mean == pytest.approx(0.8157380949654633, rel=REL)
    assert std == 0.0
    assert kid(x, x)[0] == pytest.approx(expected["kid_X_vs_X"], rel=REL)


@pytest.mark.parametrize("d", [1, 3, 16])
def test_analytic_cases(d):
    eye = np.eye(d)
    # mean 0 vs mean 1 (every coordinate), identity covariances: |mu_a - mu_b|^2 = d
    assert frechet_distance_from_stats(np.zeros(d), eye, np.ones(d), eye) == pytest.approx(d, rel=REL)
    # same mean, 4I vs I: 4d + d - 2 * 2d = d
    assert frechet_distance_from_stats(np.zeros(d), 4 * eye, np.zeros(d), eye) == pytest.approx(d, rel=REL)


def test_matches_scipy_sqrtm_on_full_rank_covariances():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((200, 6)), rng.standard_normal((150, 6)) @ rng.standard_normal((6, 6))
    (mu_a, s_a), (mu_b, s_b) = activation_statistics(a), activation_statistics(b)
    expected = (np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b)
                - 2 * np.trace(linalg.sqrtm(s_a @ s_b).real))
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert trace_sqrt_product(s_a, s_b) == pytest.approx(np.trace(linalg.sqrtm(s_a @ s_b).real), rel=1e-9)


def test_self_distance_is_zero_and_order_free_even_when_singular():
    rng = np.random.default_rng(2)
    full = rng.standard_normal((300, 16))
    singular = rng.standard_normal((10, 64))  # 10 images, 64 features: rank-9 covariance
    for acts in (full, singular):
        assert abs(frechet_distance(acts, acts)) < 1e-6
        assert abs(frechet_distance(acts, acts[rng.permutation(len(acts))])) < 1e-6
    other = rng.standard_normal((12, 64)) + 0.3
    forward = frechet_distance(singular, other)
    assert np.isfinite(forward) and forward > 0
    assert frechet_distance(singular[::-1], other[rng.permutation(12)]) == pytest.approx(forward, rel=1e-9)
    assert frechet_distance(other, singular) == pytest.approx(forward, rel=1e-9)


def test_streaming_statistics_equal_one_shot():
    rng = np.random.default_rng(3)
    acts = rng.standard_normal((257, 8)) * 5 + 100  # large mean: naive sums would lose digits
    mu, sigma = activation_statistics(acts)
    for batch in (1, 7, 64, 257):
        stats = RunningStatistics()
        for start in range(0, len(acts), batch):
            stats.update(acts[start:start + batch])
        assert stats.count == 257
        np.testing.assert_allclose(stats.mean, mu, rtol=1e-12)
        np.testing.assert_allclose(stats.covariance(), sigma, rtol=1e-9, atol=1e-12)
    left, right = RunningStatistics().update(acts[:100]), RunningStatistics().update(acts[100:])
    merged = left.merge(right)
    np.testing.assert_allclose(merged.covariance(), sigma, rtol=1e-9, atol=1e-12)
    assert frechet_distance_from_stats(merged.mean, merged.covariance(), mu, sigma) < 1e-9


def test_statistics_file_round_trip_and_cache(tmp_path):
    rng = np.random.default_rng(4)
    acts = rng.standard_normal((50, 5))
    calls = []

    def compute():
        calls.append(1)
        return RunningStatistics(keep=20).update(acts[:30]).update(acts[30:])

    key = {"backbone": {"spec": "random"}, "manifest_sha256": "abc", "split": "train"}
    first = cached_statistics(key, compute, tmp_path)
    second = cached_statistics(key, compute, tmp_path)
    assert len(calls) == 1 and len(list(tmp_path.glob("stats-*.npz"))) == 1
    np.testing.assert_array_equal(second.mean, first.mean)
    np.testing.assert_array_equal(second.covariance(), first.covariance())
    np.testing.assert_array_equal(second.kept, acts[:20])
    assert second.count == 50
    cached_statistics({**key, "split": "val"}, compute, tmp_path)
    assert len(calls) == 2


def test_kid_subsets_are_seeded():
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((60, 4)), rng.standard_normal((80, 4)) + 1.0
    first = kid(a, b, subset_size=20, n_subsets=10, seed=3)
    assert first == kid(a, b, subset_size=20, n_subsets=10, seed=3)
    assert first[1] > 0 and first[0] > 0.05
    assert abs(kid(a, rng.standard_normal((80, 4)), subset_size=40, n_subsets=20)[0]) < 0.05


def test_bad_input_is_reported():
    with pytest.raises(InputError, match="at least 2"):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(InputError, match="differ"):
        frechet_distance_from_stats(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(InputError, match="NaN"):
        kid(np.full((4, 2), np.nan), np.zeros((4, 2)))
