"""The paper presets the benchmarks run, by short name, and helpers shared by our side and peers.

``load_preset(name, batch)`` gives the validated experiment config with ``train.batch_size``
set and metrics off; ``trainable_counts(model_config)`` the trainable parameter counts of our
generator and discriminator (built through ``models.registry.build_gan``).
"""
from __future__ import annotations

from pathlib import Path

import mammogan_tf  # noqa: F401 - TensorFlow-free; sets TF's CPU kernels (oneDNN) before anything imports TF

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
PRESETS = {
    "fridadar64": "fridadar2018_dcgan_mass.yaml",
    "fridadar64_acgan": "fridadar2018_acgan.yaml",
    "alyafi128": "alyafi2019_dcgan_mass.yaml",
    "mias64": "mias_dcgan_mass.yaml",
    "quickstart": "quickstart.yaml",
    "contextual128": "contextual_mass.yaml",
    "contextual256": "contextual_mass.yaml",
}
PRESET_OVERRIDES = {
    "contextual128": ["model.progressive.enabled=true"],  # step 0 lies in the S/2 (128 px) stage
    "contextual256": ["model.progressive.enabled=false"],  # the 256 px layers only (after the fade)
}


def preset_path(name: str) -> Path:
    return EXPERIMENTS / PRESETS[name]


def load_preset(name: str | Path, batch: int, overrides: list[str] | None = None):
    """The experiment config of preset ``name`` (or a YAML path) with batch ``batch``, no metric."""
    from mammogan_tf.config import load_config

    path = Path(name) if str(name) not in PRESETS else preset_path(str(name))
    preset = PRESET_OVERRIDES.get(str(name), [])
    return load_config(path, [f"train.batch_size={batch}", "train.metric.name=none", *preset, *(overrides or [])])


def trainable_counts(model_config) -> dict:
    """``{"generator": n, "discriminator": n}`` trainable parameters of our built models."""
    from mammogan_tf.models.registry import build_gan

    generator, discriminator = build_gan(model_config)
    return {"generator": int(sum(v.numpy().size for v in generator.trainable_variables)),
            "discriminator": int(sum(v.numpy().size for v in discriminator.trainable_variables))}
