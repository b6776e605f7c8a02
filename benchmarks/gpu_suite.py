"""The step benchmark of every preset in every configuration that matters on GPUs, one JSON line each.

    bash benchmarks/gpu_suite.sh [--presets fridadar64,alyafi128] [--steps 10] [--budget-s 420]
    bash benchmarks/gpu_suite.sh --smoke     # CPU, tiny shapes, two cases, seconds (CI)

Cases per preset, at the preset's own (paper) batch size: {float32, mixed precision} x
{eager-graph, jit_compile} x {one device, MirroredStrategy over all visible GPUs}. Mixed
precision is float16 with loss scaling on GPUs and bfloat16 on CPU. Each line is
``gan_step_throughput.measure``'s result (images/s, achieved TFLOP/s, MFU, peak memory) plus
``case``; a case that fails prints ``error`` instead, and cases not started within
``--budget-s`` print ``skipped`` (so the suite ends in bounded time). Everything runs in one
process; peak device memory is reset before each case. ``--smoke`` runs the first and the last
case (float32 / graph / one device and bfloat16 / jit / mirrored) of the first preset.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from itertools import product
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.presets import PRESETS, preset_path  # noqa: E402

SMOKE_OVERRIDES = ["model.image_size=16", "model.generator.base_filters=4", "model.generator.max_filters=8",
                   "model.discriminator.base_filters=4", "model.discriminator.max_filters=8",
                   "model.discriminator.num_layers=2"]


def cases(gpu: bool):
    """(precision, jit, strategy) of every case, float32 first."""
    mixed = "float16" if gpu else "bfloat16"
    return list(product((None, mixed), (False, True), ("default", "mirrored")))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--budget-s", type=float, default=420.0, help="start no case after this many seconds")
    parser.add_argument("--smoke", action="store_true", help="CPU only, tiny models, 1 step per case")
    args = parser.parse_args(argv)
    if args.smoke:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from benchmarks.gan_step_throughput import measure
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    gpu = bool(tf.config.list_physical_devices("GPU"))
    presets = args.presets.split(",")[:1] if args.smoke else args.presets.split(",")
    overrides = SMOKE_OVERRIDES if args.smoke else []
    steps, warmup = (1, 1) if args.smoke else (args.steps, args.warmup)
    start = time.perf_counter()
    for preset in presets:
        batch = 4 if args.smoke else _paper_batch(preset)
        matrix = cases(gpu)
        for precision, jit, strategy in (matrix[:1] + matrix[-1:] if args.smoke else matrix):
            case = {"case": f"{preset}/{precision or 'float32'}/{'jit' if jit else 'graph'}/{strategy}"}
            if time.perf_counter() - start > args.budget_s:
                print(json.dumps({**case, "skipped": f"over --budget-s {args.budget_s}"}), flush=True)
                continue
            try:
                result = measure(preset, batch, steps, warmup, strategy, precision, jit, overrides)
            except Exception as error:  # noqa: BLE001 - one failing case must not hide the others
                result = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"}
            print(json.dumps({**case, **result}), flush=True)
    return 0


def _paper_batch(preset: str) -> int:
    """The batch size the preset's YAML trains with."""
    from mammogan_tf.config import load_config

    return load_config(preset_path(preset)).train.batch_size


if __name__ == "__main__":
    raise SystemExit(main())
