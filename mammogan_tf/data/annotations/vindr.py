"""VinDr-Mammo ``finding_annotations.csv`` (images ``images/<study_id>/<image_id>.dicom``)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from mammogan_tf.data.annotations.common import Rows, read_frame, require_columns, resolve_paths
from mammogan_tf.data.annotations.values import lesion_labels

BOX = ("xmin", "ymin", "xmax", "ymax")


def read_vindr(path: Path, root: Path, column_map):
    """One row per finding (per CSV row), with every label of the finding.

    ``finding_categories`` is a list literal: ``lesion_type`` is its first lesion type and
    ``lesion_labels`` all of them joined by ``|`` (``mass|calcification``), so one box is one
    finding; ``prepare.patches.multi_label`` decides what a multi-label finding gives. Normal
    rows get a NaN box. ``patient_id = study_id`` (VinDr has one study per woman); pathology is
    unknown; ``split`` is kept as ``source_split``. Images: ``<root>/images/<study_id>/<image_id>.dicom``
    when ``<root>/images`` exists (the layout as distributed, CSVs beside ``images/``), else
    ``<root>/<study_id>/<image_id>.dicom``. Returns (rows, rejected, notes).
    """
    frame = read_frame(path, "vindr")
    require_columns(path, frame.columns, ("image_id", "study_id", "finding_categories", *BOX))
    rows = Rows(path, frame)
    image_id, study_id = rows.required("image_id"), rows.required("study_id")
    labels = rows.mapped(rows.required("finding_categories"), lesion_labels)
    boxes = rows.boxes(BOX)
    normal = labels.map(lambda found: found == ("normal",), na_action="ignore").fillna(False).astype(bool)
    folder = root / "images" if (root / "images").is_dir() else root
    relative = study_id + "/" + image_id + ".dicom"
    table, rejected = rows.result({
        "image_id": image_id, "patient_id": study_id, "study_id": study_id,
        "path": pd.Series(resolve_paths(folder, relative), index=relative.index),
        "laterality": rows.text("laterality") if "laterality" in frame else None,
        "view": rows.text("view_position") if "view_position" in frame else None,
        "lesion_type": labels.str[0],
        "lesion_labels": labels.map(lambda found: "|".join(found) if len(found) > 1 else None, na_action="ignore"),
        **{column: boxes[column].where(~normal) for column in boxes},
    })
    return table, rejected, [f"VinDr-Mammo images under {folder.absolute()}"]
