"""Whole-image preprocessing: breast mask, histogram normalisation, lesion ground truth.

The order in ``prepare`` (Alyafi et al. 2019/2020) is: read the image, make the lesion ground
truth, normalise the histogram, make the breast mask, extract patches. Here the breast mask is
always computed on the **raw** image (``read_image`` output, before normalisation), because
equalisation and CLAHE lift the dark film background and would move any fixed threshold;
the normalisation then uses the mask to compute its statistics over breast pixels only and
keeps the background at 0.

Images are ``(H, W) float32`` in ``[0, 1]``; masks are ``(H, W) bool``. Boxes are
``(x0, y0, x1, y1)`` in image pixels, ``x`` = column, row 0 at the top, ``(x1, y1)`` exclusive
(as in the lesion table). No TensorFlow here: these functions run in worker processes.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

import cv2
import numpy as np

from mammogan_tf.data.config import MaskConfig, NormalizationConfig

LEVELS_16 = 65536
"""Histogram bins for equalisation: one per 16-bit grey level, so 12/14/16-bit data lose nothing."""

OTSU_BINS = 1024
"""Histogram bins for Otsu's threshold on ``[0, 1]``."""

def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"expected a (H, W) image, got shape {image.shape}")
    return image.astype(np.float32, copy=False)


def _check_mask(mask: Optional[np.ndarray], shape: tuple[int, int]) -> Optional[np.ndarray]:
    if mask is None:
        return None
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != shape:
        raise ValueError(f"mask shape {mask.shape} differs from image shape {shape}")
    return mask


def to_uint16(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` float in ``[0, 1]`` -> ``uint16`` in ``[0, 65535]`` (rounded, clipped)."""
    return np.rint(np.clip(image, 0.0, 1.0) * (LEVELS_16 - 1)).astype(np.uint16)


def _equalize(image: np.ndarray, mask: Optional[np.ndarray]) -> np.ndarray:
    """Classic equalisation ``(cdf(v) - cdf_min) / (N - cdf_min)`` over the region's pixels,
    with one bin per 16-bit level; the darkest region level maps to 0, the brightest to 1."""
    levels = to_uint16(image)
    region = levels[mask] if mask is not None else levels.ravel()
    if region.size == 0:
        return np.zeros_like(image)
    cdf = np.cumsum(np.bincount(region, minlength=LEVELS_16)).astype(np.float64)
    cdf_min = cdf[int(region.min())]
    total = cdf[-1]
    if total == cdf_min:  # a constant region: nothing to spread
        return image.copy()
    lut = np.clip((cdf - cdf_min) / (total - cdf_min), 0.0, 1.0).astype(np.float32)
    return lut[levels]


def _clahe(image: np.ndarray, clip_limit: float, tile_grid: int) -> np.ndarray:
    """OpenCV CLAHE on a 16-bit version of the image (65536-bin tile histograms)."""
    clahe = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(int(tile_grid), int(tile_grid)))
    return clahe.apply(to_uint16(image)).astype(np.float32) / np.float32(LEVELS_16 - 1)


def _percentile(image: np.ndarray, mask: Optional[np.ndarray], percentiles: Sequence[float]) -> np.ndarray:
    """Linear stretch of the ``(p_low, p_high)`` percentiles of the region's pixels to 0..1."""
    region = image[mask] if mask is not None else image.ravel()
    if region.size == 0:
        return np.zeros_like(image)
    low, high = np.percentile(region, [float(percentiles[0]), float(percentiles[1])])
    if high <= low:
        return np.clip(image, 0.0, 1.0)
    return np.clip((image - low) / (high - low), 0.0, 1.0).astype(np.float32)


def normalize_histogram(image: np.ndarray, config: Optional[NormalizationConfig] = None,
                        mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Histogram normalisation of a whole image.

    Args:
        image: ``(H, W)`` float in ``[0, 1]`` (the raw ``read_image`` output).
        config: ``method`` is one of
            ``none`` (returned unchanged, as float32 clipped to ``[0, 1]``; the mask is ignored),
            ``equalize`` (histogram equalisation with 65536 bins, computed over the mask's pixels
            when given, else over all pixels),
            ``clahe`` (``cv2.createCLAHE(clahe_clip_limit, (clahe_tile_grid,) * 2)`` on the image
            quantised to 16 bits),
            ``percentile`` (the ``percentiles`` of the mask's pixels stretched to 0..1, clipped).
        mask: optional ``(H, W)`` bool breast mask (from ``breast_mask`` on the raw image).
            For every method but ``none``, pixels outside it are set to 0.

    Returns:
        ``(H, W)`` float32 in ``[0, 1]``.
    """
    config = config if config is not None else NormalizationConfig()
    image = _check_image(image)
    mask = _check_mask(mask, image.shape)
    method = config.method
    if method == "none":
        return np.clip(image, 0.0, 1.0).astype(np.float32)
    if method == "equalize":
        out = _equalize(image, mask)
    elif method == "clahe":
        out = _clahe(image, config.clahe_clip_limit, config.clahe_tile_grid)
    elif method == "percentile":
        out = _percentile(image, mask, config.percentiles)
    else:  # pragma: no cover - the config validates the method
        raise ValueError(f"unknown normalisation method {method!r}")
    out = np.asarray(out, dtype=np.float32)
    if mask is not None:
        out = np.where(mask, out, np.float32(0.0))
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def otsu_threshold(image: np.ndarray, bins: int = OTSU_BINS) -> float:
    """Otsu's threshold of a ``[0, 1]`` image: the bin edge that maximises the between-class
    variance of a ``bins``-bin histogram. Pixels ``> threshold`` are the bright class."""
    hist, edges = np.histogram(np.clip(image, 0.0, 1.0), bins=bins, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    weight0 = np.cumsum(hist)
    weight1 = weight0[-1] - weight0
    sum0 = np.cumsum(hist * centres)
    mean0 = sum0 / np.maximum(weight0, 1e-12)
    mean1 = (sum0[-1] - sum0) / np.maximum(weight1, 1e-12)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a bool mask (all False when the mask is empty)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return np.zeros(mask.shape, dtype=bool)
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == biggest


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill the holes of a bool mask: background not 4-connected to the image border becomes
    True (same result as ``scipy.ndimage.binary_fill_holes``, by an OpenCV flood fill)."""
    padded = np.pad(mask.astype(np.uint8), 1)
    flood = np.zeros((padded.shape[0] + 2, padded.shape[1] + 2), dtype=np.uint8)
    cv2.floodFill(padded, flood, (0, 0), 2, flags=4)
    return padded[1:-1, 1:-1] != 2


def breast_mask(image: np.ndarray, config: Optional[MaskConfig] = None) -> np.ndarray:
    """Breast (foreground) mask of a whole mammogram.

    Compute it on the raw image, before ``normalize_histogram``.

    ``nonzero`` is Alyafi's non-zero thresholding, ``image > threshold``; the default threshold
    0.05 (not 0) leaves out film noise and the dim film background of digitised mammograms
    (mini-MIAS). ``otsu`` thresholds at Otsu's level instead. Then, as configured, only the
    largest 8-connected component is kept (dropping labels and markers) and holes are filled.

    Args:
        image: ``(H, W)`` float in ``[0, 1]``.
        config: ``MaskConfig`` (method, threshold, largest_component, fill_holes).

    Returns:
        ``(H, W)`` bool, True on breast pixels.
    """
    config = config if config is not None else MaskConfig()
    image = _check_image(image)
    if config.method == "nonzero":
        threshold = config.threshold
    elif config.method == "otsu":
        threshold = otsu_threshold(image)
    else:  # pragma: no cover - the config validates the method
        raise ValueError(f"unknown mask method {config.method!r}")
    mask = image > threshold
    if config.largest_component:
        mask = largest_component(mask)
    if config.fill_holes:
        mask = fill_holes(mask)
    return np.asarray(mask, dtype=bool)


def _box_slices(box: Sequence[float], shape: tuple[int, int]) -> Optional[tuple[slice, slice]]:
    """Integer pixel slices of a box (floor of the start, ceil of the end), clipped to the image;
    None when the box lies outside the image or is empty."""
    height, width = shape
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(np.isfinite([x0, y0, x1, y1])):
        return None
    c0, r0 = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
    c1, r1 = min(int(np.ceil(x1)), width), min(int(np.ceil(y1)), height)
    if c1 <= c0 or r1 <= r0:
        return None
    return slice(r0, r1), slice(c0, c1)


def lesion_mask(shape: tuple[int, int], boxes: Iterable[Sequence[float]] = (),
                masks: Optional[Iterable[np.ndarray]] = None) -> np.ndarray:
    """Lesion ground truth of one image.

    The union of white rectangles over ``boxes`` (Alyafi's ground truth; a box covers the
    pixels from ``floor(x0), floor(y0)`` to ``ceil(x1), ceil(y1)`` exclusive, clipped to the
    image; boxes with NaN coordinates are ignored) and of the ROI ``masks`` when given.

    Args:
        shape: ``(H, W)``.
        boxes: ``(x0, y0, x1, y1)`` per lesion, image pixels.
        masks: ``(H, W)`` bool ROI masks.

    Returns:
        ``(H, W)`` bool.
    """
    shape = (int(shape[0]), int(shape[1]))
    out = np.zeros(shape, dtype=bool)
    for box in boxes:
        slices = _box_slices(box, shape)
        if slices is not None:
            out[slices] = True
    for roi in masks or ():
        roi = np.asarray(roi, dtype=bool)
        if roi.shape != shape:
            raise ValueError(f"ROI mask shape {roi.shape} differs from image shape {shape}")
        out |= roi
    return out


def box_from_mask(mask: np.ndarray) -> Optional[tuple[int, int, int, int]]:
    """Tight box ``(x0, y0, x1, y1)`` (``x1, y1`` exclusive) of a bool mask; None if empty."""
    mask = np.asarray(mask, dtype=bool)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def centre_in_mask(box: Sequence[float], mask: np.ndarray) -> bool:
    """Whether the centre pixel of ``box`` lies on the mask (False when outside the image).

    The centre pixel is ``(floor((x0 + x1) / 2), floor((y0 + y1) / 2))``; for a mini-MIAS circle
    turned into the box ``[x - r, row - r, x + r + 1, row + r + 1)`` it is ``(x, row)``. Used to
    flag lesions whose annotation points at the background (mini-MIAS mdb212, mdb214).
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(np.isfinite([x0, y0, x1, y1])):
        return False
    col, row = int(np.floor((x0 + x1) / 2)), int(np.floor((y0 + y1) / 2))
    height, width = mask.shape
    if not (0 <= row < height and 0 <= col < width):
        return False
    return bool(mask[row, col])
