"""Precision, recall, density and coverage from k-nearest-neighbour manifolds.

Kynkaanniemi et al. 2019 (precision, recall) and Naeem et al. 2020 (density, coverage). Each
real sample ``r`` gets a ball of radius ``NND_k(r)``, the distance to its k-th nearest other
real sample (likewise for synthetic samples, for recall). With ``d(r, f)`` Euclidean:

* precision = fraction of synthetic ``f`` inside at least one real ball,
* recall    = fraction of real ``r`` inside at least one synthetic ball,
* density   = (1/k) * mean over ``f`` of the number of real balls containing ``f``,
* coverage  = fraction of real ``r`` whose nearest synthetic sample lies inside its ball.

"Inside" is strict (``d < radius``). Distances are computed in float64 in row chunks, so
memory stays at ``chunk x N`` whatever the set sizes.
"""
from __future__ import annotations

import numpy as np

from mammogan_tf.errors import InputError

CHUNK = 1024


def pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances ``(N, M)`` between rows of ``a (N, D)`` and ``b (M, D)`` (float64)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.clip(squared, 0.0, None))


def knn_radii(acts: np.ndarray, k: int) -> np.ndarray:
    """Distance of each row of ``acts (N, D)`` to its k-th nearest other row -> ``(N,)``."""
    acts = np.asarray(acts, dtype=np.float64)
    if not 1 <= k < acts.shape[0]:
        raise InputError(f"k={k} nearest neighbours needs more than {k} samples, got {acts.shape[0]}")
    radii = np.empty(acts.shape[0])
    for start in range(0, acts.shape[0], CHUNK):
        block = pairwise_distances(acts[start:start + CHUNK], acts)
        rows = np.arange(block.shape[0])
        block[rows, rows + start] = -np.inf  # the sample itself is never its own neighbour
        radii[start:start + CHUNK] = np.partition(block, k, axis=1)[:, k]
    return radii


def manifold_metrics(real, synthetic, k: int = 5) -> dict[str, float]:
    """``{"precision", "recall", "density", "coverage", "k"}`` for real ``(N, D)`` vs synthetic ``(M, D)``.

    Precision, recall and coverage are in [0, 1]; density is >= 0 (1 when the synthetic samples
    are spread like the real ones, higher when they crowd where real samples are dense).
    """
    real = np.asarray(real, dtype=np.float64)
    synthetic = np.asarray(synthetic, dtype=np.float64)
    real_radii = knn_radii(real, k)
    synthetic_radii = knn_radii(synthetic, k)
    inside_real = np.zeros(synthetic.shape[0])        # per synthetic: real balls containing it
    recalled = np.zeros(real.shape[0], dtype=bool)    # per real: inside some synthetic ball
    covered = np.zeros(real.shape[0], dtype=bool)     # per real: nearest synthetic in its ball
    for start in range(0, real.shape[0], CHUNK):
        block = pairwise_distances(real[start:start + CHUNK], synthetic)  # (chunk, M)
        radii = real_radii[start:start + CHUNK, None]
        inside_real += (block < radii).sum(axis=0)
        recalled[start:start + CHUNK] = (block < synthetic_radii[None, :]).any(axis=1)
        covered[start:start + CHUNK] = block.min(axis=1) < radii[:, 0]
    return {"precision": float((inside_real > 0).mean()), "recall": float(recalled.mean()),
            "density": float(inside_real.mean() / k), "coverage": float(covered.mean()), "k": int(k)}
