"""Forward + backward time of the ``Upsample2D`` implementations at a DCGAN-like shape.

Why: Keras' ``Conv2DTranspose`` is several times slower on CPU than PyTorch's while plain
convolutions are on par, so the generator's upsampling is switchable
(``model.generator.upsample``). This measures what each choice costs here.

    python benchmarks/upsample_layers.py [--batch 64] [--size 64] [--filters 64] [--repeats 5]

Default shape: (64, 64, 64, 64) -> (64, 128, 128, 64). Prints one JSON line per
implementation (median ms per batch of forward + backward w.r.t. inputs and weights,
images/s, analytic GFLOP/s with backward = 2x forward), then one line of speed ratios
(time of ``transpose`` with the reference kernel / time of each).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from mammogan_tf.models.layers import Upsample2D  # noqa: E402
from mammogan_tf.models.registry import flops_per_image  # noqa: E402

# (method, kernel, kernel of the transpose conv it is compared with): transpose k and
# depth_to_space ceil(k/2) cover the same input pixels with the same FLOPs; depth_to_space k has
# 4x the FLOPs; nearest convolves at the output size (4x the FLOPs of transpose k).
CASES = (("transpose", 4, 4), ("depth_to_space", 2, 4), ("depth_to_space", 4, 4), ("nearest", 3, 4),
         ("nearest", 4, 4), ("transpose", 5, 5), ("depth_to_space", 3, 5))


def measure(method: str, kernel: int, batch: int, size: int, filters: int, repeats: int) -> dict:
    tf.keras.utils.set_random_seed(0)
    layer = Upsample2D(filters, kernel, method)
    images = tf.random.normal((batch, size, size, filters))
    layer(images[:1])

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(layer(x)))
        return tape.gradient(loss, [x] + layer.trainable_variables)

    step(images)  # trace and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        grads = step(images)
        _ = grads[0].numpy()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    flops = flops_per_image(layer)
    return {"impl": method, "kernel_size": kernel, "batch": batch, "in_size": size, "out_size": 2 * size,
            "filters": filters, "params": int(layer.count_params()), "ms_per_batch": round(1000 * seconds, 1),
            "images_per_s": round(batch / seconds, 1), "fwd_mflop_per_image": round(flops / 1e6, 1),
            "gflop_per_s": round(3 * flops * batch / seconds / 1e9, 1),
            "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=64, help="input side (output is twice)")
    parser.add_argument("--filters", type=int, default=64, help="input and output channels")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    tf.get_logger().setLevel("ERROR")  # one traced step per case is expected, not a retracing problem
    times = {}
    ratios = {}
    for method, kernel, reference in CASES:
        result = measure(method, kernel, args.batch, args.size, args.filters, args.repeats)
        times[method, kernel] = result["ms_per_batch"]
        print(json.dumps(result), flush=True)
        ratios[f"{method}_k{kernel}_vs_transpose_k{reference}"] = round(
            times["transpose", reference] / result["ms_per_batch"], 2)
    print(json.dumps({"speedup_vs_transpose": ratios}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
