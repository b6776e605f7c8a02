"""Annotation readers: every dataset's annotation file -> the common lesion table.

``load_annotations(path, format=None, image_root=None, column_map=None)`` returns an
:class:`Annotations` holding the lesion table (``mammogan_tf.data.table.COLUMNS`` first, then
every original field verbatim as ``source_<name>``), the rows it left out (``rejected``), the
format it read and ``notes`` (fallbacks and layouts it used, to be printed). One row per
finding; a normal image has one row with ``lesion_type == "normal"``. Boxes ``x0, y0, x1, y1``
are image pixels, row 0 at the top, ``x`` = column, ``(x1, y1)`` exclusive, NaN for normal
images and diffuse findings. ``path`` is the absolute image path resolved against
``image_root`` (default: the annotation file's folder); it may not exist (``prepare`` rejects
missing images). A finding with several labels (VinDr) is one row: ``lesion_type`` its first
label, ``lesion_labels`` all of them joined by ``|``.

Every table row carries ``source_line``, the number of the source row it came from (the line
number for text files; the spreadsheet row, header = 1, for CSV and Excel). A row that lacks a
required field becomes a :class:`Rejection` with the file, that row number and the reason; one
bad row never stops the reader. A missing, empty, UTF-16 or wrongly separated file, an unknown
format or a column (or folder) the format needs raise :class:`InputError` naming it.

Formats (``FORMATS``, case-insensitive; one module each): ``mias`` (mini-MIAS ``Info.txt``),
``cbis-ddsm`` (case-description CSVs), ``vindr`` (``finding_annotations.csv``), ``inbreast``
(``INbreast.csv`` + ``AllXML/``), ``optimam`` (Excel/CSV export with a ``column_map``), ``table``
(the lesion table itself).
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from mammogan_tf.data.annotations.cbis_ddsm import read_cbis
from mammogan_tf.data.annotations.common import (
    EXCEL_SUFFIXES, FORMAT_NAMES, Annotations, Rejection, accepted, checked_file, field_name, header_line,
)
from mammogan_tf.data.annotations.inbreast import read_inbreast
from mammogan_tf.data.annotations.mias import read_mias
from mammogan_tf.data.annotations.optimam import read_optimam
from mammogan_tf.data.annotations.table import read_table
from mammogan_tf.data.annotations.values import breast_fields
from mammogan_tf.data.annotations.vindr import read_vindr
from mammogan_tf.data.table import COLUMNS, make_table
from mammogan_tf.errors import ConfigError, InputError

__all__ = ["Annotations", "FORMATS", "READERS", "Rejection", "detect_format", "load_annotations",
           "normalise_format", "read_annotations"]

READERS: dict[str, Callable] = {
    "mias": read_mias,
    "cbis-ddsm": read_cbis,
    "vindr": read_vindr,
    "inbreast": read_inbreast,
    "optimam": read_optimam,
    "table": read_table,
}
"""Format name -> reader(path, image_root, column_map) -> (rows, rejected, notes)."""
FORMATS = FORMAT_NAMES


def normalise_format(name: str | None) -> str | None:
    """A ``--format`` value in any case, ``_`` for ``-`` (``CBIS_DDSM`` -> ``cbis-ddsm``); InputError if unknown."""
    if name is None:
        return None
    key = str(name).strip().lower().replace("_", "-")
    if key not in READERS:
        raise InputError(f"unknown annotation format {name!r}; {accepted()}")
    return key


def load_annotations(
    path: str | os.PathLike,
    format: str | None = None,
    image_root: str | os.PathLike | None = None,
    column_map: dict[str, str] | None = None,
) -> Annotations:
    """Read one annotation file into the lesion table (see the module doc).

    ``format``: one of ``FORMATS`` in any case (detected with :func:`detect_format` when None).
    ``image_root``: folder that image paths are relative to (default: the file's folder).
    ``column_map``: for ``optimam``/``table``, OUR column name -> THEIR column name.
    """
    path = checked_file(path)
    try:
        format = normalise_format(format) if format is not None else detect_format(path)
    except InputError as error:
        raise InputError(f"{path}: {error}") from None
    if column_map and format not in ("optimam", "table"):
        raise ConfigError(f"column_map applies to --format optimam or table, not {format!r} ({path})")
    root = Path(image_root).expanduser() if image_root is not None else path.parent
    rows, rejected, notes = READERS[format](path, root.absolute(), column_map)
    table = make_table(rows)
    notes = notes + breast_fields(table)
    return Annotations(table=table, rejected=rejected, format=format, notes=notes)


def read_annotations(
    path: str | os.PathLike,
    format: str | None = None,
    image_root: str | os.PathLike | None = None,
    column_map: dict[str, str] | None = None,
) -> pd.DataFrame:
    """The lesion table alone: ``load_annotations(...).table``."""
    return load_annotations(path, format=format, image_root=image_root, column_map=column_map).table


def detect_format(path: str | os.PathLike) -> str:
    """The format of an annotation file, from its name and its header.

    Names: ``Info.txt`` -> mias, ``*case_description*`` -> cbis-ddsm,
    ``finding_annotations*`` -> vindr, ``INbreast*.csv`` -> inbreast, Excel -> optimam.
    Headers: our ``COLUMNS`` -> table, the CBIS-DDSM / VinDr-Mammo columns, ``;``-separated with
    ``File Name`` -> inbreast, ``mdbNNN`` rows -> mias. Raises InputError when neither tells,
    or when they disagree.
    """
    path = checked_file(path, content=False)
    by_name = _format_from_name(path)
    if by_name is None:
        checked_file(path)
    by_header = None if path.suffix.lower() in EXCEL_SUFFIXES else _format_from_header(path)
    found = {f for f in (by_name, by_header) if f}
    if len(found) == 1:
        return found.pop()
    if not found:
        raise InputError(
            f"{path}: cannot tell the annotation format from its name or header; pass --format ({accepted()})"
        )
    raise InputError(
        f"{path}: the file name suggests {by_name!r} but the header looks like {by_header!r}; "
        f"pass --format ({accepted()})"
    )


def _format_from_name(path: Path) -> str | None:
    name, suffix = path.name.lower(), path.suffix.lower()
    if name == "info.txt":
        return "mias"
    if "case_description" in name:
        return "cbis-ddsm"
    if name.startswith("finding_annotations"):
        return "vindr"
    if name.startswith("inbreast") and suffix == ".csv":
        return "inbreast"
    if suffix in EXCEL_SUFFIXES:
        return "optimam"
    return None


def _format_from_header(path: Path) -> str | None:
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        head = handle.read(65536)
    if re.search(r"^\s*mdb\d+\s+[FGD]\s", head, re.MULTILINE | re.IGNORECASE):
        return "mias"
    header = header_line(path)
    sep = ";" if header.count(";") > header.count(",") else ","
    fields = {field_name(f.strip().strip('"')) for f in header.split(sep)}
    if sep == ";" and "file_name" in fields:
        return "inbreast"
    if set(COLUMNS) <= fields:
        return "table"
    if {"patient_id", "abnormality_type", "image_file_path"} <= fields:
        return "cbis-ddsm"
    if {"image_id", "study_id", "finding_categories"} <= fields:
        return "vindr"
    return None
