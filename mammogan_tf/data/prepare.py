"""``mammogan prepare``: images + annotations -> patient-split, provenance-tracked patch shards.

Work is cut into units (one split, ``images_per_shard`` consecutive images) and each unit ends as
one shard ``shards/<split>-<nnnnn>.tfrecord`` plus a record ``units/<unit>.json``, both written
atomically inside ``<out>.partial``. A killed run resumes with the units not yet recorded; when
all are done the manifest is written and the folder renamed into place. Output bytes depend only
on the inputs and the config (per-image random generators), never on the number of workers.
"""
from __future__ import annotations

import csv
import hashlib
import json
import multiprocessing
import os
import re
import shutil
from collections import Counter
from functools import partial
from pathlib import Path

from tqdm import tqdm

from mammogan_tf.config import PrepareConfig
from mammogan_tf.data.annotations import load_annotations
from mammogan_tf.data.process import ImageJob, process_image
from mammogan_tf.data.splits import assign_folds, assign_splits
from mammogan_tf.data.table import LESION_TYPES
from mammogan_tf.errors import ConfigError
from mammogan_tf.manifest import (
    build_manifest, input_record, partial_dir, publish, sha256_file, write_json_atomic,
)

REJECTED_FIELDS = ("file", "row", "image_id", "reason")


def select_images(table, manufacturers: list[str], processed_only: bool):
    """Rows of the images that pass the filters (Alyafi: Hologic Lorad Selenia, processed only).

    ``manufacturers``: case-insensitive substrings of the ``manufacturer`` column; rows with an
    unknown manufacturer are dropped when a filter is set. ``processed_only`` keeps rows whose
    ``processed`` column is true.
    """
    keep = table.index == table.index
    if manufacturers:
        names = table["manufacturer"].fillna("").astype(str).str.lower()
        keep &= names.apply(lambda name: any(m.lower() in name for m in manufacturers)).to_numpy()
    if processed_only:
        keep &= (table["processed"] == True).to_numpy()  # noqa: E712 - None/NaN count as not processed
    return table[keep]


def _jobs(table, assignment: dict[str, str]) -> list[ImageJob]:
    """One job per image, sorted by image id, findings in table order with their source row."""
    jobs = []
    for image_id, rows in table.groupby("image_id", sort=True):
        first = rows.iloc[0]
        findings = [dict(row, source_row=row.get("source_line", index))
                    for index, row in rows.to_dict("index").items()]
        jobs.append(ImageJob(image_id=str(image_id), patient_id=str(first["patient_id"]),
                             path=str(first["path"]), split=assignment[first["patient_id"]],
                             findings=findings))
    return jobs


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


def _fingerprint(config: PrepareConfig, annotations: str) -> str:
    text = json.dumps(config.model_dump(mode="json"), sort_keys=True) + sha256_file(annotations)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _finish_unit(staging: Path, name: str, results: list[dict]) -> None:
    """Write one unit's shard (if it has patches) and its record, both atomically."""
    from mammogan_tf.data.shards import write_shard
    from mammogan_tf.data.whole import serialize_record

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
    """Run the prepare stage; returns the summary (also in ``manifest.json``)."""
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
    if config.split.k_folds:
        assignment = assign_folds(table, config.split.k_folds, config.seed)
    else:
        assignment = assign_splits(table, config.split.fractions, config.seed)
    units = _units(_jobs(table, assignment), config.images_per_shard)

    out_dir = Path(out_dir)
    staging = partial_dir(out_dir)
    fingerprint = _fingerprint(config, config.annotations)
    stamp = staging / "fingerprint.txt"
    if staging.exists() and (not stamp.exists() or stamp.read_text() != fingerprint):
        shutil.rmtree(staging)
    (staging / "units").mkdir(parents=True, exist_ok=True)
    (staging / "shards").mkdir(exist_ok=True)
    stamp.write_text(fingerprint)
    pending = {name: jobs for name, jobs in units.items()
               if not (staging / "units" / f"{name}.json").exists()}
    workers = config.workers or os.cpu_count() or 1
    _run_units(staging, pending, config, workers, progress)

    summary = _summarise(staging, units, annotations, assignment)
    _write_rejected(staging / "rejected.csv", summary.pop("rejected_rows"))
    files = ["rejected.csv"] + summary["shard_files"]
    manifest = build_manifest(
        "prepare", staging, config=config.model_dump(mode="json"),
        inputs=[input_record(config.annotations)], counts=summary["counts"], files=files,
        extra={"splits": summary["splits"], "classes": list(LESION_TYPES),
               "patch_size": config.patches.output_size or config.patches.size,
               "annotation_format": annotations.format, "patients": assignment,
               "summary": {k: summary[k] for k in ("images", "images_read", "rejected", "rejected_by_reason")}})
    shutil.rmtree(staging / "units")
    stamp.unlink()
    write_json_atomic(staging / "manifest.json", manifest)
    publish(staging, out_dir)
    return manifest


def _summarise(staging: Path, units: dict, annotations, assignment: dict) -> dict:
    counts: dict[str, Counter] = {}
    splits: dict[str, list[str]] = {}
    rejected = [{"file": r.file, "row": r.row, "image_id": None, "reason": r.reason} for r in annotations.rejected]
    images = images_read = 0
    for name in units:
        record = json.loads((staging / "units" / f"{name}.json").read_text())
        split = name.rsplit("-", 1)[0]
        counts.setdefault(split, Counter()).update(record["counts"])
        splits.setdefault(split, [])
        if record["shard"]:
            splits[split].append(record["shard"])
        rejected += record["rejected"]
        images += record["images"]
        images_read += record["images_read"]
    reasons = Counter(_reason_key(row) for row in rejected)
    return {
        "counts": {split: dict(sorted(c.items())) for split, c in sorted(counts.items())},
        "splits": splits,
        "shard_files": [f for files in splits.values() for f in files],
        "images": images, "images_read": images_read, "rejected": len(rejected),
        "rejected_by_reason": dict(reasons.most_common()), "rejected_rows": rejected,
    }


def _reason_key(row: dict) -> str:
    """A rejection reason without its file name and details, for the summary's counts."""
    reason = str(row["reason"]).replace(str(row.get("file") or ""), "").strip(" :")
    return re.sub(r"\s*[(\[].*$", "", reason) or "unknown"


def _write_rejected(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=REJECTED_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in REJECTED_FIELDS})
