"""What ``mammogan prepare`` reports: ``rejected.csv``, the summary in the manifest, the printed table.

Every rejection row traces back to the source: ``file`` is the annotation file, ``rows`` the
source row numbers it concerns (1-based, as a spreadsheet or text editor shows them; several,
space-separated, when a whole image was rejected), ``image_id`` and ``image`` the image,
``reason`` a short text without file names or numbers (so rejections group by it) and
``detail`` the specifics. The summary counts rejected source rows and images separately and
groups them by reason; it never lists files.
"""
from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

REJECTED_FIELDS = ("file", "rows", "image_id", "image", "reason", "detail")
SUMMARY_KEYS = ("images", "images_read", "rejected", "rejected_rows", "rejected_images", "rejected_by_reason",
                "mask_rules", "notes")


def annotation_rejections(annotations) -> list[dict]:
    """The reader's rejections as ``rejected.csv`` rows."""
    return [{"file": r.file, "rows": "" if r.row is None else str(r.row), "image_id": None, "image": None,
             "reason": r.reason, "detail": r.detail} for r in annotations.rejected]


def summarise(staging: Path, units: dict, annotations) -> dict:
    """Counts per split and class, shard files, and the rejections of the reader and of every unit."""
    counts: dict[str, Counter] = {}
    splits: dict[str, list[str]] = {}
    rules: Counter = Counter()
    rejected = annotation_rejections(annotations)
    images = images_read = 0
    for name in units:
        record = json.loads((staging / "units" / f"{name}.json").read_text())
        split = name.rsplit("-", 1)[0]
        counts.setdefault(split, Counter()).update(record["counts"])
        splits.setdefault(split, [])
        if record["shard"]:
            splits[split].append(record["shard"])
        rejected += record["rejected"]
        rules.update(record.get("mask_rules", {}))
        images += record["images"]
        images_read += record["images_read"]
    by_reason: dict[str, dict] = {}
    source_rows, whole_images = set(), set()
    for row in rejected:
        numbers = {(row["file"], n) for n in str(row.get("rows") or "").split()}
        entry = by_reason.setdefault(row["reason"], {"rows": 0, "images": 0})
        entry["rows"] += len(numbers)
        source_rows |= numbers
        if row.get("whole"):
            entry["images"] += 1
            whole_images.add(row["image_id"])
    return {
        "counts": {split: dict(sorted(c.items())) for split, c in sorted(counts.items())},
        "splits": splits,
        "shard_files": [f for files in splits.values() for f in files],
        "images": images, "images_read": images_read, "rejected": len(rejected),
        "rejected_rows": len(source_rows), "rejected_images": len(whole_images),
        "rejected_by_reason": dict(sorted(by_reason.items(), key=lambda item: (-item[1]["rows"], item[0]))),
        "mask_rules": dict(rules.most_common()), "notes": list(annotations.notes), "rejections": rejected,
    }


def nothing_written(summary: dict) -> str:
    """One line for a run without patches: how many images were read and the most common reason."""
    line = f"{summary['images_read']} of {summary['images']} images read"
    if summary["rejected_by_reason"]:
        reason, entry = next(iter(summary["rejected_by_reason"].items()))
        example = next(r for r in summary["rejections"] if r["reason"] == reason)
        where = example.get("image") or f"{example['file']} row {example['rows']}"
        line += f"; most common reason: {reason} ({entry['rows']} rows), e.g. {where}"
    return line


def write_rejected(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=REJECTED_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in REJECTED_FIELDS})


def format_summary(manifest: dict) -> str:
    """The end-of-run table: images read, notes, rejections by reason, mask rules, patches per class and split."""
    summary = manifest["summary"]
    counts = manifest["counts"]
    splits = sorted(counts)
    classes = sorted({c for split in counts.values() for c in split})
    lines = [f"images: {summary['images']} listed, {summary['images_read']} read; rejected: "
             f"{summary['rejected_rows']} source rows, {summary['rejected_images']} whole images (see rejected.csv)"]
    lines += [f"  {entry['rows']:6d} rows {entry['images']:6d} images  {reason}"
              for reason, entry in summary["rejected_by_reason"].items()]
    lines += [f"ROI masks {rule}: {n}" for rule, n in summary.get("mask_rules", {}).items()]
    lines += [f"note: {note}" for note in summary.get("notes", [])]
    if manifest.get("split_level") == "image":
        lines.append(f"note: {manifest['images_without_patient']} images without patient identity were split "
                     "image by image (split.allow_image_level)")
    width = max([len("class")] + [len(c) for c in classes])
    lines.append(f"{'class':<{width}}  " + "  ".join(f"{s:>8}" for s in splits) + f"  {'total':>8}")
    for name in classes:
        row = [counts[s].get(name, 0) for s in splits]
        lines.append(f"{name:<{width}}  " + "  ".join(f"{n:8d}" for n in row) + f"  {sum(row):8d}")
    return "\n".join(lines)
