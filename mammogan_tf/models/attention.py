"""SAGAN self-attention (Zhang et al. 2019), used by Wu et al.'s contextual GAN at 32x32.

``(B, H, W, C) -> (B, H, W, C)``: ``x + gamma * v(softmax(f(x) g(x)^T) h(x))`` over the N = H*W
positions, with 1x1 convolutions ``f, g: C -> C/8`` (queries, keys), ``h: C -> C/2`` (values) and
``v: C/2 -> C`` (the reduction sizes of the SAGAN/BigGAN reference code, without its 2x2
max-pooling of keys and values), optionally spectrally normalised. ``gamma`` starts at 0, so a
new block is the identity and the network learns how much non-local evidence to use.
Memory: one (B, N, N) attention matrix (N = 1024 at 32x32).
"""
from __future__ import annotations

import keras
from keras import ops

from mammogan_tf.models.layers import conv_layer, register


@register
class SelfAttention(keras.layers.Layer):
    """Self-attention block for ``channels``-channel feature maps (shape preserving).

    ``key_ratio``: channels of queries/keys = ``max(1, channels // key_ratio)``; ``value_ratio``:
    channels of values = ``max(1, channels // value_ratio)``.
    """

    def __init__(self, channels: int, key_ratio: int = 8, value_ratio: int = 2, spectral_norm: bool = True,
                 init_std: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.key_ratio = key_ratio
        self.value_ratio = value_ratio
        self.spectral_norm = spectral_norm
        self.init_std = init_std
        self.key_channels = max(1, channels // key_ratio)
        self.value_channels = max(1, channels // value_ratio)

        def conv(filters):
            return conv_layer(filters, 1, use_bias=False, init_std=init_std, spectral_norm=spectral_norm)

        self.query = conv(self.key_channels)
        self.key = conv(self.key_channels)
        self.value = conv(self.value_channels)
        self.out = conv(channels)

    def build(self, input_shape):
        for layer in (self.query, self.key, self.value):
            layer.build(input_shape)
        self.out.build(tuple(input_shape[:-1]) + (self.value_channels,))
        self.gamma = self.add_weight(name="gamma", shape=(), initializer="zeros")

    def call(self, inputs, training=None):
        shape = ops.shape(inputs)
        batch, height, width = shape[0], shape[1], shape[2]
        queries = ops.reshape(self.query(inputs, training=training), (batch, -1, self.key_channels))
        keys = ops.reshape(self.key(inputs, training=training), (batch, -1, self.key_channels))
        values = ops.reshape(self.value(inputs, training=training), (batch, -1, self.value_channels))
        attention = ops.softmax(ops.matmul(queries, ops.transpose(keys, (0, 2, 1))), axis=-1)  # (B, N, N)
        attended = ops.reshape(ops.matmul(attention, values), (batch, height, width, self.value_channels))
        return inputs + ops.cast(self.gamma, inputs.dtype) * self.out(attended, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "key_ratio": self.key_ratio,
                "value_ratio": self.value_ratio, "spectral_norm": self.spectral_norm,
                "init_std": self.init_std}
