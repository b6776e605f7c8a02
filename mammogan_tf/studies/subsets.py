"""Patch sets chosen by a study (a fold, a k-positive subset) written as shard folders that read
like a prepare output: ``manifest.json`` with ``splits``, ``counts``, ``classes``,
``patch_size`` and ``patients`` (patient -> split), stage ``subset``, the source manifest as input.

``read_records(manifest)`` lists every record of a prepare manifest once with its metadata, so
that a study can pick records by patient and class without decoding images.
"""
from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import tensorflow as tf

from mammogan_tf.data.shards import FEATURES, ShardWriter
from mammogan_tf.data.table import LESION_TYPES
from mammogan_tf.errors import InputError
from mammogan_tf.manifest import MANIFEST_NAME, build_manifest, input_record, partial_dir, publish, read_manifest
from mammogan_tf.manifest import write_json_atomic

META = ("lesion_type", "patient_id", "image_id", "pathology", "kind")


def read_records(manifest_path: str | os.PathLike, splits: Iterable[str] | None = None) -> list[dict]:
    """Every record of ``splits`` (default all) of a manifest: ``{"record": bytes, "split", and the
    META fields as str}``, in file order."""
    manifest = read_manifest(manifest_path)
    names = list(splits) if splits is not None else sorted(manifest.get("splits", {}))
    meta_features = {k: FEATURES[k] for k in META}
    out = []
    for split in names:
        for name in manifest["splits"].get(split, []):
            for raw in tf.data.TFRecordDataset(str(Path(manifest["root"]) / name)):
                parsed = tf.io.parse_single_example(raw, meta_features)
                out.append({"record": raw.numpy(), "split": split,
                            **{k: parsed[k].numpy().decode("utf-8") for k in META}})
    if not out:
        raise InputError(f"{manifest['root']}/{MANIFEST_NAME}: no records in splits {names}")
    return out


def write_subset(out_dir: str | os.PathLike, records: Mapping[str, list[dict]], *, patch_size: int,
                 source: str | os.PathLike | None = None, per_shard: int = 1024, extra: dict | None = None) -> dict:
    """Write ``records`` (split -> records from :func:`read_records`) as a shard folder; returns
    the manifest. A patient may appear in one split only (``InputError`` otherwise)."""
    out_dir = Path(out_dir)
    staging = partial_dir(out_dir)
    shutil.rmtree(staging, ignore_errors=True)
    patients: dict[str, str] = {}
    counts: dict[str, dict] = {}
    splits: dict[str, list[str]] = {}
    for split, items in records.items():
        for item in items:
            other = patients.setdefault(item["patient_id"], split)
            if other != split:
                raise InputError(f"{out_dir}: patient {item['patient_id']} is in splits {other} and {split}")
        with ShardWriter(staging / "shards", split, per_shard=per_shard) as writer:
            for item in items:
                writer.write(item["record"])
        splits[split] = [f"shards/{f}" for f in writer.files]
        counts[split] = dict(sorted(Counter(item["lesion_type"] for item in items).items()))
    files = [f for names in splits.values() for f in names]
    manifest = build_manifest("subset", staging, config={"per_shard": per_shard, **(extra or {})},
                              inputs=[input_record(Path(source) / MANIFEST_NAME if Path(source).is_dir() else source)]
                              if source else [], counts=counts, files=files,
                              extra={"splits": splits, "classes": list(LESION_TYPES), "patch_size": int(patch_size),
                                     "patients": patients})
    write_json_atomic(staging / MANIFEST_NAME, manifest)
    publish(staging, out_dir)
    return read_manifest(out_dir)


def synthetic_records(images: np.ndarray, lesion_type: str, seed: int = 0) -> list[dict]:
    """Records of marked synthetic patches ``(N, S, S)`` float in [0, 1] (tests and CAS sets)."""
    from mammogan_tf.data.shards import serialize_patch

    return [{"record": serialize_patch(img, label=LESION_TYPES.index(lesion_type), lesion_type=lesion_type,
                                       pathology="unknown", patient_id="SYNTHETIC", image_id=f"syn-{seed}-{i}",
                                       kind="lesion", synthetic=True, provenance={"seed": seed, "index": i}),
             "split": "train", "lesion_type": lesion_type, "patient_id": "SYNTHETIC", "image_id": f"syn-{seed}-{i}",
             "pathology": "unknown", "kind": "lesion"} for i, img in enumerate(images)]
