"""TFRecord patch shards: one writer, one parser, one ``tf.data`` pipeline.

Each record is a ``tf.train.Example`` with the fields listed in ``FEATURES``. Images are 16-bit
grey PNG (``mammogan_tf.data.codec``) and decode to float32 in [-1, 1].
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import tensorflow as tf

from mammogan_tf.data.codec import encode_mask, encode_png16
from mammogan_tf.errors import InputError
from mammogan_tf.manifest import read_manifest

FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "height": tf.io.FixedLenFeature([], tf.int64),
    "width": tf.io.FixedLenFeature([], tf.int64),
    "label": tf.io.FixedLenFeature([], tf.int64),
    "lesion_type": tf.io.FixedLenFeature([], tf.string),
    "pathology": tf.io.FixedLenFeature([], tf.string),
    "patient_id": tf.io.FixedLenFeature([], tf.string),
    "image_id": tf.io.FixedLenFeature([], tf.string),
    "kind": tf.io.FixedLenFeature([], tf.string),
    "bbox": tf.io.FixedLenFeature([4], tf.float32),
    "origin": tf.io.FixedLenFeature([4], tf.int64),
    "mask": tf.io.FixedLenFeature([], tf.string, default_value=b""),
    "synthetic": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "provenance": tf.io.FixedLenFeature([], tf.string, default_value=b""),
    "copy_index": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "orientation": tf.io.FixedLenFeature([2], tf.int64, default_value=[-1, -1]),
}
"""Every field of a shard record; ``bbox`` is -1s when the patch holds no lesion; ``copy_index``
is 0 for a lesion's original patch (and every normal, whole or synthetic one), 1, 2, ... for its
augmented copies (``data.sampling.Patch``); shards written before it existed read as 0.
``orientation`` is ``(flip, k)`` of ``Patch.orientation`` (-1s: not recorded, as in older shards)."""

SHARD_SUFFIX = ".tfrecord"


def _bytes(value) -> tf.train.Feature:
    if isinstance(value, str):
        value = value.encode("utf-8")
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _ints(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in np.atleast_1d(values)]))


def _floats(values) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in np.atleast_1d(values)]))


def serialize_encoded(*, image_png: bytes, height: int, width: int, label: int, lesion_type: str,
                      pathology: str, patient_id: str, image_id: str, kind: str, bbox=None,
                      origin=None, mask_png: bytes = b"", synthetic: bool = False,
                      provenance: dict | None = None, copy_index: int = 0, orientation=None) -> bytes:
    """One ``tf.train.Example`` from an already PNG-encoded patch (see ``FEATURES``)."""
    feature = {
        "image": _bytes(image_png),
        "height": _ints(height),
        "width": _ints(width),
        "label": _ints(label),
        "lesion_type": _bytes(lesion_type),
        "pathology": _bytes(pathology),
        "patient_id": _bytes(patient_id),
        "image_id": _bytes(image_id),
        "kind": _bytes(kind),
        "bbox": _floats(bbox if bbox is not None else (-1, -1, -1, -1)),
        "origin": _ints(origin if origin is not None else (-1, -1, -1, -1)),
        "mask": _bytes(mask_png),
        "synthetic": _ints(1 if synthetic else 0),
        "provenance": _bytes(json.dumps(provenance, sort_keys=True) if provenance else b""),
        "copy_index": _ints(copy_index),
        "orientation": _ints(orientation if orientation is not None else (-1, -1)),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


def serialize_patch(pixels: np.ndarray, *, mask: np.ndarray | None = None, **fields) -> bytes:
    """One ``tf.train.Example`` from a patch ``pixels`` (H, W) float in [0, 1] and its fields.

    ``fields``: label, lesion_type, pathology, patient_id, image_id, kind, and optionally bbox,
    origin, synthetic, provenance (a dict, stored as JSON), copy_index, orientation.
    """
    height, width = pixels.shape[:2]
    return serialize_encoded(image_png=encode_png16(pixels), height=height, width=width,
                             mask_png=encode_mask(mask), **fields)


class ShardWriter:
    """Writes records into ``<out_dir>/<prefix>-<nnnnn>.tfrecord``, ``per_shard`` records a file.

    Each file is written as ``*.tmp`` and renamed when closed, so a shard that exists is whole.
    Use as a context manager; ``files`` lists the finished file names in order.
    """

    def __init__(self, out_dir: str | os.PathLike, prefix: str, per_shard: int = 4096, first_index: int = 0):
        self.out_dir = Path(out_dir)
        self.prefix = prefix
        self.per_shard = per_shard
        self.index = first_index
        self.files: list[str] = []
        self._writer = None
        self._count = 0
        self._path: Path | None = None
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def write(self, record: bytes) -> None:
        if self._writer is None:
            self._path = self.out_dir / f"{self.prefix}-{self.index:05d}{SHARD_SUFFIX}"
            self._writer = tf.io.TFRecordWriter(str(self._path) + ".tmp")
        self._writer.write(record)
        self._count += 1
        if self._count >= self.per_shard:
            self.close_shard()

    def close_shard(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        os.replace(str(self._path) + ".tmp", self._path)
        self.files.append(self._path.name)
        self._writer, self._count = None, 0
        self.index += 1

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close_shard()
        elif self._writer is not None:
            self._writer.close()
            Path(str(self._path) + ".tmp").unlink(missing_ok=True)


def write_shard(path: str | os.PathLike, records: Iterable[bytes]) -> None:
    """Write all ``records`` into one TFRecord file atomically (``.tmp`` then rename)."""
    path = Path(path)
    tmp = str(path) + ".tmp"
    with tf.io.TFRecordWriter(tmp) as writer:
        for record in records:
            writer.write(record)
    os.replace(tmp, path)


def _decode_image(png: tf.Tensor) -> tf.Tensor:
    """16-bit PNG bytes -> (H, W, 1) float32 in [-1, 1]."""
    image = tf.io.decode_png(png, channels=1, dtype=tf.uint16)
    return tf.cast(image, tf.float32) * (2.0 / 65535.0) - 1.0


def parse_example(record: tf.Tensor, extra_features: dict | None = None) -> dict:
    """Parse one serialized record: every ``FEATURES`` field (plus ``extra_features``), ``image``
    decoded to (H, W, 1) in [-1, 1]."""
    example = tf.io.parse_single_example(record, {**FEATURES, **(extra_features or {})})
    example["image"] = _decode_image(example["image"])
    example["label"] = tf.cast(example["label"], tf.int32)
    return example


def split_files(manifest: dict, split: str | Sequence[str]) -> list[str]:
    """Absolute shard paths of one split (or several) of a prepare/synthesize manifest."""
    names = [split] if isinstance(split, str) else list(split)
    splits = manifest.get("splits", {})
    files = []
    for name in names:
        if name not in splits:
            raise InputError(f"{manifest['root']}/manifest.json: no split '{name}' "
                             f"(has: {', '.join(sorted(splits)) or 'none'})")
        files += [str(Path(manifest["root"]) / f) for f in splits[name]]
    return files


def make_dataset(manifest_path: str | os.PathLike, split: str | Sequence[str] = "train",
                 batch_size: int | None = 64, *, shuffle: bool = True, repeat: bool = False,
                 seed: int = 0, cache: bool = False, drop_remainder: bool = False,
                 as_dict: bool = False, lesion_types: Sequence[str] | None = None,
                 input_context: tf.distribute.InputContext | None = None,
                 shuffle_buffer: int = 4096, num_parallel: int = tf.data.AUTOTUNE,
                 extra_features: dict | None = None) -> tf.data.Dataset:
    """A ``tf.data.Dataset`` over the shards of ``split`` in a prepare (or synthesize) manifest.

    Yields ``(image (B, S, S, 1) float32 in [-1, 1], label (B,) int32)``, or dicts of every
    ``FEATURES`` field when ``as_dict``. Files are interleaved and records decoded in parallel
    (deterministic order for a given seed); ``shuffle`` reshuffles files and records every epoch;
    ``cache`` keeps decoded records in memory; ``lesion_types`` keeps only those classes;
    ``input_context`` shards files per input pipeline (multi-worker; records when there are fewer
    files than pipelines) and sets the per-replica batch size; ``batch_size=None`` leaves the dataset unbatched;
    ``extra_features``: more fields to parse (e.g. whole-mode ``boxes``), kept in the dicts.
    """
    manifest = read_manifest(manifest_path)
    files = split_files(manifest, split)
    if not files:
        raise InputError(f"{manifest['root']}/manifest.json: split '{split}' holds no shards")
    dataset = tf.data.Dataset.from_tensor_slices(files)
    pipelines = input_context.num_input_pipelines if input_context is not None else 1
    shard_records = 1 < pipelines and len(files) < pipelines  # too few files: every pipeline reads all
    if pipelines > 1 and not shard_records:
        dataset = dataset.shard(pipelines, input_context.input_pipeline_id)
    if input_context is not None and batch_size is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    if shuffle:
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                                 num_parallel_calls=num_parallel, deterministic=True)
    if shard_records:
        dataset = dataset.shard(pipelines, input_context.input_pipeline_id)
    dataset = dataset.map(lambda record: parse_example(record, extra_features), num_parallel_calls=num_parallel,
                          deterministic=True)
    if lesion_types:
        classes = manifest.get("classes", [])
        unknown = sorted(set(lesion_types) - set(classes))
        if unknown:
            raise InputError(f"{manifest['root']}/manifest.json: unknown lesion types {unknown}; "
                             f"classes are {classes}")
        wanted = tf.constant([classes.index(t) for t in lesion_types], tf.int32)
        dataset = dataset.filter(lambda ex: tf.reduce_any(tf.equal(ex["label"], wanted)))
    if cache:
        dataset = dataset.cache()
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    if not as_dict:
        dataset = dataset.map(lambda ex: (ex["image"], ex["label"]), num_parallel_calls=num_parallel)
    if batch_size is not None:
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)
