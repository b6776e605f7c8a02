"""The papers' data protocols on lists of records (``subsets.read_records``), no TensorFlow.

- :func:`imbalanced_set`: Alyafi et al. (2019): ``k`` positive patches and ``IR * k`` negative
  ones, nested in k (P_100 within P_250 within ...), drawn with a fixed seed; the GAN modes add
  ``round(AR * k)`` synthetic positives (:func:`synthetic_count`).
- :func:`patient_folds`: k-fold cross-validation by patient; fold f tests on its patients and
  splits the rest into train and validation (Alyafi: 3 folds, 60 / 6.6 / 33 %, i.e. validation
  = 6.6 / 66.6 of the non-test patients; at least one patient per stratum of two or more, so
  that validation holds both classes). Every patient is in exactly one test fold; no
  patient is in two splits of a fold. Patients are stratified by whether they hold a positive.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from mammogan_tf.errors import ConfigError

ALYAFI_K = (100, 250, 500, 750, 1000, 1300)
ALYAFI_IR = 10
ALYAFI_AR = 1.5
ALYAFI_VAL_FRACTION = 0.066 / (0.6 + 0.066)


def _of_types(records: list[dict], types: Sequence[str]) -> list[dict]:
    return [r for r in records if r["lesion_type"] in set(types)]


def imbalanced_set(records: list[dict], k: int, positive: Sequence[str], negative: Sequence[str],
                   ir: float = ALYAFI_IR, seed: int = 0) -> list[dict]:
    """Exactly ``k`` positive and ``round(ir * k)`` negative records, nested in ``k`` for a seed
    (the first k of one seeded permutation of each class). ``ConfigError`` when too few."""
    out = []
    for types, count, name in ((positive, k, "positive"), (negative, int(round(ir * k)), "negative")):
        pool = _of_types(records, types)
        if len(pool) < count:
            raise ConfigError(f"protocol k={k}: needs {count} {name} patches ({', '.join(types)}), "
                              f"the data has {len(pool)}; lower k or ir")
        order = np.random.default_rng([seed, len(name)]).permutation(len(pool))
        out += [pool[i] for i in sorted(order[:count])]
    return out


def synthetic_count(k: int, ar: float = ALYAFI_AR) -> int:
    """Synthetic positives added in the GAN modes: ``round(AR * k)``."""
    return int(round(ar * k))


def patient_folds(records: list[dict], n_folds: int = 3, val_fraction: float = ALYAFI_VAL_FRACTION,
                  positive: Sequence[str] = (), seed: int = 0) -> list[dict[str, list[dict]]]:
    """``n_folds`` dicts ``{"train", "val", "test"}`` of records, split by patient (see module doc)."""
    if n_folds < 2:
        raise ConfigError(f"folds {n_folds}: cross-validation needs at least 2 folds")
    rng = np.random.default_rng(seed)
    patients = sorted({r["patient_id"] for r in records})
    has_positive = {r["patient_id"] for r in records if r["lesion_type"] in set(positive)}
    fold_of: dict[str, int] = {}
    offset = 0
    for stratum in (sorted(has_positive), sorted(set(patients) - has_positive)):
        order = list(stratum)
        rng.shuffle(order)
        for i, p in enumerate(order):
            fold_of[p] = (i + offset) % n_folds
        offset += len(order)
    if len(patients) < n_folds:
        raise ConfigError(f"folds {n_folds}: only {len(patients)} patients")
    folds = []
    for f in range(n_folds):
        rest = [p for p in patients if fold_of[p] != f]
        val_rng = np.random.default_rng([seed, f])
        val = set()
        for stratum in ([p for p in rest if p in has_positive], [p for p in rest if p not in has_positive]):
            n_val = int(round(val_fraction * len(stratum)))
            n_val = max(n_val, 1) if len(stratum) >= 2 else n_val  # small data: keep each class in validation
            val |= set(val_rng.permutation(stratum)[:n_val].tolist()) if stratum else set()
        split_of = {p: "test" if fold_of[p] == f else "val" if p in val else "train" for p in patients}
        fold = {"train": [], "val": [], "test": []}
        for r in records:
            fold[split_of[r["patient_id"]]].append({**r, "split": split_of[r["patient_id"]]})
        folds.append(fold)
    return folds


def manifest_splits(records: list[dict]) -> list[dict[str, list[dict]]]:
    """One "fold": the records' own train/val/test splits (the prepare stage's patient split)."""
    fold: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for r in records:
        fold.setdefault(r["split"], []).append(r)
    return [fold]
