"""The patch-gradient form of a strided convolution is the same function as ``tf.nn.conv2d``.

``conv2d_patch_gradient`` (TF's forward and input gradient, the kernel gradient as one matmul
over the input patches) against ``tf.nn.conv2d(..., "SAME")``: forward, first gradients and the
second-order gradient an R1 / WGAN-GP penalty takes, for odd and even kernels and map sizes,
eagerly and inside ``tf.function``; ``ConvBlock.form`` picks it only where the rule says and
keeps the ``Conv2D`` variables.
"""
import numpy as np
import pytest
import tensorflow as tf

from mammogan_tf.models import layers
from mammogan_tf.models.conv_forms import conv2d_patch_gradient
from mammogan_tf.models.layers import ConvBlock

TOL = 1e-5


def _first_and_second_order(conv, x, kernel):
    """``(y, dL/dx, dL/dkernel, dP/dx, dP/dkernel)`` for L = sum(sin(y) * w), P = ||dL/dx||^2."""
    weight = tf.constant(np.random.default_rng(1).normal(size=conv(x, kernel).shape).astype("float32"))
    with tf.GradientTape(persistent=True) as outer:
        outer.watch([x, kernel])
        with tf.GradientTape(persistent=True) as inner:
            inner.watch([x, kernel])
            y = conv(x, kernel)
            loss = tf.reduce_sum(tf.sin(y) * weight)
        dx, dk = inner.gradient(loss, [x, kernel])
        penalty = tf.reduce_sum(tf.square(dx))
    return (y, dx, dk, *outer.gradient(penalty, [x, kernel]))


@pytest.mark.parametrize("graph", [False, True])
@pytest.mark.parametrize("side,kernel_size,strides", [(8, 5, 2), (8, 6, 2), (7, 4, 2), (9, 3, 2), (6, 3, 3)])
def test_patch_gradient_equals_conv2d(side, kernel_size, strides, graph):
    rng = np.random.default_rng(side * 10 + kernel_size)
    x = tf.constant(rng.normal(size=(3, side, side + 1, 4)).astype("float32"))
    kernel = tf.constant(rng.normal(scale=0.3, size=(kernel_size, kernel_size, 4, 5)).astype("float32"))

    def run(conv):
        fn = (lambda a, b: _first_and_second_order(conv, a, b))
        return (tf.function(fn) if graph else fn)(x, kernel)

    want = run(lambda a, b: tf.nn.conv2d(a, b, strides, "SAME"))
    got = run(lambda a, b: conv2d_patch_gradient(a, b, strides))
    assert got[0].shape == (3, -(-side // strides), -(-(side + 1) // strides), 5)
    names = ("output", "d input", "d kernel", "penalty d input", "penalty d kernel")
    for name, a, b in zip(names, got, want):
        scale = float(tf.reduce_max(tf.abs(b)))
        assert scale > 0.1, name  # not trivially zero
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=TOL * max(scale, 1.0), rtol=TOL, err_msg=name)


@pytest.mark.parametrize("side,strides,spectral_norm,form", [
    (16, 2, False, "patch_gradient"),  # 8x8 output: at the limit
    (18, 2, False, "native"),          # 9x9 output: over it
    (8, 1, False, "native"),           # not strided
    (16, 2, True, "native"),           # spectral norm wraps the conv
])
def test_conv_block_form_rule(side, strides, spectral_norm, form):
    block = ConvBlock(6, 5, strides, batch_norm=False, activation="leaky_relu", spectral_norm=spectral_norm)
    block(tf.zeros((2, side, side, 3)))
    assert block.form == form


@pytest.mark.parametrize("batch_norm", [True, False])
def test_conv_block_patch_gradient_keeps_the_conv2d_and_its_numbers(batch_norm, monkeypatch):
    """The same variables (names, shapes, order) as the native block; the same output and gradients."""
    x = tf.random.stateless_normal((4, 12, 12, 3), (0, 1))
    blocks = {}
    for form, limit in (("native", 0), ("patch_gradient", 64)):
        monkeypatch.setattr(layers, "PATCH_GRADIENT_MAX_PIXELS", limit)
        block = ConvBlock(6, 5, 2, batch_norm=batch_norm, activation="leaky_relu", name="block")
        block(x)
        assert block.form == form
        blocks[form] = block
    native, patched = blocks["native"], blocks["patch_gradient"]
    assert [(v.name, tuple(v.shape)) for v in patched.weights] == [(v.name, tuple(v.shape)) for v in native.weights]
    assert patched.weights[0] is patched.conv.kernel  # the Conv2D's own kernel, no copy
    patched.set_weights([w + 0.1 for w in native.get_weights()])
    native.set_weights(patched.get_weights())
    results = []
    for block in (native, patched):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = block(x, training=True)
            loss = tf.reduce_sum(tf.sin(y))
        results.append([y, *tape.gradient(loss, [x, *block.trainable_variables])])
    for a, b in zip(results[1], results[0]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=TOL, rtol=TOL)
