"""Classic (non-GAN) augmentation of lesion patches, in numpy/OpenCV.

- ``classic_augment``: Frid-Adar et al. (2018) rotation, flip, translation and scaling of one
  lesion ROI, ``N = n_rot * (1 + n_flip + n_trans + n_scale)`` outputs.
- ``flip_augment``: Alyafi et al. (2019) "horizontal then vertical flipping" of a patch set.

Geometric transforms fill the pixels they bring in from outside the patch by reflection
(``cv2.BORDER_REFLECT_101``) rather than black, since a patch carries no context beyond its
border; interpolation is bilinear and outputs are clipped to the input's ``[0, 1]`` range.
No TensorFlow here (the on-the-fly GAN augmentation lives in ``training``).
"""
from __future__ import annotations

from typing import Sequence, Union

import cv2
import numpy as np

FLIPS = ("up-down", "left-right", "both")
"""Frid-Adar's flips, in the order ``classic_augment`` applies them (``n_flip <= 3``)."""

_BORDER = cv2.BORDER_REFLECT_101


def _warp(patch: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    height, width = patch.shape
    out = cv2.warpAffine(patch, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=_BORDER)
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def rotate(patch: np.ndarray, angle: float) -> np.ndarray:
    """Rotate ``(H, W)`` about its centre by ``angle`` degrees (counter-clockwise)."""
    height, width = patch.shape
    centre = ((width - 1) / 2.0, (height - 1) / 2.0)
    return _warp(patch, cv2.getRotationMatrix2D(centre, float(angle), 1.0))


def translate(patch: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Shift ``(H, W)`` by ``dx`` columns and ``dy`` rows (sub-pixel, bilinear)."""
    return _warp(patch, np.float64([[1, 0, dx], [0, 1, dy]]))


def zoom(patch: np.ndarray, factor: float) -> np.ndarray:
    """Scale ``(H, W)`` about its centre by ``factor`` (> 1 enlarges), same output shape."""
    height, width = patch.shape
    centre = ((width - 1) / 2.0, (height - 1) / 2.0)
    return _warp(patch, cv2.getRotationMatrix2D(centre, 0.0, float(factor)))


def flip(patch: np.ndarray, which: str) -> np.ndarray:
    """``"up-down"``, ``"left-right"`` or ``"both"`` flip of ``(H, W)``."""
    if which == "up-down":
        return np.ascontiguousarray(patch[::-1, :])
    if which == "left-right":
        return np.ascontiguousarray(patch[:, ::-1])
    if which == "both":
        return np.ascontiguousarray(patch[::-1, ::-1])
    raise ValueError(f"unknown flip {which!r}; expected one of {FLIPS}")


def classic_augment(patch: np.ndarray, rng: np.random.Generator, lesion_diameter: float,
                    n_rot: int = 30, n_flip: int = 3, n_trans: int = 7, n_scale: int = 5) -> list[np.ndarray]:
    """Frid-Adar et al. (2018) classic augmentation of one lesion ROI.

    For each of ``n_rot`` rotations by an angle uniform in ``[0, 180]`` degrees, the rotated ROI
    itself, then ``n_flip`` flips of it (up-down, left-right, both - in that order), ``n_trans``
    translations by ``(dx, dy)`` uniform in ``[-p, p]`` with ``p = min(4, 0.1 d)`` pixels, and
    ``n_scale`` scalings. Scaling follows the paper's range of ROI size changes
    ``s in [-0.1 d, +0.4 d]`` pixels: the ROI side ``S`` becomes ``S + s`` and is resized back to
    ``S``, i.e. a zoom by ``S / (S + s)`` about the centre (bigger ROI = lesion looks smaller).
    Total ``N = n_rot * (1 + n_flip + n_trans + n_scale)``; the defaults are the paper's counts
    (30, 3, 7, 5 -> 480 per lesion).

    Args:
        patch: ``(S, S)`` (or ``(H, W)``) float in ``[0, 1]``.
        rng: generator; the output is a deterministic function of its state.
        lesion_diameter: ``d`` in patch pixels.
        n_rot, n_flip (0..3), n_trans, n_scale: counts.

    Returns:
        ``N`` float32 arrays of the patch's shape, values in ``[0, 1]``, grouped per rotation.
    """
    patch = np.asarray(patch, dtype=np.float32)
    if patch.ndim != 2:
        raise ValueError(f"expected a (H, W) patch, got shape {patch.shape}")
    if not 0 <= n_flip <= len(FLIPS):
        raise ValueError(f"n_flip must be in 0..{len(FLIPS)} (up-down, left-right, both), got {n_flip}")
    if min(n_rot, n_trans, n_scale) < 0:
        raise ValueError("augmentation counts must be >= 0")
    d = float(lesion_diameter)
    p = min(4.0, 0.1 * d)
    side = float(min(patch.shape))
    out: list[np.ndarray] = []
    for _ in range(n_rot):
        rotated = rotate(patch, rng.uniform(0.0, 180.0))
        out.append(rotated)
        out.extend(flip(rotated, FLIPS[i]) for i in range(n_flip))
        for _ in range(n_trans):
            dx, dy = rng.uniform(-p, p, size=2)
            out.append(translate(rotated, dx, dy))
        for _ in range(n_scale):
            change = rng.uniform(-0.1 * d, 0.4 * d)
            out.append(zoom(rotated, side / max(side + change, 1.0)))
    return out


def flip_augment(patches: Union[np.ndarray, Sequence[np.ndarray]]) -> np.ndarray:
    """Alyafi's "horizontal then vertical flipping" of a patch set.

    Args:
        patches: ``(N, H, W)`` or ``(N, H, W, C)`` array (or a list of ``(H, W[, C])`` arrays).

    Returns:
        ``(3N, ...)``, same dtype: the N originals, then their N horizontal (left-right)
        flips, then their N vertical (up-down) flips - each flip applied to the originals, so
        no patch is flipped both ways (that would be a 180 degree rotation).
    """
    patches = np.asarray(patches)
    if patches.ndim < 3:
        raise ValueError(f"expected (N, H, W[, C]) patches, got shape {patches.shape}")
    return np.concatenate([patches, patches[:, :, ::-1], patches[:, ::-1, :]], axis=0)
