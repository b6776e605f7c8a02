"""Precision, recall, density and coverage: a hand-computed case and a brute-force check."""
from __future__ import annotations

import numpy as np
import pytest

from mammogan_tf.errors import InputError
from mammogan_tf.evaluation import manifold
from mammogan_tf.evaluation.manifold import knn_radii, manifold_metrics


def test_hand_computed_case():
    real = np.array([[0.0], [1.0], [2.0], [3.0]])  # k=1 radii: 1, 1, 1, 1
    synthetic = np.array([[0.5], [10.0]])           # k=1 radii: 9.5, 9.5
    out = manifold_metrics(real, synthetic, k=1)
    # precision: 0.5 lies in the balls of 0 and 1, 10 in none -> 1/2
    # recall: every real point is within 9.5 of 0.5 -> 1
    # density: (2 + 0) / 2 / k = 1; coverage: reals 0 and 1 have 0.5 within radius 1 -> 2/4
    assert out == {"precision": 0.5, "recall": 1.0, "density": 1.0, "coverage": 0.5, "k": 1}


def _brute_force(real, fake, k):
    d_rr = np.linalg.norm(real[:, None] - real[None], axis=-1)
    d_ff = np.linalg.norm(fake[:, None] - fake[None], axis=-1)
    d_rf = np.linalg.norm(real[:, None] - fake[None], axis=-1)
    r_real = np.sort(d_rr, axis=1)[:, k]  # column 0 is the point itself
    r_fake = np.sort(d_ff, axis=1)[:, k]
    return {"precision": (d_rf < r_real[:, None]).any(0).mean(), "recall": (d_rf < r_fake[None]).any(1).mean(),
            "density": (d_rf < r_real[:, None]).sum(0).mean() / k, "coverage": (d_rf.min(1) < r_real).mean()}


def test_matches_brute_force_with_chunking(monkeypatch):
    monkeypatch.setattr(manifold, "CHUNK", 7)  # several chunks and a ragged last one
    rng = np.random.default_rng(0)
    real, fake = rng.standard_normal((40, 3)), rng.standard_normal((33, 3)) * 1.3 + 0.4
    out = manifold_metrics(real, fake, k=3)
    expected = _brute_force(real, fake, 3)
    for name, value in expected.items():
        assert out[name] == pytest.approx(value, abs=1e-12), name


def test_identical_sets_and_radii():
    rng = np.random.default_rng(1)
    acts = rng.standard_normal((30, 4))
    out = manifold_metrics(acts, acts, k=5)
    assert out["precision"] == 1.0 and out["recall"] == 1.0 and out["coverage"] == 1.0
    np.testing.assert_allclose(knn_radii(np.array([[0.0], [1.0], [3.0]]), 1), [1.0, 1.0, 2.0])
    with pytest.raises(InputError, match="nearest neighbours"):
        knn_radii(acts[:3], 3)
