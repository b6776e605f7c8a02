"""A detection grid's synthetic source of kind ``contextual`` (regimes with ``source: contextual``):
Wu et al.'s contextual GAN paints lesions onto the cell's training patches and they are blended
back into the cell's training mammograms, which the detector then reads as whole images.

Per cell, everything from the cell's TRAINING patients only, under ``<root>/contextual/``::

    data/                      contextual patch shards of every image (prepared once for the grid) with
                               the real data's own prepare settings (images, table, filters, seed,
                               split fractions, normalisation, mask) and the contextual experiment's
                               ``prepare.patches``: the same patient split; its ``patients`` must
                               equal the real manifest's (``ConfigError`` otherwise)
    <cell>/data/               subset: the train split only, records of the cell's train patients
    <cell>/full_images.csv     the lesion table of the cell's train patients' full images
    <cell>/gan/                the contextual GAN trained on <cell>/data (split train)
    <cell>/synthetic/          ``synthesize --from <cell>/data --split train --reinsert full_images.csv``:
                               at most ``n`` synthetic patches (seeded by training normal patches,
                               mode add) and the full mammograms they were blended back into
    <cell>/whole/              ``prepare`` (``patches.mode: whole``, the real data's size settings) of
                               ``synthetic/reinserted``: every image in split train, marked synthetic

Every step is reused on a re-run when it was made with the same settings (``grid._same``). After
the steps, the patients behind the set (seed patches, GAN training data, reinserted images) are
checked to be training patients of the cell, and ``leakage.check_leakage`` follows the chain
whole -> synthesize -> GAN run -> subset.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field

from mammogan_tf.errors import ConfigError
from mammogan_tf.manifest import MANIFEST_NAME, read_manifest
from mammogan_tf.sections import Section


class ContextualSourceConfig(Section):
    """``contextual:`` of a detection grid: the contextual GAN behind ``source: contextual`` regimes."""

    experiment: Optional[str] = Field(None, description="contextual GAN experiment YAML (family contextual); "
                                      "its prepare.patches make the patch shards, its model: and train: the GAN")
    set: list[str] = Field(default_factory=list, description="--set style overrides of that YAML "
                           "(prepare.patches.* included)")
    n: Optional[int] = Field(None, ge=1, description="at most n training patches seed synthesis (None = all); "
                             "each kept lesion gives one reinserted full image")
    checkpoint: Literal["best", "last"] = "last"
    seed: int = 0


def _experiment(grid, data_dir: Path) -> tuple[dict, object]:
    """(the contextual patch settings, the validated GAN experiment trained on ``data_dir``'s train split)."""
    from mammogan_tf.config import ExperimentConfig, apply_overrides, read_yaml, validate_config

    path = grid.contextual.experiment
    raw = apply_overrides(read_yaml(path), grid.contextual.set)
    patches = (raw.pop("prepare", None) or {}).get("patches")
    if not patches or patches.get("mode") != "contextual":
        raise ConfigError(f"contextual.experiment {path}: needs prepare.patches with mode: contextual "
                          "(the patch shards the GAN trains on)")
    raw = apply_overrides(raw, [f"train.data.manifest={data_dir}", "train.data.split=train"])
    config = validate_config(raw, ExperimentConfig, source=path)
    if config.model.family != "contextual":
        raise ConfigError(f"contextual.experiment {path}: model.family is {config.model.family}, not contextual")
    return patches, config


def _real_prepare(real_manifest: Path) -> dict:
    manifest = read_manifest(real_manifest)
    config = manifest["config"]
    if manifest.get("stage") != "prepare" or not config.get("images"):
        raise ConfigError(f"{real_manifest}: a contextual source needs the real data's `mammogan prepare` "
                          "output (its images, table and split settings make the contextual patches)")
    return config


def _prepared(config_dict: dict, out: Path, progress: bool) -> Path:
    """Run (or reuse, when made with the same config) ``prepare`` into ``out``."""
    from mammogan_tf.config import PrepareConfig, validate_config
    from mammogan_tf.data.prepare import run_prepare
    from mammogan_tf.studies.grid import _same

    config = validate_config(config_dict, PrepareConfig, source=str(out))
    if (out / MANIFEST_NAME).is_file():
        _same(read_manifest(out)["config"], config.model_dump(mode="json"), out)
    else:
        run_prepare(config, out, progress=progress)
    return out


def contextual_patches(grid, root: Path, real_manifest: Path, patches: dict, progress: bool) -> Path:
    """The grid's contextual patch shards (``data/``), split by patient exactly like the real data."""
    config = {**copy.deepcopy(_real_prepare(real_manifest)), "patches": patches}
    out = _prepared(config, root / "contextual" / "data", progress)
    if read_manifest(out).get("patients") != read_manifest(real_manifest).get("patients"):
        raise ConfigError(f"{out}: its patient split differs from {real_manifest}'s; delete it to prepare it again "
                          "with the real data's settings")
    return out


def _cell_subset(patch_dir: Path, out: Path, train: set[str], tag: str) -> Path:
    """The train split of ``patch_dir`` restricted to the cell's ``train`` patients."""
    from mammogan_tf.studies.grid import _same
    from mammogan_tf.studies.subsets import read_records, write_subset

    plan = {"cell": tag, "train_patients": sorted(train)}
    if not (out / MANIFEST_NAME).is_file():
        records = [r for r in read_records(patch_dir, ["train"]) if r["patient_id"] in train]
        if not records:
            raise ConfigError(f"{patch_dir}: no contextual patches of cell {tag}'s training patients")
        info = read_manifest(patch_dir)
        write_subset(out, {"train": records}, patch_size=info["patch_size"], source=patch_dir, extra={"plan": plan})
    _same(read_manifest(out)["config"].get("plan"), plan, out)
    return out


def _full_image_table(real_manifest: Path, out: Path, train: set[str]) -> Path:
    """The lesion table of the training patients' full images (``--reinsert`` reads only these)."""
    from mammogan_tf.synthesis.full_images import full_image_table

    if not out.is_file():
        table, _ = full_image_table(real_manifest)
        table = table[table["patient_id"].astype(str).isin(train)]
        table.to_csv(out.with_suffix(".partial"), index=False, lineterminator="\n")
        out.with_suffix(".partial").replace(out)
    return out


def _train_patients(data_dir: Path) -> set[str]:
    return {p for p, s in read_manifest(data_dir).get("patients", {}).items() if s == "train"}


def _check_training_only(folder: Path, patients: set[str], train: set[str], what: str) -> None:
    outside = sorted(patients - train)
    if outside:
        raise ConfigError(f"{folder}: {what} of {len(outside)} patient(s) outside the cell's training split "
                          f"({', '.join(outside[:3])}); delete it to recompute it")


def contextual_synthetic(grid, root: Path, tag: str, data_dir: Path, real_manifest: Path,
                         progress: bool = True) -> list[str]:
    """Run (or reuse) the cell's steps (module doc); returns ``[<cell>/whole]`` for ``data.synthetic``."""
    import pandas as pd

    from mammogan_tf.studies.grid import _same
    from mammogan_tf.studies.leakage import check_leakage, heldout_patients
    from mammogan_tf.synthesis.contextual import output_lesion_type
    from mammogan_tf.synthesis.full_images import TABLE_NAME
    from mammogan_tf.synthesis.synthesize import run_synthesize
    from mammogan_tf.training.run import train as train_gan

    cell = root / "contextual" / tag
    cell.mkdir(parents=True, exist_ok=True)
    patches, config = _experiment(grid, cell / "data")
    real = _real_prepare(real_manifest)
    lesion = output_lesion_type(config.model)
    if lesion not in real["patches"]["lesion_types"]:
        raise ConfigError(f"contextual.experiment {grid.contextual.experiment}: makes {lesion} lesions, which the "
                          f"real data's patches.lesion_types {real['patches']['lesion_types']} leave out")
    train = _train_patients(data_dir)
    patch_dir = contextual_patches(grid, root, real_manifest, patches, progress)
    subset = _cell_subset(patch_dir, cell / "data", train, tag)
    _check_training_only(subset, set(read_manifest(subset)["patients"]), train, "contextual patches")
    run_dir = cell / "gan"
    if (run_dir / MANIFEST_NAME).is_file():
        _same(read_manifest(run_dir)["config"], config.model_dump(mode="json"), run_dir)
    else:
        train_gan(config, run_dir, resume=(run_dir / "checkpoints").is_dir(), progress=progress)
    table = _full_image_table(real_manifest, cell / "full_images.csv", train)
    synth_dir, c = cell / "synthetic", grid.contextual
    wanted = {"n": c.n, "checkpoint": c.checkpoint, "seed": c.seed, "split": "train"}
    if not (synth_dir / MANIFEST_NAME).is_file():
        run_synthesize(run_dir, c.n, synth_dir, fmt="shards", checkpoint=c.checkpoint, seed=c.seed, source=subset,
                       split="train", reinsert=table, progress=progress)
    saved = read_manifest(synth_dir)
    _same({key: saved["config"].get(key) for key in wanted}, wanted, synth_dir)
    if not saved["reinserted"]:
        raise ConfigError(f"{synth_dir}: the contextual GAN of cell {tag} kept no lesion (all "
                          f"{saved['discarded']['count']} discarded by the post-processing: lesion below 10 % of the "
                          "patch); train it longer (contextual.set) or drop the regime")
    reinserted = pd.read_csv(synth_dir / "reinserted" / TABLE_NAME, dtype={"patient_id": str})
    _check_training_only(synth_dir, set(reinserted["patient_id"]), train, "reinserted images")
    whole = {**copy.deepcopy(real), "images": str(synth_dir / "reinserted"), "format": "table", "column_map": {},
             "annotations": str(synth_dir / "reinserted" / TABLE_NAME),
             "split": {**real["split"], "fractions": [1.0, 0.0, 0.0], "k_folds": None}}  # all train: train patients
    whole_dir = _prepared(whole, cell / "whole", progress)
    _check_training_only(whole_dir, set(read_manifest(whole_dir)["patients"]), train, "whole images")
    check_leakage(heldout_patients(data_dir), [whole_dir], stage="detector validation/test")
    return [str(whole_dir)]
