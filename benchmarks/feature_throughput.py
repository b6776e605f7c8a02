"""Feature-extraction throughput: images/s of a backbone at a given batch size on this device.

    python benchmarks/feature_throughput.py [--backbone inception_v3:random] [--batch-size 32]
                                            [--batches 10] [--size 64]

Default: InceptionV3 with random (untrained) weights, which costs the same as ImageNet weights
and needs no download; input ``(B, 64, 64, 1)`` grey patches in [-1, 1], so the timing includes
the backbone's resize to 299 x 299 and the grey-to-RGB replication, as in ``mammogan evaluate``.
One warm-up batch (tracing) is excluded. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="inception_v3:random")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=10, help="timed batches after one warm-up batch")
    parser.add_argument("--size", type=int, default=64, help="side of the input patches")
    args = parser.parse_args()

    import numpy as np

    from mammogan_tf.evaluation.features import load_backbone  # first: it sets TensorFlow's CPU kernels
    import tensorflow as tf

    backbone = load_backbone(args.backbone)
    images = np.random.default_rng(0).uniform(-1, 1, (args.batch_size, args.size, args.size, 1)).astype(np.float32)
    backbone(images)  # warm-up: tracing and memory allocation
    start = time.perf_counter()
    for _ in range(args.batches):
        features = backbone(images)
    elapsed = time.perf_counter() - start
    gpus = tf.config.list_physical_devices("GPU")
    print(json.dumps({
        "backbone": args.backbone, "batch_size": args.batch_size, "input_size": args.size,
        "feature_dim": int(features.shape[1]), "batches": args.batches,
        "images_per_second": round(args.batch_size * args.batches / elapsed, 2),
        "seconds_per_batch": round(elapsed / args.batches, 4),
        "device": f"GPU ({len(gpus)})" if gpus else f"CPU ({os.cpu_count()} cores)",
        "load_average_1min": round(os.getloadavg()[0], 2),  # other processes sharing the cores
        "tensorflow": tf.__version__,
    }))


if __name__ == "__main__":
    main()
