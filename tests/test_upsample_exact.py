"""The fast forms of the paper's layers are the same function as Keras' transposed convs.

``conv2d_transpose_subpixel`` (one plain conv + depth_to_space) against
``keras.layers.Conv2DTranspose(strides=2)``, forward and gradients w.r.t. input and kernel, for
k in {3, 4, 5} and both paddings; ``Upsample2D`` and the ``conv_transpose`` projection stem
against the Keras layer holding the same kernel.
"""
import numpy as np
import pytest
import keras
import tensorflow as tf

from mammogan_tf.models import layers
from mammogan_tf.models.layers import (Projection, Upsample2D, conv2d_transpose_gemm,
                                        conv2d_transpose_subpixel)

TOL = 1e-5


def _forward_and_grads(fn, x, kernel):
    """``(y, dL/dx, dL/dkernel)`` for L = sum(y * w) with a fixed random weight w."""
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = fn(x)
        weight = tf.constant(np.random.default_rng(1).normal(size=y.shape).astype("float32"))
        loss = tf.reduce_sum(y * weight)
    return y, tape.gradient(loss, x), tape.gradient(loss, kernel)


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("kernel_size", [3, 4, 5])
def test_subpixel_equals_conv2d_transpose(kernel_size, padding):
    rng = np.random.default_rng(kernel_size)
    x = tf.constant(rng.normal(size=(2, 5, 6, 3)).astype("float32"))
    reference = keras.layers.Conv2DTranspose(4, kernel_size, strides=2, padding=padding, use_bias=False,
                                             kernel_initializer=keras.initializers.RandomNormal(seed=0))
    reference.build(x.shape)
    want = _forward_and_grads(reference, x, reference.kernel)
    got = _forward_and_grads(lambda t: conv2d_transpose_subpixel(t, reference.kernel, padding), x,
                             reference.kernel)
    size = 2 * 5 if padding == "same" else 2 * 5 + kernel_size - 2
    assert got[0].shape == want[0].shape and got[0].shape[1] == size
    for name, a, b in zip(("output", "d input", "d kernel"), got, want):
        assert float(tf.reduce_max(tf.abs(a))) > 0.1, name  # not trivially zero
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=TOL, rtol=TOL, err_msg=name)


@pytest.mark.parametrize("kernel_size", [3, 4, 5])
def test_gemm_equals_conv2d_transpose(kernel_size):
    rng = np.random.default_rng(10 + kernel_size)
    x = tf.constant(rng.normal(size=(2, 3, 4, 5)).astype("float32"))
    reference = keras.layers.Conv2DTranspose(6, kernel_size, strides=2, padding="same", use_bias=False,
                                             kernel_initializer=keras.initializers.RandomNormal(seed=1))
    reference.build(x.shape)
    want = _forward_and_grads(reference, x, reference.kernel)
    got = _forward_and_grads(lambda t: conv2d_transpose_gemm(t, reference.kernel), x, reference.kernel)
    assert got[0].shape == (2, 6, 8, 6)
    for name, a, b in zip(("output", "d input", "d kernel"), got, want):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=TOL, rtol=TOL, err_msg=name)


@pytest.mark.parametrize("filters,side,form", [(1, 4, "subpixel"), (24, 8, "native"), (24, 4, "gemm")])
def test_upsample2d_matches_keras_layer_with_the_same_kernel(filters, side, form, monkeypatch):
    """Every form keeps the Conv2DTranspose variable and computes the same function."""
    monkeypatch.setattr(layers, "GEMM_MIN_WEIGHTS", 5 * 5 * 8 * 24)  # tiny stand-in for 8M weights
    monkeypatch.setattr(layers, "SUBPIXEL_MAX_FILTERS", 16)  # the rule, switched on
    layer = Upsample2D(filters, 5, "transpose", use_bias=True)
    x = tf.random.stateless_normal((2, side, side, 8), (0, 1))
    y = layer(x)
    assert layer.form == form
    kernel = layer.conv.kernel
    assert tuple(kernel.shape) == (5, 5, filters, 8)
    assert [v.path for v in layer.weights] == [layer.conv.kernel.path, layer.conv.bias.path]
    layer.conv.bias.assign(tf.fill((filters,), 0.5))
    reference = keras.layers.Conv2DTranspose(filters, 5, strides=2, padding="same")
    reference.build(x.shape)
    reference.set_weights(layer.get_weights())
    want = _forward_and_grads(reference, x, reference.kernel)
    got = _forward_and_grads(layer, x, kernel)
    assert y.shape == (2, 2 * side, 2 * side, filters)
    for name, a, b in zip(("output", "d input", "d kernel"), got, want):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=TOL, rtol=TOL, err_msg=name)


def test_projection_stem_is_the_transposed_conv_of_a_1x1_map():
    stem = Projection(6, "conv_transpose", use_bias=True)
    z = tf.random.stateless_normal((3, 10), (2, 3))
    stem(z)
    stem.linear.bias.assign(tf.range(6, dtype=tf.float32))
    reference = keras.layers.Conv2DTranspose(6, 4, padding="valid")
    reference.build((3, 1, 1, 10))
    reference.set_weights(stem.get_weights())
    want = _forward_and_grads(lambda t: reference(tf.reshape(t, (3, 1, 1, 10))), z, reference.kernel)
    got = _forward_and_grads(stem, z, stem.linear.kernel)
    assert got[0].shape == (3, 4, 4, 6)
    for name, a, b in zip(("output", "d z", "d kernel"), got, want):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=TOL, rtol=TOL, err_msg=name)
