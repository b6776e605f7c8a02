"""The ``synthesize`` stage: a finished training run -> N marked synthetic patches.

Output folder (built in ``<out>.partial`` and renamed into place when complete)::

    manifest.json     stage "synthesize": the run manifest and checkpoint (path + sha256) as
                      inputs, the settings, counts per class, sha256 of every file, and for
                      shards the same keys as a prepare manifest (``splits`` {"train": [...]},
                      ``classes``, ``patch_size``, ``counts`` {"train": {...}}) so that
                      ``make_dataset`` and ``train.data`` read it like prepared data
    shards/train-NNNNN.tfrecord | synthetic-<class>-NNNNNNN.png | .dcm
"""
from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

from tqdm.auto import tqdm

from mammogan_tf.data.table import LESION_TYPES
from mammogan_tf.errors import ConfigError
from mammogan_tf.manifest import (MANIFEST_NAME, build_manifest, input_record, partial_dir, publish,
                                  write_json_atomic)
from mammogan_tf.synthesis.export import DicomSeries, provenance, to_unit, write_png
from mammogan_tf.synthesis.sampling import generate_batches, load_generator

FORMATS = ("shards", "png", "dicom")
RECORDS_PER_SHARD = 4096


class _ShardOutput:
    """Records of ``data.shards`` with ``synthetic=1`` and the provenance JSON."""

    def __init__(self, folder: Path, loaded, split: str = "train"):
        from mammogan_tf.data.shards import ShardWriter

        self.writer = ShardWriter(folder / "shards", split, per_shard=RECORDS_PER_SHARD)
        self.prefix = f"synthetic-{loaded.sha256[:12]}"

    def write(self, index: int, pixels, lesion_type: str, record: dict, **fields) -> None:
        """``fields`` override the record's defaults (patient_id "SYNTHETIC", kind "lesion", no
        box, origin or mask; contextual patches keep their source's patient, origin and mask)."""
        from mammogan_tf.data.shards import serialize_patch

        kind = lesion_type if lesion_type in LESION_TYPES else "other"
        values = {"pathology": "unknown", "patient_id": "SYNTHETIC", "kind": "lesion", **fields}
        self.writer.write(serialize_patch(
            pixels, label=LESION_TYPES.index(kind), lesion_type=kind,
            image_id=self.image_id(record["seed"], index), synthetic=True, provenance=record, **values))

    def image_id(self, seed: int, index: int) -> str:
        return f"{self.prefix}-{seed}-{index:07d}"

    def finish(self) -> list[str]:
        self.writer.close_shard()
        return [f"shards/{name}" for name in self.writer.files]


class _FileOutput:
    """One PNG or DICOM file per patch, ``synthetic-<class>-<index>.<ext>``."""

    def __init__(self, folder: Path, loaded, fmt: str):
        self.folder, self.files = folder, []
        self.series = DicomSeries(f"{loaded.model_config.family} lesion patches") if fmt == "dicom" else None

    def write(self, index: int, pixels, lesion_type: str, record: dict, **fields) -> None:
        """``fields`` (shard-only record fields) are ignored: the provenance carries them."""
        name = f"synthetic-{lesion_type}-{index:07d}.{'dcm' if self.series else 'png'}"
        if self.series is not None:
            self.series.write(self.folder / name, pixels, record, number=index + 1)
        else:
            write_png(self.folder / name, pixels, record)
        self.files.append(name)

    def finish(self) -> list[str]:
        return self.files


def generator_inputs(loaded, run_dir, model_dir) -> list[dict]:
    """Manifest input records of the generator: the export's manifest and Keras file, or the run's
    manifest and checkpoint (with the generator's sha256)."""
    if model_dir is not None:
        from mammogan_tf.synthesis.model_export import export_inputs

        return export_inputs(model_dir, loaded)
    return [input_record(Path(run_dir) / MANIFEST_NAME),
            {**input_record(loaded.checkpoint + ".index"), "generator_sha256": loaded.sha256}]


def generator_settings(run_dir, model_dir, checkpoint: str) -> dict:
    """The manifest settings naming the generator: ``{"model": EXPORT}`` or ``{"run", "checkpoint"}``."""
    if model_dir is not None:
        return {"model": str(Path(model_dir).resolve())}
    return {"run": str(Path(run_dir).resolve()), "checkpoint": checkpoint}


def run_synthesize(run_dir: str | os.PathLike | None, n: int | None, out_dir: str | os.PathLike, *,
                   fmt: str = "shards", checkpoint: str = "best", class_name: str | int | None = None, seed: int = 0,
                   batch_size: int = 64, progress: bool = True, model_dir: str | os.PathLike | None = None,
                   source: str | os.PathLike | None = None, split: str | None = None,
                   reinsert: str | os.PathLike | None = None, boxes: str | os.PathLike | None = None,
                   preview: str | os.PathLike | None = None) -> dict:
    """Generate ``n`` patches from ``run_dir``'s ``checkpoint`` (or from the ``mammogan export``
    folder ``model_dir`` instead) into ``out_dir`` as ``fmt``; returns the manifest. Image ``i``
    depends only on (checkpoint, seed, i[, class]): an export gives the run's pixels and provenance.
    A contextual run reads real patches from ``source`` (``--from``; at most ``n``, all when None)
    of ``split``, may ``reinsert`` them into full images and draw a ``preview`` contact sheet
    (``contextual_stage``). A cPGGAN run makes whole images with lesions in sampled boxes or the
    ``boxes`` CSV's (``boxed``)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    if (n is not None and n < 1) or batch_size < 1:
        raise ConfigError(f"--n {n} / --batch-size {batch_size}: both must be >= 1")
    if (run_dir is None) == (model_dir is None):
        raise ConfigError("give either --run or --model")
    if model_dir is not None:
        from mammogan_tf.synthesis.model_export import load_export

        loaded = load_export(model_dir)
    else:
        loaded = load_generator(run_dir, checkpoint)
    if loaded.model_config.family == "contextual":
        if source is None:
            raise ConfigError("a contextual generator synthesizes from real patches: give --from "
                              "PREPARE_DIR_OR_PNG_FOLDER")
        from mammogan_tf.synthesis.contextual_stage import DEFAULT_SPLIT, run_contextual_synthesize

        return run_contextual_synthesize(loaded, source, out_dir, run_dir=run_dir, model_dir=model_dir,
                                         checkpoint=checkpoint,
                                         split=split or DEFAULT_SPLIT, n=n, seed=seed, fmt=fmt,
                                         batch_size=batch_size, reinsert_from=reinsert, preview=preview,
                                         progress=progress)
    if preview is not None:
        raise ConfigError(f"--preview applies to contextual runs; {run_dir or model_dir} holds a "
                          f"{loaded.model_config.family} generator")
    if boxes is not None and loaded.model_config.family != "cpggan":
        raise ConfigError(f"--boxes applies to cpggan runs; {run_dir or model_dir} holds a "
                          f"{loaded.model_config.family} generator")
    if loaded.model_config.family == "cpggan":
        if run_dir is None or source is not None or reinsert is not None:
            raise ConfigError("a cpggan run synthesizes whole images: give --run RUN with --n N and/or --boxes FILE "
                              "(not --model, --from or --reinsert)")
        from mammogan_tf.synthesis.boxed import run_boxed_synthesize

        return run_boxed_synthesize(loaded, n, out_dir, run_dir=run_dir, checkpoint=checkpoint, seed=seed, fmt=fmt,
                                    batch_size=batch_size, boxes_file=boxes, progress=progress)
    if source is not None or reinsert is not None:
        raise ConfigError(f"--from / --reinsert apply to contextual runs; {run_dir or model_dir} holds a "
                          f"{loaded.model_config.family} generator (it samples latents: give --n)")
    if n is None:
        raise ConfigError("--n: how many patches to generate")
    class_index = loaded.class_index(class_name)
    staging = partial_dir(out_dir)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    output = _ShardOutput(staging, loaded) if fmt == "shards" else _FileOutput(staging, loaded, fmt)
    counts: Counter = Counter()
    with tqdm(total=n, unit="img", desc="synthesize", disable=not progress) as bar:
        for indices, images, labels in generate_batches(loaded, n, seed, class_index, batch_size):
            for k, index in enumerate(indices):
                label = None if labels is None else int(labels[k])
                lesion_type = loaded.class_name(label)
                output.write(int(index), to_unit(images[k]), lesion_type,
                             provenance(loaded, seed, index, lesion_type, label))
                counts[lesion_type] += 1
            bar.update(len(indices))
    files = output.finish()
    settings = {**generator_settings(run_dir, model_dir, checkpoint), "n": n, "class": class_name, "seed": seed, "format": fmt, "batch_size": batch_size}
    inputs = generator_inputs(loaded, run_dir, model_dir)
    extra = {"generator_sha256": loaded.sha256, "checkpoint_step": loaded.step, "format": fmt, "synthetic": True,
             "classes": list(LESION_TYPES), "patch_size": loaded.model_config.image_size}
    if fmt == "shards":
        extra["splits"] = {"train": files}
    manifest = build_manifest("synthesize", staging, config=settings, inputs=inputs,
                              counts={"train": dict(counts)} if fmt == "shards" else dict(counts),
                              files=files, extra=extra)
    write_json_atomic(staging / MANIFEST_NAME, manifest)
    publish(staging, out_dir)
    return manifest
