"""Experiment YAML -> validated pydantic models.

Every section forbids unknown keys, so a typo fails with the key path and the file named.
``load_config(path, overrides=["a.b=value", ...])`` applies command-line overrides (values
parsed as YAML) before validation.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from mammogan_tf.data.config import (  # noqa: F401 - re-exported: the prepare section lives in its stage
    MaskConfig, NormalizationConfig, PatchConfig, PrepareConfig, SplitConfig,
)
from mammogan_tf.errors import ConfigError
from mammogan_tf.models.config import ModelConfig, model_section_type
from mammogan_tf.plugins import load_object
from mammogan_tf.sections import Section
from mammogan_tf.training.config import TrainConfig


ModelSection = model_section_type()
"""The ``model:`` section: the config class of the family it names."""


class ExperimentConfig(Section):
    """One experiment YAML. Sections of later stages are added beside ``prepare``."""

    name: str = "experiment"
    output_dir: str = "runs"
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    model: ModelSection = Field(default_factory=ModelConfig)
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
    loc = list(first["loc"])
    if len(loc) > 1 and loc[0] == "model" and str(loc[1]).endswith("Config"):
        loc.pop(1)  # the tag of the family's config class
    path = ".".join(str(part) for part in loc) or "<root>"
    kind = first["type"]
    if kind == "union_tag_invalid" and path == "model":
        from mammogan_tf.models.config import MODEL_CONFIGS

        tag = first.get("ctx", {}).get("tag")
        return f"{source}: model.family: unknown family {tag!r}; choose one of {', '.join(MODEL_CONFIGS)}"
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


EXPERIMENT_CONFIGS = {
    "classifier": "mammogan_tf.training.classifier:ClassifierExperimentConfig",
    "detector": "mammogan_tf.training.detection_config:DetectionExperimentConfig",
}
"""``model.family`` -> the whole-experiment config class of the downstream models; every GAN
family uses ``ExperimentConfig``."""


def load_experiment(path: str | os.PathLike, overrides: list[str] | None = None):
    """An experiment YAML validated by the config class its ``model.family`` needs
    (``EXPERIMENT_CONFIGS``, else ``ExperimentConfig``)."""
    data = apply_overrides(read_yaml(path), overrides)
    spec = EXPERIMENT_CONFIGS.get((data.get("model") or {}).get("family"))
    model = load_object(spec) if spec is not None else ExperimentConfig
    return validate_config(data, model, source=str(path))


def set_field(section: BaseModel, name: str, value: Any, source: str) -> None:
    """Assign one validated field (a command-line flag); errors name ``source``."""
    try:
        setattr(section, name, value)
    except ValidationError as error:
        raise ConfigError(f"{source} {value!r}: {error.errors()[0]['msg']}") from None


def dump_config(config: BaseModel) -> str:
    """The resolved config as YAML text (what ``mammogan validate`` prints)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
