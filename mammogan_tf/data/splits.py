"""Patient-level train/val/test splits and k folds, stratified by class.

A patient is never in two splits: every assignment is made per patient, never per image.
A patient's stratum is their most specific finding (any lesion type beats ``normal``; among
lesions the rarer type in the whole table wins), so each class is spread over the splits.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

SPLIT_NAMES = ("train", "val", "test")


def patient_strata(table: pd.DataFrame) -> pd.Series:
    """patient_id -> stratum label (the patient's rarest lesion type, ``normal`` if none)."""
    frequency = table["lesion_type"].value_counts()
    order = sorted(frequency.index, key=lambda kind: (kind == "normal", frequency[kind], kind))
    rank = table["lesion_type"].map({kind: index for index, kind in enumerate(order)})
    return rank.groupby(table["patient_id"]).min().map(dict(enumerate(order)))  # one pass, no per-patient Python


def _allocate(n: int, fractions: tuple[float, ...]) -> list[int]:
    """Split ``n`` items into len(fractions) counts by largest remainder."""
    exact = np.asarray(fractions, float) * n
    counts = np.floor(exact).astype(int)
    for index in np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]:
        counts[index] += 1
    return counts.tolist()


def assign_splits(table: pd.DataFrame, fractions=(0.6, 0.2, 0.2), seed: int = 0) -> dict[str, str]:
    """patient_id -> "train" | "val" | "test", stratified by ``patient_strata``, deterministic by seed."""
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    strata = patient_strata(table)
    for stratum in sorted(strata.unique()):
        patients = sorted(strata.index[strata == stratum])
        rng.shuffle(patients)
        start = 0
        for name, count in zip(SPLIT_NAMES, _allocate(len(patients), fractions)):
            assignment.update({patient: name for patient in patients[start:start + count]})
            start += count
    return assignment


def assign_folds(table: pd.DataFrame, k: int, seed: int = 0) -> dict[str, str]:
    """patient_id -> "fold0" .. "fold{k-1}", stratified, deterministic by seed."""
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    strata = patient_strata(table)
    offset = 0
    for stratum in sorted(strata.unique()):
        patients = sorted(strata.index[strata == stratum])
        rng.shuffle(patients)
        for index, patient in enumerate(patients):
            assignment[patient] = f"fold{(index + offset) % k}"
        offset += len(patients)
    return assignment
