"""Blend a synthetic patch back into its full mammogram (pure numpy / cv2), Wu et al.'s Fig. 3.

``origin`` is the crop recorded by ``prepare`` for the source patch: ``(x0, y0, x1, y1)`` in image
pixels (x = column, x1/y1 exclusive; it may extend past the image, where nothing is written).
The patch (S, S) and its soft lesion mask are resized to the crop (bilinear) when the crop was
resized at prepare time; patches that prepare flipped or rotated must be turned back by the
caller first. Pixels are blended as ``image * (1 - mask) + patch * mask``, so pixels outside
the lesion mask stay bit-identical; patch values in [-1, 1] map linearly onto ``value_range``
(default: the full range of an integer dtype, e.g. 0..65535 for 16-bit; [-1, 1] for floats).
The returned box is that of the post-processed lesion (``postprocess.mask_box`` of the resized
mask, mask >= 0.5) in image pixels, clipped to the image: the row of the extended lesion table.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mammogan_tf.models.postprocess import as_plane, mask_box


@dataclass(frozen=True)
class Reinserted:
    """``image``: the new full image (same shape and dtype); ``box``: ``(x0, y0, x1, y1)`` of the
    lesion in image pixels, or None when the mask is empty (nothing was changed)."""

    image: np.ndarray
    box: tuple[int, int, int, int] | None


def default_range(dtype) -> tuple[float, float]:
    """Image values that patch values -1 and 1 map to: an integer dtype's full range, else (-1, 1)."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    return -1.0, 1.0


def _fit(array: np.ndarray, height: int, width: int) -> np.ndarray:
    if array.shape == (height, width):
        return array
    return cv2.resize(array, (width, height), interpolation=cv2.INTER_LINEAR)


def reinsert(image, patch, origin, mask=None, value_range: tuple[float, float] | None = None) -> Reinserted:
    """``image`` (H, W) with ``patch`` (S, S) in [-1, 1] blended in at ``origin`` by ``mask``
    (S, S) in [0, 1] (None: the whole crop is replaced)."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"image: expected an (H, W) array, got shape {image.shape}")
    patch = as_plane(patch, "patch")
    mask = np.ones_like(patch) if mask is None else as_plane(mask, "mask")
    x0, y0, x1, y1 = (int(v) for v in origin)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"origin {tuple(origin)}: expected x0 < x1 and y0 < y1")
    patch, mask = _fit(patch, y1 - y0, x1 - x0), np.clip(_fit(mask, y1 - y0, x1 - x0), 0.0, 1.0)
    low, high = value_range or default_range(image.dtype)
    values = low + (np.clip(patch, -1.0, 1.0) + 1.0) * 0.5 * (high - low)
    # the part of the crop inside the image
    height, width = image.shape
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    out = image.copy()
    if cx0 < cx1 and cy0 < cy1:
        inner = (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))
        region = out[cy0:cy1, cx0:cx1].astype(np.float64)
        weight = mask[inner].astype(np.float64)
        blended = region * (1.0 - weight) + values[inner] * weight
        if np.issubdtype(out.dtype, np.integer):
            blended = np.clip(np.rint(blended), *default_range(out.dtype))
        changed = weight > 0
        out[cy0:cy1, cx0:cx1][changed] = blended[changed].astype(out.dtype)
    box = mask_box(mask)
    if box is not None:
        bx0, by0, bx1, by1 = box
        box = (max(bx0 + x0, 0), max(by0 + y0, 0), min(bx1 + x0, width), min(by1 + y0, height))
        if box[0] >= box[2] or box[1] >= box[3]:
            box = None
    return Reinserted(image=out, box=box)
