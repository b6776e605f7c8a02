"""What ``--resume`` must find unchanged: every setting that changes the sequence of steps.

A resumed run is exact only when the model, the data, the batch, the cadence, the losses, the
optimizers, the schedules, the augmentation and the seed are the ones the run started with.
Length (``steps``/``epochs``/``images``), logging and checkpoint cadence, the metric and caching may change.
"""
from __future__ import annotations

from pathlib import Path

from mammogan_tf.errors import ConfigError

FREE_FIELDS = {
    "train.steps", "train.epochs", "train.images", "train.checkpoint_every", "train.keep", "train.log_every",
    "train.sample_every", "train.grid_size", "train.metric", "train.data.cache",
    "train.data.prepare_phantom_if_missing", "train.data.phantom_images",
}
"""Fields (and whole sections) a resumed run may change."""

CHECKED_SECTIONS = ("model", "train")


def _differences(old, new, path: str):
    if path in FREE_FIELDS:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            yield from _differences(old.get(key), new.get(key), f"{path}.{key}")
    elif old != new:
        yield path, old, new


def check_resume(saved_config: str | Path, config) -> None:
    """Raise ``ConfigError`` naming the first setting of ``config`` (an ``ExperimentConfig``) that
    differs from the run's ``saved_config`` (its ``config.yaml``) and changes the step sequence."""
    from mammogan_tf.config import load_config

    previous = load_config(saved_config).model_dump(mode="json")
    current = config.model_dump(mode="json")
    for section in CHECKED_SECTIONS:
        for path, old, new in _differences(previous.get(section), current.get(section), section):
            raise ConfigError(f"--resume: {path} is {old!r} in the run being resumed ({saved_config}) but {new!r} now; "
                              "resume with the same settings or start a new run with --out")
