"""Sampling trained generators, deterministically and in batches.

Latent vector ``i`` of a stream with seed ``s`` is drawn from the stateless seed ``(s, i)``, so
image ``i`` is the same whatever the batch size, the number of images asked for or the order
in which they are made (generators run in inference mode: batch norm uses its moving
statistics, so examples do not interact).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from mammogan_tf.errors import ConfigError, InputError
from mammogan_tf.manifest import read_manifest
from mammogan_tf.models.latents import balanced_labels, latent_vectors


@dataclass
class LoadedGenerator:
    """A generator restored from a training run, with what its provenance records."""

    generator: object
    run_dir: Path
    checkpoint: str
    sha256: str
    step: int
    sampler: str
    class_names: list[str]
    model_config: object
    run_manifest: dict = field(repr=False, default_factory=dict)

    @property
    def num_classes(self) -> int:
        return int(getattr(self.generator, "num_classes", 0) or 0)

    def class_index(self, name_or_index: str | int | None) -> int | None:
        """Index of ``--class`` (a name of the run's classes or an index); None = all classes."""
        if name_or_index is None:
            return None
        if not self.num_classes:
            raise ConfigError(f"--class {name_or_index}: {self.run_dir} holds an unconditional generator "
                              f"({', '.join(self.class_names)}); leave --class out")
        text = str(name_or_index)
        if text in self.class_names:
            return self.class_names.index(text)
        if text.isdigit() and int(text) < self.num_classes:
            return int(text)
        raise ConfigError(f"--class {text}: not one of the run's classes {self.class_names}")

    def class_name(self, index: int | None) -> str:
        """Lesion type of a generated image: its class, or for an unconditional generator the
        single lesion type it was trained on ("other" when it saw several)."""
        if self.num_classes:
            return self.class_names[int(index)]
        return self.class_names[0] if len(self.class_names) == 1 else "other"


def load_generator(run_dir: str | os.PathLike, checkpoint: str = "best") -> LoadedGenerator:
    """Restore the sampling generator (the EMA one when the run kept one) of a finished
    training run from ``checkpoint``: ``best``, ``last`` or a checkpoint path."""
    from mammogan_tf.models.config import model_config_class
    from mammogan_tf.models.registry import build_networks
    from mammogan_tf.models.weights import checkpoint_sha256, checkpoint_step, resolve_checkpoint, restore_network

    run_dir = Path(run_dir)
    try:
        manifest = read_manifest(run_dir, stage="train")
    except InputError as error:
        raise InputError(f"{error}; a run is usable once `mammogan-train` finished it "
                         "(resume an interrupted run with --resume)") from None
    model_section = manifest["config"]["model"]
    model_config = model_config_class(model_section.get("family", "dcgan")).model_validate(model_section)
    prefix = resolve_checkpoint(run_dir, checkpoint)
    sampler = manifest.get("sampler", "networks/generator")
    if "/" not in sampler:
        raise InputError(f"{run_dir}: trained by an earlier mammogan_tf whose checkpoints hold variables by position "
                         "(before checkpoints were keyed by variable path); retrain it with this version")
    generator = build_networks(model_config)[sampler.split("/")[-1]]
    restore_network(generator, prefix, sampler)
    return LoadedGenerator(generator=generator, run_dir=run_dir, checkpoint=prefix, sha256=checkpoint_sha256(prefix),
                           step=checkpoint_step(prefix), sampler=sampler,
                           class_names=list(manifest.get("class_names") or ["other"]),
                           model_config=model_config, run_manifest=manifest)


def generate_batches(loaded: LoadedGenerator, n: int, seed: int = 0, class_index: int | None = None,
                     batch_size: int = 64) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """Yield ``(indices (b,), images (b, S, S, 1) float32 in [-1, 1], labels (b,) or None)``
    for images ``0 .. n-1`` in batches of ``batch_size``."""
    import tensorflow as tf

    generator = loaded.generator
    forward = tf.function(lambda inputs: generator(inputs, training=False), reduce_retracing=True,
                          autograph=False)
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        indices = np.arange(start, start + count)
        z = tf.constant(latent_vectors(generator, seed, start, count))
        labels = balanced_labels(indices, loaded.num_classes, class_index)
        inputs = (z, tf.constant(labels)) if labels is not None else z
        yield indices, forward(inputs).numpy(), labels
