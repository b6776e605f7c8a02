"""Building blocks of Wu et al.'s contextual GAN (``models.contextual``): levels, widths, blocks,
the encoder shared by the generator and the discriminator, and the progressive fade.

Levels. A network for ``image_size`` S has ``n = log2(S / center_resolution)`` levels; level
``i`` (1..n) is the feature map at side ``S / 2**i`` (level 0 is the image). Paper scale: S 256,
centre 4, n = 6 (128, 64, 32, 16, 8, 4). Level ``i`` has ``min(base_filters * 2**(i-1),
max_filters)`` channels (G: 16, 32, ..., 512; D: 8x that). Self-attention sits at the level whose
side is ``attention_resolution`` (paper 32 -> level 3); at tiny sizes pick any side strictly
between the centre and S (e.g. 8 for S 32, centre 4).

Progressive growing (Karras et al.), one doubling S/2 -> S: level 1 can be entered from the
image at S (the outer encoder block, the paper's first block) or from the image at S/2 (a 1x1
"from image" conv + LeakyReLU, used by the S/2 stage); the generator likewise leaves level 1
through the outer decoder block + final 1x1 conv (S) or a 1x1 "to lesion" conv (S/2). The modes
(``resolve_fade``): ``half`` (input at S/2, output at S/2), ``low`` (input at S, routed through
the S/2 layers on the 2x2 average-pooled image, the S/2 output nearest-upsampled: the exact S/2
network), ``high`` (S layers only, the trained network), ``blend`` (both, linearly mixed by
``alpha`` at the entry of level 1 and at the output: ``low + alpha * (high - low)``).
Every layer of every mode exists from the start, so a stage switch keeps all weights by name.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from mammogan_tf.models.attention import SelfAttention
from mammogan_tf.models.layers import conv_layer, register

FADE_MODES = ("half", "low", "high", "blend")


def resolve_fade(size: int, image_size: int, progressive: bool, alpha):
    """``(mode, alpha)`` for an input of side ``size`` (see the module docstring).

    ``alpha``: None (= 1), a Python number (0 -> ``low``, 1 -> ``high``, else ``blend``) or a scalar
    tensor / variable (always ``blend``, e.g. the fade schedule variable).
    """
    if progressive and size == image_size // 2:
        return "half", None
    if size != image_size:
        allowed = f"{image_size} or {image_size // 2}" if progressive else f"{image_size}"
        raise ValueError(f"contextual network: input side {size}, expected {allowed}")
    if not progressive or alpha is None:
        return "high", None
    if isinstance(alpha, (int, float)):
        return ("low" if alpha <= 0 else "high" if alpha >= 1 else "blend"), float(alpha)
    return "blend", alpha


def upsample2(x):
    """Nearest-neighbour 2x upsampling ``(B, H, W, C) -> (B, 2H, 2W, C)``."""
    return ops.repeat(ops.repeat(x, 2, axis=1), 2, axis=2)


def downsample2(x):
    """2x2 average pooling ``(B, H, W, C) -> (B, H/2, W/2, C)`` (undoes ``upsample2`` exactly)."""
    return ops.average_pool(x, 2, 2, padding="valid")


def fade(low, high, mode: str, alpha):
    """``low`` (already at ``high``'s size) for ``low``/``half``, ``high`` for ``high``, else
    ``low + alpha * (high - low)``."""
    if mode in ("low", "half"):
        return low
    if mode == "high":
        return high
    return low + ops.cast(alpha, low.dtype) * (high - low)


def concat_scalar(x, scalar):
    """Append a per-example scalar ``(B,)`` broadcast to ``(B, H, W, 1)`` as a channel."""
    shape = ops.shape(x)
    plane = ops.broadcast_to(ops.reshape(ops.cast(scalar, x.dtype), (-1, 1, 1, 1)),
                             (shape[0], shape[1], shape[2], 1))
    return ops.concatenate([x, plane], axis=-1)


CLIP_GRADIENTS = ("recover", "zero")


def clip_unit(x, gradient: str = "recover"):
    """``clip(x, -1, 1)`` (the forward pass is always exactly the clip).

    ``gradient="zero"``: ``tf.clip_by_value``'s gradient, 0 wherever ``|x| > 1``, so an output
    driven into saturation gets no gradient and stays there (a generator that saturates its whole
    lesion window in its first steps is stuck). ``"recover"``: the identity inside [-1, 1], and
    outside it only the gradients whose descent step moves ``x`` back towards the range
    (``x > 1`` with a positive gradient, ``x < -1`` with a negative one); the others are 0, so
    ``x`` never drifts further out.
    """
    if gradient not in CLIP_GRADIENTS:
        raise ValueError(f"clip gradient {gradient!r}: expected one of {', '.join(CLIP_GRADIENTS)}")
    if gradient == "zero":
        return ops.clip(x, -1.0, 1.0)
    return _clip_recover(tf.convert_to_tensor(x))


@tf.custom_gradient
def _clip_recover(x):
    def grad(upstream):
        back_in = (tf.abs(x) <= 1.0) | ((x > 1.0) & (upstream > 0)) | ((x < -1.0) & (upstream < 0))
        return tf.where(back_in, upstream, tf.zeros_like(upstream))

    return tf.clip_by_value(x, tf.cast(-1.0, x.dtype), tf.cast(1.0, x.dtype)), grad


LESION_WINDOWS = ("square", "disc")


def border_mask(size: int, border: int, window: str = "square"):
    """``(1, size, size, 1)`` float32 in [0, 1], where the lesion channel may be non-zero.

    ``"square"`` (the paper's border crop): 0 on a ``border``-px frame, 1 inside (crop + zero-pad
    back). ``"disc"``: a disc of radius ``size / 2 - border`` about the patch centre with a
    logistic edge of scale ``size / 64`` px (at least 0.5): 0.5 on the circle, about 1 inside,
    about 0 outside it, and exactly 0 on the border frame.
    """
    if window not in LESION_WINDOWS:
        raise ValueError(f"lesion window {window!r}: expected one of {', '.join(LESION_WINDOWS)}")
    inner = tf.ones((size - 2 * border, size - 2 * border), tf.float32)
    square = tf.reshape(tf.pad(inner, [[border, border], [border, border]]), (1, size, size, 1))
    if window == "square":
        return square
    centre = np.arange(size, dtype=np.float32) + 0.5 - size / 2
    radius = np.sqrt(centre[:, None] ** 2 + centre[None, :] ** 2)
    disc = 1.0 / (1.0 + np.exp(-(size / 2 - border - radius) / max(size / 64, 0.5)))
    return square * tf.constant(disc.reshape(1, size, size, 1).astype(np.float32))


@register
class EncoderBlock(keras.layers.Layer):
    """``[concat scalar] -> 3x3 conv -> LeakyReLU``, halving the side: ``(B, H, W, C) ->
    (B, H/2, W/2, filters)``. ``downsample="stride"``: stride-2 conv (generator);
    ``"maxpool"``: stride-1 conv then 2x2 max-pooling (discriminator)."""

    def __init__(self, filters: int, downsample: str = "stride", spectral_norm: bool = True,
                 negative_slope: float = 0.2, init_std: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        if downsample not in ("stride", "maxpool"):
            raise ValueError(f"downsample {downsample!r}: expected 'stride' or 'maxpool'")
        self.filters, self.downsample = filters, downsample
        self.spectral_norm, self.negative_slope, self.init_std = spectral_norm, negative_slope, init_std
        self.conv = conv_layer(filters, 3, 2 if downsample == "stride" else 1, init_std=init_std,
                               spectral_norm=spectral_norm)
        self.act = keras.layers.LeakyReLU(negative_slope=negative_slope)
        self.pool = keras.layers.MaxPooling2D(2) if downsample == "maxpool" else None

    def call(self, inputs, scalar=None, training=None):
        x = inputs if scalar is None else concat_scalar(inputs, scalar)
        x = self.act(self.conv(x, training=training))
        return self.pool(x) if self.pool is not None else x

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "downsample": self.downsample,
                "spectral_norm": self.spectral_norm, "negative_slope": self.negative_slope,
                "init_std": self.init_std}


@register
class DecoderBlock(keras.layers.Layer):
    """``concat(x, skip, scalar) -> nearest 2x upsampling -> (3x3 conv -> ReLU) x 2``:
    ``(B, H, W, C) -> (B, 2H, 2W, filters)``."""

    def __init__(self, filters: int, spectral_norm: bool = True, init_std: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.spectral_norm, self.init_std = filters, spectral_norm, init_std
        self.conv1 = conv_layer(filters, 3, init_std=init_std, spectral_norm=spectral_norm)
        self.conv2 = conv_layer(filters, 3, init_std=init_std, spectral_norm=spectral_norm)

    def call(self, inputs, skip, scalar, training=None):
        x = upsample2(concat_scalar(ops.concatenate([inputs, skip], axis=-1), scalar))
        x = ops.relu(self.conv1(x, training=training))
        return ops.relu(self.conv2(x, training=training))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "spectral_norm": self.spectral_norm,
                "init_std": self.init_std}


@register
class ContextualEncoder(keras.layers.Layer):
    """The encoder of the generator and (with max-pooling, no scalars) the whole trunk of the
    discriminator: image ``(B, S, S, 1)`` (or ``(B, S/2, S/2, 1)`` in the ``half`` stage) ->
    features of levels 1..n, ``[(B, S/2, S/2, w1), ..., (B, S/2**n, S/2**n, wn)]``.

    ``random_scalars``: each block concatenates its scalar ``scalars[:, i]`` (``scalars``
    ``(B, n)`` in [-1, 1]); ``attention_level``: self-attention after that level (0: none).
    """

    def __init__(self, image_size: int, widths: list[int], downsample: str = "stride",
                 random_scalars: bool = True, attention_level: int = 0, progressive: bool = True,
                 spectral_norm: bool = True, negative_slope: float = 0.2, init_std: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        self.image_size, self.widths, self.downsample = image_size, list(widths), downsample
        self.random_scalars, self.attention_level, self.progressive = random_scalars, attention_level, progressive
        self.spectral_norm, self.negative_slope, self.init_std = spectral_norm, negative_slope, init_std
        self.blocks = [EncoderBlock(width, downsample, spectral_norm, negative_slope, init_std)
                       for width in self.widths]
        self.from_image = (conv_layer(self.widths[0], 1, init_std=init_std, spectral_norm=spectral_norm)
                           if progressive else None)
        self.from_image_act = keras.layers.LeakyReLU(negative_slope=negative_slope)
        self.attention = (SelfAttention(self.widths[attention_level - 1], spectral_norm=spectral_norm,
                                        init_std=init_std) if attention_level else None)

    def _scalar(self, scalars, index):
        return scalars[:, index] if self.random_scalars else None

    def call(self, images, scalars=None, mode: str = "high", alpha=None, training=None):
        high = low = None
        if mode in ("high", "blend"):
            high = self.blocks[0](images, self._scalar(scalars, 0), training=training)
        if mode != "high":
            small = images if mode == "half" else downsample2(images)
            low = self.from_image_act(self.from_image(small, training=training))
        x = fade(low, high, mode, alpha)
        features = [x]
        for level in range(2, len(self.blocks) + 1):
            if level - 1 == self.attention_level:
                features[-1] = x = self.attention(x, training=training)
            x = self.blocks[level - 1](x, self._scalar(scalars, level - 1), training=training)
            features.append(x)
        if len(self.blocks) == self.attention_level:
            features[-1] = self.attention(x, training=training)
        return features

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size, "widths": self.widths,
                "downsample": self.downsample, "random_scalars": self.random_scalars,
                "attention_level": self.attention_level, "progressive": self.progressive,
                "spectral_norm": self.spectral_norm, "negative_slope": self.negative_slope,
                "init_std": self.init_std}
