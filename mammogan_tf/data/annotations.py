"""Annotation readers: every dataset's annotation file -> the common lesion table.

``load_annotations(path, format=None, image_root=None, column_map=None)`` returns an
:class:`Annotations` holding the lesion table (``mammogan_tf.data.table.COLUMNS`` first, then
every original field verbatim as ``source_<name>``), the rows it left out (``rejected``) and
the format it read. One row per finding; a normal image has one row with
``lesion_type == "normal"``. Boxes ``x0, y0, x1, y1`` are image pixels, row 0 at the top,
``x`` = column, ``(x1, y1)`` exclusive, NaN for normal images and diffuse findings.
``path`` is the absolute image path resolved against ``image_root`` (default: the
annotation file's folder); it may not exist (``prepare`` rejects missing images).

Every table row carries ``source_line``, the number of the source row it came from (the line
number for text files; the spreadsheet row, header = 1, for CSV and Excel).
A row that lacks a required field (image id, patient id, a parseable box, a known pathology)
becomes a :class:`Rejection` with the file, that row number and the reason; one bad row never stops
the reader. A missing or unreadable file, an unknown format or a column the format needs
raise :class:`InputError`.

Formats (``FORMATS``; each a small reader registered in ``READERS``):

- ``mias``: mini-MIAS ``Info.txt``.
- ``cbis-ddsm``: CBIS-DDSM ``mass_/calc_case_description_*.csv``.
- ``vindr``: VinDr-Mammo ``finding_annotations.csv``.
- ``inbreast``: ``INbreast.csv`` plus the per-image ``AllXML/<File Name>.xml`` ROIs.
- ``optimam``: OPTIMAM/OMI-DB style Excel or CSV export with a ``column_map``.
- ``table``: the lesion table itself as CSV (or Excel), e.g. written by ``prepare``.
"""
from __future__ import annotations

import ast
import dataclasses
import math
import os
import plistlib
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd

from mammogan_tf.data.table import BOX_COLUMNS, COLUMNS, make_table
from mammogan_tf.errors import ConfigError, InputError

NAN = float("nan")
EXCEL_SUFFIXES = (".xlsx", ".xlsm", ".xls")


@dataclasses.dataclass
class Rejection:
    """One source row left out of the table: file, row number (see module doc) and why."""

    file: str
    row: str | int | None
    reason: str


@dataclasses.dataclass
class Annotations:
    """A lesion table, the source rows left out of it, and the format that was read."""

    table: pd.DataFrame
    rejected: list[Rejection]
    format: str


class _BadRow(Exception):
    """Raised by row converters; becomes a Rejection carrying the message as reason."""


# --------------------------------------------------------------------------- public API


def load_annotations(
    path: str | os.PathLike,
    format: str | None = None,
    image_root: str | os.PathLike | None = None,
    column_map: dict[str, str] | None = None,
) -> Annotations:
    """Read one annotation file into the lesion table (see the module doc).

    ``format``: one of ``FORMATS`` (detected with :func:`detect_format` when None).
    ``image_root``: folder that image paths are relative to (default: the file's folder).
    ``column_map``: for ``optimam``/``table``, OUR column name -> THEIR column name.
    """
    path = _checked_file(path)
    if format is None:
        format = detect_format(path)
    if format not in READERS:
        raise InputError(f"{path}: unknown annotation format {format!r}; {_accepted()}")
    if column_map and format not in ("optimam", "table"):
        raise ConfigError(f"column_map applies to --format optimam or table, not {format!r} ({path})")
    root = Path(image_root).expanduser() if image_root is not None else path.parent
    rows, rejected = READERS[format](path, root.absolute(), column_map)
    return Annotations(table=make_table(rows), rejected=rejected, format=format)


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
    path = _checked_file(path)
    by_name = _format_from_name(path)
    by_header = None if path.suffix.lower() in EXCEL_SUFFIXES else _format_from_header(path)
    found = {f for f in (by_name, by_header) if f}
    if len(found) == 1:
        return found.pop()
    if not found:
        raise InputError(
            f"{path}: cannot tell the annotation format from its name or header; "
            f"pass --format ({_accepted()})"
        )
    raise InputError(
        f"{path}: the file name suggests {by_name!r} but the header looks like {by_header!r}; "
        f"pass --format ({_accepted()})"
    )


# --------------------------------------------------------------------------- format detection


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
    header = next((line for line in head.splitlines() if line.strip()), "")
    sep = ";" if header.count(";") > header.count(",") else ","
    fields = {_field_name(f.strip().strip('"')) for f in header.split(sep)}
    if sep == ";" and "file_name" in fields:
        return "inbreast"
    if set(COLUMNS) <= fields:
        return "table"
    if {"patient_id", "abnormality_type", "image_file_path"} <= fields:
        return "cbis-ddsm"
    if {"image_id", "study_id", "finding_categories"} <= fields:
        return "vindr"
    return None


# --------------------------------------------------------------------------- mini-MIAS

_MIAS_CLASSES = {
    "CALC": "calcification", "CIRC": "mass", "SPIC": "mass", "MISC": "mass",
    "ARCH": "architectural_distortion", "ASYM": "asymmetry", "NORM": "normal",
}
_MIAS_SEVERITY = {"B": "benign", "M": "malignant"}
_MIAS_ROW = re.compile(r"^\s*(mdb(\d+))\s+(\S+)\s+(\S+)\s*(.*)$", re.IGNORECASE)


def _read_mias(path: Path, root: Path, column_map) -> tuple[list[dict], list[Rejection]]:
    """mini-MIAS ``Info.txt``: ``mdb001 G CIRC B 535 425 197`` rows after a free-text header.

    Origin bottom-left: row = H - y, column = x (H from the "W pixels x H pixels" sentence of
    the header, 1024 when absent). A circle (x, y, r) becomes the box
    [x - r, row - r, x + r + 1, row + r + 1) clipped to the image. Rows without coordinates are
    diffuse findings (NaN box); trailing note markers (``*``, ``*NOTE 3*``) go to
    ``source_note``. Pairs mdb(2k-1), mdb(2k) are one woman (``patient_id = mias{k:03d}``);
    even numbers are left breasts, odd numbers right (Info.txt note 1). Images:
    ``<root>/<ref>.pgm`` or ``.png``, or ``<root>/png/<ref>.png``, whichever exists.
    """
    text = _read_text(path)
    size = re.search(r"(\d+)\s*pixels?\s*x\s*(\d+)\s*pixels?", text, re.IGNORECASE)
    width, height = (int(size.group(1)), int(size.group(2))) if size else (1024, 1024)
    records = [
        (number, line) for number, line in enumerate(text.splitlines(), start=1)
        if re.match(r"^\s*mdb\d", line, re.IGNORECASE)
    ]
    if not records:
        raise InputError(f"{path}: no 'mdbNNN ...' rows found; is --format right? {_accepted()}")
    return _convert(path, records, lambda line: [_mias_row(line, root, width, height)])


def _mias_row(line: str, root: Path, width: int, height: int) -> dict:
    match = _MIAS_ROW.match(line)
    if not match:
        raise _BadRow("expected 'mdbNNN BACKGROUND CLASS [SEVERITY X Y RADIUS]'")
    reference, number, background, cls, rest = match.groups()
    ref, number = reference.lower(), int(number)
    if cls.upper() not in _MIAS_CLASSES:
        raise _BadRow(f"unknown class {cls!r}; expected one of {sorted(_MIAS_CLASSES)}")
    tokens = rest.split()
    severity = tokens.pop(0) if tokens and tokens[0].upper() in _MIAS_SEVERITY else None
    coords = []
    while tokens and len(coords) < 3 and _is_number(tokens[0]):
        coords.append(tokens.pop(0))
    if len(coords) not in (0, 3):
        raise _BadRow(f"incomplete coordinates {coords}; expected x y radius or none")
    box = (NAN,) * 4
    if coords:
        x, y, r = (float(c) for c in coords)
        column, row = x, height - y
        box = (max(0.0, column - r), max(0.0, row - r),
               min(float(width), column + r + 1), min(float(height), row + r + 1))
    source = {
        "reference": reference, "background": background, "class": cls, "severity": severity,
        "x": coords[0] if coords else None, "y": coords[1] if coords else None,
        "radius": coords[2] if coords else None, "note": " ".join(tokens) or None,
    }
    return {
        "image_id": ref,
        "patient_id": f"mias{(number + 1) // 2:03d}",
        "path": str(_mias_image(root, ref)),
        "laterality": "L" if number % 2 == 0 else "R",
        "lesion_type": _MIAS_CLASSES[cls.upper()],
        "pathology": _MIAS_SEVERITY.get((severity or "").upper(), "unknown"),
        **dict(zip(BOX_COLUMNS, box)),
        **_sources(source),
    }


def _mias_image(root: Path, ref: str) -> Path:
    candidates = (root / f"{ref}.pgm", root / f"{ref}.png",
                  root / "png" / f"{ref}.png", root / "pgm" / f"{ref}.pgm")
    return next((c for c in candidates if c.is_file()), candidates[0])


# --------------------------------------------------------------------------- CBIS-DDSM


def _read_cbis(path: Path, root: Path, column_map) -> tuple[list[dict], list[Rejection]]:
    """CBIS-DDSM case descriptions (mass or calc, train or test).

    ``image_id`` is the first folder of ``image file path`` (e.g. ``Mass-Training_P_00001_LEFT_CC``),
    ``study_id`` its second (the TCIA study UID folder); paths are stripped of the newline that
    quoted fields carry; ``mask_path`` is ``ROI mask file path``; boxes are NaN (``prepare``
    derives them from the masks). Both spellings ``breast_density`` / ``breast density`` end
    in ``source_breast_density``.
    """
    columns, records = _read_records(path)
    _require_columns(path, columns, ("patient_id", "left_or_right_breast", "image_view",
                                     "abnormality_type", "pathology", "image_file_path"))
    return _convert(path, records, lambda record: [_cbis_row(record, root)])


def _cbis_row(record: dict, root: Path) -> dict:
    image_path = _required(record, "image_file_path")
    parts = [p for p in re.split(r"[\\/]", image_path) if p]
    mask = record.get("roi_mask_file_path", "").strip()
    return {
        "image_id": parts[0],
        "patient_id": _required(record, "patient_id"),
        "study_id": parts[1] if len(parts) > 2 else None,
        "path": _resolve(root, image_path),
        "laterality": _laterality(record["left_or_right_breast"]),
        "view": _view(record["image_view"]),
        "lesion_type": _lesion_type(_required(record, "abnormality_type")),
        "pathology": _pathology(record["pathology"]),
        "mask_path": _resolve(root, mask) if mask else None,
        **_sources(record),
    }


# --------------------------------------------------------------------------- VinDr-Mammo


def _read_vindr(path: Path, root: Path, column_map) -> tuple[list[dict], list[Rejection]]:
    """VinDr-Mammo ``finding_annotations.csv``; images at ``<root>/<study_id>/<image_id>.dicom``.

    ``finding_categories`` is a list literal; each distinct lesion type in it gives one row
    with the row's box (normal rows get a NaN box). ``patient_id = study_id`` (VinDr has one
    study per woman); pathology is unknown; ``split`` is kept as ``source_split``.
    """
    columns, records = _read_records(path)
    _require_columns(path, columns, ("image_id", "study_id", "finding_categories", *_VINDR_BOX))
    return _convert(path, records, lambda record: _vindr_rows(record, root))


_VINDR_BOX = ("xmin", "ymin", "xmax", "ymax")


def _vindr_rows(record: dict, root: Path) -> list[dict]:
    image_id, study_id = _required(record, "image_id"), _required(record, "study_id")
    text = record["finding_categories"].strip()
    try:
        categories = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise _BadRow(f"unparseable finding_categories {text!r}; expected a list like \"['Mass']\"") from None
    if isinstance(categories, str):
        categories = [categories]
    if not isinstance(categories, (list, tuple)) or not categories:
        raise _BadRow(f"finding_categories {text!r} is not a non-empty list")
    box = _box([record[key] for key in _VINDR_BOX])
    base = {
        "image_id": image_id, "patient_id": study_id, "study_id": study_id,
        "path": _resolve(root, Path(study_id) / f"{image_id}.dicom"),
        "laterality": _laterality(record.get("laterality", "")),
        "view": _view(record.get("view_position", "")),
        **_sources(record),
    }
    lesion_types = dict.fromkeys(_lesion_type(str(c)) for c in categories)  # distinct, in order
    return [
        {**base, "lesion_type": lesion, **dict(zip(BOX_COLUMNS, (NAN,) * 4 if lesion == "normal" else box))}
        for lesion in lesion_types
    ]


# --------------------------------------------------------------------------- INbreast


def _read_inbreast(path: Path, root: Path, column_map) -> tuple[list[dict], list[Rejection]]:
    """``INbreast.csv`` (``;``-separated) plus ``<root>/AllXML/<File Name>.xml`` ROIs.

    Images: ``<root>/AllDICOMs/<File Name>_*.dcm`` or ``<root>/<File Name>_*.dcm``. One row per
    ROI of the XML (Apple plist: Images -> ROIs -> Name, Point_px "(x, y)"), with the box of
    its points ([floor(min), floor(max) + 1) per axis); the ROI name is kept as
    ``source_roi_name``. An image without ROIs gives one row: ``normal`` when BI-RADS is 1,
    otherwise ``other`` with a NaN box. ``patient_id`` is ``Patient ID`` unless blank or
    "removed", then the file name.
    """
    columns, records = _read_records(path, sep=";")
    _require_columns(path, columns, ("file_name",))
    dicoms = {}
    for folder in (root / "AllDICOMs", root):
        if folder.is_dir():
            for file in sorted(folder.glob("*.dcm")):
                dicoms.setdefault(file.stem.split("_")[0], file)
    return _convert(path, records, lambda record: _inbreast_rows(record, root, dicoms))


def _inbreast_rows(record: dict, root: Path, dicoms: dict[str, Path]) -> list[dict]:
    name = _required(record, "file_name")
    patient = record.get("patient_id", "").strip()
    base = {
        "image_id": name,
        "patient_id": patient if patient and patient.lower() != "removed" else name,
        "path": _resolve(root, dicoms.get(name, Path("AllDICOMs") / f"{name}.dcm")),
        "laterality": _laterality(record.get("laterality", "")),
        "view": _view(record.get("view", "")),
        **_sources(record),
    }
    rois = _inbreast_rois(root / "AllXML" / f"{name}.xml")
    if not rois:
        lesion = "normal" if record.get("bi_rads", "").strip() == "1" else "other"
        return [{**base, "lesion_type": lesion}]
    return [
        {**base, "lesion_type": _lesion_type(roi), **dict(zip(BOX_COLUMNS, box)), "source_roi_name": roi}
        for roi, box in rois
    ]


def _inbreast_rois(xml_path: Path) -> list[tuple[str, tuple[float, ...]]]:
    """(Name, box) of every ROI in an INbreast plist XML; [] when the file is absent."""
    if not xml_path.is_file():
        return []
    try:
        with open(xml_path, "rb") as handle:
            plist = plistlib.load(handle)
        rois = [roi for image in plist.get("Images", []) for roi in image.get("ROIs", [])]
    except Exception as error:  # plistlib raises several types for malformed files
        raise _BadRow(f"unreadable ROI file {xml_path} ({error})") from error
    found = []
    for roi in rois:
        points = [[float(v) for v in _NUMBER.findall(str(p))] for p in roi.get("Point_px", [])]
        points = [p for p in points if len(p) == 2]
        box = (NAN,) * 4
        if points:
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            box = (math.floor(min(xs)), math.floor(min(ys)), math.floor(max(xs)) + 1, math.floor(max(ys)) + 1)
        found.append((str(roi.get("Name", "")).strip(), tuple(float(v) for v in box)))
    return found


# --------------------------------------------------------------------------- OPTIMAM and table


def _read_optimam(path: Path, root: Path, column_map) -> tuple[list[dict], list[Rejection]]:
    """OPTIMAM / OMI-DB style export (Excel or CSV); ``column_map`` maps OUR -> THEIR names.

    Columns not in the map are looked up under our own name. ``image_id``, ``patient_id`` and
    ``path`` must be found; the others are optional. Every original field is kept as
    ``source_<name>``.
    """
    columns, records = _read_records(path)
    mapping = _column_mapping(path, columns, column_map)
    return _convert(
        path, records, lambda record: [{**_mapped_row(record, mapping, root), **_sources(record)}]
    )


def _read_table(path: Path, root: Path, column_map) -> tuple[list[dict], list[Rejection]]:
    """The lesion table itself (CSV or Excel) with ``COLUMNS`` as header; extra columns kept as they are."""
    columns, records = _read_records(path)
    if not column_map:
        _require_columns(path, columns, COLUMNS)
    mapping = _column_mapping(path, columns, column_map)
    extra = [c for c in columns if c not in mapping.values()]
    return _convert(
        path, records,
        lambda record: [{**_mapped_row(record, mapping, root), **{c: record[c] for c in extra}}],
    )


def _column_mapping(path: Path, columns: list[str], column_map: dict[str, str] | None) -> dict[str, str]:
    """OUR column -> the (normalised) column of the file that holds it."""
    column_map = dict(column_map or {})
    unknown = set(column_map) - set(COLUMNS)
    if unknown:
        raise ConfigError(
            f"column_map keys {sorted(unknown)} are not lesion-table columns; expected {list(COLUMNS)}"
        )
    mapping = {}
    for ours in COLUMNS:
        theirs = _field_name(column_map.get(ours, ours))
        if theirs in columns:
            mapping[ours] = theirs
        elif ours in column_map:
            raise InputError(
                f"{path}: column {column_map[ours]!r} (mapped to {ours}) is not in the file; "
                f"columns: {columns}"
            )
    missing = [c for c in ("image_id", "patient_id", "path") if c not in mapping]
    if missing:
        raise InputError(
            f"{path}: no column for {missing}; name them in column_map (ours -> yours); columns: {columns}"
        )
    return mapping


def _mapped_row(record: dict, mapping: dict[str, str], root: Path) -> dict:
    """A table row from a record whose columns ``mapping`` names (OPTIMAM export or our table).

    A row without a lesion type is a normal image when it has no box, otherwise ``other``.
    """
    def get(column: str) -> str:
        return record[mapping[column]].strip() if column in mapping else ""

    box = _box([get(c) for c in BOX_COLUMNS])
    lesion = get("lesion_type")
    mask = get("mask_path")
    return {
        "image_id": _required(record, mapping["image_id"], "image_id"),
        "patient_id": _required(record, mapping["patient_id"], "patient_id"),
        "study_id": get("study_id") or None,
        "path": _resolve(root, _required(record, mapping["path"], "path")),
        "laterality": _laterality(get("laterality")),
        "view": _view(get("view")),
        "manufacturer": get("manufacturer") or None,
        "processed": _processed(get("processed")),
        "lesion_type": _lesion_type(lesion) if lesion else ("normal" if math.isnan(box[0]) else "other"),
        "pathology": _pathology(get("pathology")),
        **dict(zip(BOX_COLUMNS, box)),
        "mask_path": _resolve(root, mask) if mask else None,
    }


READERS: dict[str, Callable[[Path, Path, dict | None], tuple[list[dict], list[Rejection]]]] = {
    "mias": _read_mias,
    "cbis-ddsm": _read_cbis,
    "vindr": _read_vindr,
    "inbreast": _read_inbreast,
    "optimam": _read_optimam,
    "table": _read_table,
}
"""Format name (the ``--format`` value) -> reader(path, image_root, column_map) -> (rows, rejected)."""

FORMATS = tuple(READERS)


# --------------------------------------------------------------------------- shared helpers


def _accepted() -> str:
    return "accepted --format values: " + ", ".join(FORMATS)


def _checked_file(path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{path}: annotation file not found; {_accepted()}")
    if not path.is_file():
        raise InputError(f"{path}: is a folder, not an annotation file; {_accepted()}")
    return path


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        return path.read_text(encoding="latin-1")
    except OSError as error:
        raise InputError(f"{path}: cannot read the annotation file ({error}); {_accepted()}") from error


def _read_records(path: Path, sep: str = ",") -> tuple[list[str], list[tuple[int, dict]]]:
    """(column names, [(row number, {column: text})]) of a CSV or Excel file.

    Column names are normalised with ``_field_name``; values are the cell text verbatim
    (blank cells ""); rows whose cells are all blank are skipped; row numbers count the
    header as row 1.
    """
    try:
        if path.suffix.lower() in EXCEL_SUFFIXES:
            frame = pd.read_excel(path, dtype=str, keep_default_na=False)
        else:
            try:
                frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8-sig")
            except UnicodeDecodeError:
                frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding="latin-1")
    except ImportError as error:
        reason = f"reading this spreadsheet needs a package ({error}); save it as .xlsx or CSV"
        raise InputError(f"{path}: {reason}") from error
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        reason = " ".join(str(error).split())
        raise InputError(f"{path}: cannot read the annotation file ({reason}); {_accepted()}") from error
    frame = frame.fillna("")
    blank_unnamed = [c for c in frame.columns if str(c).startswith("Unnamed:")  # trailing separators
                     and not frame[c].str.strip().any()]
    frame = frame.drop(columns=blank_unnamed)
    columns = _unique([_field_name(c) for c in frame.columns])
    frame.columns = columns
    records = [
        (number, record)
        for number, record in enumerate(frame.to_dict("records"), start=2)
        if any(str(value).strip() for value in record.values())
    ]
    return columns, records


def _require_columns(path: Path, columns: Iterable[str], required: Iterable[str]) -> None:
    columns = list(columns)
    missing = [c for c in required if c not in columns]
    if missing:
        raise InputError(
            f"{path}: missing column(s) {missing}; found {columns}; is --format right? {_accepted()}"
        )


def _convert(path: Path, records: Iterable[tuple[int, object]], convert: Callable[[object], list[dict]]):
    """Apply ``convert`` to every record; a ``_BadRow`` becomes a Rejection, never an exception.

    Every row produced gets ``source_line``: the record's row number (as in ``Rejection.row``).
    """
    rows, rejected = [], []
    for number, record in records:
        try:
            rows.extend({**row, "source_line": number} for row in convert(record))
        except _BadRow as error:
            rejected.append(Rejection(file=str(path), row=number, reason=str(error)))
    return rows, rejected


def _field_name(name) -> str:
    """Column name -> lower case, runs of non-alphanumerics as ``_`` ("Breast density" -> "breast_density")."""
    return re.sub(r"[^a-z0-9]+", "_", str(name).strip().lower()).strip("_") or "column"


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return unique


def _sources(record: dict) -> dict:
    """Original fields as ``source_<name>`` (names already normalised), values verbatim."""
    return {f"source_{_field_name(key)}": value for key, value in record.items()}


def _required(record: dict, key: str, label: str | None = None) -> str:
    value = str(record.get(key, "")).strip()
    if not value or value.lower() == "nan":
        raise _BadRow(f"missing {label or key}")
    return value


def _resolve(root: Path, relative: str | os.PathLike) -> str:
    """Absolute, normalised path of ``relative`` under ``root`` (an absolute path stays as it is)."""
    return os.path.abspath(os.path.join(root, os.path.expanduser(str(relative).strip())))


_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _is_number(text: str) -> bool:
    return _NUMBER.fullmatch(text.strip()) is not None


def _box(values: list[str]) -> tuple[float, float, float, float]:
    """Four cell texts -> floats; all blank -> NaN box; partly blank, non-numeric or empty -> _BadRow."""
    texts = [str(v).strip() for v in values]
    blank = [t == "" or t.lower() == "nan" for t in texts]
    if all(blank):
        return (NAN,) * 4
    if any(blank) or not all(_is_number(t) for t in texts):
        raise _BadRow(f"box {texts} is not four numbers")
    x0, y0, x1, y1 = (float(t) for t in texts)
    if not (x1 > x0 and y1 > y0):
        raise _BadRow(f"empty box {texts}; expected x0 < x1 and y0 < y1")
    return x0, y0, x1, y1


def _normal_key(value: str) -> str:
    return re.sub(r"[\s_\-]+", " ", str(value).strip().lower())


_LESION_SYNONYMS = {
    "mass": "mass", "masses": "mass",
    "calcification": "calcification", "calcifications": "calcification", "calc": "calcification",
    "calcs": "calcification", "microcalcification": "calcification", "microcalcifications": "calcification",
    "suspicious calcification": "calcification", "cluster": "calcification",
    "calcification cluster": "calcification",
    "architectural distortion": "architectural_distortion", "distortion": "architectural_distortion",
    "asymmetry": "asymmetry", "asymmetries": "asymmetry", "focal asymmetry": "asymmetry",
    "global asymmetry": "asymmetry", "developing asymmetry": "asymmetry",
    "normal": "normal", "no finding": "normal", "no findings": "normal",
    "other": "other",
}
"""Lesion-type spellings of the supported datasets (case, ``_``, ``-`` ignored); others are 'other'."""

_PATHOLOGY_SYNONYMS = {
    "malignant": "malignant", "malignancy": "malignant", "cancer": "malignant", "m": "malignant",
    "benign": "benign", "b": "benign",
    "benign without callback": "benign_without_callback",
    "": "unknown", "unknown": "unknown", "nan": "unknown", "n/a": "unknown", "na": "unknown",
    "none": "unknown", "not known": "unknown",
}


def _lesion_type(value: str) -> str:
    key = _normal_key(value)
    if not key:
        raise _BadRow("missing lesion type")
    return _LESION_SYNONYMS.get(key, "other")


def _pathology(value: str) -> str:
    key = _normal_key(value)
    if key in _PATHOLOGY_SYNONYMS:
        return _PATHOLOGY_SYNONYMS[key]
    if key.startswith("malignan"):
        return "malignant"
    if key.startswith("benign"):
        return "benign"
    raise _BadRow(
        f"unknown pathology {value!r}; expected malignant, benign, benign_without_callback or blank"
    )


def _laterality(value: str) -> str | None:
    return {"l": "L", "left": "L", "r": "R", "right": "R"}.get(str(value).strip().lower())


def _view(value: str) -> str | None:
    return str(value).strip().upper() or None


def _processed(value: str) -> bool | None:
    key = _normal_key(value)
    if key in ("", "nan"):
        return None
    if key in ("true", "1", "1.0", "yes", "y", "processed", "for presentation"):
        return True
    if key in ("false", "0", "0.0", "no", "n", "raw", "unprocessed", "for processing"):
        return False
    raise _BadRow(f"processed value {value!r} is not true/false")
