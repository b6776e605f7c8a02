"""OPTIMAM / OMI-DB style export (Excel or CSV) with a ``column_map``."""
from __future__ import annotations

from pathlib import Path

from mammogan_tf.data.annotations.common import Rows, read_frame
from mammogan_tf.data.annotations.table import column_mapping, mapped_columns


def read_optimam(path: Path, root: Path, column_map):
    """``column_map`` maps OUR -> THEIR column names; columns not in the map are looked up under
    our own name. ``image_id``, ``patient_id`` and ``path`` must be found; the others are
    optional. Every original field is kept as ``source_<name>``. Returns (rows, rejected, notes).
    """
    frame = read_frame(path, "optimam")
    rows = Rows(path, frame)
    table, rejected = rows.result(mapped_columns(rows, column_mapping(path, list(frame.columns), column_map), root))
    return table, rejected, []
