"""Wu et al.'s post-processing of a contextual generator's lesion channel (pure numpy / scipy / cv2).

For one patch (``lesion``, ``base``: ``(S, S)`` float in [-1, 1]; a trailing channel axis of 1
is accepted):

1. binary mask ``lesion > threshold`` (0.1; removal: ``lesion < -threshold``, the "negative lesion");
2. keep the largest connected component (8-connectivity; ties: the lowest label);
3. discard it when it covers less than ``min_area_fraction`` (10 %) of the patch: the mask is
   then empty and the patch comes back unchanged (``kept`` False);
4. dilate by ``dilate_px`` (5) with a disk of that radius;
5. smooth the edge with a Gaussian of ``smooth_px`` (10) px: kernel ``2 * smooth_px + 1`` wide,
   sigma ``smooth_px / 3`` (the kernel spans +-3 sigma), giving a soft mask in [0, 1] that is
   1 deep inside, about 0.5 on the dilated edge and 0 beyond ``smooth_px`` outside it along rows
   and columns (the kernel is square: up to ``smooth_px * sqrt(2)`` diagonally);
6. multiply the soft mask with the lesion channel;
7. add the result to the base patch and clip to [-1, 1].

``lesion_mask`` gives steps 1-5, ``postprocess`` all of them, ``mask_box`` the box of the
post-processed lesion (where the soft mask >= 0.5: about the dilated object).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

THRESHOLD = 0.1
MIN_AREA_FRACTION = 0.1
DILATE_PX = 5
SMOOTH_PX = 10


@dataclass(frozen=True)
class PostProcessed:
    """``image``: (S, S) float32 in [-1, 1], base + masked lesion; ``mask``: (S, S) float32 soft mask
    in [0, 1]; ``lesion``: (S, S) float32 masked lesion; ``kept``: an object survived step 3."""

    image: np.ndarray
    mask: np.ndarray
    lesion: np.ndarray
    kept: bool


def as_plane(array, name: str) -> np.ndarray:
    array = np.asarray(array, np.float32)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise ValueError(f"{name}: expected an (S, S) or (S, S, 1) array, got shape {array.shape}")
    return array


def largest_component(binary: np.ndarray) -> np.ndarray:
    """The largest 8-connected object of a boolean mask (all False when there is none)."""
    labels, count = ndimage.label(binary, structure=np.ones((3, 3), bool))
    if count == 0:
        return np.zeros_like(binary, bool)
    sizes = np.bincount(labels.ravel())[1:]
    return labels == 1 + int(np.argmax(sizes))


def disk(radius: int) -> np.ndarray:
    """A ``(2r+1, 2r+1)`` uint8 disk of ``radius`` px (Euclidean distance <= radius)."""
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return (x * x + y * y <= radius * radius).astype(np.uint8)


def lesion_mask(lesion, threshold: float = THRESHOLD, removal: bool = False,
                min_area_fraction: float = MIN_AREA_FRACTION, dilate_px: int = DILATE_PX,
                smooth_px: int = SMOOTH_PX) -> np.ndarray:
    """Soft mask (S, S) float32 in [0, 1] of the post-processed lesion (steps 1-5; zeros if discarded)."""
    lesion = as_plane(lesion, "lesion")
    binary = lesion < -threshold if removal else lesion > threshold
    component = largest_component(binary)
    if component.sum() < min_area_fraction * component.size:
        return np.zeros(lesion.shape, np.float32)
    mask = component.astype(np.uint8)
    if dilate_px > 0:
        mask = cv2.dilate(mask, disk(dilate_px))
    mask = mask.astype(np.float32)
    if smooth_px > 0:
        size = 2 * smooth_px + 1
        mask = cv2.GaussianBlur(mask, (size, size), sigmaX=smooth_px / 3.0, borderType=cv2.BORDER_REPLICATE)
    return np.clip(mask, 0.0, 1.0)


def postprocess(lesion, base, threshold: float = THRESHOLD, removal: bool = False,
                min_area_fraction: float = MIN_AREA_FRACTION, dilate_px: int = DILATE_PX,
                smooth_px: int = SMOOTH_PX) -> PostProcessed:
    """Steps 1-7 on one patch: ``lesion`` (the generator's lesion channel) and ``base`` (the patch
    it is added to, normally the generator's input), both (S, S) in [-1, 1]."""
    lesion, base = as_plane(lesion, "lesion"), as_plane(base, "base")
    if lesion.shape != base.shape:
        raise ValueError(f"lesion {lesion.shape} and base {base.shape} differ in shape")
    mask = lesion_mask(lesion, threshold, removal, min_area_fraction, dilate_px, smooth_px)
    masked = mask * lesion
    return PostProcessed(image=np.clip(base + masked, -1.0, 1.0).astype(np.float32), mask=mask,
                         lesion=masked.astype(np.float32), kept=bool(mask.any()))


def mask_box(mask, level: float = 0.5):
    """``(x0, y0, x1, y1)`` (x = column; x1, y1 exclusive) of ``mask >= level``, or None when empty."""
    rows, cols = np.nonzero(as_plane(mask, "mask") >= level)
    if rows.size == 0:
        return None
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1
