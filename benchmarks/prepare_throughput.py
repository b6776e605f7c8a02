"""Prepare-stage throughput on mini-MIAS: images/s with 1 and 2 workers, the bare decode rate, and
the planning time of a synthetic 100,000-row table.

    python benchmarks/prepare_throughput.py [--images DIR] [--annotations FILE] [--workers 1 2] [--plan-rows N]

Planning is everything before the first image is read: reading the annotation table, filtering,
the patient-level split and the job list (``plan_prepare``); the synthetic table has one finding
per image, four images per patient, boxes on half of them.

The decode rate (``read_image`` alone, one process) is the ceiling of one worker; the ratio
prepare/decode says how much of the time goes to masking, normalisation, sampling and encoding.
TensorFlow (used to write the shards) is imported before timing: a one-off cost of a few
seconds per process that would otherwise be charged to the first measurement.
Prints one JSON object per measurement and a summary JSON object on the last line.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from mammogan_tf.config import PrepareConfig
from mammogan_tf.data.images import read_image
from mammogan_tf.data.prepare import plan_prepare, run_prepare
from mammogan_tf.data.table import COLUMNS

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "mini-mias"


def decode_rate(paths: list[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        read_image(path)
    return len(paths) / (time.perf_counter() - start)


def prepare_rate(images: Path, annotations: Path, workers: int) -> tuple[float, int]:
    config = PrepareConfig(images=str(images), annotations=str(annotations), workers=workers)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        manifest = run_prepare(config, Path(tmp) / "out", progress=False)
        elapsed = time.perf_counter() - start
    return manifest["summary"]["images"] / elapsed, manifest["summary"]["images"]


def synthetic_table(path: Path, rows: int) -> None:
    """A lesion-table CSV of ``rows`` images (one finding each) of ``rows // 4`` patients."""
    import numpy as np
    import pandas as pd

    index = np.arange(rows)
    kinds = np.array(["normal", "mass", "calcification", "normal"])[index % 4]
    lesion = kinds != "normal"
    frame = pd.DataFrame({
        "image_id": [f"img{i:06d}" for i in index], "patient_id": [f"p{i // 4:06d}" for i in index],
        "study_id": "", "path": [f"p{i // 4:06d}/img{i:06d}.dcm" for i in index],
        "laterality": np.where(index % 2, "L", "R"), "view": np.where(index % 4 < 2, "CC", "MLO"),
        "manufacturer": "HOLOGIC, Inc.", "processed": "true", "lesion_type": kinds,
        "pathology": np.where(lesion, "malignant", ""),
        "x0": np.where(lesion, "100", ""), "y0": np.where(lesion, "120", ""),
        "x1": np.where(lesion, "180", ""), "y1": np.where(lesion, "200", ""), "mask_path": "",
    })[list(COLUMNS)]
    frame.to_csv(path, index=False)


def planning_time(rows: int) -> tuple[float, float]:
    """(wall, CPU) seconds ``plan_prepare`` takes on a synthetic table of ``rows`` rows."""
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "lesions.csv"
        synthetic_table(table, rows)
        config = PrepareConfig(images=tmp, annotations=str(table))
        start, cpu = time.perf_counter(), time.process_time()
        plan = plan_prepare(config)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert sum(len(jobs) for jobs in plan.units.values()) == rows
    return elapsed, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=SHARED / "png")
    parser.add_argument("--annotations", type=Path, default=SHARED / "Info.txt")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--plan-rows", type=int, default=100_000, help="rows of the synthetic planning case")
    parser.add_argument("--plan-only", action="store_true", help="only the planning measurement")
    args = parser.parse_args()
    seconds, cpu = planning_time(args.plan_rows)
    print(json.dumps({"measure": "planning", "rows": args.plan_rows, "seconds": round(seconds, 2),
                      "cpu_seconds": round(cpu, 2)}))
    if args.plan_only:
        return
    # TensorFlow import kept out of the timings; here, not at the top, so that the spawned
    # workers (which re-import this file) stay free of it, as they are under the CLI.
    import mammogan_tf.data.shards  # noqa: F401
    paths = sorted(args.images.glob("*.png")) or sorted(args.images.iterdir())
    result = {"images": len(paths), "decode_images_per_s": round(decode_rate(paths), 2),
              f"planning_{args.plan_rows}_rows_s": round(seconds, 2)}
    print(json.dumps({"measure": "decode", "images_per_s": result["decode_images_per_s"]}))
    for workers in args.workers:
        rate, count = prepare_rate(args.images, args.annotations, workers)
        result[f"prepare_{workers}w_images_per_s"] = round(rate, 2)
        result[f"prepare_{workers}w_over_decode"] = round(rate / result["decode_images_per_s"], 3)
        print(json.dumps({"measure": "prepare", "workers": workers, "images": count, "images_per_s": round(rate, 2)}))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
