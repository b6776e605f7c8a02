"""mini-MIAS ``Info.txt``: ``mdb001 G CIRC B 535 425 197`` rows after a free-text header."""
from __future__ import annotations

import re
from pathlib import Path

from mammogan_tf.data.annotations.common import NAN, BadRow, accepted, convert, read_text
from mammogan_tf.data.annotations.values import is_number
from mammogan_tf.data.table import BOX_COLUMNS
from mammogan_tf.errors import InputError

_CLASSES = {
    "CALC": "calcification", "CIRC": "mass", "SPIC": "mass", "MISC": "mass",
    "ARCH": "architectural_distortion", "ASYM": "asymmetry", "NORM": "normal",
}
_SEVERITY = {"B": "benign", "M": "malignant"}
_ROW = re.compile(r"^\s*(mdb(\d+))\s+(\S+)\s+(\S+)\s*(.*)$", re.IGNORECASE)


def read_mias(path: Path, root: Path, column_map):
    """Origin bottom-left: row = H - y, column = x (H from the "W pixels x H pixels" sentence of
    the header, 1024 when absent). A circle (x, y, r) becomes the box
    [x - r, row - r, x + r + 1, row + r + 1) clipped to the image. Rows without coordinates are
    diffuse findings (NaN box); trailing note markers (``*``, ``*NOTE 3*``) go to
    ``source_note``. Pairs mdb(2k-1), mdb(2k) are one woman (``patient_id = mias{k:03d}``);
    even numbers are left breasts, odd numbers right (Info.txt note 1). No view is given.
    Images: ``<root>/<ref>.pgm`` or ``.png``, or ``<root>/png/<ref>.png``, whichever exists.
    Returns (rows, rejected, notes).
    """
    text = read_text(path)
    size = re.search(r"(\d+)\s*pixels?\s*x\s*(\d+)\s*pixels?", text, re.IGNORECASE)
    width, height = (int(size.group(1)), int(size.group(2))) if size else (1024, 1024)
    records = [
        (number, line) for number, line in enumerate(text.splitlines(), start=1)
        if re.match(r"^\s*mdb\d", line, re.IGNORECASE)
    ]
    if not records:
        raise InputError(f"{path}: no 'mdbNNN ...' rows found; is --format right? {accepted()}")
    rows, rejected = convert(path, records, lambda line: [_row(line, root, width, height)])
    return rows, rejected, []


def _row(line: str, root: Path, width: int, height: int) -> dict:
    match = _ROW.match(line)
    if not match:
        raise BadRow("not a MIAS row", "expected 'mdbNNN BACKGROUND CLASS [SEVERITY X Y RADIUS]'")
    reference, number, background, cls, rest = match.groups()
    ref, number = reference.lower(), int(number)
    if cls.upper() not in _CLASSES:
        raise BadRow("unknown class", f"{cls!r}; expected one of {sorted(_CLASSES)}")
    tokens = rest.split()
    severity = tokens.pop(0) if tokens and tokens[0].upper() in _SEVERITY else None
    coords = []
    while tokens and len(coords) < 3 and is_number(tokens[0]):
        coords.append(tokens.pop(0))
    if len(coords) not in (0, 3):
        raise BadRow("incomplete coordinates", f"{coords}; expected x y radius or none")
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
        "path": str(_image(root, ref)),
        "laterality": "L" if number % 2 == 0 else "R",
        "lesion_type": _CLASSES[cls.upper()],
        "pathology": _SEVERITY.get((severity or "").upper(), "unknown"),
        **dict(zip(BOX_COLUMNS, box)),
        **{f"source_{key}": value for key, value in source.items()},
    }


def _image(root: Path, ref: str) -> Path:
    candidates = (root / f"{ref}.pgm", root / f"{ref}.png",
                  root / "png" / f"{ref}.png", root / "pgm" / f"{ref}.pgm")
    return next((c for c in candidates if c.is_file()), candidates[0])
