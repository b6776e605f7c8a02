"""Value vocabularies of the annotation readers: lesion types, pathologies, laterality, views.

Each converter takes one cell's text and returns our value or raises :class:`BadRow`; the
column-wise readers call it once per distinct value.
"""
from __future__ import annotations

import ast
import re

import pandas as pd

from mammogan_tf.data.annotations.common import BadRow

NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def is_number(text: str) -> bool:
    return NUMBER.fullmatch(text.strip()) is not None


def normal_key(value: str) -> str:
    return re.sub(r"[\s_\-]+", " ", str(value).strip().lower())


_LESION_SYNONYMS = {
    "mass": "mass", "masses": "mass", "spiculated region": "mass", "espiculated region": "mass",
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


def lesion_type(value: str) -> str:
    key = normal_key(value)
    if not key:
        raise BadRow("missing lesion type")
    return _LESION_SYNONYMS.get(key, "other")


def lesion_labels(text: str) -> tuple[str, ...]:
    """A list literal of finding categories (``"['Mass', 'Suspicious Calcification']"``) -> the
    distinct lesion types in order (``normal`` dropped beside a lesion)."""
    try:
        categories = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        raise BadRow("unparseable finding categories", f"{text!r}; expected a list like \"['Mass']\"") from None
    if isinstance(categories, str):
        categories = [categories]
    if not isinstance(categories, (list, tuple)) or not categories:
        raise BadRow("finding categories are not a non-empty list", repr(text))
    labels = tuple(dict.fromkeys(lesion_type(str(c)) for c in categories))
    return tuple(label for label in labels if label != "normal") or labels


def pathology(value: str) -> str:
    key = normal_key(value)
    if key in _PATHOLOGY_SYNONYMS:
        return _PATHOLOGY_SYNONYMS[key]
    if key.startswith("malignan"):
        return "malignant"
    if key.startswith("benign"):
        return "benign"
    raise BadRow("unknown pathology", f"{value!r}; expected malignant, benign, benign_without_callback or blank")


def processed(value: str) -> bool | None:
    key = normal_key(value)
    if key in ("", "nan"):
        return None
    if key in ("true", "1", "1.0", "yes", "y", "processed", "for presentation"):
        return True
    if key in ("false", "0", "0.0", "no", "n", "raw", "unprocessed", "for processing"):
        return False
    raise BadRow("processed value is not true/false", repr(value))


LATERALITY = {"l": "L", "left": "L", "r": "R", "right": "R"}
VIEWS = ("CC", "MLO", "ML", "LM", "LMO", "XCCL", "XCCM", "FB", "SIO", "AT", "CV", "RL", "RM", "TAN")


def breast_fields(table: pd.DataFrame) -> list[str]:
    """Normalise the raw ``laterality`` and ``view`` cells in place; notes for what became unknown.

    Readers put the source text there (None where the format has no such field). ``L``/``left``
    -> ``L``, ``R``/``right`` -> ``R``; a view is upper-cased. Anything else (``BOTH``, blank, an
    unknown view code) becomes None, counted in a note.
    """
    notes = []
    for column, convert, meaning in (
        ("laterality", lambda v: LATERALITY.get(v.lower()), "L or R"),
        ("view", lambda v: v.upper() if v.upper() in VIEWS else None, "a view code such as CC or MLO"),
    ):
        raw = table[column]
        given = raw.notna()
        text = raw[given].astype(str).str.strip()
        mapping = {value: convert(value) for value in pd.unique(text)}
        converted = text.map(mapping)
        unknown = text[converted.isna()]
        if len(unknown):
            counts = unknown.replace("", "blank").value_counts()
            listing = ", ".join(f"{value!r} x{n}" if value != "blank" else f"blank x{n}" for value, n in counts.items())
            notes.append(f"{column} not {meaning} on {len(unknown)} rows ({listing}): kept as unknown")
        table[column] = None
        table.loc[given, column] = converted.where(converted.notna(), None)
    return notes
