"""CBIS-DDSM case descriptions (``mass_/calc_case_description_{train,test}_set.csv``)."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from mammogan_tf.data.annotations.common import Rows, read_frame, require_columns
from mammogan_tf.data.annotations.values import lesion_type, pathology

REQUIRED = ("patient_id", "left_or_right_breast", "image_view", "abnormality_type", "pathology",
            "image_file_path", "roi_mask_file_path")


def read_cbis(path: Path, root: Path, column_map):
    """One row per abnormality; boxes are NaN (``prepare`` derives them from the ROI masks).

    ``image_id`` is the first folder of ``image file path`` (e.g. ``Mass-Training_P_00001_LEFT_CC``),
    ``study_id`` its second; paths are stripped of the newline that quoted fields carry. A blank
    pathology is rejected. Both spellings ``breast_density`` / ``breast density`` end in
    ``source_breast_density``.

    Images are found under ``root`` as the CSV names them, or, in the TCIA download tree
    (``[CBIS-DDSM/]<Subject ID>/<study>/<series>/1-1.dcm``), as the one DICOM file under the
    subject folder. ``mask_path`` is the ROI's subject folder (``..._LEFT_CC_1``) when it exists:
    ``prepare`` then picks the mask among its DICOM files by content (binary, the size of the
    full image), because the CSV's mask and cropped-image file names are swapped for some
    cases; otherwise the file the CSV names. Returns (rows, rejected, notes).
    """
    frame = read_frame(path, "cbis-ddsm")
    require_columns(path, frame.columns, REQUIRED,
                    " (the ROI mask column gives the lesion location)" if "roi_mask_file_path" not in frame else "")
    rows = Rows(path, frame)
    image_path = rows.required("image_file_path").str.replace("\\", "/", regex=False)
    parts = image_path.str.strip("/").str.split("/")
    image_id = parts.str[0]
    base, layout = _base(root, image_path)
    mask_path = rows.required("roi_mask_file_path").str.replace("\\", "/", regex=False)
    table, rejected = rows.result({
        "image_id": image_id,
        "patient_id": rows.required("patient_id"),
        "study_id": parts.map(lambda p: p[1] if len(p) > 2 else None),
        "path": pd.Series([_image(base, p) for p in image_path], index=image_path.index),
        "laterality": rows.text("left_or_right_breast"),
        "view": rows.text("image_view"),
        "lesion_type": rows.mapped(rows.required("abnormality_type"), lesion_type),
        "pathology": rows.mapped(rows.required("pathology"), pathology),
        "mask_path": pd.Series([_mask(base, p) for p in mask_path], index=mask_path.index),
    })
    return table, rejected, [f"CBIS-DDSM images: {layout}"]


def _base(root: Path, image_paths: pd.Series) -> tuple[Path, str]:
    """The folder the CSV paths or the TCIA subject folders are in, and a note saying which."""
    for base in (root, root / "CBIS-DDSM"):
        if any((base / p).is_file() for p in image_paths.head(20)):
            return base, f"paths as the CSV names them under {base}"
    for base in (root, root / "CBIS-DDSM"):
        first = image_paths.iloc[0].strip("/").split("/")[0] if len(image_paths) else ""
        if first and (base / first).is_dir():
            return base, f"TCIA download tree (<Subject ID>/<study>/<series>/*.dcm) under {base}"
    return root, f"neither the CSV paths nor TCIA subject folders found under {root}"


def _dicoms(folder: str) -> list[str]:
    """Every ``*.dcm`` under ``folder`` (any depth), sorted."""
    found = []
    for parent, _, files in os.walk(folder):
        found += [os.path.join(parent, name) for name in files if name.lower().endswith(".dcm")]
    return sorted(found)


def _image(base: Path, relative: str) -> str:
    named = os.path.abspath(base / relative)
    if os.path.isfile(named):
        return named
    found = _dicoms(os.path.abspath(base / relative.strip("/").split("/")[0]))
    return found[0] if len(found) == 1 else named


def _mask(base: Path, relative: str) -> str:
    subject = os.path.abspath(base / relative.strip("/").split("/")[0])
    return subject if os.path.isdir(subject) else os.path.abspath(base / relative)
