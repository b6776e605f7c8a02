"""What every annotation reader shares: reading a CSV/Excel file, rejections, conversion of records.

Two ways to convert records, one per kind of file:

- :class:`Rows` converts a table (CSV or Excel) column by column: each check works on whole
  columns (a value converter runs once per *distinct* value), so 100,000 rows take well under a
  second. A row that fails a check is set aside with the first reason found.
- :func:`convert` applies a per-record function (text formats and per-image XML files, a few
  hundred rows); a :class:`BadRow` it raises becomes a :class:`Rejection`.

Row numbers are the source's own: the line number of a text file, the spreadsheet row of a CSV
or Excel file (header = row 1, blank rows counted, a quoted multi-line cell is one row).
"""
from __future__ import annotations

import csv
import dataclasses
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from mammogan_tf.data.table import BOX_COLUMNS
from mammogan_tf.errors import InputError

NAN = float("nan")
EXCEL_SUFFIXES = (".xlsx", ".xlsm", ".xls")
FORMAT_NAMES = ("mias", "cbis-ddsm", "vindr", "inbreast", "optimam", "table")
"""The ``--format`` values, lower case; a given name is matched case-insensitively."""


@dataclasses.dataclass
class Rejection:
    """One source row left out of the table: file, row number, a short reason and its details.

    ``reason`` has no file names or numbers, so that rejections group by it; ``detail`` has them.
    """

    file: str
    row: str | int | None
    reason: str
    detail: str = ""


@dataclasses.dataclass
class Annotations:
    """A lesion table, the source rows left out of it, the format read, and the notes to print.

    ``notes``: one line each for every fallback or assumption the reader made (a layout found,
    a value it could not interpret and kept as unknown); ``prepare`` prints them in its summary.
    """

    table: pd.DataFrame
    rejected: list[Rejection]
    format: str
    notes: list[str] = dataclasses.field(default_factory=list)


class BadRow(Exception):
    """Raised by value and record converters; becomes a Rejection (``reason``, ``detail``)."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


def accepted() -> str:
    return "accepted --format values: " + ", ".join(FORMAT_NAMES)


# --------------------------------------------------------------------------- reading files


def checked_file(path: str | os.PathLike, content: bool = True) -> Path:
    """The path of an existing annotation file, and (``content``) non-empty and 8-bit encoded
    (else InputError naming the problem)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{path}: annotation file not found; {accepted()}")
    if not path.is_file():
        raise InputError(f"{path}: is a folder, not an annotation file; {accepted()}")
    if not content:
        return path
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError as error:
        raise InputError(f"{path}: cannot read the annotation file ({error.strerror})") from error
    if not head.strip():
        raise InputError(f"{path}: the annotation file is empty")
    if path.suffix.lower() not in EXCEL_SUFFIXES:
        if head.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in head:
            raise InputError(f"{path}: the file is UTF-16/32 encoded; save it as UTF-8 (or Latin-1) text")
    return path


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        return path.read_text(encoding="latin-1")
    except OSError as error:
        raise InputError(f"{path}: cannot read the annotation file ({error}); {accepted()}") from error


def field_name(name) -> str:
    """Column name -> lower case, runs of non-alphanumerics as ``_`` ("Breast density" -> "breast_density")."""
    return re.sub(r"[^a-z0-9]+", "_", str(name).strip().lower()).strip("_") or "column"


def header_line(path: Path) -> str:
    """The first non-blank line of a text file."""
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        for line in handle:
            if line.strip():
                return line
    return ""


def _check_separator(path: Path, sep: str, format: str) -> None:
    header = header_line(path)
    other = ";" if sep == "," else ","
    if header.count(sep) == 0 and header.count(other) > 0:
        raise InputError(
            f"{path}: the header is {other!r}-separated, but --format {format} reads {sep!r}-separated "
            f"files; save it with {sep!r} separators or pass the right --format"
        )


def _bad_row_count(path: Path, sep: str, encoding: str) -> str:
    """'row N has K fields, the header has H' for the first such row (spreadsheet numbering)."""
    with open(path, encoding=encoding, errors="replace", newline="") as handle:
        rows = csv.reader(handle, delimiter=sep)
        width = None
        for number, row in enumerate(rows, start=1):
            if width is None:
                width = len(row)
            elif row and len(row) != width:
                return f"row {number} has {len(row)} fields, the header has {width}"
    return "a row has more fields than the header"


def read_frame(path: Path, format: str, sep: str = ",") -> pd.DataFrame:
    """A CSV or Excel file as text cells stripped of surrounding whitespace (e.g. the newline that
    quoted CBIS-DDSM paths carry), columns normalised with ``field_name``.

    The index is the spreadsheet row number (header = 1); rows whose cells are all blank are
    dropped (their numbers are kept by the others). Errors name the file and the actual problem
    (separator, a row with extra fields, a missing spreadsheet package).
    """
    encoding = "utf-8-sig"
    try:
        if path.suffix.lower() in EXCEL_SUFFIXES:
            frame = pd.read_excel(path, dtype=str, keep_default_na=False)
        else:
            _check_separator(path, sep, format)
            try:
                frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding=encoding,
                                    skip_blank_lines=False)
            except UnicodeDecodeError:
                encoding = "latin-1"
                frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding=encoding,
                                    skip_blank_lines=False)
    except ImportError as error:
        reason = f"reading this spreadsheet needs a package ({error}); save it as .xlsx or CSV"
        raise InputError(f"{path}: {reason}") from error
    except pd.errors.ParserError as error:
        raise InputError(f"{path}: {_bad_row_count(path, sep, encoding)}; check quoting and separators") from error
    except (OSError, ValueError, pd.errors.EmptyDataError) as error:
        reason = " ".join(str(error).split())
        raise InputError(f"{path}: cannot read the annotation file ({reason}); {accepted()}") from error
    frame = frame.fillna("")
    blank_unnamed = [c for c in frame.columns if str(c).startswith("Unnamed:")  # trailing separators
                     and not frame[c].str.strip().any()]
    frame = frame.drop(columns=blank_unnamed)
    frame.columns = _unique([field_name(c) for c in frame.columns])
    frame.index = pd.RangeIndex(2, 2 + len(frame))
    filled = np.zeros(len(frame), bool)
    for column in frame.columns:
        frame[column] = _stripped(frame[column].astype(object))
        filled |= frame[column].ne("").to_numpy()
    return frame[filled]


_EDGE_SPACE = re.compile(r"(?:^|\x00)\s|\s(?:\x00|$)")


def _stripped(values: pd.Series) -> pd.Series:
    """``values.str.strip()``, skipped when no cell has surrounding whitespace (one regex pass
    over the joined column instead of a Python call per cell)."""
    if not _EDGE_SPACE.search("\x00".join(values.tolist())):
        return values
    return values.str.strip()


def require_columns(path: Path, columns: Iterable[str], required: Iterable[str], why: str = "") -> None:
    columns = list(columns)
    missing = [c for c in required if c not in columns]
    if missing:
        raise InputError(
            f"{path}: missing column(s) {missing}{why}; found {columns}; is --format right? {accepted()}"
        )


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return unique


# --------------------------------------------------------------------------- column-wise conversion


class Rows:
    """The records of one table file, converted column by column (see the module doc).

    ``frame``: text cells indexed by row number (``read_frame``). Every check records the first
    reason per row; :meth:`result` returns the good rows and the rejections.
    """

    def __init__(self, path: Path, frame: pd.DataFrame):
        self.path, self.frame = path, frame
        self.reason = pd.Series(None, index=frame.index, dtype=object)
        self.detail = pd.Series("", index=frame.index, dtype=object)

    def text(self, column: str) -> pd.Series:
        """The (stripped) cells of ``column`` ("" for every row when the file lacks it)."""
        if column not in self.frame:
            return pd.Series("", index=self.frame.index, dtype=object)
        return self.frame[column]

    def reject(self, mask, reason, detail="") -> None:
        """Set ``reason`` (and ``detail``; scalars or Series) on the rows of ``mask`` not yet rejected."""
        mask = pd.Series(mask, index=self.frame.index).fillna(False).astype(bool) & self.reason.isna()
        if not mask.any():
            return
        self.reason[mask] = reason[mask] if isinstance(reason, pd.Series) else reason
        self.detail[mask] = detail[mask] if isinstance(detail, pd.Series) else detail

    def required(self, column: str, label: str | None = None) -> pd.Series:
        values = self.text(column)
        self.reject(is_blank(values), f"missing {label or column}")
        return values

    def mapped(self, values: pd.Series, convert: Callable[[str], object]) -> pd.Series:
        """``convert`` applied once per distinct value; a BadRow rejects the rows holding that value."""
        good, reasons, details = {}, {}, {}
        for value in pd.unique(values):
            try:
                good[value] = convert(value)
            except BadRow as error:
                reasons[value], details[value] = error.reason, error.detail
        if reasons:
            self.reject(values.isin(list(reasons)), values.map(reasons), values.map(details))
        return values.map(good)

    def boxes(self, columns: Iterable[str]) -> pd.DataFrame:
        """Four cell columns -> float ``x0, y0, x1, y1`` (all blank -> NaN; partly blank, non-numeric
        or empty boxes are rejected)."""
        texts = pd.DataFrame({ours: self.text(theirs) for ours, theirs in zip(BOX_COLUMNS, columns)})
        blank = texts.apply(is_blank)
        numbers = texts.apply(pd.to_numeric, errors="coerce").astype(float)
        all_blank = blank.all(axis=1)
        bad = ~all_blank & (blank.any(axis=1) | ~np.isfinite(numbers).all(axis=1))
        self.reject(bad, "box is not four numbers", _joined(texts, bad))
        empty = ~all_blank & ~bad & ~((numbers["x1"] > numbers["x0"]) & (numbers["y1"] > numbers["y0"]))
        self.reject(empty, "empty box (expected x0 < x1 and y0 < y1)", _joined(texts, empty))
        return numbers  # all blank -> NaN already

    def result(self, columns: dict[str, object], sources: bool = True) -> tuple[pd.DataFrame, list[Rejection]]:
        """(table rows of the good records, rejections); ``columns``: Series or scalars by name."""
        keep = self.reason.isna()
        data = {name: (value[keep] if isinstance(value, pd.Series) else value) for name, value in columns.items()}
        table = pd.DataFrame(data, index=self.frame.index[keep])
        if sources:
            table = table.join(self.frame[keep].add_prefix("source_"))
        table["source_line"] = table.index
        bad = ~keep
        rejected = [Rejection(file=str(self.path), row=int(number), reason=reason, detail=detail)
                    for number, reason, detail in zip(self.frame.index[bad], self.reason[bad], self.detail[bad])]
        return table.reset_index(drop=True), rejected


_BLANKS = ("", "nan", "NaN", "NAN", "Nan", "nAN", "naN", "nAn", "NAn")


def is_blank(values: pd.Series) -> pd.Series:
    """Cells that are empty or spell NaN in any case (hash lookups, no per-cell Python)."""
    return values.isin(_BLANKS)


def _joined(texts: pd.DataFrame, mask: pd.Series) -> pd.Series:
    detail = pd.Series("", index=texts.index, dtype=object)
    if mask.any():
        detail[mask] = texts[mask].agg(lambda row: "[" + ", ".join(map(repr, row)) + "]", axis=1)
    return detail


def resolve_paths(root: Path, values: Iterable[str]) -> list[str]:
    """Absolute, normalised paths of ``values`` under ``root`` (absolute ones stay as they are);
    blank values give None."""
    root = os.path.abspath(str(root))
    prefix = root.rstrip(os.sep) + os.sep

    def resolve(value: str) -> str:
        path = "/" + value
        if "/." in path or "//" in path or value.startswith("~") or value.endswith("/") or os.sep != "/":
            return os.path.abspath(os.path.join(root, os.path.expanduser(value)))
        return prefix + value  # plain relative path: nothing to normalise (the common, fast case)

    return [resolve(v) if v else None for v in values]


# --------------------------------------------------------------------------- record-wise conversion


def convert(path: Path, records: Iterable[tuple[int, object]], function: Callable[[object], list[dict]]):
    """Apply ``function`` to every ``(row number, record)``; a ``BadRow`` becomes a Rejection.

    Every row produced gets ``source_line``: the record's row number.
    """
    rows, rejected = [], []
    for number, record in records:
        try:
            rows.extend({**row, "source_line": number} for row in function(record))
        except BadRow as error:
            rejected.append(Rejection(file=str(path), row=number, reason=error.reason, detail=error.detail))
    return rows, rejected


def sources(record: dict) -> dict:
    """Original fields as ``source_<name>`` (names already normalised), values verbatim."""
    return {f"source_{field_name(key)}": value for key, value in record.items()}


def required(record: dict, key: str, label: str | None = None) -> str:
    value = str(record.get(key, "")).strip()
    if not value or value.lower() == "nan":
        raise BadRow(f"missing {label or key}")
    return value


def resolve(root: Path, relative: str | os.PathLike) -> str:
    return resolve_paths(root, [str(relative).strip()])[0]
