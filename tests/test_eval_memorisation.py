"""Memorisation check: SSIM equals tf.image.ssim; planted copies are found and flagged."""
from __future__ import annotations

import numpy as np
import pytest

from mammogan_tf.errors import InputError
from mammogan_tf.evaluation.memorisation import memorisation_check, nearest_by_ssim, nearest_neighbours, ssim


def test_ssim_equals_tensorflow():
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(0)
    a = rng.random((32, 24))
    for b in (np.clip(a + 0.2 * rng.standard_normal(a.shape), 0, 1), rng.random(a.shape), a * 0.5):
        expected = float(tf.image.ssim(tf.constant(a[..., None]), tf.constant(b[..., None]), max_val=1.0))
        assert ssim(a, b) == pytest.approx(expected, abs=1e-6)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(InputError, match="one size"):
        ssim(a, a[:10])


def test_nearest_neighbours_in_feature_and_pixel_space():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((20, 3))
    index, distance = nearest_neighbours(ref[[4, 7]] + 0.01, ref)
    np.testing.assert_array_equal(index, [4, 7])
    np.testing.assert_allclose(distance, np.sqrt(3) * 0.01)
    self_index, _ = nearest_neighbours(ref, ref, exclude_self=True)
    assert np.all(self_index != np.arange(20))
    images = rng.uniform(-1, 1, (12, 16, 16, 1))
    query = images[[3, 9]] * 0.9  # SSIM is not fooled by contrast: still the same structure
    best, value = nearest_by_ssim(query, images, candidates=5)
    np.testing.assert_array_equal(best, [3, 9])
    assert np.all(value > 0.9)


def test_planted_copies_are_flagged_and_others_are_not():
    rng = np.random.default_rng(2)
    train_images = rng.uniform(-1, 1, (40, 16, 16, 1))
    train_feats = rng.standard_normal((40, 8))
    copies = [5, 17]
    synth_images = np.concatenate([train_images[copies] + 0.01 * rng.standard_normal((2, 16, 16, 1)),
                                   rng.uniform(-1, 1, (10, 16, 16, 1))])
    synth_feats = np.concatenate([train_feats[copies] + 1e-3, rng.standard_normal((10, 8)) * 2.0 + 5.0])
    result = memorisation_check(synth_feats, train_feats, synth_images, train_images, percentile=1.0,
                                pixel_candidates=10)
    np.testing.assert_array_equal(result.feature_index[:2], copies)
    np.testing.assert_array_equal(result.ssim_index[:2], copies)
    np.testing.assert_array_equal(np.flatnonzero(result.flagged), [0, 1])
    assert result.flagged_feature[:2].all() and result.flagged_ssim[:2].all()
    assert result.feature_threshold == pytest.approx(np.percentile(result.real_feature_distance, 1.0))
    summary = result.summary(synthetic_ids=[f"s{i}" for i in range(12)], train_ids=[f"t{i}" for i in range(40)],
                             top=3)
    assert summary["n_flagged"] == 2 and summary["n_synthetic"] == 12 and summary["n_train"] == 40
    assert summary["fraction_flagged"] == pytest.approx(2 / 12)
    assert {p["train"] for p in summary["closest_feature_pairs"][:2]} == {"t5", "t17"}
    assert summary["closest_ssim_pairs"][0]["ssim"] > 0.99
    feature_only = memorisation_check(synth_feats, train_feats)
    assert feature_only.ssim is None and feature_only.flagged.sum() == 2
