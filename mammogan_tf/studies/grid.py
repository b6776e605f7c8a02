"""A paper's grid (``experiments/tables/*.yaml``): its config and the running of every cell.

Cells are of one ``kind``: ``classifier`` (the downstream classifier per regime) or
``detection`` (the YOLO-style detector on whole images per regime, ``studies.detection_cells``;
one box-conditioned GAN per cell trained on all ``gan.classes`` together).

A grid crosses regimes (real only, + synthetic at some share, classic augmentation, CAS...)
with folds (patient-level CV, or the prepare stage's own split) and, for Alyafi's protocol,
positive set sizes k. For each (k, fold) it writes the cell's data (``subsets.write_subset``),
trains one GAN per synthetic class on that data's train split and synthesizes from it (only
when a regime uses synthetic data), then trains each regime's classifier. A contextual GAN
(Wu et al.) paints its lesions onto the normal patches of the cell's train split (mode ``add``;
``remove``: takes lesions off its lesion patches), so the seeding patients are training patients
too and the synthesize manifest names them for the leakage guard. A detection regime with
``source: contextual`` trains on the cell's training mammograms with contextual-GAN lesions
reinserted instead (``studies.contextual_source``, under ``contextual/``). Everything lands
under ``<output_dir>/<name>/`` and a finished piece (``manifest.json`` / ``metrics.json``) is
reused on a re-run; an interrupted classifier resumes from its checkpoint::

    data/<cell>/  gan/<cell>/<class>/  synthetic/<cell>/<class>/  cells/<regime>/<cell>/
"""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import Field, model_validator
from tqdm.auto import tqdm

from mammogan_tf.config import PrepareConfig, apply_overrides, read_yaml, validate_config
from mammogan_tf.errors import ConfigError
from mammogan_tf.manifest import MANIFEST_NAME, read_manifest
from mammogan_tf.sections import Section
from mammogan_tf.studies import protocols
from mammogan_tf.studies.contextual_source import ContextualSourceConfig
from mammogan_tf.studies.subsets import read_records, write_subset


class GridDataConfig(Section):
    """Real data of the grid and how it is folded."""

    manifest: str = Field(..., description="prepare output folder (made from `prepare` when missing)")
    prepare: Optional[PrepareConfig] = Field(None, description="prepare section used when manifest is missing")
    folds: int = Field(0, ge=0, description="patient-level CV folds over all splits; 0 = the manifest's split")
    val_fraction: float = Field(protocols.ALYAFI_VAL_FRACTION, gt=0, lt=1,
                                description="validation share of the non-test patients of a fold")
    seed: int = 0


class ProtocolConfig(Section):
    """``imbalanced``: Alyafi et al.'s k positives, IR x k negatives, AR x k synthetic positives."""

    kind: Literal["none", "imbalanced"] = "none"
    k: list[int] = Field(default_factory=lambda: list(protocols.ALYAFI_K))
    ir: float = Field(protocols.ALYAFI_IR, gt=0)
    ar: float = Field(protocols.ALYAFI_AR, ge=0)
    positive: list[str] = Field(default_factory=lambda: ["mass"])
    negative: list[str] = Field(default_factory=lambda: ["normal"])


class GanConfig(Section):
    """One GAN per class in ``classes``, trained on each cell's train split, then ``n`` patches
    (contextual runs: at most ``n``, one per source patch of the train split)."""

    experiment: Optional[str | dict[str, str]] = Field(
        None, description="GAN experiment YAML (its model: and train:), or one per class {class: YAML}")
    set: list[str] = Field(default_factory=list, description="--set style overrides of that YAML")
    classes: list[str] = Field(default_factory=lambda: ["mass"])
    n: int = Field(512, ge=1, description="synthetic patches per class (imbalanced: AR x k for positives)")
    checkpoint: Literal["best", "last"] = "last"
    seed: int = 0


class RegimeConfig(Section):
    """A row of the table: overrides of the base classifier, with or without the cell's synthetic sets."""

    name: str
    baseline: bool = False
    compare_to: Optional[str] = Field(None, description="regime its DeLong p is computed against "
                                      "(default: the baseline row)")
    synthetic: bool = False
    source: Literal["gan", "contextual"] = Field(
        "gan", description="synthetic data of the row: the grid's gan: section, or (kind detection) its "
        "contextual: section, contextual GAN lesions reinserted into the training patients' mammograms")
    set: dict[str, Any] = Field(default_factory=dict, description="dotted key -> value on the classifier config")


class GridConfig(Section):
    """``mammogan table GRID.yaml``."""

    name: str = "table"
    output_dir: str = "runs/tables"
    kind: Literal["classifier", "detection"] = Field("classifier", description="what each cell trains and tests")
    data: GridDataConfig
    protocol: ProtocolConfig = Field(default_factory=ProtocolConfig)
    gan: GanConfig = Field(default_factory=GanConfig)
    contextual: ContextualSourceConfig = Field(default_factory=ContextualSourceConfig,
                                               description="kind detection: regimes with source: contextual")
    classifier: dict = Field(default_factory=dict, description="base classifier experiment (model:, train:)")
    detector: dict = Field(default_factory=dict, description="kind detection: base detector experiment "
                           "(model:, train:, data:)")
    regimes: list[RegimeConfig]
    figures: bool = True
    tsne_samples: int = Field(300, ge=0, description="t-SNE points per group (0 = no t-SNE)")

    @model_validator(mode="after")
    def _check(self):
        names = [r.name for r in self.regimes]
        if len({slug(n) for n in names}) != len(names):
            raise ValueError(f"regimes: names must be unique, got {names}")
        if sum(r.baseline for r in self.regimes) > 1:
            raise ValueError("regimes: at most one baseline")
        unknown = sorted({r.compare_to for r in self.regimes if r.compare_to} - set(names))
        if unknown:
            raise ValueError(f"regimes: compare_to names unknown regimes {unknown}")
        if self.uses("gan") and not self.gan.experiment:
            raise ValueError("a regime uses synthetic data: name the GAN experiment in gan.experiment")
        plain = [r.name for r in self.regimes if r.source == "contextual" and not r.synthetic]
        if plain:
            raise ValueError(f"regimes {plain}: source: contextual needs synthetic: true")
        if self.uses("contextual") and (self.kind != "detection" or not self.contextual.experiment):
            raise ValueError("regimes with source: contextual need kind: detection and the contextual GAN "
                             "experiment YAML in contextual.experiment")
        if isinstance(self.gan.experiment, dict) and set(self.gan.classes) - set(self.gan.experiment):
            raise ValueError(f"gan.experiment: no experiment for classes "
                             f"{sorted(set(self.gan.classes) - set(self.gan.experiment))}")
        if self.kind == "detection" and (not self.detector or self.protocol.kind != "none"):
            raise ValueError("kind detection: give the base detector experiment in detector (and no protocol)")
        if self.kind == "detection" and isinstance(self.gan.experiment, dict):
            raise ValueError("kind detection: one GAN experiment for all lesion types (gan.experiment: YAML)")
        return self

    def uses(self, source: str) -> bool:
        """Whether a regime trains on synthetic data of ``source`` (gan | contextual)."""
        return any(r.synthetic and r.source == source for r in self.regimes)

    def gan_experiment(self, cls: str) -> str:
        """The GAN experiment YAML of class ``cls``."""
        experiment = self.gan.experiment
        return experiment[cls] if isinstance(experiment, dict) else experiment


def load_grid(path: str | os.PathLike, overrides: list[str] | None = None) -> GridConfig:
    """Read and validate a grid YAML with ``--set`` overrides; errors name the file and key."""
    return validate_config(apply_overrides(read_yaml(path), overrides), GridConfig, source=str(path))


def _set_dotted(data: dict, values: dict) -> dict:
    return apply_overrides(data, [f"{k}={_yaml(v)}" for k, v in values.items()])


def _yaml(value) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def ensure_real(grid: GridConfig, progress: bool = True) -> Path:
    """The real data manifest; prepared from ``data.prepare`` when missing."""
    manifest = Path(grid.data.manifest)
    manifest = manifest if manifest.suffix == ".json" else manifest / MANIFEST_NAME
    if manifest.is_file():
        return manifest
    if grid.data.prepare is None:
        raise ConfigError(f"data.manifest {grid.data.manifest}: not prepared; run `mammogan prepare` or add "
                          "data.prepare to the grid")
    from mammogan_tf.data.prepare import run_prepare

    run_prepare(grid.data.prepare, manifest.parent, progress=progress)
    return manifest


def cell_folds(grid: GridConfig, records: list[dict]) -> list[tuple[Optional[int], int, dict]]:
    """``(k, fold, {"train", "val", "test"} records)`` for every cell of the grid."""
    p = grid.protocol
    out = []
    for k in (p.k if p.kind == "imbalanced" else [None]):
        pool = (protocols.imbalanced_set(records, k, p.positive, p.negative, p.ir, grid.data.seed)
                if k is not None else records)
        if grid.data.folds:
            lesions = [c for c in grid.gan.classes if c != "normal"]  # strata: patients with a lesion or not
            folds = protocols.patient_folds(pool, grid.data.folds, grid.data.val_fraction,
                                            p.positive if p.kind == "imbalanced" else lesions, grid.data.seed)
        else:
            folds = protocols.manifest_splits(pool)
        out += [(k, f, fold) for f, fold in enumerate(folds)]
    return out


def slug(name: str) -> str:
    """A folder name for a regime ("Aug GAN" -> "Aug_GAN")."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "regime"


def cell_tag(k: Optional[int], fold: int) -> str:
    return f"k{k}-fold{fold}" if k is not None else f"fold{fold}"


def _gan_config(grid: GridConfig, cls: str, data_dir: Path, types: list[str] | None = None):
    """The validated experiment of the GAN of class ``cls`` (lesion types ``types``, default
    ``[cls]``), trained on ``data_dir``'s train split."""
    from mammogan_tf.config import ExperimentConfig

    path = grid.gan_experiment(cls)
    raw = apply_overrides(read_yaml(path), grid.gan.set)
    raw = apply_overrides(raw, [f"train.data.manifest={data_dir}", "train.data.split=train"])
    raw.pop("prepare", None)
    contextual = raw.get("model", {}).get("family") == "contextual"
    if not contextual:
        raw = apply_overrides(raw, [f"train.data.lesion_types=[{','.join(types or [cls])}]"])
    config = validate_config(raw, ExperimentConfig, source=path)
    if contextual:
        from mammogan_tf.synthesis.contextual import output_lesion_type

        if output_lesion_type(config.model) != cls:
            raise ConfigError(f"gan.experiment {path}: its contextual run makes {output_lesion_type(config.model)} "
                              f"patches, not {cls}; name one experiment per class (gan.experiment: {{{cls}: YAML}})")
    return config, contextual


def _synthetic(grid: GridConfig, root: Path, tag: str, data_dir: Path, k: Optional[int], progress: bool) -> list[str]:
    """Train (or reuse) one GAN per class (kind detection: one GAN on all ``gan.classes``, named
    ``lesion``) on ``data_dir``'s train split and synthesize from it (a contextual run from the
    patches of that same train split)."""
    from mammogan_tf.synthesis.synthesize import run_synthesize
    from mammogan_tf.training.run import train

    out = []
    groups = {"lesion": grid.gan.classes} if grid.kind == "detection" else {c: [c] for c in grid.gan.classes}
    for cls, types in groups.items():
        synth_dir = root / "synthetic" / tag / cls
        run_dir = root / "gan" / tag / cls
        config, contextual = _gan_config(grid, cls, data_dir, types)
        if (run_dir / MANIFEST_NAME).is_file():
            _same(read_manifest(run_dir)["config"], config.model_dump(mode="json"), run_dir)
        else:
            train(config, run_dir, resume=(run_dir / "checkpoints").is_dir(), progress=progress)
        wanted = {"n": (protocols.synthetic_count(k, grid.protocol.ar)
                        if k is not None and cls in grid.protocol.positive else grid.gan.n),
                  "checkpoint": grid.gan.checkpoint, "seed": grid.gan.seed}
        seeds = {"source": data_dir, "split": "train"} if contextual else {}
        if (synth_dir / MANIFEST_NAME).is_file():
            saved = read_manifest(synth_dir)["config"]
            _same({key: saved.get(key) for key in wanted}, wanted, synth_dir)
        else:
            run_synthesize(run_dir, wanted["n"], synth_dir, fmt="shards", checkpoint=grid.gan.checkpoint,
                           seed=grid.gan.seed, progress=progress, **seeds)
        out.append(str(synth_dir))
    return out


def cell_config(grid: GridConfig, regime: RegimeConfig, data_dir: Path, synthetic: list[str]) -> dict:
    """The classifier experiment dict of one cell: base, the regime's overrides, the cell's data."""
    config = _set_dotted(copy.deepcopy(grid.classifier), regime.set)
    train = config.setdefault("train", {})
    train.setdefault("data", {})["manifest"] = str(data_dir)
    if regime.synthetic:
        train.setdefault("mixing", {})["synthetic"] = list(synthetic)
    config["name"] = regime.name
    return config


def _same(saved, wanted, folder: Path) -> None:
    """A cached piece is reused only when it was made with the same settings."""
    if saved != wanted:
        raise ConfigError(f"{folder}: made with other settings than this grid's; delete it (or pass another "
                          "--out) to recompute it")


def _classifier_cell(grid: GridConfig, regime: RegimeConfig, data_dir: Path, synthetic: list[str],
                     cell_dir: Path) -> None:
    """Train one cell's classifier (resuming an interrupted one), or reuse it when finished with the
    same config."""
    from mammogan_tf.training.classifier import as_config, train_classifier

    config = as_config(cell_config(grid, regime, data_dir, synthetic))
    if (cell_dir / "metrics.json").is_file():
        _same(read_manifest(cell_dir)["config"], config.model_dump(mode="json"), cell_dir)
    else:
        train_classifier(config, cell_dir, resume=(cell_dir / "checkpoints").is_dir(), progress=False)


def run_cells(grid: GridConfig, root: Path, progress: bool = True) -> list[dict]:
    """Run or reuse every cell; returns ``{"regime", "k", "fold", "dir"}`` per cell."""
    if grid.kind == "detection":
        from mammogan_tf.studies.detection_cells import run_cell
    else:
        run_cell = _classifier_cell
    manifest = ensure_real(grid, progress)
    info = read_manifest(manifest)
    records = read_records(manifest)
    cells = []
    plan = cell_folds(grid, records)
    bar = tqdm(total=len(plan) * len(grid.regimes), unit="cell", desc=f"table {grid.name}", disable=not progress)
    for k, f, fold in plan:
        tag = cell_tag(k, f)
        data_dir = root / "data" / tag
        made_with = {"k": k, "fold": f, "grid": grid.name,
                     "plan": {"data": grid.data.model_dump(mode="json", exclude={"prepare"}),
                              "protocol": grid.protocol.model_dump(mode="json")}}
        if not (data_dir / MANIFEST_NAME).is_file():
            write_subset(data_dir, fold, patch_size=info["patch_size"], source=manifest, extra=made_with)
        _same(read_manifest(data_dir)["config"].get("plan"), made_with["plan"], data_dir)
        sources = {"gan": _synthetic(grid, root, tag, data_dir, k, progress) if grid.uses("gan") else []}
        if grid.uses("contextual"):
            from mammogan_tf.studies.contextual_source import contextual_synthetic

            sources["contextual"] = contextual_synthetic(grid, root, tag, data_dir, manifest, progress)
        for regime in grid.regimes:
            cell_dir = root / "cells" / slug(regime.name) / tag
            synthetic = sources[regime.source] if regime.synthetic else []
            run_cell(grid, regime, data_dir, synthetic, cell_dir)
            cells.append({"regime": regime.name, "k": k, "fold": f, "dir": str(cell_dir), "data": str(data_dir),
                          "synthetic": synthetic})
            bar.update(1)
    bar.close()
    return cells
