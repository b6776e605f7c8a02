"""The fused Adam follows Keras' Adam: same variables, moments and step count after several updates."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from mammogan_tf.training.optimizers import Adam


@pytest.mark.parametrize("beta_1", [0.0, 0.5])
def test_fused_adam_equals_keras_adam(beta_1):
    rng = np.random.default_rng(0)
    start = [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(5,)).astype(np.float32)]
    runs = {}
    for name, cls in (("ours", Adam), ("keras", keras.optimizers.Adam)):
        variables = [tf.Variable(value) for value in start]
        optimizer = cls(learning_rate=1e-2, beta_1=beta_1, beta_2=0.99, epsilon=1e-7)
        optimizer.build(variables)
        step = tf.function(lambda grads, o=optimizer, vs=variables: o.apply_gradients(zip(grads, vs)))
        for i in range(4):
            grads = [tf.constant(np.random.default_rng(10 + i).normal(size=v.shape), tf.float32) for v in variables]
            step(grads)
        runs[name] = (variables, optimizer)
    (ours, ours_opt), (theirs, theirs_opt) = runs["ours"], runs["keras"]
    for a, b, s in zip(ours, theirs, start):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
        assert np.abs(a.numpy() - s).max() > 1e-3  # the variables moved
    assert int(ours_opt.iterations) == int(theirs_opt.iterations) == 4
    for a, b in zip(ours_opt.variables, theirs_opt.variables):  # iterations, lr, m and v slots
        assert a.name == b.name
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_fused_update_is_one_kernel_per_variable():
    variables = [tf.Variable(tf.zeros((2, 2))), tf.Variable(tf.zeros((3,)))]
    optimizer = Adam(learning_rate=1e-3)
    optimizer.build(variables)
    graph = tf.function(lambda g: optimizer.apply_gradients(zip(g, variables))).get_concrete_function(
        [tf.TensorSpec((2, 2)), tf.TensorSpec((3,))]).graph
    kinds = [op.type for op in graph.get_operations()]
    assert kinds.count("ResourceApplyAdam") == 2 and "Sqrt" not in kinds
