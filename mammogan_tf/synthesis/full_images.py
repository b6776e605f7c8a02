"""``mammogan synthesize --reinsert``: contextual synthetic patches blended back into full mammograms.

Full images are found through ``--reinsert``: a ``mammogan prepare`` output (its config names the
annotation file, its format and the image folder) or a lesion table CSV (``--format table``
paths, relative to the table's folder). A source patch's image is the table row of its
``image_id``; its crop is the shard record's ``origin`` and its flip and quarter turns the
record's ``orientation`` (image pixels; prepare does not record the normalisation).

For each kept synthetic patch (``reinsert_patch``):

1. orientation: prepare flipped the crop left/right and/or turned it by k * 90 degrees and
   records it; for shards written before it did, the one of the 8 that makes the source patch
   agree best with the crop of the full image (resized to the patch side like prepare did) is
   chosen by rank correlation (robust to prepare's monotone histogram normalisation). Either way
   the orientation's rank correlation is recorded as ``orientation_score`` (a check: near 1);
2. intensity: prepare's normalisation is undone by a monotone quantile map from the source
   patch's values to the crop's (``monotone_map``, anchored at 0 -> 0 and 1 -> 1);
3. the lesion is the mapped difference ``f(synthetic) - f(source)``, turned back, resized to the
   crop side and added to the full image inside the soft post-processing mask
   (``reinsert.reinsert``: outside the mask the image is bit-identical).

Each synthetic patch gives one full image ``synthetic-<index>.png`` (16-bit grey, [0, 1] of the
read image -> 0..65535, provenance in text chunks) or ``.dcm`` (when the source was DICOM or
``--format dicom``; a marked Secondary Capture without patient identifiers), and rows of
``lesions.csv`` (the lesion table: ``table.COLUMNS`` plus ``synthetic`` true, ``synthetic_lesion``,
``source_image_id``, ``source_patch_id``, ``generator_sha256``, ``orientation``,
``orientation_score``): the source image's own findings, plus (add) the new lesion with the box
of the post-processed mask, or (remove) the source findings whose centre the removed lesion
covers dropped (a ``normal`` row when none is left). ``patient_id`` is the source patient, so
that ``prepare`` keeps the synthetic image in its source patient's split.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from mammogan_tf.errors import InputError
from mammogan_tf.synthesis.reinsert import reinsert

ORIENTATIONS = tuple((flip, k) for flip in (False, True) for k in range(4))
"""(flipped left/right first, then k counter-clockwise quarter turns), as prepare applies them."""

TABLE_NAME = "lesions.csv"


def full_image_table(path: str | os.PathLike) -> tuple[pd.DataFrame, Path]:
    """The lesion table behind ``--reinsert`` (a prepare output or a table CSV) and its source."""
    from mammogan_tf.data.annotations import load_annotations
    from mammogan_tf.manifest import manifest_path, read_manifest

    path = Path(path)
    manifest_file = manifest_path(path)
    if manifest_file.is_file():
        config = read_manifest(manifest_file, stage="prepare")["config"]
        if not config.get("annotations") or not config.get("images"):
            raise InputError(f"{manifest_file}: its config names no annotations/images; pass the lesion table instead")
        return load_annotations(config["annotations"], format=config.get("format"), image_root=config["images"],
                                column_map=config.get("column_map") or None).table, manifest_file
    if path.is_file():
        return load_annotations(path, format="table").table, path
    raise InputError(f"--reinsert {path}: neither a prepare output nor a lesion table file")


def undo_orientation(array: np.ndarray, flip: bool, k: int) -> np.ndarray:
    """Inverse of prepare's ``rot90(fliplr(a) if flip else a, k)``."""
    array = np.rot90(array, -k)
    return np.ascontiguousarray(np.fliplr(array) if flip else array)


def _ranks(values: np.ndarray) -> np.ndarray:
    ranks = np.empty(values.size, np.float64)
    ranks[np.argsort(values.ravel(), kind="stable")] = np.arange(values.size)
    return ranks


def _standard_ranks(values: np.ndarray) -> np.ndarray:
    ranks = _ranks(values)
    return (ranks - ranks.mean()) / (ranks.std() or 1.0)


def orientation_score(patch: np.ndarray, reference: np.ndarray, flip: bool, k: int) -> float:
    """Rank correlation in [-1, 1] of ``patch`` turned back by ``(flip, k)`` with ``reference``."""
    return float(np.mean(_standard_ranks(undo_orientation(patch, flip, k)) * _standard_ranks(reference)))


def find_orientation(patch: np.ndarray, reference: np.ndarray) -> tuple[bool, int, float]:
    """``(flip, k, score)``: the orientation whose undoing best matches ``reference`` (both (S, S));
    score = ``orientation_score`` (ties: the first of ``ORIENTATIONS``)."""
    best = (False, 0, -2.0)
    for flip, k in ORIENTATIONS:
        score = orientation_score(patch, reference, flip, k)
        if score > best[2] + 1e-9:
            best = (flip, k, score)
    return best


def monotone_map(source: np.ndarray, reference: np.ndarray):
    """``f(values)``: the quantile map from ``source`` values to ``reference`` values (both in
    [0, 1]), anchored at 0 -> 0 and 1 -> 1, linear in between."""
    xs = np.concatenate([[0.0], np.sort(source.ravel()), [1.0]])
    ys = np.concatenate([[0.0], np.sort(reference.ravel()), [1.0]])
    xs, first = np.unique(xs, return_index=True)
    ys = np.maximum.accumulate(ys[first])
    return lambda values: np.interp(values, xs, ys)


def reinsert_patch(image: np.ndarray, source: np.ndarray, synthetic: np.ndarray, mask: np.ndarray, origin,
                   orientation: tuple[bool, int] | None = None):
    """``image`` (H, W) float in [0, 1]; ``source``, ``synthetic`` (S, S) in [-1, 1] (the real
    patch and its post-processed synthetic version), ``mask`` (S, S) soft mask in [0, 1], all in
    the patch's (flipped/turned) frame; ``origin`` the crop; ``orientation`` (flip, k) as prepare
    recorded it (None: found by ``find_orientation``). Returns ``(Reinserted, (flip, k, score))``."""
    from mammogan_tf.data.sampling import crop, resize_patch

    x0, y0, x1, y1 = (int(v) for v in origin)
    side, size = x1 - x0, source.shape[0]
    window = crop(image.astype(np.float32), x0, y0, side)
    source, synthetic = (source + 1.0) / 2.0, (synthetic + 1.0) / 2.0
    reference = resize_patch(window, size)
    if orientation is None:
        flip, k, score = find_orientation(source, reference)
    else:
        flip, k = orientation
        score = orientation_score(source, reference, flip, k)
    source, synthetic, mask = (undo_orientation(a, flip, k) for a in (source, synthetic, mask))
    to_image = monotone_map(source, resize_patch(window, size))
    delta = (to_image(synthetic) - to_image(source)).astype(np.float32)
    if side != size:
        delta = cv2.resize(delta, (side, side), interpolation=cv2.INTER_LINEAR)
    target = np.clip(window + delta, 0.0, 1.0) * 2.0 - 1.0
    return reinsert(image, target, origin, mask, value_range=(0.0, 1.0)), (flip, k, score)


def _centre_inside(row, box) -> bool:
    if box is None or any(pd.isna(row.get(c)) for c in ("x0", "y0", "x1", "y1")):
        return False
    cx, cy = (row["x0"] + row["x1"]) / 2, (row["y0"] + row["y1"]) / 2
    return box[0] <= cx < box[2] and box[1] <= cy < box[3]


class FullImageWriter:
    """Writes the reinserted full images and ``lesions.csv`` into ``folder`` (see the module doc)."""

    def __init__(self, folder: Path, table: pd.DataFrame, model_config, fmt: str):
        self.folder, self.table, self.model, self.fmt = Path(folder), table, model_config, fmt
        self.folder.mkdir(parents=True, exist_ok=True)
        self.by_image = {str(k): rows for k, rows in table.groupby(table["image_id"].astype(str))}
        self.rows: list[dict] = []
        self.files: list[str] = []
        self.series = None

    def write(self, index: int, source, synthetic: np.ndarray, mask: np.ndarray, record: dict) -> dict:
        """Reinsert one synthetic patch; returns the lesion row's box and orientation for the manifest."""
        from mammogan_tf.data.images import read_image
        from mammogan_tf.synthesis.export import DicomSeries, write_png

        if source.origin is None:
            raise InputError(f"source {source.patch_id}: no recorded origin; --reinsert needs prepare shards")
        rows = self.by_image.get(str(source.image_id))
        if rows is None:
            raise InputError(f"source {source.patch_id}: image {source.image_id} is not in the --reinsert table")
        first = rows.iloc[0]
        image, meta = read_image(first["path"])
        result, (flip, k, score) = reinsert_patch(image, source.pixels, synthetic, mask, source.origin,
                                                  source.orientation)
        dicom = self.fmt == "dicom" or meta.source_format == "dicom"
        name = f"synthetic-{index:07d}.{'dcm' if dicom else 'png'}"
        full_record = {**record, "reinserted_into": str(source.image_id), "orientation": [bool(flip), int(k)],
                       "orientation_score": round(score, 4),
                       "orientation_recorded": source.orientation is not None, "lesion_box_image": list(result.box) if result.box else None}
        if dicom:
            self.series = self.series or DicomSeries("full mammograms with a reinserted GAN lesion")
            self.series.write(self.folder / name, result.image, full_record, number=index + 1)
        else:
            write_png(self.folder / name, result.image, full_record)
        self.files.append(name)
        self._add_rows(name, index, rows, result.box, record, (flip, k, score))
        return {"file": name, "box": list(result.box) if result.box else None,
                "orientation": [bool(flip), int(k)], "orientation_score": round(score, 4),
                "orientation_recorded": source.orientation is not None}

    def _add_rows(self, name, index, rows, box, record, orientation):
        from mammogan_tf.synthesis.contextual import output_pathology

        model, add = self.model, self.model.mode == "add"
        common = {"image_id": Path(name).stem + f"-{record['generator_sha256'][:8]}-{record['seed']}", "path": name,
                  "synthetic": True, "source_image_id": record["source_image_id"],
                  "source_patch_id": record["source_patch_id"], "generator_sha256": record["generator_sha256"],
                  "orientation": f"flip={orientation[0]} k={orientation[1]}",
                  "orientation_score": round(orientation[2], 4)}
        keep = ("patient_id", "study_id", "laterality", "view", "manufacturer", "processed")
        base = {**{c: rows.iloc[0].get(c) for c in keep}, **common}
        found = [row for _, row in rows.iterrows() if row["lesion_type"] != "normal"
                 and (add or not _centre_inside(row, box))]
        for row in found:
            self.rows.append({**base, "lesion_type": row["lesion_type"], "pathology": row["pathology"],
                              **{c: row[c] for c in ("x0", "y0", "x1", "y1")}, "synthetic_lesion": False})
        if add and box is not None:
            self.rows.append({**base, "lesion_type": model.lesion_type, "pathology": output_pathology(model),
                              **dict(zip(("x0", "y0", "x1", "y1"), box)), "synthetic_lesion": True})
        elif not found:
            self.rows.append({**base, "lesion_type": "normal", "pathology": "unknown", "synthetic_lesion": not add})

    def finish(self) -> list[str]:
        from mammogan_tf.data.table import make_table

        make_table(self.rows).to_csv(self.folder / TABLE_NAME, index=False, lineterminator="\n")
        return self.files + [TABLE_NAME]
