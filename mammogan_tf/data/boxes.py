"""Lesion box conditions for box-conditioned generators (Han et al. 2019): boxes drawn from the
training box distribution, optionally placed inside a breast mask, and boxes read from a CSV.

Boxes are ``(x0, y0, x1, y1)`` float32 pixels of a ``size`` px image, ``(x1, y1)`` exclusive, as
in the lesion table. Pure numpy (no TensorFlow): training (grids) and synthesis both use it.

- ``sample_boxes``: the size and aspect of a random training box (scaled by U[1 - jitter,
  1 + jitter]) and its centre moved by up to ``jitter * size``, anywhere in the image.
- ``boxes_in_mask``: the same sizes, each box placed at a uniformly drawn integer position where
  every pixel it covers lies in the breast mask and outside the boxes already placed (a box too
  large for the mask is shrunk by 0.8 until it fits).
- ``read_box_csv``: one synthetic image per distinct ``image`` value of a CSV with columns
  ``image, x0, y0, x1, y1`` and optionally ``lesion_type``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mammogan_tf.errors import InputError

CSV_COLUMNS = ("image", "x0", "y0", "x1", "y1")


def _reference(reference) -> np.ndarray:
    ref = np.asarray(reference if reference is not None else np.zeros((0, 4)), np.float64).reshape(-1, 4)
    return ref[(ref[:, 2] > ref[:, 0]) & (ref[:, 3] > ref[:, 1])]


def box_sides(reference, count: int, size: int, rng: np.random.Generator, jitter: float = 0.1):
    """``(sides (count, 2), picks (count,) index of the reference box or -1)``: widths and heights
    of random training boxes scaled by U[1 - jitter, 1 + jitter], clipped to [1, size]; without
    reference boxes sides are U[size/16, size/4]."""
    ref = _reference(reference)
    if len(ref):
        picks = rng.integers(0, len(ref), count)
        sides = (ref[picks, 2:] - ref[picks, :2]) * rng.uniform(1 - jitter, 1 + jitter, (count, 2))
    else:
        picks = np.full(count, -1)
        sides = rng.uniform(size / 16, size / 4, (count, 2))
    return np.clip(sides, 1.0, size), picks


def sample_boxes(reference, count: int, size: int, rng: np.random.Generator, jitter: float = 0.1) -> np.ndarray:
    """``count`` boxes ``(count, 4)`` float32 in a ``size`` image from the training boxes
    ``reference (N, 4)`` (module docstring), kept inside the image."""
    ref = _reference(reference)
    sides, picks = box_sides(ref, count, size, rng, jitter)
    if len(ref):
        centres = (ref[picks, :2] + ref[picks, 2:]) / 2 + rng.uniform(-jitter, jitter, (count, 2)) * size
    else:
        centres = rng.uniform(0, size, (count, 2))
    lo = np.clip(centres - sides / 2, 0, size - sides)
    return np.concatenate([lo, lo + sides], axis=1).astype(np.float32)


def _fits(free: np.ndarray, width: int, height: int) -> np.ndarray:
    """Top-left corners ``(K, 2)`` (x, y) where a ``width x height`` box covers only free pixels."""
    integral = np.pad(free.astype(np.int64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    total = (integral[height:, width:] - integral[:-height, width:] - integral[height:, :-width]
             + integral[:-height, :-width])
    ys, xs = np.nonzero(total == width * height)
    return np.stack([xs, ys], axis=1)


def boxes_in_mask(sides, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Integer-valued boxes ``(G, 4)`` float32 of the given ``sides (G, 2)`` (``box_sides``) inside
    ``mask (S, S) bool`` (module docstring): every pixel ``mask[y0:y1, x0:x1]`` is True and boxes
    do not overlap. Fewer boxes come back when the mask has no free pixel left; ``InputError``
    when it is empty."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        raise InputError("boxes_in_mask: the breast mask is empty")
    free, out = mask.copy(), []
    for width, height in np.maximum(np.rint(sides), 1).astype(int):
        while True:
            corners = _fits(free, width, height)
            if len(corners) or (width == 1 and height == 1):
                break
            width, height = max(1, int(width * 0.8)), max(1, int(height * 0.8))
        if not len(corners):
            break
        x0, y0 = corners[rng.integers(0, len(corners))]
        free[y0:y0 + height, x0:x0 + width] = False
        out.append([x0, y0, x0 + width, y0 + height])
    return np.asarray(out, np.float32).reshape(-1, 4)


def read_box_csv(path: str | os.PathLike, size: int, default_type: str) -> list[dict]:
    """``[{"name": image value, "boxes": (G, 4) float32, "types": [G names]}]`` in first-seen order
    from a CSV of boxes in output pixels (module docstring); ``InputError`` naming the file and
    the row (as a spreadsheet shows it, header = 1) for a missing column, a box outside the
    ``size`` px image or an empty box."""
    import pandas as pd

    from mammogan_tf.data.table import LESION_TYPES

    path = Path(path)
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as error:
        raise InputError(f"--boxes {path}: cannot read it as CSV ({error})") from None
    missing = [c for c in CSV_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(f"--boxes {path}: missing columns {missing}; expected {list(CSV_COLUMNS)} "
                         "[, lesion_type] with boxes in output pixels")
    groups: dict[str, dict] = {}
    for number, row in zip(range(2, len(frame) + 2), frame.itertuples(index=False)):
        box = np.array([row.x0, row.y0, row.x1, row.y1], np.float64)
        if not np.all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1] or box.min() < 0 or box.max() > size:
            raise InputError(f"--boxes {path}: row {number}: box {box.tolist()} must satisfy 0 <= x0 < x1 <= {size} "
                             f"and 0 <= y0 < y1 <= {size} (pixels of the {size} px output)")
        kind = getattr(row, "lesion_type", None)
        kind = default_type if kind is None or (isinstance(kind, float) and np.isnan(kind)) else str(kind)
        if kind not in LESION_TYPES or kind == "normal":
            raise InputError(f"--boxes {path}: row {number}: lesion_type {kind!r} is not a lesion type "
                             f"({', '.join(LESION_TYPES[1:])})")
        group = groups.setdefault(str(row.image), {"name": str(row.image), "boxes": [], "types": []})
        group["boxes"].append(box)
        group["types"].append(kind)
    if not groups:
        raise InputError(f"--boxes {path}: no rows")
    return [{**g, "boxes": np.asarray(g["boxes"], np.float32)} for g in groups.values()]
