"""Exact alternative computations of convolution layers, chosen per layer for speed on the device.

Each function gives the same numbers (to float rounding) as the Keras / TensorFlow layer it
replaces, on that layer's own kernel variable, so checkpoints and ``.keras`` files do not change;
``models.layers`` decides per layer which form runs (``Upsample2D.form``, ``ConvBlock.form``).

Shapes are channels-last: ``(B, H, W, C)``.
"""
from __future__ import annotations

import tensorflow as tf
from keras import ops


def _phase_taps(kernel_size: int, pad_before: int) -> tuple[list[list[int]], int, int]:
    """Along one axis of a stride-2 transposed conv: output ``2m + r`` collects input ``m - d``
    times kernel tap ``k`` where ``k = 2d + r + pad_before``.

    Returns ``(taps, d_min, d_max)``: ``taps[r]`` the kernel taps of phase r (ascending) and the
    range of input offsets d over both phases.
    """
    taps = [[k for k in range(kernel_size) if (k - r - pad_before) % 2 == 0] for r in (0, 1)]
    offsets = [(k - r - pad_before) // 2 for r in (0, 1) for k in taps[r]]
    return taps, min(offsets), max(offsets)


def _phase_kernel(kernel, axis: int, taps: list[int], front: int, window: int):
    """The taps of one phase along ``axis``, reversed (correlation order) and zero-padded to
    ``window`` with ``front`` zeros first."""
    if not taps:
        shape = list(kernel.shape)
        shape[axis] = window
        return ops.zeros(shape, kernel.dtype)
    index = [slice(None)] * 4
    index[axis] = slice(taps[-1], None if taps[0] == 0 else taps[0] - 1, -2)
    part = kernel[tuple(index)]
    pads = [[0, 0]] * 4
    pads[axis] = [front, window - front - len(taps)]
    return ops.pad(part, pads)


def conv2d_transpose_subpixel(inputs, kernel, padding: str = "same"):
    """Exactly ``keras.layers.Conv2DTranspose(strides=2, padding=padding)`` (no bias), computed
    as ONE plain convolution at the input resolution followed by ``depth_to_space(2)``.

    ``inputs``: ``(B, H, W, C_in)``; ``kernel``: ``(k, k, C_out, C_in)``, the transposed conv's
    own kernel (gradients flow to it). Output ``(B, 2H, 2W, C_out)`` for ``"same"``,
    ``(B, 2H + k - 2, 2W + k - 2, C_out)`` for ``"valid"`` (k >= 2).

    The four output phases (row parity, column parity) each see every other kernel tap; their
    sub-kernels, zero-padded to a common window ``T = ceil(k / 2)`` or one more, are stacked as
    ``4 * C_out`` output channels (``T x T`` conv: 1.44x the multiply-adds for k = 5, 2.25x for
    k = 4, 1.78x for k = 3, but a forward-convolution kernel instead of a backprop-input one).
    """
    height, width = inputs.shape[1], inputs.shape[2]
    size = int(kernel.shape[0])
    pad = max(size - 2, 0) // 2 if padding == "same" else 0
    out_h, out_w = ((2 * height, 2 * width) if padding == "same"
                    else (2 * height + max(size - 2, 0), 2 * width + max(size - 2, 0)))
    taps, d_min, d_max = _phase_taps(size, pad)
    window = d_max - d_min + 1
    rows = [_phase_kernel(kernel, 0, taps[r], d_max - (taps[r][-1] - r - pad) // 2 if taps[r] else 0,
                          window) for r in (0, 1)]
    phases = [_phase_kernel(row, 1, taps[r], d_max - (taps[r][-1] - r - pad) // 2 if taps[r] else 0,
                            window) for row in rows for r in (0, 1)]
    # (4, T, T, C_out, C_in) -> (T, T, C_in, 4 * C_out), channel = (2 r_h + r_w) * C_out + o.
    stacked = ops.transpose(ops.stack(phases), (1, 2, 4, 0, 3))
    sub_kernel = ops.reshape(stacked, (window, window, kernel.shape[3], 4 * kernel.shape[2]))
    rows_needed, cols_needed = (out_h + 1) // 2, (out_w + 1) // 2
    pads = [[d_max, rows_needed + window - 1 - d_max - height],
            [d_max, cols_needed + window - 1 - d_max - width]]
    if min(min(p) for p in pads) < 0:  # offsets never reach past one side: crop instead
        inputs = inputs[:, max(-pads[0][0], 0):height - max(-pads[0][1], 0),
                        max(-pads[1][0], 0):width - max(-pads[1][1], 0)]
        pads = [[max(a, 0), max(b, 0)] for a, b in pads]
    if pads[0][0] == pads[0][1] == pads[1][0] == pads[1][1] == (window - 1) // 2 and window % 2:
        y = tf.nn.conv2d(inputs, sub_kernel, 1, "SAME")
    else:
        y = tf.nn.conv2d(inputs, sub_kernel, 1, [[0, 0], *pads, [0, 0]])
    y = tf.nn.depth_to_space(y, 2)
    return y if (out_h, out_w) == (2 * rows_needed, 2 * cols_needed) else y[:, :out_h, :out_w]


def conv2d_transpose_gemm(inputs, kernel):
    """Exactly ``keras.layers.Conv2DTranspose(strides=2, padding="same")`` (no bias) as ONE
    matmul ``(B*H*W, C_in) x (C_in, k*k*C_out)`` and a col2im by output phase (sums of shifted
    slices), then ``depth_to_space(2)``. The multiply-adds of the transposed conv, no more.

    ``inputs``: ``(B, H, W, C_in)``; ``kernel``: ``(k, k, C_out, C_in)`` -> ``(B, 2H, 2W, C_out)``.
    """
    height, width, c_in = inputs.shape[1], inputs.shape[2], inputs.shape[3]
    size, c_out = int(kernel.shape[0]), int(kernel.shape[2])
    pad = max(size - 2, 0) // 2
    taps, d_min, d_max = _phase_taps(size, pad)
    weights = ops.reshape(ops.transpose(kernel, (3, 0, 1, 2)), (c_in, size * size * c_out))
    cols = ops.reshape(ops.matmul(ops.reshape(inputs, (-1, c_in)), weights), (-1, height, width, size * size * c_out))
    cols = ops.pad(cols, [[0, 0], [d_max, -d_min], [d_max, -d_min], [0, 0]])
    # One split into the k*k taps (its gradient is one concat), then a spatial slice of each tap:
    # slicing taps and channels at once made k*k gradients each the size of all columns.
    parts = ops.split(cols, size * size, axis=-1)
    phases = []
    for r_h, r_w in ((0, 0), (0, 1), (1, 0), (1, 1)):
        terms = [parts[i * size + j][:, top:top + height, left:left + width]
                 for i in taps[r_h] for j in taps[r_w]
                 for top, left in [(d_max - (i - r_h - pad) // 2, d_max - (j - r_w - pad) // 2)]]
        phases.append(tf.add_n(terms) if terms else ops.zeros_like(parts[0][:, :height, :width]))
    return tf.nn.depth_to_space(ops.concatenate(phases, -1), 2)


def same_padding(size: int, kernel: int, stride: int) -> list[int]:
    """TensorFlow's ``"SAME"`` padding ``[before, after]`` of one axis of ``size`` pixels."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return [total // 2, total - total // 2]


def conv2d_patch_gradient(inputs, kernel, strides: int):
    """Exactly ``tf.nn.conv2d(inputs, kernel, strides, "SAME")``, with the kernel gradient
    computed as ONE matmul of the input patches with the output gradient,
    ``patches(x)^T (B*Ho*Wo, k*k*C_in)^T x dy (B*Ho*Wo, C_out)``, instead of
    ``Conv2DBackpropFilter``. Forward and input gradient are TensorFlow's own ops.

    ``inputs``: ``(B, H, W, C_in)``; ``kernel``: ``(k, k, C_in, C_out)`` (gradients flow to both)
    -> ``(B, ceil(H / s), ceil(W / s), C_out)``. The gradient is itself built of differentiable
    ops, so input-gradient penalties (R1, WGAN-GP) differentiate through it.

    Why: on a small output map the matmul has a long inner dimension and few rows, where
    oneDNN's backprop-filter kernel is slow: on 2 AVX2 cores (batch 64) 1.35-2.5x faster for
    outputs of 8x8 and 4x4 (``benchmarks/conv_forms.py``), slower from 16x16 up.
    """
    size, c_in, c_out = int(kernel.shape[0]), int(kernel.shape[2]), int(kernel.shape[3])
    height, width = int(inputs.shape[1]), int(inputs.shape[2])
    pads = [[0, 0], same_padding(height, size, strides), same_padding(width, size, strides), [0, 0]]

    @tf.custom_gradient
    def conv(x, w):
        def grad(dy):
            dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=w, out_backprop=dy,
                                                strides=[1, strides, strides, 1], padding="SAME")
            patches = tf.image.extract_patches(tf.pad(x, pads), [1, size, size, 1],
                                               [1, strides, strides, 1], [1, 1, 1, 1], "VALID")
            dw = tf.matmul(tf.reshape(patches, (-1, size * size * c_in)), tf.reshape(dy, (-1, c_out)),
                           transpose_a=True)
            return dx, tf.reshape(dw, (size, size, c_in, c_out))

        return tf.nn.conv2d(x, w, strides, "SAME"), grad

    return conv(inputs, kernel)
