"""Frechet distance (FID when the features are Inception's), KID, streaming statistics, cache.

All arithmetic is float64. Activations are ``(N, D)`` arrays, one row per image.

* ``frechet_distance_from_stats``: ``|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2))``.
  The trace of the matrix square root is computed from eigenvalues only:
  ``tr((S_a S_b)^(1/2)) = sum sqrt(eig(A S_b A))`` with ``A = S_a^(1/2)`` (``eigh``; eigenvalues
  below the round-off level ``D * eps * max`` set to 0, so a singular covariance's null space
  adds nothing rather than ``sqrt(1e-16)`` per dimension). ``A S_b A`` is symmetric positive semi-definite and has
  the eigenvalues of ``S_a S_b``, so this is exact for singular covariances too (fewer images
  than feature dimensions), with no iterative ``sqrtm`` and no imaginary parts to discard.
* Covariances use ``ddof=1`` (``np.cov``'s default, as in the reference FID code).
* ``kid``: the unbiased MMD^2 with the polynomial kernel ``(x.y / d + 1)^3`` (Binkowski et al.
  2018), averaged over random subsets drawn without replacement.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from mammogan_tf.errors import InputError

DEFAULT_CACHE_DIR = Path(os.environ.get("MAMMOGAN_CACHE", Path.home() / ".cache" / "mammogan_tf"))
"""Where cached real-set statistics live (``$MAMMOGAN_CACHE`` or ``~/.cache/mammogan_tf``)."""


def _as_activations(acts, name: str) -> np.ndarray:
    acts = np.asarray(acts, dtype=np.float64)
    if acts.ndim != 2:
        raise InputError(f"{name}: activations must be (N, D), got shape {acts.shape}")
    if acts.shape[0] < 2:
        raise InputError(f"{name}: need at least 2 images for a covariance, got {acts.shape[0]}")
    if not np.all(np.isfinite(acts)):
        raise InputError(f"{name}: activations contain NaN or infinity")
    return acts


def activation_statistics(acts, ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and covariance ``(D, D)`` (float64, ``ddof=1`` by default) of ``(N, D)``."""
    acts = _as_activations(acts, "acts")
    return acts.mean(axis=0), np.cov(acts, rowvar=False, ddof=ddof).reshape(acts.shape[1], -1)


def _psd_eigenvalues(values: np.ndarray) -> np.ndarray:
    """Eigenvalues of a PSD matrix with round-off removed: those below ``D * eps * max`` (the
    usual numerical-rank tolerance, and the level of eigh's own error) are set to 0."""
    tolerance = values.size * np.finfo(np.float64).eps * max(float(values.max(initial=0.0)), 0.0)
    return np.where(values > tolerance, values, 0.0)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (eigh)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2.0)
    return (vectors * np.sqrt(_psd_eigenvalues(values))) @ vectors.T


def trace_sqrt_product(sigma_a, sigma_b) -> float:
    """``tr((sigma_a sigma_b)^(1/2))`` for two PSD covariances, via eigenvalues of A S_b A."""
    root_a = _sqrt_psd(np.asarray(sigma_a, dtype=np.float64))
    inner = root_a @ np.asarray(sigma_b, dtype=np.float64) @ root_a
    values = np.linalg.eigvalsh((inner + inner.T) / 2.0)
    return float(np.sqrt(_psd_eigenvalues(values)).sum())


def frechet_distance_from_stats(mu_a, sigma_a, mu_b, sigma_b) -> float:
    """Frechet distance between Gaussians N(mu_a, sigma_a) and N(mu_b, sigma_b).

    mu_*: (D,); sigma_*: (D, D) symmetric PSD. Returns a float >= 0 (tiny negative round-off
    is clipped to 0).
    """
    mu_a = np.atleast_1d(np.asarray(mu_a, dtype=np.float64))
    mu_b = np.atleast_1d(np.asarray(mu_b, dtype=np.float64))
    sigma_a = np.atleast_2d(np.asarray(sigma_a, dtype=np.float64))
    sigma_b = np.atleast_2d(np.asarray(sigma_b, dtype=np.float64))
    if mu_a.shape != mu_b.shape or sigma_a.shape != sigma_b.shape or sigma_a.shape != mu_a.shape * 2:
        raise InputError(f"statistics shapes differ: mu {mu_a.shape} vs {mu_b.shape}, "
                         f"sigma {sigma_a.shape} vs {sigma_b.shape}")
    diff = mu_a - mu_b
    value = (diff @ diff + np.trace(sigma_a) + np.trace(sigma_b)
             - 2.0 * trace_sqrt_product(sigma_a, sigma_b))
    return float(max(value, 0.0))


def frechet_distance(acts_a, acts_b, ddof: int = 1) -> float:
    """Frechet distance between two activation sets ``(N_a, D)`` and ``(N_b, D)`` (float64)."""
    return frechet_distance_from_stats(*activation_statistics(_as_activations(acts_a, "acts_a"), ddof),
                                       *activation_statistics(_as_activations(acts_b, "acts_b"), ddof))


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``(x.y / d + 1)^3`` for rows of ``x (N, D)`` and ``y (M, D)`` -> ``(N, M)`` float64."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the polynomial kernel between samples ``x (m, D)`` and ``y (n, D)``."""
    m, n = x.shape[0], y.shape[0]
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    return float((k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
                 + (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
                 - 2.0 * k_xy.mean())


def kid(acts_a, acts_b, subset_size: int = 1000, n_subsets: int = 100, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance: mean and std of the unbiased MMD^2 over random subsets.

    acts_*: (N, D). Each subset draws ``min(subset_size, N_a, N_b)`` rows of each set without
    replacement (``numpy.random.default_rng(seed)``). When that size is the whole of both sets,
    every subset is the same and one evaluation is returned with std 0.
    """
    a = _as_activations(acts_a, "acts_a")
    b = _as_activations(acts_b, "acts_b")
    if a.shape[1] != b.shape[1]:
        raise InputError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    size = min(int(subset_size), a.shape[0], b.shape[0])
    if size == a.shape[0] == b.shape[0]:
        return mmd2_unbiased(a, b), 0.0
    rng = np.random.default_rng(seed)
    values = np.array([mmd2_unbiased(a[rng.choice(a.shape[0], size, replace=False)],
                                     b[rng.choice(b.shape[0], size, replace=False)])
                       for _ in range(int(n_subsets))])
    return float(values.mean()), float(values.std())


class RunningStatistics:
    """Streaming mean and covariance of activations, batch by batch, in float64.

    Batches are merged with Chan et al.'s pairwise update (count, mean, centred sum of squares),
    so the result equals ``activation_statistics`` on all rows at once up to round-off, whatever
    the batching. A few rows can be kept for KID/precision-recall (``keep``: the first rows seen).
    """

    def __init__(self, dim: int | None = None, keep: int = 0):
        self.count = 0
        self.dim = dim
        self._mean = None if dim is None else np.zeros(dim)
        self._m2 = None if dim is None else np.zeros((dim, dim))
        self.keep = int(keep)
        self._kept: list[np.ndarray] = []

    def update(self, acts) -> "RunningStatistics":
        """Add a batch ``(B, D)`` of activations."""
        acts = np.asarray(acts, dtype=np.float64)
        if acts.ndim != 2 or acts.shape[0] == 0:
            return self
        if self._mean is None:
            self.dim = acts.shape[1]
            self._mean, self._m2 = np.zeros(self.dim), np.zeros((self.dim, self.dim))
        if acts.shape[1] != self.dim:
            raise InputError(f"activation dimension {acts.shape[1]} differs from earlier batches ({self.dim})")
        n_b = acts.shape[0]
        mean_b = acts.mean(axis=0)
        centred = acts - mean_b
        self._merge(n_b, mean_b, centred.T @ centred)
        kept = sum(len(k) for k in self._kept)
        if kept < self.keep:
            self._kept.append(acts[: self.keep - kept].copy())
        return self

    def _merge(self, n_b: int, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
        n_a, total = self.count, self.count + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (n_b / total)
        self._m2 = self._m2 + m2_b + np.outer(delta, delta) * (n_a * n_b / total)
        self.count = total

    def merge(self, other: "RunningStatistics") -> "RunningStatistics":
        """Fold another accumulator (e.g. from another worker) into this one."""
        if other.count:
            if self._mean is None:
                self.dim, self._mean, self._m2 = other.dim, np.zeros(other.dim), np.zeros((other.dim,) * 2)
            self._merge(other.count, other._mean, other._m2)
        return self

    @property
    def mean(self) -> np.ndarray:
        """(D,) float64 mean."""
        return self._mean.copy()

    def covariance(self, ddof: int = 1) -> np.ndarray:
        """(D, D) float64 covariance."""
        if self.count - ddof <= 0:
            raise InputError(f"need more than {ddof} images for a covariance, got {self.count}")
        return self._m2 / (self.count - ddof)

    @property
    def kept(self) -> np.ndarray:
        """The rows kept for KID / manifold metrics, ``(min(keep, count), D)``."""
        return np.concatenate(self._kept) if self._kept else np.zeros((0, self.dim or 0))

    def save(self, path: str | os.PathLike, key: dict | None = None) -> None:
        """Write ``count, mean, covariance (ddof=1), kept`` and the cache key to an ``.npz``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, count=self.count, mean=self._mean, m2=self._m2, kept=self.kept,
                 key=json.dumps(key or {}, sort_keys=True))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "RunningStatistics":
        """Read what ``save`` wrote."""
        try:
            with np.load(path) as data:
                stats = cls(dim=int(data["mean"].shape[0]), keep=int(data["kept"].shape[0]))
                stats.count, stats._mean, stats._m2 = int(data["count"]), data["mean"], data["m2"]
                if data["kept"].shape[0]:
                    stats._kept = [data["kept"]]
        except (OSError, KeyError, ValueError) as error:
            raise InputError(f"{path}: not a readable statistics file ({error}); delete it to recompute") from None
        return stats


def statistics_key(**parts) -> str:
    """Hex key of a cache entry from JSON-able parts (backbone identity, manifest sha256, split...)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def cached_statistics(key_parts: dict, compute: Callable[[], RunningStatistics],
                      cache_dir: str | os.PathLike | None = None) -> RunningStatistics:
    """Real-set statistics from ``CACHE/stats-<key>.npz``, or ``compute()`` them and store them.

    ``key_parts`` must name everything the numbers depend on: the backbone identity (spec and
    weights sha256), the data manifest sha256, split, class filter, resize method.
    """
    path = Path(cache_dir or DEFAULT_CACHE_DIR) / f"stats-{statistics_key(**key_parts)}.npz"
    if path.is_file():
        return RunningStatistics.load(path)
    stats = compute()
    stats.save(path, key_parts)
    return stats
