"""The training data of a run: named streams of real patches from one manifest, as one
long-lived ``tf.data`` pipeline per run.

``TrainingData(manifest, split, streams, batch_size, seed, cache)`` reads the manifest once;
``dataset(start_epoch, skip, batches_per_epoch, input_context)`` is the run's whole input: an
endless sequence of epochs, epoch ``e`` of every stream shuffled with a seed made of
``(seed, e, stream)``, each batch a dict ``{stream: {"image", "label", "box", "mask"}}`` (see
``families.base``), plus ``"boxes"`` ``(b, MAX_BOXES, 4)`` (every box of the image, -1 rows after
the last) when the shards are whole images (``prepare`` with ``patches.mode: whole``). Records are
decoded once: with ``cache`` the decoded patches of every stream are kept in memory for the whole
run. A resumed run starts at its epoch and skips the batches it
already used in it, so it sees exactly what an uninterrupted run sees.

Under ``distribute_datasets_from_function`` each input pipeline (one per worker) reads only its
own shard files (``input_context``), falling back to record sharding when there are fewer
files than pipelines, and batches per replica.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from mammogan_tf.errors import InputError
from mammogan_tf.manifest import manifest_path, read_manifest
from mammogan_tf.training.families.base import Stream

SHUFFLE_BUFFER = 4096


def _decode_mask(png: tf.Tensor, size: int) -> tf.Tensor:
    """8-bit PNG mask bytes (or b"") -> (S, S, 1) float32 in {0, 1}."""
    return tf.cond(tf.strings.length(png) > 0,
                   lambda: tf.cast(tf.io.decode_png(png, channels=1) > 127, tf.float32),
                   lambda: tf.zeros([size, size, 1], tf.float32))


def _avoid_zero_global_seed() -> None:
    """The epoch seeds are tensors, which ``Dataset.shuffle`` refuses while TensorFlow's global seed
    is 0 (it compares the seed pair with (0, 0)); a global seed of 0 becomes 2**31 - 2. Only
    TensorFlow's stateful random ops without a seed of their own see the change; the loop draws
    every random number statelessly."""
    from tensorflow.python.eager import context

    seed = context.global_seed()
    if seed is not None and seed % (2 ** 31 - 1) == 0:
        tf.random.set_seed(2 ** 31 - 2)


class TrainingData:
    """Real patches of one split of a ``prepare`` (or ``synthesize``) manifest, as named streams.

    ``streams``: ``{name: Stream}``, the first primary (an epoch is one pass over it).
    ``batch_size``: the global batch of every stream (``dataset`` may be given another).
    Attributes: ``classes`` (the manifest's), ``class_names`` and ``class_counts`` (of the
    primary stream), ``patch_size``, ``num_examples`` (primary), ``counts`` per stream,
    ``builds`` (pipelines built so far), ``whole`` (records carry all boxes of an image) and
    ``boxes`` (every box of the primary stream, ``(N, 4)`` pixels; None unless ``whole``).
    """

    def __init__(self, manifest: str | os.PathLike, split: str, streams: dict[str, Stream],
                 batch_size: int, seed: int = 0, cache: bool = True):
        from mammogan_tf.data.shards import split_files

        self.path = manifest_path(manifest)
        self.manifest = read_manifest(self.path)
        self.classes = list(self.manifest.get("classes", []))
        self.patch_size = self.manifest.get("patch_size")
        self.split, self.batch_size, self.seed, self.cache = split, batch_size, seed, cache
        self.streams = dict(streams)
        self.files = split_files(self.manifest, split)
        if not self.files:
            raise InputError(f"{self.path}: split '{split}' holds no shards")
        from mammogan_tf.data.whole import has_boxes

        self.whole = has_boxes(self.files[0])
        self._boxes = None
        self.counts = {name: self._count(stream) for name, stream in self.streams.items()}
        for name, count in self.counts.items():
            if count == 0:
                stream = self.streams[name]
                raise InputError(f"{self.path}: split '{split}' holds no patches for stream '{name}' "
                                 f"(lesion types {list(stream.lesion_types or ['any'])}, "
                                 f"pathologies {list(stream.pathologies or ['any'])})")
        self.primary = next(iter(self.streams))
        self.num_examples = self.counts[self.primary]
        primary = self.streams[self.primary]
        self.class_names = list(primary.classes or primary.lesion_types or self.classes)
        self.class_counts = self._class_counts(primary)
        self.builds = 0

    # ------------------------------------------------------------------------ counting
    def _class_counts(self, stream: Stream) -> list[int]:
        counts = self.manifest.get("counts", {}).get(self.split)
        if isinstance(counts, dict) and counts and not stream.pathologies:
            return [int(counts.get(name, 0)) for name in self.class_names]
        return [1] * len(self.class_names)

    def _count(self, stream: Stream) -> int:
        counts = self.manifest.get("counts", {}).get(self.split)
        if isinstance(counts, dict) and counts and not stream.pathologies:
            wanted = stream.lesion_types
            return int(sum(n for name, n in counts.items() if not wanted or name in wanted))
        records = self.records(stream, None)
        return int(records.reduce(np.int64(0), lambda n, _: n + 1))

    @property
    def boxes(self) -> np.ndarray | None:
        """Every box of the primary stream's images ``(N, 4)`` float32 pixels (whole shards only)."""
        if self.whole and self._boxes is None:
            found = [b.numpy() for ex in self.records(self.streams[self.primary]) for b in ex["boxes"]]
            self._boxes = np.asarray([b for b in found if b[2] > b[0]], np.float32).reshape(-1, 4)
        return self._boxes

    # ------------------------------------------------------------------------ pipeline
    def records(self, stream: Stream, input_context=None) -> tf.data.Dataset:
        """Decoded, filtered records of one stream (unbatched dicts), this pipeline's share."""
        from mammogan_tf.data.shards import make_dataset
        from mammogan_tf.data.whole import box_features, padded_boxes

        dataset = make_dataset(self.path, self.split, batch_size=None, shuffle=False, as_dict=True,
                               lesion_types=list(stream.lesion_types) if stream.lesion_types else None,
                               input_context=input_context, extra_features=box_features() if self.whole else None)
        if stream.pathologies:
            wanted = tf.constant(list(stream.pathologies))
            dataset = dataset.filter(lambda ex: tf.reduce_any(tf.equal(ex["pathology"], wanted)))
        names = list(stream.classes or stream.lesion_types or self.classes)
        lookup = np.full(max(len(self.classes), 1), -1, np.int32)
        for position, name in enumerate(names):
            if name in self.classes:
                lookup[self.classes.index(name)] = position
        lookup = tf.constant(lookup)
        size = int(self.patch_size) if self.patch_size else None

        def fields(example):
            image = tf.ensure_shape(example["image"], [size, size, 1])
            out = {"image": image, "label": tf.gather(lookup, example["label"]),
                   "box": tf.cast(example["bbox"], tf.float32),
                   "mask": tf.ensure_shape(_decode_mask(example["mask"], size), [size, size, 1])}
            if self.whole:
                out["boxes"] = padded_boxes(example["boxes"])
            return out

        return dataset.map(fields, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def epoch_seed(self, epoch, stream_index: int):
        """Shuffle seed of ``epoch`` (int or int64 tensor) for stream ``stream_index``."""
        return (tf.cast(epoch, tf.int64) * 7919 + self.seed * 1_000_003 + stream_index * 104_729 + 17) % (2 ** 31 - 1)

    def epoch_batches(self, epoch: tf.Tensor, records: list, batch: int, batches: int) -> tf.data.Dataset:
        """``batches`` dict batches of ``batch`` patches of epoch ``epoch`` (an int64 tensor): every
        stream's records shuffled with its epoch seed, cycled when short."""
        parts = {}
        for index, (name, data) in enumerate(zip(self.streams, records)):
            parts[name] = (data.shuffle(SHUFFLE_BUFFER, seed=self.epoch_seed(epoch, index))
                           .repeat().batch(batch, drop_remainder=True).take(batches))
        return tf.data.Dataset.zip(parts)

    def dataset(self, start_epoch: int, skip_batches: int, batches_per_epoch: int,
                input_context: tf.distribute.InputContext | None = None,
                batch_size: int | None = None) -> tf.data.Dataset:
        """Endless dict batches from epoch ``start_epoch`` on, after skipping ``skip_batches`` of it.

        ``batches_per_epoch``: batches one pipeline yields per epoch (its replicas' share of the
        steps of an epoch); every stream cycles within an epoch when it has fewer records.
        ``batch_size``: the global batch (default: the constructor's).
        """
        self.builds += 1
        _avoid_zero_global_seed()
        batch = batch_size or self.batch_size
        if input_context is not None:
            batch = input_context.get_per_replica_batch_size(batch)
        records = []
        for name, stream in self.streams.items():
            data = self.records(stream, input_context)
            records.append(data.cache() if self.cache else data)

        dataset = tf.data.Dataset.range(start_epoch, 2 ** 62).flat_map(
            lambda e: self.epoch_batches(e, records, batch, batches_per_epoch))
        if skip_batches:
            dataset = dataset.skip(skip_batches)
        return dataset.prefetch(tf.data.AUTOTUNE)


class RandomBatches:
    """Random dict batches in [-1, 1] for throughput benchmarks (no files read): the
    ``TrainingData`` interface over ``streams`` of ``image_size`` px patches."""

    def __init__(self, streams: dict[str, Stream], image_size: int, batch_size: int, num_classes: int = 1,
                 seed: int = 0):
        rng = np.random.default_rng(seed)
        self.streams, self.batch_size = dict(streams), batch_size
        self.primary = next(iter(self.streams))
        self.patch_size, self.num_examples, self.path = image_size, 10 ** 9, None
        self.class_names = [str(i) for i in range(max(num_classes, 1))]
        self.class_counts = [1] * len(self.class_names)
        self._batch = {"image": rng.uniform(-1, 1, (batch_size, image_size, image_size, 1)).astype(np.float32),
                       "label": rng.integers(0, max(num_classes, 1), batch_size).astype(np.int32),
                       "box": np.full((batch_size, 4), -1, np.float32),
                       "mask": np.zeros((batch_size, image_size, image_size, 1), np.float32)}
        self.builds = 0

    def dataset(self, start_epoch, skip_batches, batches_per_epoch, input_context=None,
                batch_size=None) -> tf.data.Dataset:
        self.builds += 1
        batch = batch_size or self.batch_size
        if input_context is not None:
            batch = input_context.get_per_replica_batch_size(batch)
        one = {name: {k: np.resize(v, (batch,) + v.shape[1:]) for k, v in self._batch.items()}
               for name in self.streams}
        return tf.data.Dataset.from_tensors(one).repeat()
