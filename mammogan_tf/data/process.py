"""Per-image work of ``mammogan prepare``: read, mask, normalise, check lesions, sample patches.

TensorFlow-free: it runs in worker processes. ``process_image(job)`` never raises for bad input;
problems come back as rejection rows and everything else is still processed.
"""
from __future__ import annotations

import math
import os
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mammogan_tf.data.config import PrepareConfig
from mammogan_tf.data.codec import encode_mask, encode_png16
from mammogan_tf.data.images import DICOM_SUFFIXES, read_image, read_image_header
from mammogan_tf.data.preprocess import box_from_mask, breast_mask, centre_in_mask, lesion_mask, normalize_histogram
from mammogan_tf.data.sampling import sample_contextual_patches, sample_lesion_patches, sample_normal_patches
from mammogan_tf.data.table import label_of
from mammogan_tf.data.whole import whole_records
from mammogan_tf.errors import MammoganError


@dataclass
class ImageJob:
    """One image and its findings. ``findings``: lesion-table rows as dicts (with ``source_line``);
    ``source_file``: the annotation file they came from."""

    image_id: str
    patient_id: str
    path: str
    split: str
    findings: list[dict] = field(default_factory=list)
    source_file: str = ""


def image_rng(seed: int, image_id: str) -> np.random.Generator:
    """The generator for one image: depends only on the seed and the image id, not on order."""
    return np.random.default_rng([seed, zlib.crc32(image_id.encode("utf-8"))])


def _reject(job: ImageJob, reason: str, detail: str = "", findings: list[dict] | None = None) -> dict:
    """A ``rejected.csv`` row: the annotation file, its source rows (of ``findings``, default: all
    of the image's), the image, a reason without file names or numbers and the details;
    ``whole``: the whole image was rejected."""
    rows = [f.get("source_line") for f in (job.findings if findings is None else findings)]
    return {"file": job.source_file, "rows": " ".join(str(r) for r in rows if not _is_missing(r)),
            "image_id": job.image_id, "image": job.path, "reason": reason, "detail": detail,
            "whole": findings is None}


def _read_failure(job: ImageJob, error: Exception) -> dict:
    """An image that could not be read: the message without its path, details after the first '('."""
    message = str(error) if isinstance(error, MammoganError) else f"cannot read image ({type(error).__name__}: {error})"
    message = message.replace(f"{job.path}: ", "").replace(job.path, "<image>")
    reason, _, detail = message.partition(" (")
    return _reject(job, reason.strip(), detail.rstrip(")"))


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


MASK_NAMED = "the file the annotations name"
MASK_BY_CONTENT = "chosen by content: the binary DICOM of the image's size in the ROI folder"


def _roi_from_folder(folder: str, shape: tuple[int, int]):
    """(mask, None) for the first binary DICOM of ``shape`` under ``folder``, else (None, why)."""
    candidates = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in DICOM_SUFFIXES)
    for candidate in candidates:
        try:
            if tuple(read_image_header(candidate).shape) != shape:
                continue
            roi, _ = read_image(candidate)
        except MammoganError:
            continue
        low, high = roi.min(), roi.max()
        if np.all((roi == low) | (roi == high)):
            return roi > (low + high) / 2, None
    return None, f"none of the {len(candidates)} DICOM files in {folder} is binary and {shape[1]}x{shape[0]}"


def _roi_box(job: ImageJob, finding: dict, shape: tuple[int, int]):
    """(box, rule, rejection) of a finding located by its ROI mask (a file, or a folder to search)."""
    mask_path = finding.get("mask_path")
    if _is_missing(mask_path) or not mask_path:
        return None, None, _reject(job, "no coordinates (diffuse finding): no lesion patch", findings=[finding])
    if os.path.isdir(mask_path):
        roi, why = _roi_from_folder(mask_path, shape)
        if roi is None:
            return None, None, _reject(job, "no ROI mask found by content", why, [finding])
        rule = MASK_BY_CONTENT
    else:
        try:
            roi, _ = read_image(mask_path)
        except MammoganError as error:
            return None, None, _reject(job, "ROI mask unreadable", str(error), [finding])
        if roi.shape != shape:
            return None, None, _reject(job, "ROI mask size does not match the image",
                                       f"mask {roi.shape}, image {shape}", [finding])
        roi, rule = roi > 0.5, MASK_NAMED
    box = box_from_mask(roi)
    if box is None:
        return None, None, _reject(job, "ROI mask is empty", mask_path, [finding])
    return box, rule, None


def _locate(job: ImageJob, finding: dict, shape: tuple[int, int], breast: np.ndarray):
    """(box or None, mask rule or None, rejection or None) for one finding, boxes clipped to the image."""
    box = tuple(finding.get(k) for k in ("x0", "y0", "x1", "y1"))
    rule = None
    if any(_is_missing(v) for v in box):
        box, rule, rejection = _roi_box(job, finding, shape)
        if rejection is not None:
            return None, None, rejection
    height, width = shape
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    clipped = (max(0, x0), max(0, y0), min(width, x1), min(height, y1))
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        return None, None, _reject(job, "box outside the image", f"box {box}, image {width}x{height}", [finding])
    if not centre_in_mask(clipped, breast):
        return None, None, _reject(job, "lesion centre outside the breast mask", "", [finding])
    return clipped, rule, None


AMBIGUOUS = "multi-label"
"""Lesion type given to a finding whose labels are ambiguous: in no ``lesion_types`` list, so it
gives no lesion patch, yet normal-tissue patches still avoid it."""


def _labelled(job: ImageJob, finding: dict, config: PrepareConfig) -> tuple[list[str], dict | None]:
    """The lesion types a finding is sampled under (``patches.multi_label``), and a rejection."""
    labels = str(finding.get("lesion_labels") or "").split("|") if finding.get("lesion_labels") else []
    if len(labels) < 2:
        return [finding["lesion_type"]], None
    selected = [label for label in labels if label in config.patches.lesion_types]
    if len(selected) <= 1 or config.patches.multi_label == "each":
        return selected or [labels[0]], None
    rejection = _reject(job, "finding has several selected labels: no lesion patch",
                        f"{' and '.join(selected)}; set prepare.patches.multi_label: each, or select one",
                        [finding])
    return [AMBIGUOUS], rejection


def process_image(job: ImageJob, config: PrepareConfig) -> dict:
    """Read one image and sample its patches.

    Returns ``{"patches": [record fields with PNG bytes], "rejected": [rows], "read": bool,
    "mask_rules": {rule: count}}`` (how each ROI mask was chosen).
    """
    try:
        raw, _meta = read_image(job.path)
    except Exception as error:  # noqa: BLE001 - any reader or decoder failure is one rejected image
        return {"patches": [], "rejected": [_read_failure(job, error)], "read": False, "mask_rules": {}}
    breast = breast_mask(raw, config.mask)
    if not breast.any():
        return {"patches": [], "rejected": [_reject(job, "empty breast mask (blank image?)")], "read": True,
                "mask_rules": {}}
    image = normalize_histogram(raw, config.normalization, mask=breast)
    rejected, lesions, unlocated, rules = [], [], False, Counter()
    for finding in job.findings:
        if finding["lesion_type"] == "normal":
            continue
        box, rule, rejection = _locate(job, finding, raw.shape, breast)
        if rejection is not None:
            rejected.append(rejection)
            unlocated = True
            continue
        rules.update([rule] if rule else [])
        kinds, rejection = _labelled(job, finding, config)
        rejected += [rejection] if rejection else []
        lesions += [{"lesion_type": kind, "pathology": finding["pathology"],
                     "x0": box[0], "y0": box[1], "x1": box[2], "y1": box[3]} for kind in kinds]
    # The samplers keep only config.patches.lesion_types for lesion patches; every located
    # lesion is passed so that normal-tissue patches avoid all of them.
    if config.patches.mode == "whole":  # one resized breast region with all its boxes
        records = [] if unlocated else whole_records(image, breast, lesions, config.patches, job)
        return {"patches": records, "rejected": rejected, "read": True, "mask_rules": dict(rules)}
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
        "bbox": p.bbox, "origin": p.origin, "mask_png": encode_mask(p.mask), "copy_index": p.copy_index,
        "orientation": p.orientation,
    } for p in patches]
    return {"patches": records, "rejected": rejected, "read": True, "mask_rules": dict(rules)}
