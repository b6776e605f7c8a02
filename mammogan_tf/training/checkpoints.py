"""Checkpoints of a run: the last few in ``checkpoints/`` and the best by metric in ``best/``.

Both hold the whole training state (``tf.train.Checkpoint``: networks, EMA generator,
optimizers, step, augmentation probability, best metric value); the random state is the step
itself because every random draw of the loop is stateless, seeded by (seed, step).
TensorFlow writes the data files first and then replaces the ``checkpoint`` index file
atomically, so the latest checkpoint named there is always whole.

In multi-worker training every worker must call ``save``; only the chief writes into the run
folder, the others into a scratch folder that is deleted right away.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import tensorflow as tf

from mammogan_tf.errors import InputError
from mammogan_tf.manifest import write_json_atomic

CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best"
BEST_FILE = "best.json"
PREFIX = "ckpt"


def checkpoint_files(prefix: str | os.PathLike) -> list[Path]:
    """The files of one checkpoint ``prefix`` (``<prefix>.index``, ``<prefix>.data-*``), sorted."""
    prefix = Path(prefix)
    return sorted(p for p in prefix.parent.glob(prefix.name + ".*")
                  if p.name == prefix.name + ".index" or p.name.startswith(prefix.name + ".data-"))


def checkpoint_sha256(prefix: str | os.PathLike) -> str:
    """sha256 over the files of a checkpoint (name and bytes of each, in sorted order): the
    generator identity recorded in the provenance of every synthetic image."""
    files = checkpoint_files(prefix)
    if not files:
        raise InputError(f"{prefix}: no checkpoint files (.index/.data-*) here")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name[len(Path(prefix).name):].encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def checkpoint_step(prefix: str | os.PathLike) -> int:
    """Step number encoded in a checkpoint prefix ``.../ckpt-<step>``."""
    match = re.search(r"-(\d+)$", str(prefix))
    if not match:
        raise InputError(f"{prefix}: not a checkpoint prefix of the form ckpt-<step>")
    return int(match.group(1))


def resolve_checkpoint(run_dir: str | os.PathLike, which: str = "best") -> str:
    """Checkpoint prefix for ``which``: ``best`` (``best/``), ``last`` (``checkpoints/``), a
    folder holding checkpoints (its latest), or a prefix path. Raises ``InputError``."""
    run_dir = Path(run_dir)
    if which in ("best", "last"):
        folder = run_dir / (BEST_DIR if which == "best" else CHECKPOINT_DIR)
        prefix = tf.train.latest_checkpoint(str(folder))
        if prefix is None:
            hint = " (no metric was configured?)" if which == "best" else ""
            raise InputError(f"{folder}: no checkpoint{hint}; use --checkpoint last|best|PATH")
        return prefix
    path = Path(which)
    if path.is_dir():
        prefix = tf.train.latest_checkpoint(str(path))
        if prefix is None:
            raise InputError(f"{path}: no checkpoint in this folder")
        return prefix
    if not checkpoint_files(path):
        raise InputError(f"{path}: no checkpoint files (.index/.data-*); give best, last or a ckpt-<step> prefix")
    return str(path)


class RunCheckpoints:
    """``checkpoints/`` (every N steps and at the end, ``keep`` of them) and ``best/``.

    ``checkpoint``: the ``tf.train.Checkpoint`` of the training state. ``chief``: whether this
    worker owns the run folder; ``worker``: its index (names the scratch folder otherwise).
    """

    def __init__(self, run_dir: str | os.PathLike, checkpoint: tf.train.Checkpoint, keep: int = 3,
                 chief: bool = True, worker: int = 0):
        self.run_dir = Path(run_dir)
        self.checkpoint = checkpoint
        self.chief = chief
        self.last_dir = self.run_dir / CHECKPOINT_DIR
        self.best_dir = self.run_dir / BEST_DIR
        scratch = self.run_dir / f".worker-{worker}"
        self._last = tf.train.CheckpointManager(
            checkpoint, str(self.last_dir if chief else scratch / CHECKPOINT_DIR), max_to_keep=keep,
            checkpoint_name=PREFIX)
        self._best = tf.train.CheckpointManager(
            checkpoint, str(self.best_dir if chief else scratch / BEST_DIR), max_to_keep=1, checkpoint_name=PREFIX)
        self._scratch = None if chief else scratch

    def _clean(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)

    @property
    def latest(self) -> str | None:
        """Prefix of the newest checkpoint in ``checkpoints/`` (read from the chief's folder)."""
        return tf.train.latest_checkpoint(str(self.last_dir))

    def save(self, step: int) -> str:
        """Save the training state as ``checkpoints/ckpt-<step>``; returns the prefix."""
        path = self._last.save(checkpoint_number=step)
        self._clean()
        return path

    def save_best(self, step: int, metric: str, value: float, extra: dict | None = None) -> str:
        """Save the state as ``best/ckpt-<step>`` (replacing the older best) and ``best/best.json``."""
        path = self._best.save(checkpoint_number=step)
        if self.chief:
            write_json_atomic(self.best_dir / BEST_FILE, {"step": int(step), "metric": metric,
                                                         "value": float(value), "checkpoint": Path(path).name,
                                                         **(extra or {})})
        self._clean()
        return path

    def restore_latest(self) -> int | None:
        """Restore the newest ``checkpoints/`` state; returns its step, or None when there is none."""
        prefix = self.latest
        if prefix is None:
            return None
        self.checkpoint.restore(prefix).assert_existing_objects_matched()
        return checkpoint_step(prefix)


def read_best(run_dir: str | os.PathLike) -> dict | None:
    """``best/best.json`` of a run ({"step", "metric", "value", "checkpoint"}), or None."""
    path = Path(run_dir) / BEST_DIR / BEST_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
