"""The lesion table itself as CSV or Excel (e.g. what ``mammogan phantom`` writes), and the
column-mapped conversion that the OPTIMAM reader shares."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from mammogan_tf.data.annotations.common import (
    Rows, field_name, is_blank, read_frame, require_columns, resolve_paths,
)
from mammogan_tf.data.annotations.values import lesion_type, pathology, processed
from mammogan_tf.data.table import BOX_COLUMNS, COLUMNS
from mammogan_tf.errors import ConfigError, InputError

OPTIONAL = ("lesion_labels",)
"""Columns of our table besides ``COLUMNS`` that the reader keeps under their own name."""


def read_table(path: Path, root: Path, column_map):
    """``COLUMNS`` as header (or a ``column_map``); other columns are kept as they are.

    Returns (table rows, rejected, notes).
    """
    frame = read_frame(path, "table")
    if not column_map:
        require_columns(path, frame.columns, COLUMNS)
    mapping = column_mapping(path, list(frame.columns), column_map)
    rows = Rows(path, frame)
    data = mapped_columns(rows, mapping, root)
    for column in frame.columns:
        if column not in mapping.values():
            data[column] = frame[column]
    table, rejected = rows.result(data, sources=False)
    return table, rejected, []


def column_mapping(path: Path, columns: list[str], column_map: dict[str, str] | None) -> dict[str, str]:
    """OUR column -> the (normalised) column of the file that holds it."""
    column_map = dict(column_map or {})
    unknown = set(column_map) - set(COLUMNS)
    if unknown:
        raise ConfigError(
            f"column_map keys {sorted(unknown)} are not lesion-table columns; expected {list(COLUMNS)}"
        )
    mapping = {}
    for ours in COLUMNS:
        theirs = field_name(column_map.get(ours, ours))
        if theirs in columns:
            mapping[ours] = theirs
        elif ours in column_map:
            raise InputError(
                f"{path}: column {column_map[ours]!r} (mapped to {ours}) is not in the file; columns: {columns}"
            )
    missing = [c for c in ("image_id", "patient_id", "path") if c not in mapping]
    if missing:
        raise InputError(
            f"{path}: no column for {missing}; name them in column_map (ours -> yours); columns: {columns}"
        )
    return mapping


def mapped_columns(rows: Rows, mapping: dict[str, str], root: Path) -> dict[str, object]:
    """Table columns from the file columns ``mapping`` names (OPTIMAM export or our table).

    A row without a lesion type is a normal image when it has no box, otherwise ``other``.
    """
    def text(column: str) -> pd.Series:
        return rows.text(mapping[column]) if column in mapping else rows.text("\0absent")

    image_id = rows.required(mapping["image_id"], "image_id")
    patient_id = rows.required(mapping["patient_id"], "patient_id")
    path = rows.required(mapping["path"], "path")
    boxes = rows.boxes([mapping.get(c, "\0absent") for c in BOX_COLUMNS])
    lesion = text("lesion_type")
    no_type = is_blank(lesion)
    lesion = rows.mapped(lesion.where(~no_type, "normal"), lesion_type)
    lesion[no_type & boxes["x0"].notna()] = "other"
    mask = text("mask_path")
    blank = lambda values: values.where(~is_blank(values), None)  # noqa: E731
    return {
        "image_id": image_id, "patient_id": patient_id, "study_id": blank(text("study_id")),
        "path": pd.Series(resolve_paths(root, path), index=path.index),
        "laterality": text("laterality") if "laterality" in mapping else None,
        "view": text("view") if "view" in mapping else None,
        "manufacturer": blank(text("manufacturer")),
        "processed": rows.mapped(text("processed"), processed),
        "lesion_type": lesion,
        "pathology": rows.mapped(text("pathology"), pathology),
        **{column: boxes[column] for column in BOX_COLUMNS},
        "mask_path": pd.Series(resolve_paths(root, mask.where(~is_blank(mask), "")), index=mask.index),
    }
