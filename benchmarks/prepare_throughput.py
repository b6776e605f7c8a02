"""Prepare-stage throughput on mini-MIAS: images/s with 1 and 2 workers, and the bare decode rate.

    python benchmarks/prepare_throughput.py [--images DIR] [--annotations FILE] [--workers 1 2]

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
from mammogan_tf.data.prepare import run_prepare

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=SHARED / "png")
    parser.add_argument("--annotations", type=Path, default=SHARED / "Info.txt")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    # TensorFlow import kept out of the timings; here, not at the top, so that the spawned
    # workers (which re-import this file) stay free of it, as they are under the CLI.
    import mammogan_tf.data.shards  # noqa: F401
    paths = sorted(args.images.glob("*.png")) or sorted(args.images.iterdir())
    result = {"images": len(paths), "decode_images_per_s": round(decode_rate(paths), 2)}
    print(json.dumps({"measure": "decode", "images_per_s": result["decode_images_per_s"]}))
    for workers in args.workers:
        rate, count = prepare_rate(args.images, args.annotations, workers)
        result[f"prepare_{workers}w_images_per_s"] = round(rate, 2)
        result[f"prepare_{workers}w_over_decode"] = round(rate / result["decode_images_per_s"], 3)
        print(json.dumps({"measure": "prepare", "workers": workers, "images": count, "images_per_s": round(rate, 2)}))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
