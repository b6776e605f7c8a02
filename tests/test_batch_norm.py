"""The fused batch norm equals Keras' BatchNormalization: outputs, gradients, moving statistics."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from mammogan_tf.models.batch_norm import BatchNorm


def _pair(channels: int, momentum: float = 0.9):
    ours = BatchNorm(momentum=momentum, epsilon=1e-5, gamma_initializer=keras.initializers.RandomNormal(1.0, 0.5, seed=1),
                     beta_initializer=keras.initializers.RandomNormal(0.0, 0.5, seed=2))
    theirs = keras.layers.BatchNormalization(momentum=momentum, epsilon=1e-5)
    ours.build((None, 4, 4, channels))
    theirs.build((None, 4, 4, channels))
    for a, b in zip(theirs.weights, ours.weights):
        a.assign(b)
    return ours, theirs


def _step(layer, x, upstream, training=True):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        loss = tf.reduce_sum(y * upstream)
    grads = tape.gradient(loss, [x, *layer.trainable_weights])
    return y, grads


@pytest.mark.parametrize("shape", [(8, 5, 6, 3), (3, 4, 4, 16)])
def test_training_pass_equals_keras(shape):
    rng = np.random.default_rng(0)
    ours, theirs = _pair(shape[-1])
    step = tf.function(_step)  # as in the training loop, and eagerly below
    for call in (step, _step):
        x = tf.constant(rng.normal(2.0, 3.0, shape), tf.float32)
        upstream = tf.constant(rng.normal(size=shape), tf.float32)
        y_ours, g_ours = call(ours, x, upstream)
        y_theirs, g_theirs = call(theirs, x, upstream)
        np.testing.assert_allclose(y_ours, y_theirs, atol=2e-5)
        assert float(tf.math.reduce_std(y_ours)) > 0.5  # normalised, not a constant
        for a, b in zip(g_ours, g_theirs):  # input, gamma, beta
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # Two training calls moved the statistics the same way (biased variance, momentum 0.9).
    np.testing.assert_allclose(ours.moving_mean, theirs.moving_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.moving_variance, theirs.moving_variance, rtol=1e-5, atol=1e-6)
    assert not np.allclose(ours.moving_variance, 1.0)
    x = tf.constant(rng.normal(size=shape), tf.float32)
    np.testing.assert_allclose(ours(x, training=False), theirs(x, training=False), atol=1e-5)


def test_moving_variance_is_biased_batch_variance():
    x = tf.constant(np.arange(2 * 2 * 2 * 1, dtype=np.float32).reshape(2, 2, 2, 1))
    layer = BatchNorm(momentum=0.0)
    layer(x, training=True)
    assert float(layer.moving_mean[0]) == pytest.approx(3.5)
    assert float(layer.moving_variance[0]) == pytest.approx(np.var(np.arange(8)), rel=1e-5)  # 5.25, not 6


def test_fused_kernel_is_used_and_config_round_trips():
    layer, _ = _pair(4)
    graph = tf.function(lambda x: layer(x, training=True)).get_concrete_function(
        tf.TensorSpec((2, 4, 4, 4), tf.float32)).graph
    kinds = {op.type for op in graph.get_operations()}
    assert "FusedBatchNormV3" in kinds and "Mean" not in kinds
    clone = BatchNorm.from_config(layer.get_config())
    assert isinstance(clone, BatchNorm) and clone.momentum == layer.momentum and clone.epsilon == layer.epsilon
