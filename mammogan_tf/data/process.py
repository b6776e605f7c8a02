"""Per-image work of ``mammogan prepare``: read, mask, normalise, check lesions, sample patches.

TensorFlow-free: it runs in worker processes. ``process_image(job)`` never raises for bad input;
problems come back as rejection rows and everything else is still processed.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import numpy as np

from mammogan_tf.config import PrepareConfig
from mammogan_tf.data.codec import encode_mask, encode_png16
from mammogan_tf.data.images import read_image
from mammogan_tf.data.preprocess import box_from_mask, breast_mask, centre_in_mask, lesion_mask, normalize_histogram
from mammogan_tf.data.sampling import sample_contextual_patches, sample_lesion_patches, sample_normal_patches
from mammogan_tf.data.table import label_of
from mammogan_tf.data.whole import whole_records
from mammogan_tf.errors import MammoganError


@dataclass
class ImageJob:
    """One image and its findings. ``findings``: lesion-table rows as dicts (with ``source_row``)."""

    image_id: str
    patient_id: str
    path: str
    split: str
    findings: list[dict] = field(default_factory=list)


def image_rng(seed: int, image_id: str) -> np.random.Generator:
    """The generator for one image: depends only on the seed and the image id, not on order."""
    return np.random.default_rng([seed, zlib.crc32(image_id.encode("utf-8"))])


def _reject(job: ImageJob, reason: str, row=None) -> dict:
    return {"file": job.path, "row": row, "image_id": job.image_id, "reason": reason}


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _locate(job: ImageJob, finding: dict, shape: tuple[int, int], breast: np.ndarray):
    """(box or None, rejection or None) for one finding, boxes clipped to the image."""
    row = finding.get("source_row")
    box = tuple(finding.get(k) for k in ("x0", "y0", "x1", "y1"))
    if any(_is_missing(v) for v in box):
        mask_path = finding.get("mask_path")
        if _is_missing(mask_path) or not mask_path:
            return None, _reject(job, "no coordinates (diffuse finding): no lesion patch", row)
        try:
            roi, _ = read_image(mask_path)
        except MammoganError as error:
            return None, _reject(job, f"ROI mask unreadable: {error}", row)
        if roi.shape != shape:
            return None, _reject(job, f"ROI mask {roi.shape} does not match image {shape}", row)
        box = box_from_mask(roi > 0.5)
        if box is None:
            return None, _reject(job, "ROI mask is empty", row)
    height, width = shape
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    clipped = (max(0, x0), max(0, y0), min(width, x1), min(height, y1))
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        return None, _reject(job, f"box {box} outside the image ({width}x{height})", row)
    if not centre_in_mask(clipped, breast):
        return None, _reject(job, "lesion centre outside the breast mask", row)
    return clipped, None


def process_image(job: ImageJob, config: PrepareConfig) -> dict:
    """Read one image and sample its patches.

    Returns ``{"patches": [record fields with PNG bytes], "rejected": [rows], "read": bool}``.
    """
    try:
        raw, _meta = read_image(job.path)
    except MammoganError as error:
        return {"patches": [], "rejected": [_reject(job, str(error))], "read": False}
    except Exception as error:  # noqa: BLE001 - any decoder failure is one rejected image
        return {"patches": [], "rejected": [_reject(job, f"cannot read image ({type(error).__name__}: {error})")],
                "read": False}
    breast = breast_mask(raw, config.mask)
    if not breast.any():
        return {"patches": [], "rejected": [_reject(job, "empty breast mask (blank image?)")], "read": True}
    image = normalize_histogram(raw, config.normalization, mask=breast)
    rejected, lesions, unlocated = [], [], False
    for finding in job.findings:
        if finding["lesion_type"] == "normal":
            continue
        box, rejection = _locate(job, finding, raw.shape, breast)
        if rejection is not None:
            rejected.append(rejection)
            unlocated = True
            continue
        lesions.append({"lesion_type": finding["lesion_type"], "pathology": finding["pathology"],
                        "x0": box[0], "y0": box[1], "x1": box[2], "y1": box[3]})
    # The samplers keep only config.patches.lesion_types for lesion patches; every located
    # lesion is passed so that normal-tissue patches avoid all of them.
    if config.patches.mode == "whole":  # one resized breast region with all its boxes
        records = [] if unlocated else whole_records(image, breast, lesions, config.patches, job)
        return {"patches": records, "rejected": rejected, "read": True}
    rng = image_rng(config.seed, job.image_id)
    if config.patches.mode == "contextual":
        patches = sample_contextual_patches(image, breast, lesions, config.patches, rng)
        if unlocated:
            patches = [p for p in patches if p.kind != "normal" and p.lesion_type != "normal"]
    else:
        patches = sample_lesion_patches(image, breast, lesions, config.patches, rng)
        if not unlocated:
            truth = lesion_mask(raw.shape, [(d["x0"], d["y0"], d["x1"], d["y1"]) for d in lesions])
            patches += sample_normal_patches(image, breast, truth, config.patches, rng,
                                             config.patches.normal_per_image)
    records = [{
        "image_png": encode_png16(p.pixels), "height": p.pixels.shape[0], "width": p.pixels.shape[1],
        "label": label_of(p.lesion_type), "lesion_type": p.lesion_type, "pathology": p.pathology,
        "patient_id": job.patient_id, "image_id": job.image_id, "kind": p.kind,
        "bbox": p.bbox, "origin": p.origin, "mask_png": encode_mask(p.mask),
    } for p in patches]
    return {"patches": records, "rejected": rejected, "read": True}
