"""Experiment YAML -> validated pydantic models.

Every section forbids unknown keys, so a typo fails with the key path and the file named.
``load_config(path, overrides=["a.b=value", ...])`` applies command-line overrides (values
parsed as YAML) before validation.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from mammogan_tf.errors import ConfigError
from mammogan_tf.models.config import ModelConfig
from mammogan_tf.sections import Section
from mammogan_tf.training.config import TrainConfig


class NormalizationConfig(Section):
    """Histogram normalisation applied to whole images before patch extraction."""

    method: Literal["none", "equalize", "clahe", "percentile"] = "equalize"
    clahe_clip_limit: float = Field(2.0, gt=0)
    clahe_tile_grid: int = Field(8, ge=1)
    percentiles: tuple[float, float] = (1.0, 99.0)


class MaskConfig(Section):
    """Breast mask: Alyafi's non-zero threshold or Otsu, keeping the largest component."""

    method: Literal["nonzero", "otsu"] = "nonzero"
    threshold: float = Field(0.05, ge=0, lt=1, description="nonzero: pixels above this (of [0, 1]) are breast")
    largest_component: bool = True
    fill_holes: bool = True


class PatchConfig(Section):
    """Patch sampling. ``mode: lesion`` = Alyafi/Frid-Adar lesion-centred patches plus normal
    tissue; ``mode: contextual`` = Wu's 256 px patches with >= 90 % breast tissue."""

    mode: Literal["lesion", "contextual", "whole"] = "lesion"
    size: int = Field(128, ge=8, description="patch side in image pixels before resizing")
    output_size: Optional[int] = Field(None, ge=8, description="resize patches to this side (e.g. 64)")
    lesion_types: list[str] = ["mass", "calcification", "architectural_distortion", "asymmetry", "other"]
    too_large: Literal["resize", "skip"] = "resize"
    lesion_margin: float = Field(1.2, ge=1.0, description="crop side >= margin * lesion box side when resizing")
    patches_per_lesion: int = Field(1, ge=1)
    normal_per_image: int = Field(4, ge=0)
    normal_min_breast_fraction: float = Field(0.9, ge=0, le=1)
    min_breast_fraction: float = Field(0.9, ge=0, le=1, description="contextual patches")
    max_offset: int = Field(128, ge=0, description="contextual: lesion pixel offset from the patch centre")
    contextual_per_lesion: int = Field(1, ge=1)
    contextual_normal_per_image: int = Field(2, ge=0)
    flip: bool = True
    rot90: bool = True
    scale_range: tuple[float, float] = (0.8, 1.2)
    max_tries: int = Field(200, ge=1)


class SplitConfig(Section):
    """Patient-level splits, stratified by class."""

    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    k_folds: Optional[int] = Field(None, ge=2)

    @field_validator("fractions")
    @classmethod
    def _sum_to_one(cls, value):
        if abs(sum(value) - 1.0) > 1e-6 or min(value) < 0:
            raise ValueError("train/val/test fractions must be >= 0 and sum to 1")
        return value


class PrepareConfig(Section):
    """``mammogan prepare``: images + annotations -> patient-split patch shards."""

    images: Optional[str] = None
    annotations: Optional[str] = None
    format: Optional[Literal["mias", "cbis-ddsm", "vindr", "inbreast", "optimam", "table"]] = None
    column_map: dict[str, str] = Field(default_factory=dict, description="optimam: our column -> theirs")
    manufacturers: list[str] = Field(default_factory=list, description="keep only images of these "
                                     "manufacturers (case-insensitive substring; empty = all)")
    processed_only: bool = Field(False, description="keep only processed (FOR PRESENTATION) images")
    seed: int = 0
    workers: int = Field(1, ge=0, description="0 = one per CPU core")
    images_per_shard: int = Field(64, ge=1)
    normalization: NormalizationConfig = Field(default_factory=NormalizationConfig)
    mask: MaskConfig = Field(default_factory=MaskConfig)
    patches: PatchConfig = Field(default_factory=PatchConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)


class ExperimentConfig(Section):
    """One experiment YAML. Sections of later stages are added beside ``prepare``."""

    name: str = "experiment"
    output_dir: str = "runs"
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)


def _set_path(data: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: '{key}' is not a section")
        node = child
    node[keys[-1]] = value


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Apply ``key.path=value`` strings (values parsed with ``yaml.safe_load``) to a raw dict."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        dotted, raw = item.split("=", 1)
        if not dotted.strip():
            raise ConfigError(f"--set {item!r}: empty key path")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as error:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({error})") from error
        _set_path(data, dotted.strip(), value)
    return data


def _format_validation_error(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    path = ".".join(str(part) for part in first["loc"]) or "<root>"
    kind = first["type"]
    if kind == "extra_forbidden":
        message = "unknown key"
    else:
        message = first["msg"]
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{source}: {path}: {message}{more}"


def validate_config(data: dict, model: type[BaseModel] = ExperimentConfig, source: str = "<config>"):
    """Validate a raw dict into ``model``; a ``ConfigError`` names the source and key path."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error, source)) from None


def read_yaml(path: str | os.PathLike) -> dict:
    """Read a YAML mapping with ``yaml.safe_load``; errors name the file (and line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read config ({error.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} invalid YAML ({getattr(error, 'problem', error)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None,
                model: type[BaseModel] = ExperimentConfig):
    """Load and validate an experiment YAML (or defaults when ``path`` is None) with overrides."""
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides)
    return validate_config(data, model, source=str(path) if path is not None else "--set")


def set_field(section: BaseModel, name: str, value: Any, source: str) -> None:
    """Assign one validated field (a command-line flag); errors name ``source``."""
    try:
        setattr(section, name, value)
    except ValidationError as error:
        raise ConfigError(f"{source} {value!r}: {error.errors()[0]['msg']}") from None


def dump_config(config: BaseModel) -> str:
    """The resolved config as YAML text (what ``mammogan validate`` prints)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
