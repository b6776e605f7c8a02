"""Han et al.'s conditional progressive GAN with bounding boxes (Han et al. 2019, after Karras et
al. 2018's PGGAN): G and D grow from ``start_resolution`` (4 or 8) to ``image_size`` (256), a
binary box mask is given to G (with the latent) and to D (with the image) at every resolution.

Both networks are built at full size once; which resolutions are active is a runtime scalar
``level`` in [0, K] (K = log2(image_size / start_resolution)): at an integer level k the network
works at ``res_k = start * 2**k``; at ``level = k + alpha`` the new resolution ``res_{k+1}`` is
faded in by ``alpha``. Every variable exists from the start, so adding a stage keeps all earlier
weights by name; the loop feeds ``level`` from a schedule.

- G output ``(B, S, S, C)`` (linear, about [-1, 1]): ``sum_k w_k(level) * up_S(to_rgb_k(h_k))``
  with ``w_k = max(0, 1 - |level - k|)`` (``blend_weights``) and ``up_S`` nearest upsampling.
- D input at full size ``S``: ``x_k = avgpool(x)`` at each ``res_k``; features entering
  resolution k are ``e_k = c_k from_rgb_k(x_k) + (1 - c_k) block_{k+1}(e_{k+1})`` with
  ``c_k = clip(k + 1 - level, 0, 1)`` (``entry_weights``).
- The mask at ``res_k`` is the max-pooled full mask (a small box never vanishes).
- ``top`` (Python int, default K): the highest resolution index computed; anything above it has
  weight 0 whenever ``level <= top``, so passing ``top = ceil(level)`` saves the work of the
  resolutions not grown yet (one trace per ``top``: the family's ``stage``).
- Equalised learning rate: weights ~ N(0, 1) scaled at run time by ``gain / sqrt(fan_in)``;
  pixel norm after every G conv; minibatch standard deviation before D's last block.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from mammogan_tf.models.latents import sample_latent
from mammogan_tf.models.layers import register
from mammogan_tf.models.pggan_config import CPGGANModelConfig

SQRT2 = float(np.sqrt(2.0))


# ---------------------------------------------------------------------------------- layers
@register
class EqualizedConv2D(keras.layers.Layer):
    """Conv2D ("same", stride 1) with weights ~ N(0, 1) multiplied at run time by
    ``gain / sqrt(kernel_size**2 * in_channels)`` (He's constant; Karras et al. 2018, 4.1)."""

    def __init__(self, filters: int, kernel_size: int = 3, gain: float = SQRT2, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.gain = filters, kernel_size, gain

    def build(self, input_shape):
        fan_in = self.kernel_size ** 2 * int(input_shape[-1])
        self.scale = self.gain / float(np.sqrt(fan_in))
        self.kernel = self.add_weight(name="kernel", shape=(self.kernel_size, self.kernel_size,
                                                            int(input_shape[-1]), self.filters),
                                      initializer=keras.initializers.RandomNormal(0.0, 1.0))
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")

    def call(self, inputs):
        return tf.nn.conv2d(inputs, self.kernel * self.scale, 1, "SAME") + self.bias

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "gain": self.gain}


@register
class EqualizedDense(keras.layers.Layer):
    """Dense with weights ~ N(0, 1) scaled at run time by ``gain / sqrt(in_features)``."""

    def __init__(self, units: int, gain: float = SQRT2, **kwargs):
        super().__init__(**kwargs)
        self.units, self.gain = units, gain

    def build(self, input_shape):
        self.scale = self.gain / float(np.sqrt(int(input_shape[-1])))
        self.kernel = self.add_weight(name="kernel", shape=(int(input_shape[-1]), self.units),
                                      initializer=keras.initializers.RandomNormal(0.0, 1.0))
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")

    def call(self, inputs):
        return tf.matmul(inputs, self.kernel * self.scale) + self.bias

    def get_config(self):
        return {**super().get_config(), "units": self.units, "gain": self.gain}


def pixel_norm(x, epsilon: float = 1e-8):
    """Each pixel's feature vector divided by its RMS over channels."""
    return x * tf.math.rsqrt(tf.reduce_mean(tf.square(x), axis=-1, keepdims=True) + epsilon)


def minibatch_stddev(x, group_size: int = 4):
    """Appends one channel: the standard deviation of each feature over a group of
    ``min(group_size, B)`` examples (B must be a multiple), averaged over features and pixels."""
    shape = tf.shape(x)
    group = tf.minimum(group_size, shape[0])
    y = tf.reshape(x, [group, -1, shape[1], shape[2], shape[3]])
    y = tf.sqrt(tf.reduce_mean(tf.square(y - tf.reduce_mean(y, 0)), 0) + 1e-8)
    y = tf.reduce_mean(y, axis=[1, 2, 3])  # (B / group,)
    y = tf.tile(y, [group])[:, None, None, None] * tf.ones_like(x[..., :1])
    return tf.concat([x, y], axis=-1)


def blend_weights(level, num_levels: int) -> tf.Tensor:
    """G's weights ``(K + 1,)`` of each resolution's image: ``max(0, 1 - |level - k|)``."""
    level = tf.cast(level, tf.float32)
    return tf.nn.relu(1.0 - tf.abs(level - tf.range(num_levels + 1, dtype=tf.float32)))


def entry_weights(level, num_levels: int) -> tf.Tensor:
    """D's weights ``(K + 1,)`` of ``from_rgb_k`` at each resolution: ``clip(k + 1 - level, 0, 1)``."""
    level = tf.cast(level, tf.float32)
    return tf.clip_by_value(tf.range(num_levels + 1, dtype=tf.float32) + 1.0 - level, 0.0, 1.0)


def resize_to(x, size: int, method: str):
    """Square images to side ``size``: ``avg``/``max`` pooling down or ``nearest`` up, exactly."""
    side = x.shape[1]
    if size == side:
        return x
    if size > side:
        return tf.repeat(tf.repeat(x, size // side, axis=1), size // side, axis=2)
    factor = side // size
    pool = tf.nn.avg_pool2d if method == "avg" else tf.nn.max_pool2d
    return pool(x, factor, factor, "VALID")


def progressive_blend(images, level, start_resolution: int, num_levels: int):
    """Real images ``(B, S, S, C)`` as G draws them at ``level``: ``sum_k w_k up_S(avgpool_k(x))``."""
    weights = blend_weights(level, num_levels)
    size = images.shape[1]
    return tf.add_n([weights[k] * resize_to(resize_to(images, start_resolution * 2 ** k, "avg"), size, "up")
                     for k in range(num_levels + 1)])


class _Progressive(keras.Model):
    """Shared constructor arguments and config of the two networks."""

    def __init__(self, image_size=256, start_resolution=4, channels=1, base_filters=16, max_filters=512,
                 negative_slope=0.2, **kwargs):
        super().__init__(**kwargs)
        self.image_size, self.start_resolution, self.channels = image_size, start_resolution, channels
        self.base_filters, self.max_filters, self.negative_slope = base_filters, max_filters, negative_slope
        self.num_levels = int(np.log2(image_size // start_resolution))
        self.resolutions = [start_resolution * 2 ** k for k in range(self.num_levels + 1)]
        self.widths = [min(max_filters, base_filters * 2 ** (self.num_levels - k))
                       for k in range(self.num_levels + 1)]

    def act(self, x):
        return tf.nn.leaky_relu(x, self.negative_slope)

    def masks(self, mask):
        return [resize_to(tf.cast(mask, tf.float32), r, "max") for r in self.resolutions]

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size,
                "start_resolution": self.start_resolution, "channels": self.channels,
                "base_filters": self.base_filters, "max_filters": self.max_filters,
                "negative_slope": self.negative_slope}


@register
class CPGGANGenerator(_Progressive):
    """``{"latent": (B, Z), "mask": (B, S, S, 1) in {0, 1}}``, ``level`` scalar in [0, K] (None = K)
    ``-> images (B, S, S, C)``."""

    def __init__(self, latent_dim=512, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        s, w = self.start_resolution, self.widths
        self.project = EqualizedDense(s * s * w[0], gain=SQRT2 / 4, name="project")
        self.convs = [[EqualizedConv2D(w[k], 3, name=f"conv{r}_{i}") for i in range(2 if k else 1)]
                      for k, r in enumerate(self.resolutions)]
        self.to_rgb = [EqualizedConv2D(self.channels, 1, gain=1.0, name=f"to_rgb{r}") for r in self.resolutions]
        self.project.build((None, latent_dim))
        for k, (convs, rgb) in enumerate(zip(self.convs, self.to_rgb)):
            convs[0].build((None, None, None, (w[k - 1] if k else w[0]) + 1))
            for conv in convs[1:]:
                conv.build((None, None, None, w[k]))
            rgb.build((None, None, None, w[k]))
        self.built = True

    def call(self, inputs, level=None, top=None, training=None):
        latent = tf.cast(inputs["latent"], tf.float32)
        level = float(self.num_levels) if level is None else level
        top = self.num_levels if top is None else int(top)
        masks = self.masks(inputs["mask"])
        s = self.start_resolution
        h = self.act(self.project(pixel_norm(latent)))
        h = pixel_norm(tf.reshape(h, [-1, s, s, self.widths[0]]))
        weights = blend_weights(level, self.num_levels)
        images = []
        for k, convs in enumerate(self.convs[:top + 1]):
            if k:
                h = resize_to(h, self.resolutions[k], "up")
            h = tf.concat([h, masks[k]], axis=-1)
            for conv in convs:
                h = pixel_norm(self.act(conv(h)))
            images.append(weights[k] * resize_to(self.to_rgb[k](h), self.image_size, "up"))
        return tf.add_n(images)

    latent_distribution = "normal"

    def sample_latent(self, batch_size: int, seed) -> tf.Tensor:
        """``(batch_size, latent_dim)`` N(0, 1) float32, stateless in ``seed`` ((2,) int tensor)."""
        return sample_latent(self.latent_distribution, batch_size, self.latent_dim, seed)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim}


@register
class CPGGANDiscriminator(_Progressive):
    """``{"image": (B, S, S, C) in [-1, 1], "mask": (B, S, S, 1)}``, ``level`` scalar (None = K)
    ``-> critic scores (B, 1) float32``."""

    def __init__(self, mbstd_group=4, **kwargs):
        super().__init__(**kwargs)
        self.mbstd_group = mbstd_group
        w, c = self.widths, self.channels
        r = self.resolutions
        self.from_rgb = [EqualizedConv2D(w[k], 1, name=f"from_rgb{r[k]}") for k in range(self.num_levels + 1)]
        self.convs = [[EqualizedConv2D(w[k], 3, name=f"conv{r[k]}_0"), EqualizedConv2D(w[k - 1], 3, name=f"conv{r[k]}_1")]
                      for k in range(1, self.num_levels + 1)]
        self.final_conv = EqualizedConv2D(w[0], 3, name="final_conv")
        self.final_dense = EqualizedDense(w[0], name="final_dense")
        self.score = EqualizedDense(1, gain=1.0, name="score")
        for k, layer in enumerate(self.from_rgb):
            layer.build((None, None, None, c + 1))
        for k, (first, second) in enumerate(self.convs, start=1):
            first.build((None, None, None, w[k] + 1))
            second.build((None, None, None, w[k]))
        self.final_conv.build((None, None, None, w[0] + 2))
        self.final_dense.build((None, self.start_resolution ** 2 * w[0]))
        self.score.build((None, w[0]))
        self.built = True

    def call(self, inputs, level=None, top=None, training=None):
        images = tf.cast(inputs["image"], tf.float32)
        level = float(self.num_levels) if level is None else level
        top = self.num_levels if top is None else int(top)
        masks = self.masks(inputs["mask"])
        entry = entry_weights(level, self.num_levels)
        h = None
        for k in reversed(range(top + 1)):
            x = tf.concat([resize_to(images, self.resolutions[k], "avg"), masks[k]], axis=-1)
            fresh = self.act(self.from_rgb[k](x))
            h = fresh if h is None else entry[k] * fresh + (1.0 - entry[k]) * h
            if k:
                first, second = self.convs[k - 1]
                h = self.act(second(self.act(first(tf.concat([h, masks[k]], axis=-1)))))
                h = resize_to(h, self.resolutions[k - 1], "avg")
        h = minibatch_stddev(h, self.mbstd_group)
        h = self.act(self.final_conv(tf.concat([h, masks[0]], axis=-1)))
        h = self.act(self.final_dense(tf.reshape(h, [tf.shape(h)[0], -1])))
        return self.score(h)

    def get_config(self):
        return {**super().get_config(), "mbstd_group": self.mbstd_group}


def build_cpggan(config: CPGGANModelConfig) -> tuple[CPGGANGenerator, CPGGANDiscriminator]:
    """Generator and discriminator of a ``CPGGANModelConfig``, all weights created."""
    shared = dict(image_size=config.image_size, start_resolution=config.start_resolution,
                  channels=config.channels, base_filters=config.base_filters,
                  max_filters=config.max_filters, negative_slope=config.negative_slope)
    return (CPGGANGenerator(latent_dim=config.latent_dim, **shared),
            CPGGANDiscriminator(mbstd_group=config.mbstd_group, **shared))


def box_masks(boxes, size: int) -> tf.Tensor:
    """Binary masks ``(B, size, size, 1)`` of boxes ``(B, 4)`` or ``(B, N, 4)`` (x0, y0, x1, y1)
    pixels: pixel (row i, col j) is 1 when its centre (j + 0.5, i + 0.5) lies inside a box.
    Boxes with x1 <= x0 (e.g. the -1 padding) draw nothing."""
    boxes = tf.cast(boxes, tf.float32)
    if boxes.shape.rank == 2:
        boxes = boxes[:, None]
    centres = tf.range(size, dtype=tf.float32) + 0.5
    inside_x = (centres >= boxes[..., 0:1]) & (centres < boxes[..., 2:3])  # (B, N, size)
    inside_y = (centres >= boxes[..., 1:2]) & (centres < boxes[..., 3:4])
    both = tf.cast(inside_y[..., :, None], tf.float32) * tf.cast(inside_x[..., None, :], tf.float32)
    return tf.reduce_max(both, axis=1)[..., None]


def cpggan_networks(config: CPGGANModelConfig) -> dict:
    """``{"generator", "discriminator"}``, built (the network registry's entry for ``cpggan``)."""
    generator, discriminator = build_cpggan(config)
    return {"generator": generator, "discriminator": discriminator}
