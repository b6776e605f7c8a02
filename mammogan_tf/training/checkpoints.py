"""Checkpoints of a run: the last few in ``checkpoints/`` and the best by metric in ``best/``.

Both hold the whole training state as a ``NamedState`` (``models.weights``): every network,
the EMA generator, optimizer slots, schedule variables, the step, augmentation state and the
best metric value, each keyed by a stable name. The random state is the step itself because
every random draw of the loop is stateless, seeded by (seed, step). TensorFlow writes the data
files first and then replaces the ``checkpoint`` index file atomically, so the latest
checkpoint named there is always whole.

In multi-worker training every worker must call ``save``; only the chief writes into the run
folder, the others into a scratch folder that is deleted right away.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import tensorflow as tf

from mammogan_tf.manifest import write_json_atomic
from mammogan_tf.models.weights import BEST_DIR, CHECKPOINT_DIR, NamedState, checkpoint_step

BEST_FILE = "best.json"
PREFIX = "ckpt"


class RunCheckpoints:
    """``checkpoints/`` (every N steps and at the end, ``keep`` of them) and ``best/``.

    ``state``: the ``NamedState`` of the training state. ``chief``: whether this worker owns the
    run folder; ``worker``: its index (names the scratch folder otherwise).
    """

    def __init__(self, run_dir: str | os.PathLike, state: NamedState, keep: int = 3,
                 chief: bool = True, worker: int = 0):
        self.run_dir = Path(run_dir)
        self.state = state
        self.chief = chief
        self.last_dir = self.run_dir / CHECKPOINT_DIR
        self.best_dir = self.run_dir / BEST_DIR
        scratch = self.run_dir / f".worker-{worker}"
        self._last = tf.train.CheckpointManager(
            state.checkpoint, str(self.last_dir if chief else scratch / CHECKPOINT_DIR), max_to_keep=keep,
            checkpoint_name=PREFIX)
        self._best = tf.train.CheckpointManager(
            state.checkpoint, str(self.best_dir if chief else scratch / BEST_DIR), max_to_keep=1,
            checkpoint_name=PREFIX)
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
        return str(self.last_dir / Path(path).name)

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
        """Restore the newest ``checkpoints/`` state (strictly by name); returns its step, or None."""
        prefix = self.latest
        if prefix is None:
            return None
        self.state.restore(prefix, partial=False)
        return checkpoint_step(prefix)


def read_best(run_dir: str | os.PathLike) -> dict | None:
    """``best/best.json`` of a run ({"step", "metric", "value", "checkpoint"}), or None."""
    path = Path(run_dir) / BEST_DIR / BEST_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
