"""The ``synthesize`` stage for a cPGGAN run (Han et al. 2019): whole (downsampled) mammograms with
lesions drawn in requested boxes, and their lesion table.

    mammogan synthesize --run CPGGAN_RUN --n N [--boxes FILE.csv] [--format shards|png|dicom] --out DIR

Output folder (built in ``<out>.partial`` and renamed into place when complete)::

    manifest.json                 stage "synthesize": inputs (run manifest, checkpoint, the run's
                                  training data or the boxes CSV), settings, counts (boxes per
                                  lesion type), ``images``, ``boxes``, sha256 of every file; with
                                  shards the keys of a prepare manifest (``splits`` {"train"},
                                  ``classes``, ``patch_size``, ``counts`` {"train": {...}})
    synthetic-NNNNNNN.png | .dcm  S x S images, marked synthetic, provenance (with the boxes) inside
    lesions.csv                   the lesion table, one row per box in image pixels: ``synthetic``
                                  and ``synthetic_lesion`` true, ``generator_sha256``, ``seed``,
                                  ``latent_index``, ``mask_source_image_id``, ``in_breast`` (share
                                  of the box inside the generated image's own breast mask: G
                                  draws the breast, the real mask does not bind it); ``patient_id``
                                  "SYNTHETIC" (no patient identifier of any source image)
    shards/train-NNNNN.tfrecord   (--format shards) whole-image records with every box (``kind``
                                  whole, ``synthetic`` 1, provenance): ``detect`` reads the folder
                                  in ``data.synthetic``, ``mammogan-train`` in ``train.data``

``mammogan prepare --format table --annotations DIR/lesions.csv --images DIR`` with
``patches.mode: whole`` reads the images back like any other table; all rows are one pseudo-patient
"SYNTHETIC", so prepare puts them in one split (train under the default fractions; set
``split.fractions`` [1, 0, 0] to be explicit) and marks the records synthetic.

Boxes of image ``i`` come from a generator seeded ``(seed, i)`` (image ``i`` does not depend on
``--n`` or batching), in pixels of the ``image_size`` output:

- sampled (default): a training image of the run's data (its ``train.data`` manifest and split,
  images with at least one box) is drawn; its breast mask (``data.preprocess.breast_mask``, as
  prepare computes it) is where the boxes may go; it gives the number of boxes; each box takes the
  size, aspect and lesion type of a random training box and a position where it lies wholly inside
  the mask without overlapping the others (``data.boxes.boxes_in_mask``);
- ``--boxes FILE``: columns ``image, x0, y0, x1, y1[, lesion_type]`` (``data.boxes.read_box_csv``);
  one output image per distinct ``image`` value, in order; ``--n`` takes the first N.
"""
from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mammogan_tf.data.table import LESION_TYPES
from mammogan_tf.errors import ConfigError, InputError
from mammogan_tf.manifest import MANIFEST_NAME, build_manifest, input_record, partial_dir, publish, write_json_atomic
from mammogan_tf.synthesis.export import DicomSeries, provenance, to_unit, write_png
from mammogan_tf.synthesis.full_images import TABLE_NAME

PATIENT = "SYNTHETIC"


class TrainingBoxes:
    """The run's training images with boxes: where sampled boxes go and what they look like."""

    def __init__(self, loaded):
        from mammogan_tf.data.whole import read_detection_set

        data = loaded.run_manifest["config"]["train"]["data"]
        self.path = Path(data["manifest"])
        if not (self.path / MANIFEST_NAME).is_file():
            raise InputError(f"{self.path}: the training data of {loaded.run_dir} is gone; boxes are sampled inside "
                             "its breast masks: restore it, or give --boxes FILE.csv")
        types = list(LESION_TYPES[1:])
        found = read_detection_set(self.path, data.get("split") or "train", types)
        keep = [i for i, b in enumerate(found.boxes) if len(b)]
        if not keep:
            raise InputError(f"{self.path}: no training image has a lesion box to learn box sizes from; give --boxes")
        self.images, self.ids = found.images[keep], [found.ids[i] for i in keep]
        self.counts = [len(found.boxes[i]) for i in keep]
        self.boxes = np.concatenate([found.boxes[i] for i in keep])
        self.types = [types[c] for i in keep for c in found.classes[i]]
        self._masks: dict[int, np.ndarray] = {}

    def mask(self, index: int) -> np.ndarray:
        """Breast mask ``(S, S) bool`` of training image ``index`` (computed once)."""
        from mammogan_tf.data.preprocess import breast_mask

        if index not in self._masks:
            self._masks[index] = breast_mask((self.images[index][..., 0] + 1.0) / 2.0)
        return self._masks[index]

    def draw(self, rng: np.random.Generator) -> dict:
        """One image's boxes: ``{"boxes" (G, 4), "types", "mask_source"}`` (module docstring)."""
        from mammogan_tf.data.boxes import box_sides, boxes_in_mask

        source = int(rng.integers(0, len(self.images)))
        sides, picks = box_sides(self.boxes, self.counts[source], self.images.shape[1], rng)
        boxes = boxes_in_mask(sides, self.mask(source), rng)
        return {"boxes": boxes, "types": [self.types[p] for p in picks[:len(boxes)]],
                "mask_source": self.ids[source]}


def _plans(loaded, n: int | None, seed: int, boxes_file) -> list[dict]:
    size = loaded.model_config.image_size
    if boxes_file is not None:
        from mammogan_tf.data.boxes import read_box_csv

        plans = [{**g, "mask_source": None} for g in read_box_csv(boxes_file, size, "mass")]
        return plans[:n] if n is not None else plans
    if n is None:
        raise ConfigError("--n: how many images to generate (or --boxes FILE.csv)")
    source = TrainingBoxes(loaded)
    if source.images.shape[1] != size:
        raise InputError(f"{source.path}: {source.images.shape[1]} px images, the generator makes {size} px")
    return [{"name": str(i), **source.draw(np.random.default_rng([seed, i]))} for i in range(n)]


def _images(loaded, plans: list[dict], seed: int, batch_size: int):
    """Yield ``(index, image (S, S) float32 in [0, 1])`` of every plan, in batches."""
    import tensorflow as tf

    from mammogan_tf.models.latents import latent_vectors
    from mammogan_tf.models.pggan import box_masks

    generator, size = loaded.generator, loaded.model_config.image_size
    forward = tf.function(lambda z, m: generator({"latent": z, "mask": m}, training=False), reduce_retracing=True,
                          autograph=False)
    for start in range(0, len(plans), batch_size):
        chunk = plans[start:start + batch_size]
        most = max(len(p["boxes"]) for p in chunk)
        boxes = np.full((len(chunk), most, 4), -1.0, np.float32)
        for k, plan in enumerate(chunk):
            boxes[k, :len(plan["boxes"])] = plan["boxes"]
        z = latent_vectors(generator, seed, start, len(chunk))
        images = forward(tf.constant(z), box_masks(boxes, size)).numpy()
        for k in range(len(chunk)):
            yield start + k, to_unit(images[k])


def _shard_record(pixels, image_id: str, plan: dict, record: dict) -> bytes:
    from mammogan_tf.data.codec import encode_png16
    from mammogan_tf.data.whole import serialize_record

    size = pixels.shape[0]
    first = plan["types"][0] if plan["types"] else "normal"
    return serialize_record({
        "image_png": encode_png16(pixels), "height": size, "width": size, "label": LESION_TYPES.index(first),
        "lesion_type": first, "pathology": "unknown", "patient_id": PATIENT, "image_id": image_id,
        "kind": "whole", "bbox": tuple(plan["boxes"][0]) if len(plan["boxes"]) else None,
        "origin": (0, 0, size, size), "synthetic": True, "provenance": record,
        "boxes": np.asarray(plan["boxes"]).reshape(-1).tolist(), "box_types": list(plan["types"])})


def _share_inside(breast: np.ndarray, box) -> float:
    """Share of the box's pixels inside the GENERATED image's breast mask (G draws the breast
    itself: the real mask that placed the box does not bind it)."""
    x0, y0 = int(np.floor(box[0])), int(np.floor(box[1]))
    x1, y1 = max(int(np.ceil(box[2])), x0 + 1), max(int(np.ceil(box[3])), y0 + 1)
    return round(float(breast[y0:y1, x0:x1].mean()), 4)


def run_boxed_synthesize(loaded, n: int | None, out_dir: str | os.PathLike, *, run_dir, checkpoint: str = "best",
                         seed: int = 0, fmt: str = "shards", batch_size: int = 16,
                         boxes_file: str | os.PathLike | None = None, progress: bool = True) -> dict:
    """Whole images with lesions in boxes from the cPGGAN ``loaded``; returns the manifest."""
    from mammogan_tf.data.preprocess import breast_mask
    from mammogan_tf.data.shards import ShardWriter
    from mammogan_tf.data.table import make_table

    plans = _plans(loaded, n, seed, boxes_file)
    staging = partial_dir(out_dir)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shards = ShardWriter(staging / "shards", "train") if fmt == "shards" else None
    series = DicomSeries("whole mammograms with GAN lesions in boxes") if fmt == "dicom" else None
    rows, files, counts = [], [], Counter()
    boxes_from = "csv" if boxes_file is not None else "sampled"
    with tqdm(total=len(plans), unit="img", desc="synthesize", disable=not progress) as bar:
        for index, pixels in _images(loaded, plans, seed, batch_size):
            plan = plans[index]
            image_id = f"synthetic-{loaded.sha256[:12]}-{seed}-{index:07d}"
            boxes = [[float(v) for v in box] for box in plan["boxes"]]
            record = {**provenance(loaded, seed, index, plan["types"][0] if plan["types"] else "normal", None),
                      "boxes": boxes, "box_types": list(plan["types"]), "boxes_from": boxes_from,
                      "boxes_image": plan["name"], "mask_source_image_id": plan["mask_source"]}
            name = f"synthetic-{index:07d}.{'dcm' if series else 'png'}"
            if series is not None:
                series.write(staging / name, pixels, record, number=index + 1)
            else:
                write_png(staging / name, pixels, record)
            files.append(name)
            if shards is not None:
                shards.write(_shard_record(pixels, image_id, plan, record))
            common = {"image_id": image_id, "patient_id": PATIENT, "path": name, "pathology": "unknown",
                      "synthetic": True, "synthetic_lesion": True, "generator_sha256": loaded.sha256,
                      "seed": seed, "latent_index": index, "mask_source_image_id": plan["mask_source"]}
            breast = breast_mask(pixels)
            for box, kind in zip(boxes, plan["types"]):
                rows.append({**common, "lesion_type": kind, **dict(zip(("x0", "y0", "x1", "y1"), box)),
                             "in_breast": _share_inside(breast, box)})
                counts[kind] += 1
            bar.update()
    make_table(rows).to_csv(staging / TABLE_NAME, index=False, lineterminator="\n")
    files.append(TABLE_NAME)
    extra = {"generator_sha256": loaded.sha256, "checkpoint_step": loaded.step, "format": fmt, "synthetic": True,
             "model_family": loaded.model_config.family, "images": len(plans), "boxes": sum(counts.values()),
             "mean_in_breast": round(float(np.mean([r["in_breast"] for r in rows])), 4) if rows else None,
             "boxes_from": boxes_from, "table": TABLE_NAME, "classes": list(LESION_TYPES),
             "patch_size": loaded.model_config.image_size}
    if shards is not None:
        shards.close_shard()
        extra["splits"] = {"train": [f"shards/{f}" for f in shards.files]}
        files += extra["splits"]["train"]
    from mammogan_tf.synthesis.synthesize import generator_inputs, generator_settings

    inputs = generator_inputs(loaded, run_dir, None)
    inputs.append(input_record(boxes_file) if boxes_file is not None else
                  input_record(Path(loaded.run_manifest["config"]["train"]["data"]["manifest"]) / MANIFEST_NAME))
    settings = {**generator_settings(run_dir, None, checkpoint), "n": n, "seed": seed, "format": fmt,
                "batch_size": batch_size, "boxes": str(Path(boxes_file).resolve()) if boxes_file else None}
    first_image = Counter(p["types"][0] for p in plans if p["types"])
    manifest = build_manifest("synthesize", staging, config=settings, inputs=inputs,
                              counts={"train": dict(first_image)} if shards is not None else dict(counts),
                              files=files, extra=extra)
    write_json_atomic(staging / MANIFEST_NAME, manifest)
    publish(staging, out_dir)
    return manifest
