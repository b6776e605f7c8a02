"""Forward + backward time of the ``Upsample2D`` implementations at a DCGAN-like shape.

Why: Keras' ``Conv2DTranspose`` was reported several times slower on CPU than PyTorch's while
plain convolutions are on par, so the generator's upsampling is switchable
(``model.generator.upsample``). This measures what each choice costs here.

    python benchmarks/upsample_layers.py [--batch 64] [--size 64] [--filters 64] [--repeats 3]
    python benchmarks/upsample_layers.py --shapes presets [--batch 64] [--repeats 5]

``--shapes presets``: the two exact forms of every transposed conv in the fridadar64 and
alyafi128 generators (Keras ``Conv2DTranspose`` vs ``conv2d_transpose_subpixel`` on the same
kernel), median ms of forward + backward and the speed-up; the rule in ``Upsample2D.form``
comes from this.

Default shape: (64, 64, 64, 64) -> (64, 128, 128, 64). The cases are timed round-robin (one
repeat of every case, then the next round), so load from other processes hits them alike.
Prints one JSON line per case (best and median ms per batch of forward + backward w.r.t. inputs
and weights, images/s and analytic GFLOP/s from the best time, backward counted as 2x forward),
then one line of speed-ups (best time of the reference transpose conv / best time of the case).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as importing mammogan_tf does

import tensorflow as tf  # noqa: E402

from mammogan_tf.models.layers import Upsample2D, conv2d_transpose_subpixel  # noqa: E402
from mammogan_tf.models.registry import flops_per_image  # noqa: E402

# (method, kernel, kernel of the transpose conv it is compared with): transpose k and
# depth_to_space ceil(k/2) cover the same input pixels with the same FLOPs; depth_to_space k has
# 4x the FLOPs; nearest convolves at the output size (4x the FLOPs of transpose k).
CASES = (("transpose", 4, 4), ("depth_to_space", 2, 4), ("depth_to_space", 4, 4), ("nearest", 3, 4),
         ("nearest", 4, 4), ("transpose", 5, 5), ("depth_to_space", 3, 5), ("transpose", 3, 3))


def make_step(method: str, kernel: int, filters: int, images: tf.Tensor):
    """(layer, traced forward+backward function) for one case."""
    tf.keras.utils.set_random_seed(0)
    layer = Upsample2D(filters, kernel, method)
    layer(images[:1])

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(layer(x)))
        return tape.gradient(loss, [x] + layer.trainable_variables)

    step(images)[0].numpy()  # trace and warm up
    return layer, step


# (kernel, input side, C_in, C_out) of the stride-2 transposed convs of the two DCGAN presets.
PRESET_SHAPES = {"fridadar64": ((5, 4, 1024, 512), (5, 8, 512, 256), (5, 16, 256, 128), (5, 32, 128, 1)),
                 "alyafi128": ((4, 4, 450, 360), (4, 8, 360, 180), (4, 16, 180, 90), (4, 32, 90, 45),
                               (4, 64, 45, 1))}


def compare_forms(batch: int, repeats: int) -> None:
    """One JSON line per preset layer: native vs sub-pixel form, forward + backward."""
    for preset, shapes in PRESET_SHAPES.items():
        for kernel, side, c_in, c_out in shapes:
            x = tf.random.normal((batch, side, side, c_in))
            layer = tf.keras.layers.Conv2DTranspose(c_out, kernel, strides=2, padding="same", use_bias=False)
            layer.build(x.shape)
            forms = {"native": layer, "subpixel": lambda t, k=layer.kernel: conv2d_transpose_subpixel(t, k)}
            steps = {}
            for name, fn in forms.items():
                @tf.function
                def step(t, fn=fn):
                    with tf.GradientTape() as tape:
                        tape.watch(t)
                        loss = tf.reduce_sum(tf.square(fn(t)))
                    return tape.gradient(loss, [t, layer.kernel])

                step(x)[0].numpy()
                steps[name] = step
            times = {name: [] for name in steps}
            for _ in range(repeats):
                for name, step in steps.items():
                    start = time.perf_counter()
                    step(x)[0].numpy()
                    times[name].append(time.perf_counter() - start)
            med = {name: statistics.median(t) for name, t in times.items()}
            print(json.dumps({"preset": preset, "kernel": kernel, "in": [side, side, c_in], "out_channels": c_out,
                              "native_ms": round(1000 * med["native"], 1),
                              "subpixel_ms": round(1000 * med["subpixel"], 1),
                              "subpixel_speedup": round(med["native"] / med["subpixel"], 2)}), flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=64, help="input side (output is twice)")
    parser.add_argument("--filters", type=int, default=64, help="input and output channels")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shapes", choices=("one", "presets"), default="one")
    args = parser.parse_args(argv)
    tf.get_logger().setLevel("ERROR")  # one traced step per case is expected, not a retracing problem
    if args.shapes == "presets":
        compare_forms(args.batch, args.repeats)
        return 0
    images = tf.random.normal((args.batch, args.size, args.size, args.filters))
    steps = {(method, kernel): make_step(method, kernel, args.filters, images) for method, kernel, _ in CASES}
    times = {key: [] for key in steps}
    for _ in range(args.repeats):
        for key, (_, step) in steps.items():
            start = time.perf_counter()
            step(images)[0].numpy()
            times[key].append(time.perf_counter() - start)
    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    speedups = {}
    for method, kernel, reference in CASES:
        layer, _ = steps[method, kernel]
        best = min(times[method, kernel])
        flops = flops_per_image(layer)
        print(json.dumps({
            "impl": method, "kernel_size": kernel, "batch": args.batch, "in_size": args.size,
            "out_size": 2 * args.size, "filters": args.filters, "params": int(layer.count_params()),
            "ms_per_batch": round(1000 * best, 1),
            "ms_per_batch_median": round(1000 * statistics.median(times[method, kernel]), 1),
            "images_per_s": round(args.batch / best, 1), "fwd_mflop_per_image": round(flops / 1e6, 1),
            "gflop_per_s": round(3 * flops * args.batch / best / 1e9, 1), "device": device}), flush=True)
        speedups[f"{method}_k{kernel}_vs_transpose_k{reference}"] = round(
            min(times["transpose", reference]) / best, 2)
    print(json.dumps({"speedup_vs_transpose": speedups}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
