"""``mammogan prepare``: images + annotations -> patient-split, provenance-tracked patch shards.

Work is cut into units (one split, ``images_per_shard`` consecutive images) and each unit ends as
one shard ``shards/<split>-<nnnnn>.tfrecord`` plus a record ``units/<unit>.json``, both written
atomically inside ``<out>.partial``, by a local process pool or (``runner: beam``) an Apache Beam
pipeline (``beam_runner``). A killed run resumes with the units not yet recorded; when
all are done the manifest is written and the folder renamed into place. Output bytes depend only
on the inputs and the config (per-image random generators), never on the number of workers.
"""
from __future__ import annotations

import gc
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import sys
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from mammogan_tf.data.annotations import Annotations, load_annotations
from mammogan_tf.data.config import PrepareConfig
from mammogan_tf.data.process import ImageJob, process_image
from mammogan_tf.data.report import SUMMARY_KEYS, nothing_written, summarise, write_rejected
from mammogan_tf.data.splits import assign_folds, assign_splits
from mammogan_tf.data.table import LESION_TYPES
from mammogan_tf.errors import ConfigError, InputError
from mammogan_tf.manifest import (
    build_manifest, input_record, partial_dir, publish, sha256_file, write_json_atomic,
)

FINDING_COLUMNS = ("lesion_type", "lesion_labels", "pathology", "x0", "y0", "x1", "y1", "mask_path", "source_line",
                   "synthetic")
"""The lesion-table columns a worker needs for each finding."""


@dataclass
class Plan:
    """What a prepare run will do, decided before any image is read.

    ``split_level``: "patient", or "image" when images without patient identity were split one
    by one (``split.allow_image_level``); ``images_without_patient`` counts them.
    """

    annotations: Annotations
    table: pd.DataFrame
    assignment: dict[str, str]
    units: dict[str, list[ImageJob]]
    split_level: str = "patient"
    images_without_patient: int = 0


def select_images(table, manufacturers: list[str], processed_only: bool):
    """Rows of the images that pass the filters (Alyafi: Hologic Lorad Selenia, processed only).

    ``manufacturers``: case-insensitive substrings of the ``manufacturer`` column; rows with an
    unknown manufacturer are dropped when a filter is set. ``processed_only`` keeps rows whose
    ``processed`` column is true.
    """
    keep = np.ones(len(table), bool)
    if manufacturers:
        names = table["manufacturer"].fillna("").astype(str).str.lower()
        pattern = "|".join(re.escape(m.lower()) for m in manufacturers)
        keep &= names.str.contains(pattern, regex=True).to_numpy()
    if processed_only:
        keep &= (table["processed"] == True).to_numpy()  # noqa: E712 - None/NaN count as not processed
    return table[keep]


def _jobs(table, assignment: dict[str, str], source_file: str) -> list[ImageJob]:
    """One job per image, sorted by image id, findings in table order (column-wise, no per-row pandas)."""
    table = table.assign(image_id=table["image_id"].astype(str)).sort_values("image_id", kind="stable")
    ids = table["image_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.array([], int)
    ends = np.r_[starts[1:], len(ids)]
    columns = [c for c in FINDING_COLUMNS if c in table]
    findings = [dict(zip(columns, values)) for values in zip(*(table[c].tolist() for c in columns))]
    patients, paths = table["patient_id"].astype(str).tolist(), table["path"].astype(str).tolist()
    return [ImageJob(image_id=ids[s], patient_id=patients[s], path=paths[s], split=assignment[patients[s]],
                     findings=findings[s:e], source_file=source_file)
            for s, e in zip(starts.tolist(), ends.tolist())]


def _patients(table, config: PrepareConfig) -> tuple[pd.DataFrame, str, int]:
    """The table with every row's patient known, the split level, and how many images lacked one.

    Images without patient identity (INbreast without its DICOM files) are refused (exit 2)
    unless ``split.allow_image_level``; then each is its own unit ``image:<image_id>``.
    """
    unknown = table["patient_id"].isna()
    if not unknown.any():
        return table, "patient", 0
    images = table.loc[unknown, "image_id"].nunique()
    if not config.split.allow_image_level:
        raise InputError(
            f"{config.annotations}: {images} of {table['image_id'].nunique()} images have no patient identity "
            "(INbreast: the patient is the second part of the DICOM file names <File Name>_<patient>_MG_*.dcm; "
            "point --images at the folder holding AllDICOMs/); refusing to split them, or set "
            "prepare.split.allow_image_level: true to split them image by image (recorded in the manifest)"
        )
    table = table.copy()
    table.loc[unknown, "patient_id"] = "image:" + table.loc[unknown, "image_id"].astype(str)
    return table, "image", images


def plan_prepare(config: PrepareConfig) -> Plan:
    """Read the annotations, filter, split by patient and cut the job list into units (no image is read).

    The garbage collector is paused meanwhile: the job list is hundreds of thousands of small
    objects, none of them cyclic, and full collections would otherwise double the time.
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        return _plan(config)
    finally:
        if paused:
            gc.enable()


def _plan(config: PrepareConfig) -> Plan:
    if not config.images or not config.annotations:
        raise ConfigError("prepare needs --images DIR and --annotations FILE (or prepare.images / "
                          "prepare.annotations in the config)")
    if not Path(config.images).is_dir():
        raise ConfigError(f"--images {config.images}: not a folder")
    annotations = load_annotations(config.annotations, format=config.format, image_root=config.images,
                                   column_map=config.column_map or None)
    table = select_images(annotations.table, config.manufacturers, config.processed_only)
    if table.empty:
        raise ConfigError(f"{config.annotations}: no usable annotation rows")
    table, level, without = _patients(table, config)
    if config.split.k_folds:
        assignment = assign_folds(table, config.split.k_folds, config.seed)
    else:
        assignment = assign_splits(table, config.split.fractions, config.seed)
    jobs = _jobs(table, assignment, str(Path(config.annotations).absolute()))
    return Plan(annotations, table, assignment, _units(jobs, config.images_per_shard), level, without)


def _units(jobs: list[ImageJob], per_unit: int) -> dict[str, list[ImageJob]]:
    by_split: dict[str, list[ImageJob]] = {}
    for job in jobs:
        by_split.setdefault(job.split, []).append(job)
    units = {}
    for split in sorted(by_split):
        members = by_split[split]
        for start in range(0, len(members), per_unit):
            units[f"{split}-{start // per_unit:05d}"] = members[start:start + per_unit]
    return units


EXECUTION_FIELDS = {"workers", "runner", "beam_options"}
"""Config fields that say how units run, not what they hold: left out of the resume fingerprint, so
a killed run may resume with another runner or worker count."""


def _fingerprint(config: PrepareConfig, annotations: str) -> str:
    text = json.dumps(config.model_dump(mode="json", exclude=EXECUTION_FIELDS), sort_keys=True)
    text += sha256_file(annotations)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@contextmanager
def _native_stderr_silenced():
    """Discard what native libraries write to file descriptor 2 meanwhile: importing TensorFlow
    prints "Could not find cuda drivers" lines before its log level applies (prepare uses no GPU)."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _shard_writer():
    """``(serialize_record, write_shard)``; the first call imports TensorFlow quietly."""
    if "tensorflow" not in sys.modules:
        with _native_stderr_silenced():
            import tensorflow  # noqa: F401
    from mammogan_tf.data.shards import write_shard
    from mammogan_tf.data.whole import serialize_record

    return serialize_record, write_shard


def _finish_unit(staging: Path, name: str, results: list[dict]) -> None:
    """Write one unit's shard (if it has patches) and its record, both atomically."""
    serialize_record, write_shard = _shard_writer()

    records = [patch for result in results for patch in result["patches"]]
    shard = None
    if records:
        shard = f"shards/{name}.tfrecord"
        write_shard(staging / shard, (serialize_record(record) for record in records))
    write_json_atomic(staging / "units" / f"{name}.json", {
        "shard": shard,
        "counts": dict(Counter(r["lesion_type"] for r in records)),
        "kinds": dict(Counter(r["kind"] for r in records)),
        "rejected": [row for result in results for row in result["rejected"]],
        "mask_rules": dict(sum((Counter(result["mask_rules"]) for result in results), Counter())),
        "images_read": sum(result["read"] for result in results),
        "images": len(results),
    })


def _run_units(staging: Path, pending: dict[str, list[ImageJob]], config: PrepareConfig,
               workers: int, progress: bool) -> None:
    jobs = [job for members in pending.values() for job in members]
    work = partial(process_image, config=config)
    bar = tqdm(total=len(jobs), desc="prepare", unit="img", disable=not progress)
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
    try:
        results = pool.imap(work, jobs, chunksize=1) if pool else map(work, jobs)
        for name, members in pending.items():
            unit_results = []
            for _ in members:
                unit_results.append(next(results))
                bar.update()
            _finish_unit(staging, name, unit_results)
    finally:
        bar.close()
        if pool:
            pool.terminate()
            pool.join()


def run_prepare(config: PrepareConfig, out_dir: str | os.PathLike, *, progress: bool = True) -> dict:
    """Run the prepare stage; returns the summary (also in ``manifest.json``).

    Raises InputError, publishing nothing, when no patch at all was written.
    """
    plan = plan_prepare(config)
    out_dir = Path(out_dir)
    staging = partial_dir(out_dir)
    fingerprint = _fingerprint(config, config.annotations)
    stamp = staging / "fingerprint.txt"
    if staging.exists() and (not stamp.exists() or stamp.read_text() != fingerprint):
        shutil.rmtree(staging)
    (staging / "units").mkdir(parents=True, exist_ok=True)
    (staging / "shards").mkdir(exist_ok=True)
    stamp.write_text(fingerprint)
    pending = {name: jobs for name, jobs in plan.units.items()
               if not (staging / "units" / f"{name}.json").exists()}
    workers = config.workers or os.cpu_count() or 1
    if config.runner == "beam" and pending:
        from mammogan_tf.data.beam_runner import run_units_beam
        run_units_beam(staging, pending, config, workers, progress)
    else:
        _run_units(staging, pending, config, workers, progress)

    summary = summarise(staging, plan.units, plan.annotations)
    if not summary["shard_files"]:
        shutil.rmtree(staging)
        raise InputError(f"no patches were written ({nothing_written(summary)}); nothing published at {out_dir}")
    write_rejected(staging / "rejected.csv", summary.pop("rejections"))
    files = ["rejected.csv"] + summary["shard_files"]
    manifest = build_manifest(
        "prepare", staging, config=config.model_dump(mode="json"),
        inputs=[input_record(config.annotations)], counts=summary["counts"], files=files,
        extra={"splits": summary["splits"], "classes": list(LESION_TYPES),
               "patch_size": config.patches.output_size or config.patches.size,
               "annotation_format": plan.annotations.format, "patients": plan.assignment,
               "split_level": plan.split_level, "images_without_patient": plan.images_without_patient,
               "summary": {k: summary[k] for k in SUMMARY_KEYS}})
    shutil.rmtree(staging / "units")
    stamp.unlink()
    write_json_atomic(staging / "manifest.json", manifest)
    publish(staging, out_dir)
    return manifest
