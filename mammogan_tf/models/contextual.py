"""Wu et al. (MIDL 2020) contextual GAN: a U-Net that paints (or removes) a lesion on a real
patch of breast tissue, and its four-way discriminator. Levels, widths, attention placement and
the progressive S/2 -> S fade are described in ``models.contextual_blocks``.

Generator ``ContextualGenerator``: ``(B, S, S, 1)`` context patch in [-1, 1] (clipped) ->
``(B, S, S, 3)`` float32 ``[lesion, input, combined]``:

- encoder: per level ``concat(x, scalar) -> 3x3 stride-2 conv -> LeakyReLU`` (16 filters doubling),
  self-attention at 32x32; each block has its own random scalar ~ U[-1, 1] per example;
- centre: ``3x3 conv -> LeakyReLU`` to ``center_filters`` at the centre (paper: 4x4x2048), flattened
  and compressed by a dense layer to ``embedding_dim`` (1x1x4), expanded back to the centre side by
  nearest-neighbour upsampling (a 1x1 map tiled);
- decoder: per level ``concat(x, skip, scalar) -> nearest 2x upsampling -> (3x3 conv -> ReLU) x 2``,
  self-attention at 32x32; a final 1x1 conv gives the lesion channel;
- border crop: the lesion is set to 0 on a ``border_crop``-px frame (= cropping it off and
  zero-padding back to S, so the output keeps the input's size and the border is pure context);
  ``border_crop / 2`` px in the S/2 stage; ``lesion_window="disc"`` (not in the paper) confines
  it further to a soft-edged disc of radius ``S/2 - border_crop`` (``contextual_blocks.border_mask``);
- the lesion is clipped to [-1, 1]; ``combined = clip(input + lesion, -1, 1)``: the identity
  ``combined = input + lesion`` holds wherever the sum is inside [-1, 1] (before that clip).
  Both clips pass back the gradients that would bring a saturated value back into range
  (``clip_gradient="recover"``, ``contextual_blocks.clip_unit``; ``"zero"``: none, as
  ``tf.clip_by_value``, with which a generator that saturates its lesion window is stuck).

Random scalars (``noise_dim = 2 n``: one per encoder block, then one per decoder block): pass
``noise`` ``(B, 2n)`` in [-1, 1], or ``seed`` (a (2,) int stateless seed: a fixed seed gives
the same scalars, what the training family does so a resumed run draws exactly the same), or
neither: then a ``keras.random.SeedGenerator`` draws fresh ones, so two calls differ.

Discriminator ``ContextualDiscriminator``: the encoder with ``base_filters`` 8x the generator's
(128), ``3x3 conv -> LeakyReLU -> 2x2 max-pooling`` per level, no random scalars, self-attention
at 32x32, flatten, dense -> ``(B, 4)`` logits of [real, fake, benign, normal] (float32 under mixed
precision: the head computes in the variable dtype).
Spectral normalisation (Miyato et al.) on every conv and dense layer of both when
``spectral_norm`` (the paper: "self-attention ... as well as spectral normalization").
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from mammogan_tf.models.attention import SelfAttention
from mammogan_tf.models.contextual_blocks import (ContextualEncoder, DecoderBlock, border_mask, clip_unit, fade,
                                                  resolve_fade, upsample2)
from mammogan_tf.models.contextual_config import attention_level, level_widths, num_levels
from mammogan_tf.models.layers import conv_layer, dense_layer, register


def _build_by_calling(model, input_shape, **kwargs):
    """Build every layer of a contextual network (all fade paths) with one zero batch."""
    side = int(input_shape[1])
    if model.progressive and side == model.image_size // 2:
        side = model.image_size
    model.call(ops.zeros((1, side, side, 1)), alpha=0.5 if model.progressive else None, **kwargs)


@register
class ContextualGenerator(keras.Model):
    """Context patch -> ``[lesion, input, combined]``; see the module docstring.

    ``call(images, noise=None, seed=None, alpha=None, training=None)``: ``images`` ``(B, S, S, 1)``
    (or ``(B, S/2, S/2, 1)`` in the S/2 stage -> output at S/2); ``alpha`` the fade weight of the S
    layers (None = 1; a tensor blends).
    """

    def __init__(self, image_size: int = 256, base_filters: int = 16, max_filters: int = 512,
                 center_resolution: int = 4, center_filters: int = 2048, embedding_dim: int = 4,
                 attention_resolution: int | None = 32, border_crop: int = 10, lesion_window: str = "square",
                 clip_gradient: str = "recover", progressive: bool = True,
                 spectral_norm: bool = True, negative_slope: float = 0.2, init_std: float = 0.02,
                 noise_seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.image_size, self.base_filters, self.max_filters = image_size, base_filters, max_filters
        self.center_resolution, self.center_filters, self.embedding_dim = center_resolution, center_filters, embedding_dim
        self.attention_resolution, self.border_crop, self.progressive = attention_resolution, border_crop, progressive
        self.spectral_norm, self.negative_slope, self.init_std = spectral_norm, negative_slope, init_std
        self.noise_seed, self.lesion_window, self.clip_gradient = noise_seed, lesion_window, clip_gradient
        self.levels = num_levels(image_size, center_resolution)
        self.noise_dim = 2 * self.levels
        widths = level_widths(self.levels, base_filters, max_filters)
        self.attention_level = attention_level(image_size, attention_resolution)
        if not 0 <= self.attention_level < self.levels:
            raise ValueError(f"attention_resolution {attention_resolution}: must lie strictly between the centre "
                             f"({center_resolution}) and the image ({image_size})")
        self.encoder = ContextualEncoder(image_size, widths, "stride", True, self.attention_level, progressive,
                                         spectral_norm, negative_slope, init_std)
        self.center = conv_layer(center_filters, 3, init_std=init_std, spectral_norm=spectral_norm)
        self.center_act = keras.layers.LeakyReLU(negative_slope=negative_slope)
        self.flatten = keras.layers.Flatten()
        self.compress = dense_layer(embedding_dim, init_std=init_std, spectral_norm=spectral_norm)
        self.expand = keras.layers.UpSampling2D(center_resolution, interpolation="nearest")
        # decoder[i] takes level i+1 to level i (its output has the width of level max(i, 1))
        self.decoder = [DecoderBlock(widths[max(i - 1, 0)], spectral_norm, init_std) for i in range(self.levels)]
        self.decoder_attention = (SelfAttention(widths[self.attention_level - 1], spectral_norm=spectral_norm,
                                                init_std=init_std) if self.attention_level else None)
        self.to_lesion = conv_layer(1, 1, init_std=init_std, spectral_norm=spectral_norm, dtype="float32")
        self.to_lesion_low = (conv_layer(1, 1, init_std=init_std, spectral_norm=spectral_norm, dtype="float32")
                              if progressive else None)
        self.seed_generator = keras.random.SeedGenerator(noise_seed)

    def build(self, input_shape):
        _build_by_calling(self, input_shape, noise=ops.zeros((1, self.noise_dim)))

    def scalars(self, batch_size, noise=None, seed=None):
        """The ``(B, noise_dim)`` random scalars in [-1, 1] of one call (see the module docstring)."""
        if noise is not None:
            return ops.cast(noise, "float32")
        shape = (batch_size, self.noise_dim)
        if seed is not None:
            return tf.random.stateless_uniform(shape, seed, minval=-1.0, maxval=1.0)
        return keras.random.uniform(shape, -1.0, 1.0, seed=self.seed_generator)

    def call(self, inputs, noise=None, seed=None, alpha=None, training=None):
        images = ops.clip(ops.cast(inputs, "float32"), -1.0, 1.0)
        mode, alpha = resolve_fade(int(images.shape[1]), self.image_size, self.progressive, alpha)
        scalars = self.scalars(ops.shape(images)[0], noise, seed)
        features = self.encoder(ops.cast(images, self.compute_dtype), scalars=scalars[:, :self.levels],
                                mode=mode, alpha=alpha, training=training)
        x = self.center_act(self.center(features[-1], training=training))
        embedding = self.compress(self.flatten(x), training=training)  # (B, embedding_dim)
        x = self.expand(ops.reshape(embedding, (-1, 1, 1, self.embedding_dim)))
        for i in range(self.levels - 1, 0, -1):  # level i+1 -> level i
            x = self.decoder[i](x, features[i], scalars[:, self.levels + i], training=training)
            if i == self.attention_level:
                x = self.decoder_attention(x, training=training)
        low = high = None
        if mode != "high":
            low = self.to_lesion_low(x, training=training)
            low = low if mode == "half" else upsample2(low)
        if mode in ("high", "blend"):
            x = self.decoder[0](x, features[0], scalars[:, self.levels], training=training)
            high = self.to_lesion(x, training=training)
        lesion = ops.cast(fade(low, high, mode, alpha), "float32")
        side = int(images.shape[1])
        border = self.border_crop * side // self.image_size
        lesion = clip_unit(lesion * border_mask(side, border, self.lesion_window), self.clip_gradient)
        combined = clip_unit(images + lesion, self.clip_gradient)
        return ops.concatenate([lesion, images, combined], axis=-1)

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size, "base_filters": self.base_filters,
                "max_filters": self.max_filters, "center_resolution": self.center_resolution,
                "center_filters": self.center_filters, "embedding_dim": self.embedding_dim,
                "attention_resolution": self.attention_resolution, "border_crop": self.border_crop,
                "lesion_window": self.lesion_window, "clip_gradient": self.clip_gradient,
                "progressive": self.progressive,
                "spectral_norm": self.spectral_norm,
                "negative_slope": self.negative_slope, "init_std": self.init_std, "noise_seed": self.noise_seed}


@register
class ContextualDiscriminator(keras.Model):
    """``(B, S, S, 1)`` (or S/2 in the S/2 stage) -> ``(B, num_outputs)`` logits (float32 unless float64) of
    [real, fake, benign, normal]. ``call(images, alpha=None, training=None)``; ``alpha`` as for
    the generator (mirrored: the S layers fade in at the input)."""

    def __init__(self, image_size: int = 256, base_filters: int = 128, max_filters: int = 4096,
                 center_resolution: int = 4, attention_resolution: int | None = 32, num_outputs: int = 4,
                 progressive: bool = True, spectral_norm: bool = True, negative_slope: float = 0.2,
                 init_std: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        self.image_size, self.base_filters, self.max_filters = image_size, base_filters, max_filters
        self.center_resolution, self.attention_resolution = center_resolution, attention_resolution
        self.num_outputs, self.progressive, self.spectral_norm = num_outputs, progressive, spectral_norm
        self.negative_slope, self.init_std = negative_slope, init_std
        self.levels = num_levels(image_size, center_resolution)
        level = attention_level(image_size, attention_resolution)
        if not 0 <= level <= self.levels:
            raise ValueError(f"attention_resolution {attention_resolution}: must lie between the centre "
                             f"({center_resolution}) and the image ({image_size})")
        self.encoder = ContextualEncoder(image_size, level_widths(self.levels, base_filters, max_filters), "maxpool",
                                         False, level, progressive, spectral_norm, negative_slope, init_std)
        self.flatten = keras.layers.Flatten()
        self.head = dense_layer(num_outputs, init_std=init_std, spectral_norm=spectral_norm,
                                dtype=self.dtype_policy.variable_dtype)

    def build(self, input_shape):
        _build_by_calling(self, input_shape)

    def call(self, inputs, alpha=None, training=None):
        mode, alpha = resolve_fade(int(inputs.shape[1]), self.image_size, self.progressive, alpha)
        features = self.encoder(ops.cast(inputs, self.compute_dtype), mode=mode, alpha=alpha, training=training)
        return self.head(self.flatten(features[-1]), training=training)

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size, "base_filters": self.base_filters,
                "max_filters": self.max_filters, "center_resolution": self.center_resolution,
                "attention_resolution": self.attention_resolution, "num_outputs": self.num_outputs,
                "progressive": self.progressive, "spectral_norm": self.spectral_norm,
                "negative_slope": self.negative_slope, "init_std": self.init_std}


def lesion_of(outputs):
    """The lesion channel ``(B, S, S, 1)`` of a generator output ``(B, S, S, 3)``."""
    return outputs[..., 0:1]


def combined_of(outputs):
    """The combined image ``(B, S, S, 1)`` (input + lesion) of a generator output."""
    return outputs[..., 2:3]


def dummy_images(image_size: int, batch_size: int = 1) -> np.ndarray:
    """Zeros ``(batch_size, image_size, image_size, 1)`` float32."""
    return np.zeros((batch_size, image_size, image_size, 1), np.float32)
