"""Memorisation check: does a synthetic image reproduce a training image?

For every synthetic image we find its nearest real training image twice:

* in feature space: the Euclidean nearest neighbour of its backbone features;
* in pixel space: the training image with the highest SSIM (Wang et al. 2004, Gaussian window
  11 x 11, sigma 1.5, K1 = 0.01, K2 = 0.03, "valid" filtering; the same numbers as
  ``tf.image.ssim``). SSIM of every pair costs N_synthetic x N_train filterings, so the search
  runs over the ``pixel_candidates`` training images nearest in plain pixel L2 distance
  (exhaustive when the training set is no larger than that).

The same searches among the training images themselves (each against the others) give what
"close" means for this data set. A synthetic image is flagged when it is closer to a training
image than all but ``percentile`` % of training images are to their nearest other training
image: feature distance below that percentile of real-to-real distances, or SSIM above the
``100 - percentile`` percentile of real-to-real SSIMs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from mammogan_tf.errors import InputError
from mammogan_tf.evaluation.manifold import CHUNK, pairwise_distances

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


# ------------------------------------------------------------------------------------ SSIM

def _gaussian_window(size: int, sigma: float) -> np.ndarray:
    coords = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    window = np.exp(-0.5 * coords ** 2 / sigma ** 2)
    return window / window.sum()


def _filter(images: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of ``(..., H, W)`` with a 1-D window on both axes."""
    size = window.size
    out = np.lib.stride_tricks.sliding_window_view(images, size, axis=-1) @ window
    out = np.lib.stride_tricks.sliding_window_view(out, size, axis=-2) @ window
    return out


class _SSIMIndex:
    """Pre-filtered statistics of a stack of images ``(N, H, W)`` in [0, 1], for fast SSIM."""

    def __init__(self, images: np.ndarray, max_val: float = 1.0):
        self.images = np.asarray(images, dtype=np.float64)
        size = min(SSIM_WINDOW, *self.images.shape[-2:])
        self.window = _gaussian_window(size, SSIM_SIGMA)
        self.c1, self.c2 = (SSIM_K1 * max_val) ** 2, (SSIM_K2 * max_val) ** 2
        self.mean = _filter(self.images, self.window)
        self.square = _filter(self.images ** 2, self.window)

    def against(self, i: int, other: "_SSIMIndex", rows: np.ndarray) -> np.ndarray:
        """SSIM ``(len(rows),)`` of image ``i`` of this index with images ``rows`` of ``other``."""
        mu_x, mu_y = self.mean[i], other.mean[rows]
        cross = _filter(self.images[i] * other.images[rows], self.window)
        luminance = (2 * mu_x * mu_y + self.c1) / (mu_x ** 2 + mu_y ** 2 + self.c1)
        contrast_structure = ((2 * (cross - mu_x * mu_y) + self.c2)
                              / (self.square[i] + other.square[rows] - mu_x ** 2 - mu_y ** 2 + self.c2))
        return (luminance * contrast_structure).mean(axis=(-2, -1))


def ssim(image_a, image_b, max_val: float = 1.0) -> float:
    """Mean SSIM of two grey images ``(H, W)`` with values in [0, max_val] (1 = identical)."""
    a, b = np.asarray(image_a, dtype=np.float64), np.asarray(image_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise InputError(f"SSIM needs two (H, W) images of one size, got {a.shape} and {b.shape}")
    return float(_SSIMIndex(a[None], max_val).against(0, _SSIMIndex(b[None], max_val), np.array([0]))[0])


# --------------------------------------------------------------------- nearest neighbours

def nearest_neighbours(query, reference, exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Index ``(N,)`` and Euclidean distance ``(N,)`` of each query row's nearest reference row.

    exclude_self: query and reference are the same set; a row is not its own neighbour.
    """
    query = np.asarray(query, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    index, distance = np.empty(query.shape[0], dtype=np.int64), np.empty(query.shape[0])
    for start in range(0, query.shape[0], CHUNK):
        block = pairwise_distances(query[start:start + CHUNK], reference)
        if exclude_self:
            rows = np.arange(block.shape[0])
            block[rows, rows + start] = np.inf
        index[start:start + CHUNK] = block.argmin(axis=1)
        distance[start:start + CHUNK] = block[np.arange(block.shape[0]), index[start:start + CHUNK]]
    return index, distance


def _grey01(images) -> np.ndarray:
    """(N, H, W, 1) or (N, H, W) in [-1, 1] -> (N, H, W) float64 in [0, 1]."""
    images = np.asarray(images, dtype=np.float64)
    if images.ndim == 4:
        images = images[..., 0]
    return (images + 1.0) / 2.0


def nearest_by_ssim(query_images, reference_images, candidates: int = 50, exclude_self: bool = False,
                    progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Index ``(N,)`` and SSIM ``(N,)`` of each query image's most similar reference image.

    Images: ``(N, H, W, 1)`` float in [-1, 1] (one size for both sets). The SSIM search covers
    the ``candidates`` reference images nearest in pixel L2 distance.
    """
    query, reference = _grey01(query_images), _grey01(reference_images)
    if query.shape[1:] != reference.shape[1:]:
        raise InputError(f"pixel-space search needs one image size: {query.shape[1:]} vs {reference.shape[1:]}")
    n_ref = reference.shape[0] - (1 if exclude_self else 0)
    if n_ref < 1:
        raise InputError("pixel-space search needs at least one other reference image")
    k = min(int(candidates), n_ref)
    query_index, reference_index = _SSIMIndex(query), _SSIMIndex(reference)
    flat_q, flat_r = query.reshape(len(query), -1), reference.reshape(len(reference), -1)
    best_index, best_ssim = np.empty(len(query), dtype=np.int64), np.empty(len(query))
    bar = tqdm(total=len(query), desc="SSIM search", unit="img", disable=not progress, leave=False)
    for start in range(0, len(query), CHUNK):
        block = pairwise_distances(flat_q[start:start + CHUNK], flat_r)
        if exclude_self:
            rows = np.arange(block.shape[0])
            block[rows, rows + start] = np.inf
        nearest = np.argpartition(block, k - 1, axis=1)[:, :k] if k < block.shape[1] else \
            np.tile(np.arange(block.shape[1]), (block.shape[0], 1))
        for row, cand in enumerate(nearest):
            i = start + row
            if exclude_self:
                cand = cand[cand != i]
            values = query_index.against(i, reference_index, cand)
            j = int(np.argmax(values))
            best_index[i], best_ssim[i] = cand[j], values[j]
            bar.update(1)
    bar.close()
    return best_index, best_ssim


# ----------------------------------------------------------------------------- the check

@dataclass
class MemorisationResult:
    """Nearest training image of every synthetic image, and the real-to-real reference.

    Arrays are ``(M,)`` over synthetic images, ``real_*`` are ``(N,)`` over training images.
    """

    feature_index: np.ndarray
    feature_distance: np.ndarray
    real_feature_distance: np.ndarray
    feature_threshold: float
    percentile: float
    ssim_index: np.ndarray | None = None
    ssim: np.ndarray | None = None
    real_ssim: np.ndarray | None = None
    ssim_threshold: float | None = None
    pixel_candidates: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def flagged_feature(self) -> np.ndarray:
        """(M,) bool: nearer in feature space than ``percentile`` % of real-to-real pairs."""
        return self.feature_distance < self.feature_threshold

    @property
    def flagged_ssim(self) -> np.ndarray:
        """(M,) bool: more similar (SSIM) than ``100 - percentile`` % of real-to-real pairs."""
        if self.ssim is None:
            return np.zeros(self.feature_distance.shape, dtype=bool)
        return self.ssim > self.ssim_threshold

    @property
    def flagged(self) -> np.ndarray:
        """(M,) bool: flagged in either space."""
        return self.flagged_feature | self.flagged_ssim

    def summary(self, synthetic_ids=None, train_ids=None, top: int = 10) -> dict:
        """JSON-able summary: thresholds, flag counts, medians and the closest pairs."""
        def name(ids, i):
            return str(ids[i]) if ids is not None else int(i)

        order = np.argsort(self.feature_distance, kind="mergesort")[:top]
        out = {
            "n_synthetic": int(self.feature_distance.size), "n_train": int(self.real_feature_distance.size),
            "percentile": self.percentile,
            "feature_threshold": self.feature_threshold,
            "feature_distance_median": float(np.median(self.feature_distance)),
            "real_to_real_feature_distance_median": float(np.median(self.real_feature_distance)),
            "n_flagged_feature": int(self.flagged_feature.sum()),
            "closest_feature_pairs": [{"synthetic": name(synthetic_ids, i),
                                       "train": name(train_ids, self.feature_index[i]),
                                       "distance": float(self.feature_distance[i])} for i in order],
        }
        if self.ssim is not None:
            order = np.argsort(-self.ssim, kind="mergesort")[:top]
            out.update({
                "ssim_threshold": self.ssim_threshold, "pixel_candidates": self.pixel_candidates,
                "ssim_median": float(np.median(self.ssim)),
                "real_to_real_ssim_median": float(np.median(self.real_ssim)),
                "n_flagged_ssim": int(self.flagged_ssim.sum()),
                "closest_ssim_pairs": [{"synthetic": name(synthetic_ids, i),
                                        "train": name(train_ids, self.ssim_index[i]),
                                        "ssim": float(self.ssim[i])} for i in order],
            })
        out["n_flagged"] = int(self.flagged.sum())
        out["fraction_flagged"] = float(self.flagged.mean())
        return out


def memorisation_check(synthetic_features, train_features, synthetic_images=None, train_images=None,
                       percentile: float = 1.0, pixel_candidates: int = 50,
                       progress: bool = False) -> MemorisationResult:
    """Nearest training image of each synthetic image in feature (and pixel) space, with flags.

    synthetic_features: (M, D); train_features: (N, D), N >= 2. Images, when given:
    (M, S, S, 1) and (N, S, S, 1) float in [-1, 1] (one size), for the SSIM search.
    """
    synthetic_features = np.asarray(synthetic_features, dtype=np.float64)
    train_features = np.asarray(train_features, dtype=np.float64)
    if train_features.shape[0] < 2:
        raise InputError(f"memorisation check needs at least 2 training images, got {train_features.shape[0]}")
    index, distance = nearest_neighbours(synthetic_features, train_features)
    _, real_distance = nearest_neighbours(train_features, train_features, exclude_self=True)
    result = MemorisationResult(feature_index=index, feature_distance=distance,
                                real_feature_distance=real_distance, percentile=float(percentile),
                                feature_threshold=float(np.percentile(real_distance, percentile)))
    if synthetic_images is not None and train_images is not None:
        result.ssim_index, result.ssim = nearest_by_ssim(synthetic_images, train_images, pixel_candidates,
                                                         progress=progress)
        _, result.real_ssim = nearest_by_ssim(train_images, train_images, pixel_candidates,
                                              exclude_self=True, progress=progress)
        result.ssim_threshold = float(np.percentile(result.real_ssim, 100.0 - percentile))
        result.pixel_candidates = int(pixel_candidates)
    return result
