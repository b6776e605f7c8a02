"""Tiny constructed patch sets for the classifier, mixing and study tests (no real data)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mammogan_tf.data.shards import serialize_patch
from mammogan_tf.data.table import LESION_TYPES

SIZE = 16


def patch(kind: str, rng: np.random.Generator) -> np.ndarray:
    """(SIZE, SIZE) in [0, 1]: noise, plus a faint blob near the centre for a mass (hard enough
    that a few training steps give an AUC below 1)."""
    img = rng.uniform(0.1, 0.5, (SIZE, SIZE))
    if kind != "normal":
        yy, xx = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2 - rng.integers(-3, 4, 2)[:, None, None]
        img += 0.12 * np.exp(-(xx ** 2 + yy ** 2) / 8.0)
    return np.clip(img, 0, 1).astype(np.float32)


def record(kind: str, patient: str, index: int, rng, split: str = "train") -> dict:
    """``kind``: a lesion type, malignant unless written ``type:pathology`` ("mass:benign")."""
    kind, _, pathology = kind.partition(":")
    pathology = pathology or ("malignant" if kind != "normal" else "unknown")
    bbox = (4, 4, 12, 12) if kind != "normal" else None
    raw = serialize_patch(patch(kind, rng), label=LESION_TYPES.index(kind), lesion_type=kind, pathology=pathology,
                          patient_id=patient, image_id=f"{patient}-{index}",
                          kind="lesion" if kind != "normal" else "normal", bbox=bbox)
    return {"record": raw, "split": split, "lesion_type": kind, "patient_id": patient,
            "image_id": f"{patient}-{index}", "pathology": pathology, "kind": kind}


def patient_records(n_patients: int, per_patient: dict[str, int], seed: int = 0, prefix: str = "P") -> list[dict]:
    """Records of ``n_patients`` patients, each with ``per_patient[kind]`` patches of each kind."""
    rng = np.random.default_rng(seed)
    out = []
    for p in range(n_patients):
        i = 0
        for kind, n in per_patient.items():
            for _ in range(n):
                out.append(record(kind, f"{prefix}{p:03d}", i, rng))
                i += 1
    return out


def split_by_patient(records: list[dict], fractions=(0.6, 0.2, 0.2)) -> dict[str, list[dict]]:
    patients = sorted({r["patient_id"] for r in records})
    n_train = int(round(fractions[0] * len(patients)))
    n_val = int(round(fractions[1] * len(patients)))
    which = {p: "train" if i < n_train else "val" if i < n_train + n_val else "test" for i, p in enumerate(patients)}
    out: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for r in records:
        out[which[r["patient_id"]]].append({**r, "split": which[r["patient_id"]]})
    return out


def write_real(folder: Path, n_patients: int = 10, per_patient=None, seed: int = 0) -> Path:
    """A prepare-like folder of 16 px mass/normal patches split by patient; returns it."""
    from mammogan_tf.studies.subsets import write_subset

    records = patient_records(n_patients, per_patient or {"mass": 2, "normal": 4}, seed)
    write_subset(folder, split_by_patient(records), patch_size=SIZE)
    return folder


def write_synthetic(folder: Path, n: int = 24, seed: int = 5) -> Path:
    from mammogan_tf.studies.subsets import synthetic_records, write_subset

    rng = np.random.default_rng(seed)
    images = np.stack([patch("mass", rng) for _ in range(n)])
    write_subset(folder, {"train": synthetic_records(images, "mass", seed)}, patch_size=SIZE)
    return folder


def tiny_config(real: Path, run_name: str = "c", **train) -> dict:
    return {"name": run_name, "model": {"family": "classifier", "architecture": "small_cnn", "image_size": SIZE,
                                        "num_classes": 1, "filters": [4, 8], "dropout": 0.0},
            "train": {"data": {"manifest": str(real)}, "task": {"classes": {"normal": ["normal"], "mass": ["mass"]}},
                      "samples": 96, "batch_size": 8, "validate_every": 32, "bootstrap": 20,
                      "optimizer": {"learning_rate": 0.01}, **train}}
