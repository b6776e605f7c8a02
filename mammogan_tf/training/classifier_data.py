"""Input pipelines of a classifier run: the task's classes, mixed training stream, eval sets.

A task groups lesion types into classes, e.g. ``{"normal": ["normal"], "mass": ["mass"]}``
(binary: class 0 = negative, class 1 = positive) or one class per lesion type (multi-class).
Elements are dicts ``{"image": (S, S, 1) float32 in [-1, 1], "label": () int32 class index,
"synthetic": () int32 0/1, "bbox": (4,) float32, "patient_id": () string}``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import tensorflow as tf

from mammogan_tf.data.shards import make_dataset
from mammogan_tf.errors import ConfigError, InputError
from mammogan_tf.manifest import manifest_path, read_manifest
from mammogan_tf.training.classifier_augment import augment_dataset
from mammogan_tf.training.mixing import MixingConfig, Source, mixed_dataset

KEYS = ("image", "label", "synthetic", "bbox", "patient_id")


def _element(class_of: dict[int, int], size: int, pathologies: Sequence[str] | None):
    table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
        tf.constant(list(class_of), tf.int32), tf.constant(list(class_of.values()), tf.int32)), -1)
    wanted_pathologies = tf.constant(list(pathologies or []), tf.string)

    def keep(ex):
        ok = table.lookup(ex["label"]) >= 0
        if pathologies:
            lesion_ok = tf.reduce_any(tf.equal(ex["pathology"], wanted_pathologies))
            ok = ok & (tf.equal(ex["lesion_type"], "normal") | lesion_ok)
        return ok

    def convert(ex):
        image = ex["image"]
        if image.shape[0] != size:
            image = tf.image.resize(image, (size, size), method="bilinear")
        return {"image": tf.ensure_shape(image, (size, size, 1)), "label": table.lookup(ex["label"]),
                "synthetic": tf.cast(ex["synthetic"], tf.int32), "bbox": ex["bbox"], "patient_id": ex["patient_id"]}

    return keep, convert


class TaskData:
    """The datasets of one classifier run.

    ``classes``: class name -> lesion types; ``manifest``: real prepare (or subset) manifest;
    ``pathologies``: keep lesions of these pathologies only (normals always kept);
    ``size``: model input side.
    """

    def __init__(self, manifest: str, classes: dict[str, list[str]], size: int,
                 pathologies: Sequence[str] | None = None):
        self.path = manifest_path(manifest)
        self.info = read_manifest(self.path)
        self.class_names = list(classes)
        self.classes, self.size, self.pathologies = classes, size, pathologies
        known = self.info.get("classes", [])
        unknown = sorted({t for ts in classes.values() for t in ts} - set(known))
        if unknown:
            raise ConfigError(f"train.task.classes: unknown lesion types {unknown}; {self.path} has {known}")

    def _class_of(self, manifest: dict) -> dict[int, int]:
        types = manifest.get("classes", [])
        return {types.index(t): c for c, name in enumerate(self.class_names) for t in self.classes[name] if t in types}

    def count(self, manifest: dict, split: str, class_index: int) -> int:
        counts = manifest.get("counts", {}).get(split, {})
        return int(sum(counts.get(t, 0) for t in self.classes[self.class_names[class_index]]))

    def stream(self, manifest: Path, split: str | list[str], class_index: int | None, *, shuffle: bool,
               repeat: bool, seed: int, originals_only: bool = False) -> tf.data.Dataset:
        """Unbatched elements of one split (of one class when ``class_index`` is given); with
        ``originals_only`` only each lesion's original patch (``copy_index`` 0), as validation
        and test sets must hold every real lesion once."""
        info = read_manifest(manifest)
        class_of = self._class_of(info)
        if class_index is not None:
            class_of = {k: v for k, v in class_of.items() if v == class_index}
        keep, convert = _element(class_of or {-2: -1}, self.size, self.pathologies)
        types = [info["classes"][k] for k in class_of] or None
        dataset = make_dataset(manifest, split, None, shuffle=shuffle, repeat=repeat, seed=seed, as_dict=True,
                               lesion_types=types, shuffle_buffer=2048)
        if originals_only:
            dataset = dataset.filter(lambda example: tf.equal(example["copy_index"], 0))
        return dataset.filter(keep).map(convert, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def training(self, split, mixing: MixingConfig, augment: str, seed: int, start: int
                 ) -> tuple[tf.data.Dataset, list[Source]]:
        """The infinite mixed training stream starting at sample ``start`` and its sources."""
        sources = []
        for c, name in enumerate(self.class_names):
            n = self.count(self.info, split, c)
            if n == 0:
                raise InputError(f"{self.path}: split '{split}' holds no patches of class '{name}' "
                                 f"({', '.join(self.classes[name])})")
            real = self.stream(self.path, split, c, shuffle=True, repeat=True, seed=seed + c)
            sources.append(Source(augment_dataset(real, augment, seed + c), c, False, n, f"real/{name}"))
        for k, folder in enumerate(mixing.synthetic):
            path = manifest_path(folder)
            manifest = read_manifest(path)
            for c, name in enumerate(self.class_names):
                n = self.count(manifest, "train", c)
                if n:
                    syn = self.stream(path, "train", c, shuffle=True, repeat=True, seed=seed + 100 * (k + 1) + c)
                    sources.append(Source(syn, c, True, n, f"synthetic{k}/{name}"))
            if not any(s.synthetic and s.name.startswith(f"synthetic{k}/") for s in sources):
                raise InputError(f"{path}: no synthetic patches of the task's classes {self.class_names}")
        share_classes = None
        if mixing.per_class is not None:
            bad = sorted(set(mixing.per_class) - set(self.class_names))
            if bad:
                raise ConfigError(f"train.mixing.per_class: {bad} are not task classes {self.class_names}")
            share_classes = [self.class_names.index(c) for c in mixing.per_class]
        mixed = mixed_dataset(sources, len(self.class_names), mixing.share, seed=seed, start=start,
                              balance=mixing.balance, share_classes=share_classes)
        return mixed, sources

    def evaluation(self, split: str, batch_size: int) -> tf.data.Dataset | None:
        """Batched elements of ``split`` in a fixed order, each real lesion once (its original patch;
        augmented copies are for training only), or None when the split is absent/empty."""
        if not self.info.get("splits", {}).get(split):
            return None
        return self.stream(self.path, split, None, shuffle=False, repeat=False, seed=0,
                           originals_only=True).batch(batch_size)


def collect(model, dataset: tf.data.Dataset | None) -> dict[str, np.ndarray] | None:
    """Run ``model`` over a batched eval dataset: labels (N,), logits (N, C), patient ids (N,),
    features are not kept. None when the dataset is None or empty."""
    if dataset is None:
        return None
    labels, logits, patients = [], [], []
    for batch in dataset:
        labels.append(batch["label"].numpy())
        logits.append(np.asarray(model(batch["image"], training=False)))
        patients.append(batch["patient_id"].numpy())
    if not labels:
        return None
    return {"labels": np.concatenate(labels), "logits": np.concatenate(logits),
            "patients": np.concatenate(patients).astype(str)}
