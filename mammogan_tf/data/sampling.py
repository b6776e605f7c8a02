"""Patch sampling from one preprocessed mammogram.

Two modes (``PatchConfig.mode``):

- ``lesion`` (Alyafi et al. 2019; Frid-Adar et al. 2018): lesion-centred crops
  (``sample_lesion_patches``) plus normal-tissue crops from inside the breast that touch no
  lesion (``sample_normal_patches``).
- ``contextual`` (Wu et al. 2020): 256 px crops with at least 90 % breast tissue around a
  random lesion pixel, or anywhere clear of lesions, each randomly flipped, rotated by k * 90
  degrees and rescaled (``sample_contextual_patches``).

Every function is deterministic given its ``numpy.random.Generator``; ``prepare`` seeds one per
image with ``np.random.default_rng([seed, image_index])``, so the patches of an image do not
depend on the worker that made them.

Conventions: ``image`` is ``(H, W) float32`` in ``[0, 1]`` (normalised), ``breast`` and lesion
masks are ``(H, W) bool``; boxes are ``(x0, y0, x1, y1)``, ``x`` = column, ``(x1, y1)``
exclusive. A crop that leaves the image is padded with zeros (image) and False (masks).
Resizing uses ``cv2.INTER_AREA`` to shrink and ``cv2.INTER_CUBIC`` to enlarge (Frid-Adar
resized with bicubic interpolation), clipped back to ``[0, 1]``; masks use nearest neighbour.
No TensorFlow here: these functions run in worker processes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import cv2
import numpy as np

from mammogan_tf.data.config import PatchConfig
from mammogan_tf.data.preprocess import centre_in_mask, lesion_mask as make_lesion_mask

Box = tuple[float, float, float, float]

NORMAL_PATHOLOGY = "unknown"
"""``pathology`` of normal-tissue patches (the table's vocabulary has no 'normal' pathology)."""


@dataclass
class Patch:
    """One patch and where it came from.

    Attributes:
        pixels: ``(S, S) float32`` in ``[0, 1]``.
        lesion_type: a ``LESION_TYPES`` name; ``"normal"`` for normal tissue.
        pathology: a ``PATHOLOGIES`` name (``"unknown"`` for normal tissue).
        bbox: ``(x0, y0, x1, y1)`` of the lesion inside the patch in patch pixels (float,
            clipped to ``[0, S]``), or None for normal tissue.
        origin: ``(x0, y0, x1, y1)`` of the crop in image pixels (may extend past the image,
            where the patch is zero-padded).
        scale: output side / crop side (1.0 when not resized).
        mask: ``(S, S) bool`` lesion mask inside the patch (this lesion's ROI mask when given,
            else its box), or None for normal tissue.
        kind: ``"lesion"``, ``"normal"`` or ``"contextual"``.
        orientation: ``(flip, k)`` applied after the crop: flipped left/right (0/1), then k
            counter-clockwise quarter turns; ``(0, 0)`` when the crop was not turned.
        copy_index: which of a lesion's patches this is: 0 = the lesion's original (lesion
            mode: centred, un-jittered; contextual mode: its first draw), 1, 2, ... = further
            augmented copies. Normal-tissue patches are all originals (0). Evaluation and test
            sets keep ``copy_index == 0`` to count every lesion once.
    """

    pixels: np.ndarray
    lesion_type: str
    pathology: str
    bbox: Optional[Box]
    origin: tuple[int, int, int, int]
    scale: float
    mask: Optional[np.ndarray] = None
    kind: str = "lesion"
    copy_index: int = 0
    orientation: tuple[int, int] = (0, 0)


# ----------------------------------------------------------------------------- helpers

def crop(array: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
    """``side x side`` window of ``array`` with its top-left corner at ``(x0, y0)``; the part
    outside the array is zero (False for bool arrays)."""
    height, width = array.shape[:2]
    out = np.zeros((side, side) + array.shape[2:], dtype=array.dtype)
    r0, r1 = max(y0, 0), min(y0 + side, height)
    c0, c1 = max(x0, 0), min(x0 + side, width)
    if r1 > r0 and c1 > c0:
        out[r0 - y0:r1 - y0, c0 - x0:c1 - x0] = array[r0:r1, c0:c1]
    return out


def resize_patch(pixels: np.ndarray, side: int) -> np.ndarray:
    """Resize a square ``float32`` patch to ``side x side``: INTER_AREA down, INTER_CUBIC up,
    clipped to ``[0, 1]``."""
    if pixels.shape[0] == side:
        return pixels.astype(np.float32, copy=False)
    interpolation = cv2.INTER_AREA if side < pixels.shape[0] else cv2.INTER_CUBIC
    out = cv2.resize(pixels.astype(np.float32, copy=False), (side, side), interpolation=interpolation)
    return np.clip(out, 0.0, 1.0)


def resize_mask(mask: np.ndarray, side: int) -> np.ndarray:
    """Resize a square bool mask with nearest-neighbour interpolation."""
    if mask.shape[0] == side:
        return mask
    return cv2.resize(mask.astype(np.uint8), (side, side), interpolation=cv2.INTER_NEAREST).astype(bool)


def _box_in_patch(box: Box, x0: int, y0: int, scale: float, side: int) -> Box:
    """A box in image pixels -> patch pixels of a crop at ``(x0, y0)`` resized by ``scale``."""
    bx0, by0, bx1, by1 = box
    values = ((bx0 - x0) * scale, (by0 - y0) * scale, (bx1 - x0) * scale, (by1 - y0) * scale)
    return tuple(float(min(max(v, 0.0), side)) for v in values)  # type: ignore[return-value]


def flip_box(box: Box, side: int) -> Box:
    """Box after ``np.fliplr`` of a ``side x side`` patch."""
    x0, y0, x1, y1 = box
    return (side - x1, y0, side - x0, y1)


def rot90_box(box: Box, side: int, k: int) -> Box:
    """Box after ``np.rot90(patch, k)`` (k quarter turns counter-clockwise) of a square patch."""
    for _ in range(k % 4):
        x0, y0, x1, y1 = box
        box = (y0, side - x1, y1, side - x0)
    return box


def integral(mask: np.ndarray) -> np.ndarray:
    """Summed-area table ``(H + 1, W + 1)`` of a bool mask (``cv2.integral``, int32)."""
    return cv2.integral(mask.astype(np.uint8), sdepth=cv2.CV_32S)


def window_sum(table: np.ndarray, x0: int, y0: int, side: int) -> int:
    """Number of True pixels of the mask behind ``table`` in a window (clipped to the image)."""
    height, width = table.shape[0] - 1, table.shape[1] - 1
    r0, r1 = min(max(y0, 0), height), min(max(y0 + side, 0), height)
    c0, c1 = min(max(x0, 0), width), min(max(x0 + side, 0), width)
    return int(table[r1, c1] - table[r0, c1] - table[r1, c0] + table[r0, c0])


def lesion_box(lesion: Mapping[str, Any]) -> Optional[Box]:
    """``(x0, y0, x1, y1)`` of a lesion dict, or None when a coordinate is missing/NaN or the
    box is empty (diffuse findings)."""
    try:
        box = tuple(float(lesion[key]) for key in ("x0", "y0", "x1", "y1"))
    except (KeyError, TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in box) or box[2] <= box[0] or box[3] <= box[1]:
        return None
    return box  # type: ignore[return-value]


def _own_mask(lesion: Mapping[str, Any], box: Box, shape: tuple[int, int]) -> np.ndarray:
    """This lesion's ``(H, W)`` bool mask: its ROI ``mask`` when the dict has one, else its box."""
    roi = lesion.get("mask")
    if roi is not None:
        return make_lesion_mask(shape, (), [roi])
    return make_lesion_mask(shape, [box])


def usable_lesions(lesions: Sequence[Mapping[str, Any]], breast: np.ndarray,
                   config: PatchConfig) -> list[tuple[Mapping[str, Any], Box]]:
    """Lesions that give patches: a box, a ``lesion_type`` in ``config.lesion_types`` and a box
    centre on the breast mask (lesions pointing at the background, like mini-MIAS mdb212 and
    mdb214, are dropped here as well as flagged by ``prepare``)."""
    out = []
    for lesion in lesions:
        box = lesion_box(lesion)
        if box is None or lesion.get("lesion_type") not in config.lesion_types:
            continue
        if not centre_in_mask(box, breast):
            continue
        out.append((lesion, box))
    return out


def _check_inputs(image: np.ndarray, *masks: Optional[np.ndarray]) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"expected a (H, W) image, got shape {image.shape}")
    for mask in masks:
        if mask is not None and np.shape(mask) != image.shape:
            raise ValueError(f"mask shape {np.shape(mask)} differs from image shape {image.shape}")
    return image


# ----------------------------------------------------------------------------- lesion mode

def sample_lesion_patches(image: np.ndarray, breast: np.ndarray, lesions: Sequence[Mapping[str, Any]],
                          config: PatchConfig, rng: np.random.Generator) -> list[Patch]:
    """Lesion-centred patches (Alyafi: 128 x 128 around each lesion).

    For each usable lesion (see ``usable_lesions``) the crop side is ``config.size``; when the
    lesion box's larger side times ``config.lesion_margin`` exceeds it, the lesion is skipped
    (``too_large: skip``) or the crop side becomes ``ceil(side * lesion_margin)`` and the crop
    is resized to fit (``too_large: resize``). Output side: ``config.output_size`` or
    ``config.size``. The first of ``config.patches_per_lesion`` crops is centred on the box
    centre and not augmented (the original, ``copy_index`` 0); the others (``copy_index`` 1,
    2, ...) are shifted by a random integer jitter of at most
    ``min(crop / 8, (crop - box side) / 2)`` pixels per axis, so the box stays inside.

    Args:
        image: ``(H, W)`` float32 in ``[0, 1]`` (normalised).
        breast: ``(H, W)`` bool breast mask.
        lesions: dicts with ``lesion_type``, ``pathology``, ``x0, y0, x1, y1`` (image pixels) and
            optionally ``mask`` (``(H, W)`` bool ROI).
        config: ``PatchConfig``.
        rng: the image's generator.

    Returns:
        ``Patch`` list (``kind="lesion"``), in lesion order.
    """
    image = _check_inputs(image, breast)
    out_side = config.output_size or config.size
    patches = []
    for lesion, box in usable_lesions(lesions, breast, config):
        width, height = box[2] - box[0], box[3] - box[1]
        need = int(math.ceil(max(width, height) * config.lesion_margin))
        side = config.size
        if need > config.size:
            if config.too_large == "skip":
                continue
            side = need
        own = _own_mask(lesion, box, image.shape)
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        jitter_x = max(0, int(min(side / 8, (side - width) / 2)))
        jitter_y = max(0, int(min(side / 8, (side - height) / 2)))
        for index in range(config.patches_per_lesion):
            dx = dy = 0
            if index > 0:
                dx = int(rng.integers(-jitter_x, jitter_x + 1))
                dy = int(rng.integers(-jitter_y, jitter_y + 1))
            x0 = int(math.floor(cx - side / 2 + 0.5)) + dx
            y0 = int(math.floor(cy - side / 2 + 0.5)) + dy
            scale = out_side / side
            patches.append(Patch(
                pixels=resize_patch(crop(image, x0, y0, side), out_side),
                lesion_type=str(lesion["lesion_type"]),
                pathology=str(lesion.get("pathology") or "unknown"),
                bbox=_box_in_patch(box, x0, y0, scale, out_side),
                origin=(x0, y0, x0 + side, y0 + side),
                scale=float(scale),
                mask=resize_mask(crop(own, x0, y0, side), out_side),
                kind="lesion", copy_index=index,
            ))
    return patches


def _find_window(breast_table: np.ndarray, lesion_table: Optional[np.ndarray], centres: np.ndarray,
                 side: int, min_fraction: float, rng: np.random.Generator, tries: int,
                 shape: tuple[int, int], taken: set) -> Optional[tuple[int, int]]:
    """Top-left corner of a ``side`` window inside the image, centred near a random breast pixel,
    with ``>= min_fraction`` breast pixels and no lesion pixel; None after ``tries`` draws."""
    height, width = shape
    if side > height or side > width or centres.size == 0:
        return None
    need = min_fraction * side * side
    for _ in range(tries):
        flat = int(centres[rng.integers(centres.size)])
        row, col = divmod(flat, width)
        x0 = min(max(col - side // 2, 0), width - side)
        y0 = min(max(row - side // 2, 0), height - side)
        if (x0, y0) in taken:
            continue
        if window_sum(breast_table, x0, y0, side) < need:
            continue
        if lesion_table is not None and window_sum(lesion_table, x0, y0, side) > 0:
            continue
        return x0, y0
    return None


def sample_normal_patches(image: np.ndarray, breast: np.ndarray, lesion_mask: Optional[np.ndarray],
                          config: PatchConfig, rng: np.random.Generator, n: int) -> list[Patch]:
    """Normal-tissue patches: ``config.size`` crops lying inside the image, with at least
    ``config.normal_min_breast_fraction`` breast pixels and no pixel of ``lesion_mask``.

    Candidates are centred on uniformly drawn breast pixels (shifted to lie inside the image);
    at most ``config.max_tries`` candidates are drawn per patch, so fewer than ``n`` patches come
    back when the breast is small or crowded with lesions. Two patches never share an origin.

    Args:
        image: ``(H, W)`` float32 in ``[0, 1]``.
        breast: ``(H, W)`` bool.
        lesion_mask: ``(H, W)`` bool lesion ground truth (``preprocess.lesion_mask``), or None.
        config: ``PatchConfig``.
        rng: the image's generator.
        n: patches wanted.

    Returns:
        Up to ``n`` ``Patch`` (``kind="normal"``, ``lesion_type="normal"``, ``bbox`` and ``mask``
        None), resized to ``config.output_size`` when set.
    """
    image = _check_inputs(image, breast, lesion_mask)
    side = config.size
    out_side = config.output_size or side
    breast = np.asarray(breast, dtype=bool)
    breast_table = integral(breast)
    lesion_table = integral(lesion_mask) if lesion_mask is not None and np.any(lesion_mask) else None
    centres = np.flatnonzero(breast)
    patches: list[Patch] = []
    taken: set = set()
    for _ in range(n):
        corner = _find_window(breast_table, lesion_table, centres, side, config.normal_min_breast_fraction,
                              rng, config.max_tries, image.shape, taken)
        if corner is None:
            break
        taken.add(corner)
        x0, y0 = corner
        patches.append(Patch(
            pixels=resize_patch(crop(image, x0, y0, side), out_side),
            lesion_type="normal", pathology=NORMAL_PATHOLOGY, bbox=None,
            origin=(x0, y0, x0 + side, y0 + side), scale=float(out_side / side), mask=None, kind="normal",
        ))
    return patches


# ----------------------------------------------------------------------------- contextual mode

def _contextual_patch(image: np.ndarray, x0: int, y0: int, side: int, out_side: int,
                      rng: np.random.Generator, config: PatchConfig, lesion_type: str, pathology: str,
                      box: Optional[Box], own: Optional[np.ndarray], copy_index: int = 0) -> Patch:
    """Crop, resize to ``out_side``, then flip left/right (p = 0.5, ``config.flip``) and rotate by
    ``k * 90`` degrees (k uniform in 0..3, ``config.rot90``); the box and mask follow."""
    scale = out_side / side
    pixels = resize_patch(crop(image, x0, y0, side), out_side)
    mask = resize_mask(crop(own, x0, y0, side), out_side) if own is not None else None
    bbox = _box_in_patch(box, x0, y0, scale, out_side) if box is not None else None
    flipped, k = 0, 0
    if config.flip and rng.random() < 0.5:
        flipped = 1
        pixels = np.fliplr(pixels)
        mask = np.fliplr(mask) if mask is not None else None
        bbox = flip_box(bbox, out_side) if bbox is not None else None
    if config.rot90:
        k = int(rng.integers(4))
        pixels = np.rot90(pixels, k)
        mask = np.rot90(mask, k) if mask is not None else None
        bbox = rot90_box(bbox, out_side, k) if bbox is not None else None
    return Patch(
        pixels=np.ascontiguousarray(pixels, dtype=np.float32),
        lesion_type=lesion_type, pathology=pathology, bbox=bbox,
        origin=(x0, y0, x0 + side, y0 + side), scale=float(scale),
        mask=np.ascontiguousarray(mask) if mask is not None else None, kind="contextual",
        copy_index=copy_index, orientation=(flipped, k),
    )


def _crop_side(config: PatchConfig, rng: np.random.Generator) -> int:
    """Crop side ``round(size / factor)`` for a factor uniform in ``config.scale_range``."""
    low, high = config.scale_range
    factor = float(rng.uniform(low, high)) if high > low else float(low)
    return max(1, int(round(config.size / factor)))


def sample_contextual_patches(image: np.ndarray, breast: np.ndarray, lesions: Sequence[Mapping[str, Any]],
                              config: PatchConfig, rng: np.random.Generator) -> list[Patch]:
    """Wu et al. (2020) contextual patches: ``config.size`` (paper: 256) with at least
    ``config.min_breast_fraction`` (paper: 90 %) breast pixels.

    Each draw first picks a resize factor uniform in ``config.scale_range`` (paper: 0.8-1.2);
    the crop side is ``round(size / factor)`` and the crop is resized to the output side
    (``config.output_size`` or ``config.size``).

    - Lesion patches, ``config.contextual_per_lesion`` per usable lesion: a random pixel of the
      lesion box (of its ROI mask when the dict has ``mask``), then an integer offset of the
      patch centre from that pixel, uniform per axis in ``[-max_offset, max_offset]`` pixels at
      ``config.size`` scale (``max_offset / factor`` crop pixels; paper: 0 to 128 px either way),
      limited so the pixel stays inside the crop. A lesion's first patch is its original
      (``copy_index`` 0), the next ones are copies 1, 2, ... (every patch of this mode is
      augmented, so the original is only the one patch that stands for the lesion).
    - Normal patches, ``config.contextual_normal_per_image``: crops inside the image centred
      near a random breast pixel that touch no lesion pixel (all lesions with a box, whatever
      their type).

    A candidate below the breast fraction is redrawn, up to ``config.max_tries`` times; then the
    patch is left out. Every patch is then flipped left/right with p = 0.5 (``config.flip``) and
    rotated by k * 90 degrees, k uniform in 0..3 (``config.rot90``); ``bbox`` and ``mask`` follow.

    Args:
        image: ``(H, W)`` float32 in ``[0, 1]``; breast: ``(H, W)`` bool;
        lesions: as in ``sample_lesion_patches``; config: ``PatchConfig``; rng: the image's generator.

    Returns:
        ``Patch`` list (``kind="contextual"``): lesion patches in lesion order, then normal ones.
    """
    image = _check_inputs(image, breast)
    shape = image.shape
    out_side = config.output_size or config.size
    breast = np.asarray(breast, dtype=bool)
    breast_table = integral(breast)
    patches: list[Patch] = []
    for lesion, box in usable_lesions(lesions, breast, config):
        own = _own_mask(lesion, box, shape)
        pixels_on = np.flatnonzero(own)
        if pixels_on.size == 0:
            continue
        made = 0
        for _ in range(config.contextual_per_lesion):
            for _ in range(config.max_tries):
                side = _crop_side(config, rng)
                row, col = divmod(int(pixels_on[rng.integers(pixels_on.size)]), shape[1])
                limit = max(0, min(int(round(config.max_offset * side / config.size)), side - 1 - side // 2, side // 2))
                dx, dy = (int(v) for v in rng.integers(-limit, limit + 1, size=2))
                x0, y0 = col + dx - side // 2, row + dy - side // 2
                if window_sum(breast_table, x0, y0, side) >= config.min_breast_fraction * side * side:
                    patches.append(_contextual_patch(
                        image, x0, y0, side, out_side, rng, config, str(lesion["lesion_type"]),
                        str(lesion.get("pathology") or "unknown"), box, own, copy_index=made))
                    made += 1
                    break
    boxes = [box for box in (lesion_box(lesion) for lesion in lesions) if box is not None]
    rois = [lesion["mask"] for lesion in lesions if lesion.get("mask") is not None]
    every_lesion = make_lesion_mask(shape, boxes, rois)
    lesion_table = integral(every_lesion) if every_lesion.any() else None
    centres = np.flatnonzero(breast)
    taken: set = set()
    for _ in range(config.contextual_normal_per_image):
        side = _crop_side(config, rng)
        corner = _find_window(breast_table, lesion_table, centres, side, config.min_breast_fraction,
                              rng, config.max_tries, shape, taken)
        if corner is None:
            continue
        taken.add(corner)
        patches.append(_contextual_patch(image, corner[0], corner[1], side, out_side, rng, config,
                                         "normal", NORMAL_PATHOLOGY, None, None))
    return patches
