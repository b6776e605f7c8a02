"""Kernel gradient of the discriminators' strided convs: oneDNN's backprop-filter vs one matmul.

    python benchmarks/conv_forms.py [--batch 64] [--repeats 5]

For every stride-2 "same" conv of the fridadar64 and alyafi128 discriminators: median ms of the
kernel gradient alone (``Conv2DBackpropFilter`` vs the patch matmul of
``models.conv_forms.conv2d_patch_gradient``) and of forward + both gradients (``tf.nn.conv2d``
vs ``conv2d_patch_gradient``), timed round-robin so load from other processes hits both alike.
One JSON line per layer; ``ConvBlock.choose_form`` (``PATCH_GRADIENT_MAX_PIXELS``) comes from
this, and the form it picks is printed with each line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mammogan_tf  # noqa: E402,F401  (oneDNN on before TensorFlow loads)
import tensorflow as tf  # noqa: E402

from mammogan_tf.models.conv_forms import conv2d_patch_gradient, same_padding  # noqa: E402
from mammogan_tf.models.layers import ConvBlock  # noqa: E402

# (kernel, input side, C_in, C_out) of the stride-2 convs of the two DCGAN discriminators.
PRESET_SHAPES = {"fridadar64": ((5, 64, 1, 128), (5, 32, 128, 256), (5, 16, 256, 512), (5, 8, 512, 1024)),
                 "alyafi128": ((4, 128, 1, 45), (6, 64, 45, 90), (6, 32, 90, 180), (6, 16, 180, 360),
                               (6, 8, 360, 450))}


def _kernel_gradient_cases(x, kernel, dy):
    """{name: traced function} of the kernel gradient alone, both ways."""
    size, c_in, c_out = (int(d) for d in (kernel.shape[0], kernel.shape[2], kernel.shape[3]))
    pads = [[0, 0], same_padding(x.shape[1], size, 2), same_padding(x.shape[2], size, 2), [0, 0]]

    def matmul():
        patches = tf.image.extract_patches(tf.pad(x, pads), [1, size, size, 1], [1, 2, 2, 1], [1, 1, 1, 1], "VALID")
        return tf.matmul(tf.reshape(patches, (-1, size * size * c_in)), tf.reshape(dy, (-1, c_out)), transpose_a=True)

    def native():
        return tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=kernel.shape, out_backprop=dy,
                                               strides=[1, 2, 2, 1], padding="SAME")

    return {"kernel_grad_native": tf.function(native), "kernel_grad_matmul": tf.function(matmul)}


def _full_cases(x, kernel):
    """{name: traced forward + input and kernel gradients}, both ways."""
    def make(conv):
        @tf.function
        def step():
            with tf.GradientTape() as tape:
                tape.watch([x, kernel])
                loss = tf.reduce_sum(tf.square(conv(x, kernel)))
            return tape.gradient(loss, [x, kernel])[1]
        return step

    return {"full_native": make(lambda a, k: tf.nn.conv2d(a, k, 2, "SAME")),
            "full_patch_gradient": make(lambda a, k: conv2d_patch_gradient(a, k, 2))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    tf.get_logger().setLevel("ERROR")
    for preset, shapes in PRESET_SHAPES.items():
        for size, side, c_in, c_out in shapes:
            x = tf.random.normal((args.batch, side, side, c_in))
            kernel = tf.random.normal((size, size, c_in, c_out), stddev=0.05)
            dy = tf.random.normal((args.batch, side // 2, side // 2, c_out))
            cases = {**_kernel_gradient_cases(x, kernel, dy), **_full_cases(x, kernel)}
            for fn in cases.values():
                fn()  # trace and warm up
            times = {name: [] for name in cases}
            for _ in range(args.repeats):
                for name, fn in cases.items():
                    start = time.perf_counter()
                    fn().numpy()
                    times[name].append(time.perf_counter() - start)
            ms = {name: round(1000 * statistics.median(t), 1) for name, t in times.items()}
            block = ConvBlock(c_out, size, 2)
            block.build((None, side, side, c_in))
            print(json.dumps({"preset": preset, "kernel": size, "in": [side, side, c_in], "out_channels": c_out,
                              **{f"{name}_ms": value for name, value in ms.items()},
                              "kernel_grad_speedup": round(ms["kernel_grad_native"] / ms["kernel_grad_matmul"], 2),
                              "full_speedup": round(ms["full_native"] / ms["full_patch_gradient"], 2),
                              "form_chosen": block.form}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
