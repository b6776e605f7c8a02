"""Batch normalisation whose training pass is one fused kernel (and its gradient one more).

``BatchNorm`` is ``keras.layers.BatchNormalization``, the same variables (``gamma``, ``beta``,
``moving_mean``, ``moving_variance``; checkpoints and ``.keras`` files are unchanged) and the same
numbers within float round-off, but a training call on a ``(B, H, W, C)`` channels-last map
runs as TensorFlow's ``FusedBatchNormV3`` (oneDNN on CPU, cuDNN on GPU) instead of Keras' chain of
``moments`` (mean, squared difference, mean) and ``batch_normalization`` (rsqrt, mul, mul, sub,
add) ops; the gradient is ``FusedBatchNormGradV3`` instead of the gradients of that chain. On the
2-core CPU these chains took ~15% of a Frid-Adar DCGAN step (``tf.profiler``).

Everything else (inference, masks, ``synchronized`` statistics across replicas, renorm, other
axes or ranks) is Keras' own code path.
"""
from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="mammogan_tf")  # models.layers.PACKAGE
class BatchNorm(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` with a fused training pass (see the module doc).

    ``inputs``: ``(B, H, W, C)`` (any float dtype; statistics in float32 as Keras does) ->
    the same shape. Training updates ``moving_mean`` and ``moving_variance`` exactly as Keras:
    ``m = momentum * m + (1 - momentum) * batch_stat`` with the biased batch variance.
    """

    def _fusable(self, inputs, mask) -> bool:
        return (keras.backend.backend() == "tensorflow" and mask is None and not self.synchronized
                and not self.renorm and len(inputs.shape) == 4 and self.axis in (-1, 3)
                and None not in inputs.shape[1:])

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable and self._fusable(inputs, mask)):
            return super().call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, tf.float32)
        channels = x.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones((channels,), tf.float32)
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros((channels,), tf.float32)
        empty = tf.zeros((0,), tf.float32)
        y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=gamma, offset=beta, mean=empty, variance=empty, epsilon=self.epsilon,
            data_format="NHWC", is_training=True)
        # The fused op returns the unbiased (n - 1) batch variance; Keras averages the biased one.
        count = tf.cast(tf.size(x) // channels, tf.float32)
        variance = variance * (count - 1.0) / count
        momentum = self.momentum
        self.moving_mean.assign(tf.cast(self.moving_mean, tf.float32) * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(tf.cast(self.moving_variance, tf.float32) * momentum
                                    + variance * (1.0 - momentum))
        return tf.cast(y, self.compute_dtype)
