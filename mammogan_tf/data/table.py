"""The common lesion table that every annotation reader returns (see ARCHITECTURE.md).

One row per finding; a normal image has one row with ``lesion_type == "normal"``.
Boxes are in image pixels, row 0 at the top, ``x`` = column, ``(x1, y1)`` exclusive.
"""
from __future__ import annotations

import pandas as pd

LESION_TYPES = ("normal", "mass", "calcification", "architectural_distortion", "asymmetry", "other")
"""Class vocabulary; the integer label of a patch is its index here."""

PATHOLOGIES = ("malignant", "benign", "benign_without_callback", "unknown")

COLUMNS = (
    "image_id", "patient_id", "study_id", "path", "laterality", "view",
    "manufacturer", "processed", "lesion_type", "pathology",
    "x0", "y0", "x1", "y1", "mask_path",
)
"""Required columns, in order; readers add the original fields as ``source_<name>``."""

BOX_COLUMNS = ("x0", "y0", "x1", "y1")

LABELS_COLUMN = "lesion_labels"
"""Optional column: every label of a multi-label finding joined by ``|`` (None for one label);
``lesion_type`` is then the first of them."""


def label_of(lesion_type: str) -> int:
    """Integer class label of a lesion type (index in ``LESION_TYPES``)."""
    return LESION_TYPES.index(lesion_type)


def make_table(rows: list[dict] | pd.DataFrame) -> pd.DataFrame:
    """Build a lesion table from row dicts (or a frame), filling absent columns with None.

    Required columns come first in ``COLUMNS`` order, then ``source_*`` columns.
    Box columns are float (NaN where absent); ``lesion_type`` and ``pathology`` are checked
    against the vocabularies.
    """
    frame = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    for column in COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    extra = [c for c in frame.columns if c not in COLUMNS]
    frame = frame[list(COLUMNS) + extra]
    for column in BOX_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    text_columns = (*COLUMNS, LABELS_COLUMN)  # blank -> None; laterality and view stay raw for the readers' notes
    for column in [c for c in text_columns if c in frame and c not in (*BOX_COLUMNS, "laterality", "view")]:
        values = frame[column].astype(object)
        frame[column] = values.where(values.notna() & values.ne(""), None)
    bad_types = set(frame["lesion_type"].dropna()) - set(LESION_TYPES)
    if bad_types:
        raise ValueError(f"unknown lesion_type values {sorted(bad_types)}; allowed: {LESION_TYPES}")
    frame["pathology"] = frame["pathology"].fillna("unknown")
    bad_path = set(frame["pathology"]) - set(PATHOLOGIES)
    if bad_path:
        raise ValueError(f"unknown pathology values {sorted(bad_path)}; allowed: {PATHOLOGIES}")
    return frame.reset_index(drop=True)
