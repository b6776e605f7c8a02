"""Model family name -> builder, and an analytic FLOP count for throughput reports.

``build_gan(config)`` returns a built ``(generator, discriminator)`` pair (called once on a
dummy batch so every variable exists before optimizers, checkpoints or strategies see them).
"""
from __future__ import annotations

from typing import Callable

import keras
import numpy as np

from mammogan_tf.errors import ConfigError
from mammogan_tf.models.acgan import ACGANDiscriminator, ACGANGenerator
from mammogan_tf.models.config import ModelConfig
from mammogan_tf.models.dcgan import DCGANDiscriminator, DCGANGenerator
from mammogan_tf.plugins import load_object


def _generator_kwargs(config: ModelConfig) -> dict:
    gen = config.generator
    return dict(latent_dim=config.latent_dim, image_size=config.image_size, channels=config.channels,
                latent_distribution=config.latent_distribution, base_filters=gen.base_filters,
                max_filters=gen.max_filters, kernel_size=gen.kernel_size, projection=gen.projection,
                batch_norm=gen.batch_norm, activation=gen.activation, negative_slope=gen.negative_slope,
                upsample=gen.upsample, init_std=config.init_std, name="generator")


def _discriminator_kwargs(config: ModelConfig) -> dict:
    disc = config.discriminator
    return dict(image_size=config.image_size, channels=config.channels, base_filters=disc.base_filters,
                max_filters=disc.max_filters, kernel_size=disc.kernel_size,
                first_kernel_size=disc.first_kernel_size, num_layers=disc.num_layers,
                strides=disc.strides, batch_norm=disc.batch_norm, activation=disc.activation,
                negative_slope=disc.negative_slope, dropout=disc.dropout,
                spectral_norm=disc.spectral_norm, init_std=config.init_std, name="discriminator")


def build_dcgan(config: ModelConfig):
    """Unbuilt ``(DCGANGenerator, DCGANDiscriminator)`` from a ``ModelConfig``."""
    return DCGANGenerator(**_generator_kwargs(config)), DCGANDiscriminator(**_discriminator_kwargs(config))


def build_acgan(config: ModelConfig):
    """Unbuilt ``(ACGANGenerator, ACGANDiscriminator)`` from a ``ModelConfig``."""
    gen = config.generator
    generator = ACGANGenerator(num_classes=config.num_classes, class_embedding_dim=gen.class_embedding_dim,
                               class_conditioning=gen.class_conditioning, **_generator_kwargs(config))
    return generator, ACGANDiscriminator(num_classes=config.num_classes, **_discriminator_kwargs(config))


BUILDERS: dict[str, Callable] = {"dcgan": build_dcgan, "acgan": build_acgan}
"""``model.family`` -> function ``ModelConfig -> (generator, discriminator)`` (unbuilt)."""


def dummy_inputs(model: keras.Model, batch_size: int = 2):
    """Zeros shaped like one batch of ``model``'s inputs (a generator or a discriminator of this
    package): z ``(B, L)`` [+ labels ``(B,)`` int32 when conditional] or images ``(B, S, S, C)``."""
    if hasattr(model, "latent_dim"):
        z = np.zeros((batch_size, model.latent_dim), np.float32)
        return (z, np.zeros((batch_size,), np.int32)) if model.num_classes else z
    return np.zeros((batch_size, model.image_size, model.image_size, model.channels), np.float32)


def build_gan(config: ModelConfig):
    """``(generator, discriminator)`` for ``config.family``, built on a dummy batch of 2."""
    try:
        builder = BUILDERS[config.family]
    except KeyError:
        raise ConfigError(f"model.family: unknown family {config.family!r}; "
                          f"choose one of {', '.join(BUILDERS)}") from None
    generator, discriminator = builder(config)
    for model in (generator, discriminator):
        model(dummy_inputs(model), training=False)
    return generator, discriminator


NETWORK_BUILDERS: dict[str, str] = {
    "dcgan": "mammogan_tf.models.registry:gan_networks",
    "acgan": "mammogan_tf.models.registry:gan_networks",
    "contextual": "mammogan_tf.models.contextual_config:build_contextual",
    "cpggan": "mammogan_tf.models.pggan:cpggan_networks",
}
"""``model.family`` -> ``module:function`` of ``config -> {name: built network}``."""


def gan_networks(config: ModelConfig) -> dict:
    """``{"generator", "discriminator"}`` of a DCGAN or ACGAN config, built."""
    generator, discriminator = build_gan(config)
    return {"generator": generator, "discriminator": discriminator}


def build_networks(config) -> dict:
    """The built networks of any family's model config, by name."""
    spec = NETWORK_BUILDERS.get(config.family)
    if spec is None:
        raise ConfigError(f"model.family: no networks registered for {config.family!r}")
    return load_object(spec)(config)


def _spatial(shape) -> int:
    """Product of the dimensions between batch and channels (1 for (B, F))."""
    return int(np.prod([int(d) for d in shape[1:-1]])) if len(shape) > 2 else 1


def flops_per_image(model: keras.Model, inputs=None) -> int:
    """Forward FLOPs for one example, counted analytically from layer shapes.

    Counts convolutions, transposed convolutions and dense layers only, as 2 FLOPs per
    multiply-add (bias, normalisation, activations, resizing are ignored: a few percent).
    ``Conv2D``: ``2 * kh * kw * C_in * C_out * H_out * W_out``; ``Conv2DTranspose`` (each
    input pixel scatters a kernel): ``2 * kh * kw * C_in * C_out * H_in * W_in``;
    ``Dense``: ``2 * F_in * F_out`` per position. A training step costs about 3x forward.
    The model must be built (``build_gan`` does it), or pass ``inputs`` to call it once.
    """
    if inputs is not None:
        model(inputs, training=False)
    total = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if not isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose, keras.layers.Dense)):
            continue
        if not layer.built:
            raise ValueError(f"flops_per_image: layer {layer.name} is not built; call the model first")
        input_shape = layer.get_build_config()["input_shape"]
        kernel = layer.kernel.shape
        if isinstance(layer, keras.layers.Dense):
            total += 2 * _spatial(input_shape) * int(kernel[0]) * int(kernel[1])
        elif isinstance(layer, keras.layers.Conv2DTranspose):  # kernel (kh, kw, C_out, C_in)
            total += 2 * int(np.prod(kernel)) * _spatial(input_shape)
        else:  # kernel (kh, kw, C_in, C_out)
            total += 2 * int(np.prod(kernel)) * _spatial(layer.compute_output_shape(input_shape))
    return total
