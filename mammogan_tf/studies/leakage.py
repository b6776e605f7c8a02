"""Leakage guard: no patient behind the synthetic data may be in a classifier's val/test split.

The manifests chain is followed back from each synthetic shard set::

    synthesize manifest --inputs--> GAN run manifest (train.data.split, lesion types)
                         --inputs--> prepare manifest ("patients": patient_id -> split)

The patients whose patches trained the GAN are those of the prepare manifest assigned to the
run's ``train.data.split``. The patients whose patches seeded contextual synthesis are those
of the ``--from`` manifest's ``source_split`` (a contextual synthesize manifest names both; PNG
sources carry no patients, so such a set is refused), or a list ``seed_patients``, or
``seeds``: {"manifest", "split"}. A ``prepare`` output of synthetic images (e.g. of
``synthesize --reinsert``'s ``reinserted/lesions.csv``) stands for the patients of its images and,
when its annotation table lies in a synthesize output, everything behind that output.
:func:`check_leakage` refuses (``LeakageError``, exit 2, one line naming the count and the
stages) when any of them is in the classifier's validation or test patients.

This module reads manifests only (no TensorFlow) so that training and the studies can both call it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

from mammogan_tf.errors import InputError
from mammogan_tf.manifest import MANIFEST_NAME, read_manifest


class LeakageError(InputError):
    """A patient behind the GAN or the synthesis seeds is in a classifier's val/test split (exit 2)."""


def _input_manifests(manifest: dict) -> list[dict]:
    out = []
    for record in manifest.get("inputs", []):
        path = Path(record.get("path", ""))
        if path.name == MANIFEST_NAME and path.is_file():
            out.append(read_manifest(path))
    return out


def _split_patients(prepare: dict, splits: Iterable[str]) -> set[str]:
    wanted = set(splits)
    return {p for p, s in prepare.get("patients", {}).items() if s in wanted}


def _synthesize_behind(prepare: dict) -> list[Path]:
    """Synthesize outputs holding a prepare manifest's annotation table (``OUT/reinserted/lesions.csv``)."""
    found = []
    for record in prepare.get("inputs", []):
        path = Path(record.get("path", ""))
        for folder in (path.parent, path.parent.parent):
            manifest = folder / MANIFEST_NAME
            if path.name != MANIFEST_NAME and manifest.is_file() and read_manifest(manifest).get("stage") == "synthesize":
                found.append(manifest)
    return found


def upstream_patients(synthetic_manifest: str | os.PathLike) -> tuple[set[str], str]:
    """Patients whose patches trained the GAN behind a synthesize output or seeded it (or whose
    images a prepared synthetic set holds), and a short description of the chain (for the error
    message)."""
    syn = read_manifest(synthetic_manifest)
    if syn.get("stage") == "prepare":
        patients, stages = set(syn.get("patients", {})), [f"prepared synthetic images {syn['root']}"]
        for behind in _synthesize_behind(syn):
            more, chain = upstream_patients(behind)
            patients |= more
            stages.append(chain)
        return patients, " <- ".join(stages)
    patients: set[str] = set(syn.get("seed_patients", []))
    stages = [f"synthetic {syn['root']}"]
    seeds = syn.get("seeds")
    if isinstance(seeds, Mapping):
        seed_prep = read_manifest(seeds["manifest"])
        patients |= _split_patients(seed_prep, [seeds.get("split", "train")])
        stages.append(f"synthesis seeds {seed_prep['root']}")
    if syn.get("model_family") == "contextual":
        if syn.get("source_kind") != "prepare":
            raise InputError(f"{syn['root']}/{MANIFEST_NAME}: synthesized from PNG patches, which name no "
                             "patients; cannot prove that no validation or test patient seeded it (use --from "
                             "a prepare output)")
        seed_prep = read_manifest(syn["config"]["from"])
        if "patients" not in seed_prep:
            raise InputError(f"{seed_prep['root']}/{MANIFEST_NAME}: names no patients per split; cannot prove "
                             f"that no validation or test patient seeded {syn['root']} (prepare it again)")
        patients |= _split_patients(seed_prep, [syn["source_split"]])
        stages.append(f"synthesis seeds {seed_prep['root']} split {syn['source_split']}")
    runs = [m for m in _input_manifests(syn) if m.get("stage") == "train"]
    if syn.get("stage") == "synthesize" and not runs:
        raise InputError(f"{syn['root']}/{MANIFEST_NAME}: its GAN run manifest is missing; cannot prove "
                         "that no validation or test patient trained the GAN")
    for run in runs:
        data = run.get("config", {}).get("train", {}).get("data", {})
        split = data.get("split", "train")
        for prep in (m for m in _input_manifests(run) if "patients" in m):
            patients |= _split_patients(prep, [split] if isinstance(split, str) else split)
            stages.append(f"GAN run {run['root']} (trained on {prep['root']} split {split})")
    return patients, " <- ".join(stages)


def heldout_patients(real_manifest: str | os.PathLike, splits: Iterable[str] = ("val", "test")) -> set[str]:
    """Patients of ``splits`` in a prepare (or study subset) manifest."""
    return _split_patients(read_manifest(real_manifest), splits)


def check_leakage(heldout: set[str], synthetic_manifests: Iterable[str | os.PathLike],
                  stage: str = "classifier validation/test") -> None:
    """Raise ``LeakageError`` when a patient behind any synthetic set is in ``heldout``."""
    for path in synthetic_manifests:
        upstream, chain = upstream_patients(path)
        overlap = sorted(upstream & set(heldout))
        if overlap:
            shown = ", ".join(overlap[:3]) + (" ..." if len(overlap) > 3 else "")
            raise LeakageError(f"leakage: {len(overlap)} patient(s) ({shown}) behind {chain} are in the "
                               f"{stage} split; train the GAN on the classifier's training patients only")
