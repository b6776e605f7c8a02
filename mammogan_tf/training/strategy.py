"""The ``tf.distribute`` strategy named in ``train.strategy``.

- ``default``: one device (the first GPU if any, else the CPU).
- ``mirrored``: every local GPU (or every logical CPU device when there is no GPU).
- ``multi_worker``: ``MultiWorkerMirroredStrategy`` over the cluster in ``TF_CONFIG``.
"""
from __future__ import annotations

import json
import os

import tensorflow as tf

from mammogan_tf.errors import ConfigError


def make_strategy(kind: str) -> tf.distribute.Strategy:
    """Build the strategy ``kind`` ("default", "mirrored", "multi_worker")."""
    if kind == "default":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy(devices=[d.name for d in devices])
    if kind == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ConfigError("train.strategy multi_worker: set TF_CONFIG (cluster and task) on every worker")
        try:
            json.loads(os.environ["TF_CONFIG"])
        except ValueError as error:
            raise ConfigError(f"TF_CONFIG is not valid JSON ({error})") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"train.strategy: unknown strategy {kind!r} (default, mirrored, multi_worker)")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the worker that writes logs, samples, best/ and the run manifest."""
    return bool(strategy.extended.should_checkpoint)


def worker_id(strategy: tf.distribute.Strategy) -> int:
    """Index of this worker (0 outside multi-worker training)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_id = getattr(resolver, "task_id", None)
    return int(task_id) if task_id is not None else 0
