"""DCGAN (Radford et al. 2016) as used by Frid-Adar et al. 2018 and Alyafi et al. 2019/2020.

Generator: ``z (B, L) -> (B, S, S, C) float32 in [-1, 1]``: projection to 4x4, then
``log2(S/4) - 1`` upsampling blocks ``(upsample, [BN], activation)``, then an upsampling conv to
C channels and tanh (computed in float32 even under mixed precision).

Discriminator: ``(B, S, S, C) in [-1, 1] -> logits (B, 1) float32``: ``num_layers`` conv blocks
(``conv, [BN] except on the first, LeakyReLU, [dropout]``), flatten, one dense logit. The
papers' sigmoid lives in the loss (BCE with logits).
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf

from mammogan_tf.models.latents import sample_latent
from mammogan_tf.models.layers import ConvBlock, NormAct, Projection, Upsample2D, dense_layer, register


def generator_widths(image_size: int, base_filters: int, max_filters: int) -> list[int]:
    """Channels of the hidden feature maps at 4x4, 8x8, ..., (S/2)x(S/2).

    The last (S/2) has ``base_filters``; each coarser one doubles, capped at ``max_filters``.
    E.g. S=64, base 128, max 1024 -> [1024, 512, 256, 128].
    """
    steps = int(math.log2(image_size // 4))
    return [min(base_filters * 2 ** (steps - 1 - i), max_filters) for i in range(steps)]


def discriminator_widths(num_layers: int, base_filters: int, max_filters: int) -> list[int]:
    """Channels of conv i: ``min(base_filters * 2**i, max_filters)``."""
    return [min(base_filters * 2 ** i, max_filters) for i in range(num_layers)]


def layer_strides(pattern: str, num_layers: int) -> list[int]:
    """``"all"``: stride 2 everywhere; ``"odd"``: stride 2 on the 1st, 3rd, 5th... conv
    (Frid-Adar's ACGAN discriminator, as in the Keras ACGAN example), 1 elsewhere."""
    if pattern not in ("all", "odd"):
        raise ValueError(f"strides {pattern!r}: expected 'all' or 'odd'")
    return [2 if pattern == "all" or i % 2 == 0 else 1 for i in range(num_layers)]


@register
class DCGANGenerator(keras.Model):
    """``z (B, latent_dim) -> images (B, image_size, image_size, channels) float32 in [-1, 1]``.

    Attributes used by the training loop and synthesis: ``latent_dim``, ``latent_distribution``
    (``"normal"`` or ``"uniform"`` on [-1, 1]), ``image_size``, ``channels``, ``num_classes``
    (0: unconditional).
    """

    num_classes = 0

    def __init__(self, latent_dim: int = 100, image_size: int = 64, channels: int = 1,
                 latent_distribution: str = "normal", base_filters: int = 64, max_filters: int = 512,
                 kernel_size: int = 5, projection: str = "dense", batch_norm: bool = True,
                 activation: str = "relu", negative_slope: float = 0.2, upsample: str = "transpose",
                 init_std: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        if latent_distribution not in ("normal", "uniform"):
            raise ValueError(f"latent_distribution {latent_distribution!r}: expected 'normal' or 'uniform'")
        self.latent_dim = latent_dim
        self.image_size = image_size
        self.channels = channels
        self.latent_distribution = latent_distribution
        self.base_filters = base_filters
        self.max_filters = max_filters
        self.kernel_size = kernel_size
        self.projection_method = projection
        self.batch_norm = batch_norm
        self.activation = activation
        self.negative_slope = negative_slope
        self.upsample = upsample
        self.init_std = init_std

        widths = generator_widths(image_size, base_filters, max_filters)
        self.projection = Projection(widths[0], projection, use_bias=not batch_norm, init_std=init_std)
        self.projection_act = NormAct(batch_norm, activation, negative_slope, init_std=init_std)
        self.blocks = [ConvBlock(width, kernel_size, upsample=upsample, batch_norm=batch_norm,
                                 activation=activation, negative_slope=negative_slope, init_std=init_std)
                       for width in widths[1:]]
        self.to_image = Upsample2D(channels, kernel_size, upsample, init_std=init_std)
        self.tanh = keras.layers.Activation("tanh", dtype="float32")

    def call(self, inputs, training=None):
        x = self.projection_act(self.projection(inputs), training=training)
        for block in self.blocks:
            x = block(x, training=training)
        return self.tanh(self.to_image(x))

    def sample_latent(self, batch_size: int, seed) -> tf.Tensor:
        """``(batch_size, latent_dim)`` float32 from ``latent_distribution``; stateless, so the
        same ``seed`` (int tensor of shape (2,)) gives the same z."""
        return sample_latent(self.latent_distribution, batch_size, self.latent_dim, seed)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim, "image_size": self.image_size,
                "channels": self.channels, "latent_distribution": self.latent_distribution,
                "base_filters": self.base_filters, "max_filters": self.max_filters,
                "kernel_size": self.kernel_size, "projection": self.projection_method,
                "batch_norm": self.batch_norm, "activation": self.activation,
                "negative_slope": self.negative_slope, "upsample": self.upsample,
                "init_std": self.init_std}


@register
class DCGANDiscriminator(keras.Model):
    """``images (B, image_size, image_size, channels) in [-1, 1] -> logits (B, 1) float32``.

    ``features(images)`` is the flattened trunk output ``(B, F)`` that the heads read.
    """

    def __init__(self, image_size: int = 64, channels: int = 1, base_filters: int = 64,
                 max_filters: int = 512, kernel_size: int = 5, first_kernel_size: int | None = None,
                 num_layers: int = 4, strides: str = "all",
                 batch_norm: bool = True, activation: str = "leaky_relu", negative_slope: float = 0.2,
                 dropout: float = 0.0, spectral_norm: bool = False, init_std: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        self.image_size = image_size
        self.channels = channels
        self.base_filters = base_filters
        self.max_filters = max_filters
        self.kernel_size = kernel_size
        self.first_kernel_size = first_kernel_size
        self.num_layers = num_layers
        self.strides = strides
        self.batch_norm = batch_norm
        self.activation = activation
        self.negative_slope = negative_slope
        self.dropout = dropout
        self.spectral_norm = spectral_norm
        self.init_std = init_std

        widths = discriminator_widths(num_layers, base_filters, max_filters)
        kernels = [first_kernel_size or kernel_size] + [kernel_size] * (num_layers - 1)
        self.blocks = [ConvBlock(width, kernels[i], stride, batch_norm=batch_norm and i > 0,
                                 activation=activation, negative_slope=negative_slope, dropout=dropout,
                                 spectral_norm=spectral_norm, init_std=init_std)
                       for i, (width, stride) in enumerate(zip(widths, layer_strides(strides, num_layers)))]
        self.flatten = keras.layers.Flatten()
        self.logit = self.head(1)

    def head(self, units: int) -> keras.layers.Layer:
        """A dense output head on the features, float32 so logits are float32 under mixed precision."""
        return dense_layer(units, init_std=self.init_std, spectral_norm=self.spectral_norm, dtype="float32")

    def features(self, images, training=None):
        x = images
        for block in self.blocks:
            x = block(x, training=training)
        return self.flatten(x)

    def call(self, inputs, training=None):
        return self.logit(self.features(inputs, training), training=training)

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size, "channels": self.channels,
                "base_filters": self.base_filters, "max_filters": self.max_filters,
                "kernel_size": self.kernel_size, "first_kernel_size": self.first_kernel_size,
                "num_layers": self.num_layers, "strides": self.strides,
                "batch_norm": self.batch_norm, "activation": self.activation,
                "negative_slope": self.negative_slope, "dropout": self.dropout,
                "spectral_norm": self.spectral_norm, "init_std": self.init_std}
