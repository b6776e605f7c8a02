"""Reading mammograms and annotations, preprocessing, patch sampling, splits, shards, demo data.

TensorFlow is imported only when a shard/dataset function is first used, so the reading and
sampling code stays light enough for worker processes.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "read_image": "mammogan_tf.data.images",
    "ImageMeta": "mammogan_tf.data.images",
    "read_annotations": "mammogan_tf.data.annotations",
    "load_annotations": "mammogan_tf.data.annotations",
    "make_dataset": "mammogan_tf.data.shards",
    "parse_example": "mammogan_tf.data.shards",
    "serialize_patch": "mammogan_tf.data.shards",
    "ShardWriter": "mammogan_tf.data.shards",
    "run_prepare": "mammogan_tf.data.prepare",
    "write_phantom": "mammogan_tf.data.phantom",
    "classic_augment": "mammogan_tf.data.augment",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mammogan_tf.data' has no attribute '{name}'")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
