"""``prepare`` with ``patches.mode: whole`` (Han et al. 2019): one sample per image, the breast
region cropped to a square and resized to ``patches.output_size`` (or ``size``), with every
lesion box transformed exactly, for the detector and the box-conditioned PGGAN.

The square crop: side = the longer side of the breast mask's bounding box, centred on it and
moved inside the image where it fits (zero padding where it does not). A box maps by
``x' = (x - x0) * size / side`` (continuous pixel coordinates, ``(x1, y1)`` exclusive), which is
exactly where ``cv2.INTER_AREA`` puts its pixels.

Records are ordinary shard records (``data.shards.FEATURES``: ``bbox`` = the first box, kind
``whole``) plus two list fields that older readers ignore: ``boxes`` (4 G floats) and
``box_types`` (G lesion-type names). ``read_detection_set`` reads them back.
No TensorFlow at import time: ``whole_records`` runs in prepare's worker processes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from mammogan_tf.data.preprocess import box_from_mask
from mammogan_tf.data.sampling import crop, resize_patch

WHOLE_FIELDS = ("boxes", "box_types")
MAX_BOXES = 16
"""Boxes per image in a training batch's ``boxes`` field (``padded_boxes``); more are dropped."""


@dataclass
class DetectionSet:
    """Whole images with all their boxes: ``images (N, S, S, C) float32 in [-1, 1]``, ``boxes[i]``
    ``(G_i, 4)`` float32 (x0, y0, x1, y1) pixels, ``classes[i]`` ``(G_i,)`` int32."""

    images: np.ndarray
    boxes: list
    classes: list
    ids: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


def square_region(breast: np.ndarray) -> tuple[int, int, int]:
    """``(x0, y0, side)``: the square crop around the breast mask ``(H, W) bool`` (module docstring)."""
    height, width = breast.shape
    box = box_from_mask(breast) or (0, 0, width, height)
    side = max(box[2] - box[0], box[3] - box[1])
    origin = []
    for lo, hi, extent in ((box[0], box[2], width), (box[1], box[3], height)):
        start = (lo + hi - side) // 2
        origin.append(int(np.clip(start, 0, extent - side)) if side <= extent else start)
    return origin[0], origin[1], int(side)


def transform_boxes(boxes, x0: float, y0: float, side: float, size: int) -> np.ndarray:
    """Image-pixel boxes ``(G, 4)`` -> boxes in the ``size`` px resized crop, clipped to it."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    out = (b - np.array([x0, y0, x0, y0])) * (size / side)
    return np.clip(out, 0, size).astype(np.float32)


def whole_sample(image: np.ndarray, breast: np.ndarray, lesions: Sequence[Mapping[str, Any]], size: int,
                 lesion_types: Sequence[str]) -> dict:
    """One image -> ``{"pixels": (size, size) float32 in [0, 1], "boxes": (G, 4), "types": [G
    names], "pathologies": [...], "origin": (x0, y0, x1, y1) of the crop, "scale": size / side}``,
    keeping lesions of ``lesion_types`` that still have area after the crop."""
    x0, y0, side = square_region(breast)
    pixels = resize_patch(crop(image, x0, y0, side), size)
    kept = [d for d in lesions if d["lesion_type"] in lesion_types]
    boxes = transform_boxes([[d["x0"], d["y0"], d["x1"], d["y1"]] for d in kept], x0, y0, side, size)
    has_area = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    kept = [d for d, ok in zip(kept, has_area) if ok]
    return {"pixels": pixels, "boxes": boxes[has_area], "types": [d["lesion_type"] for d in kept],
            "pathologies": [d["pathology"] for d in kept], "origin": (x0, y0, x0 + side, y0 + side),
            "scale": size / side}


def _is_synthetic(findings) -> bool:
    """Whether a table marks the image synthetic (``synthetic`` column true, e.g. synthesize's tables)."""
    return any(str(f.get("synthetic")).strip().lower() in ("true", "1", "1.0", "yes") for f in findings)


def whole_records(image, breast, lesions, patches_config, job) -> list[dict]:
    """prepare's record fields (``serialize_record``) of one image in whole mode; ``synthetic`` when
    the table's ``synthetic`` column says so."""
    from mammogan_tf.data.codec import encode_png16
    from mammogan_tf.data.table import label_of

    size = patches_config.output_size or patches_config.size
    sample = whole_sample(image, breast, lesions, size, patches_config.lesion_types)
    first = sample["types"][0] if sample["types"] else "normal"
    return [{"image_png": encode_png16(sample["pixels"]), "height": size, "width": size,
             "label": label_of(first), "lesion_type": first,
             "pathology": sample["pathologies"][0] if sample["pathologies"] else "unknown",
             "patient_id": job.patient_id, "image_id": job.image_id, "kind": "whole",
             "bbox": tuple(sample["boxes"][0]) if len(sample["boxes"]) else None,
             "origin": sample["origin"], "boxes": sample["boxes"].reshape(-1).tolist(),
             "box_types": sample["types"], "synthetic": _is_synthetic(job.findings)}]


def serialize_record(record: dict) -> bytes:
    """``data.shards.serialize_encoded`` of a record, plus the whole-mode list fields when present."""
    import tensorflow as tf

    from mammogan_tf.data.shards import serialize_encoded

    record = dict(record)
    extra = {name: record.pop(name) for name in WHOLE_FIELDS if name in record}
    data = serialize_encoded(**record)
    if not extra:
        return data
    example = tf.train.Example.FromString(data)
    example.features.feature["boxes"].float_list.value.extend(float(v) for v in extra["boxes"])
    example.features.feature["box_types"].bytes_list.value.extend(t.encode() for t in extra["box_types"])
    return example.SerializeToString(deterministic=True)


def box_features() -> dict:
    """The whole-mode list fields as ``tf.io`` features (``make_dataset(extra_features=...)``)."""
    import tensorflow as tf

    return {"boxes": tf.io.VarLenFeature(tf.float32), "box_types": tf.io.VarLenFeature(tf.string)}


def padded_boxes(boxes, max_boxes: int = MAX_BOXES):
    """A parsed ``boxes`` field (sparse, 4 G floats) -> ``(max_boxes, 4)`` float32, the first G
    boxes then rows of -1 (no box; ``models.pggan.box_masks`` draws nothing for them)."""
    import tensorflow as tf

    dense = tf.reshape(tf.sparse.to_dense(boxes), [-1, 4])[:max_boxes]
    return tf.ensure_shape(tf.pad(dense, [[0, max_boxes - tf.shape(dense)[0]], [0, 0]], constant_values=-1.0),
                           [max_boxes, 4])


def has_boxes(shard_file) -> bool:
    """Whether the first record of a shard file carries the whole-mode ``boxes`` field. Read with
    plain file I/O (TFRecord framing: uint64 length, uint32 CRC, payload, uint32 CRC), not
    ``tf.data``: eager TensorFlow ops before a ``MultiWorkerMirroredStrategy`` is built would
    initialise the runtime too early for its collective ops."""
    import struct

    from tensorflow.core.example.example_pb2 import Example

    with open(shard_file, "rb") as handle:
        header = handle.read(12)
        if len(header) < 12:
            return False
        (length,) = struct.unpack("<Q", header[:8])
        payload = handle.read(length)
    return "boxes" in Example.FromString(payload).features.feature


def read_detection_set(manifest_dir, split: str, class_names: Sequence[str] = ("lesion",)) -> DetectionSet:
    """All whole-mode records of ``split`` as a ``DetectionSet``. With one class every lesion is
    class 0; otherwise ``class_names`` are lesion types and other types are dropped."""
    import tensorflow as tf

    from mammogan_tf.data.shards import FEATURES, _decode_image, split_files
    from mammogan_tf.errors import InputError
    from mammogan_tf.manifest import read_manifest

    manifest = read_manifest(manifest_dir)
    spec = {**FEATURES, "boxes": tf.io.VarLenFeature(tf.float32), "box_types": tf.io.VarLenFeature(tf.string)}
    images, boxes, classes, ids = [], [], [], []
    for record in tf.data.TFRecordDataset(split_files(manifest, split)):
        example = tf.io.parse_single_example(record, spec)
        if example["kind"].numpy() != b"whole":
            raise InputError(f"{manifest_dir}: split {split} holds {example['kind'].numpy().decode()} "
                             "patches; prepare it with patches.mode: whole")
        b = tf.sparse.to_dense(example["boxes"]).numpy().reshape(-1, 4)
        types = [t.decode() for t in tf.sparse.to_dense(example["box_types"]).numpy()]
        if len(class_names) == 1:
            keep, labels = np.ones(len(types), bool), np.zeros(len(types), np.int32)
        else:
            keep = np.array([t in class_names for t in types], bool)
            labels = np.array([list(class_names).index(t) for t in types if t in class_names], np.int32)
        images.append(_decode_image(example["image"]).numpy())
        boxes.append(b[keep] if len(b) else np.zeros((0, 4), np.float32))
        classes.append(labels)
        ids.append(example["image_id"].numpy().decode())
    if not images:
        raise InputError(f"{manifest_dir}: split {split} has no records")
    return DetectionSet(np.stack(images), boxes, classes, ids)
