"""The practical FP32 ceiling of this machine: large square matrix products, the best case for any
framework's convolutions (oneDNN and PyTorch both lower convolutions to GEMM-like kernels).

    python benchmarks/cpu_peak.py [--size 2048] [--repeats 20] [--threads 0]

Prints one JSON object: GFLOP/s of ``tf.linalg.matmul`` (oneDNN/Eigen, TensorFlow's CPU kernels)
and of ``numpy.matmul`` (the BLAS numpy was built with), best of ``--repeats`` timed products of
two ``size x size`` float32 matrices (2 size^3 FLOP each), with the nominal peak (cores x base GHz
x 32 FLOP/cycle: two 256-bit FMA pipes, AVX2) for comparison. A training step that reaches
this figure cannot get faster without doing fewer FLOPs; ``compare_torch.py`` reports both
frameworks' achieved GFLOP/s against it.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def best_gflops(product, size: int, repeats: int) -> float:
    """Best GFLOP/s over ``repeats`` calls of ``product()`` (one size^3 matrix product each)."""
    product()  # warm-up: thread pools, kernel selection
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        product()
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: all cores)")
    parser.add_argument("--base-ghz", type=float, default=2.445, help="nominal clock for the nominal peak")
    args = parser.parse_args(argv)

    import mammogan_tf  # noqa: F401 - TensorFlow's oneDNN CPU kernels on, as in every mammogan_tf process
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((args.size, args.size), dtype=np.float32) for _ in range(2))
    ta, tb = tf.constant(a), tf.constant(b)
    matmul = tf.function(lambda: tf.linalg.matmul(ta, tb))
    cores = args.threads or os.cpu_count()
    result = {"size": args.size, "cores": cores,
              "tf_matmul_gflops": round(best_gflops(lambda: matmul().numpy(), args.size, args.repeats), 1),
              "numpy_matmul_gflops": round(best_gflops(lambda: a @ b, args.size, args.repeats), 1),
              "nominal_peak_gflops": round(cores * args.base_ghz * 32, 1),
              "load_1min": round(os.getloadavg()[0], 2)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
