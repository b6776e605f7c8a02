"""GAN model zoo: shapes, ranges, dtypes, `.keras` round trips, presets, FLOP counts."""
from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from mammogan_tf.config import validate_config
from mammogan_tf.errors import ConfigError
from mammogan_tf.models.acgan import ACGANDiscriminator, ACGANGenerator
from mammogan_tf.models.config import ModelConfig
from mammogan_tf.models.dcgan import DCGANDiscriminator, DCGANGenerator, generator_widths, layer_strides
from mammogan_tf.models.layers import Upsample2D
from mammogan_tf.models.registry import BUILDERS, build_gan, flops_per_image

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
PRESET_FILES = {"fridadar64": "fridadar2018_dcgan_mass.yaml", "alyafi128": "alyafi2019_dcgan_mass.yaml",
                "fridadar_acgan64": "fridadar2018_acgan.yaml"}


def preset(name: str) -> ModelConfig:
    """The ``model:`` section of a shipped paper preset (``experiments/*.yaml``), never a copy."""
    from mammogan_tf.config import load_config

    return load_config(EXPERIMENTS / PRESET_FILES[name]).model


def tiny_config(family="dcgan", upsample="transpose", **overrides) -> ModelConfig:
    data = {"family": family, "image_size": 16, "latent_dim": 8, "num_classes": 3 if family == "acgan" else 0,
            "generator": {"base_filters": 4, "max_filters": 8, "kernel_size": 3, "upsample": upsample},
            "discriminator": {"base_filters": 4, "max_filters": 8, "kernel_size": 3, "num_layers": 3}}
    for key, value in overrides.items():
        section, _, field = key.partition("__")
        if field:
            data[section][field] = value
        else:
            data[key] = value
    return ModelConfig.model_validate(data)


def generator_inputs(generator, batch=4, seed=0):
    z = generator.sample_latent(batch, tf.constant([seed, 1]))
    if generator.num_classes:
        return z, tf.constant(np.arange(batch) % generator.num_classes, tf.int32)
    return z


@pytest.fixture
def mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_widths_and_strides_follow_the_papers():
    assert generator_widths(64, 128, 1024) == [1024, 512, 256, 128]  # Frid-Adar: 4x4x1024 ... 32x32x128
    assert generator_widths(128, 45, 450) == [450, 360, 180, 90, 45]  # Alyafi: ngf*10, 8, 4, 2, 1
    assert layer_strides("all", 4) == [2, 2, 2, 2]
    assert layer_strides("odd", 4) == [2, 1, 2, 1]


@pytest.mark.parametrize("method", ["transpose", "depth_to_space", "nearest"])
def test_upsample2d_doubles_the_size(method):
    layer = Upsample2D(6, kernel_size=3, method=method)
    out = layer(tf.random.normal((2, 5, 7, 4)))
    assert out.shape == (2, 10, 14, 6)
    kernel = layer.conv.kernel.shape
    assert kernel[:2] == (3, 3)
    assert kernel[-1] == (24 if method == "depth_to_space" else 4 if method == "transpose" else 6)
    clone = Upsample2D.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


@pytest.mark.parametrize("family,upsample", [("dcgan", "transpose"), ("dcgan", "depth_to_space"),
                                             ("dcgan", "nearest"), ("acgan", "transpose")])
def test_tiny_gan_shapes_ranges_and_dtypes(family, upsample):
    generator, discriminator = build_gan(tiny_config(family, upsample))
    assert (generator.latent_dim, generator.image_size, generator.latent_distribution) == (8, 16, "normal")
    assert generator.num_classes == (3 if family == "acgan" else 0)
    images = generator(generator_inputs(generator, batch=5), training=True)
    assert images.shape == (5, 16, 16, 1) and images.dtype == tf.float32
    assert float(tf.reduce_max(tf.abs(images))) <= 1.0
    assert float(tf.math.reduce_std(images)) > 0
    output = discriminator(images, training=True)
    if family == "acgan":
        logits, class_logits = output
        assert class_logits.shape == (5, 3) and class_logits.dtype == tf.float32
    else:
        logits = output
    assert logits.shape == (5, 1) and logits.dtype == tf.float32


def test_latent_sampling_is_stateless_and_in_range():
    generator, _ = build_gan(tiny_config(latent_distribution="uniform", latent_dim=64))
    a = generator.sample_latent(32, tf.constant([3, 4]))
    b = generator.sample_latent(32, tf.constant([3, 4]))
    c = generator.sample_latent(32, tf.constant([3, 5]))
    assert a.shape == (32, 64)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(a.numpy(), c.numpy())
    assert float(tf.reduce_min(a)) >= -1.0 and float(tf.reduce_max(a)) <= 1.0
    assert float(tf.reduce_min(a)) < -0.9  # uniform over [-1, 1], not [0, 1]


def test_acgan_labels_change_the_image():
    generator, _ = build_gan(tiny_config("acgan"))
    z = tf.repeat(generator.sample_latent(1, tf.constant([0, 0])), 3, axis=0)
    images = generator((z, tf.constant([0, 1, 2])), training=False).numpy()
    assert not np.allclose(images[0], images[1]) and not np.allclose(images[1], images[2])


@pytest.mark.parametrize("family", ["dcgan", "acgan"])
def test_keras_file_round_trip_reproduces_outputs(family, tmp_path):
    config = tiny_config(family, "depth_to_space", generator__class_conditioning="multiply",
                         discriminator__spectral_norm=True, discriminator__dropout=0.3,
                         discriminator__strides="odd", discriminator__first_kernel_size=5)
    generator, discriminator = build_gan(config)
    gen_inputs = generator_inputs(generator)
    images = tf.random.stateless_uniform((4, 16, 16, 1), [1, 2], -1.0, 1.0)
    for _ in range(2):  # move batch-norm statistics and spectral-norm vectors off their initial values
        generator(gen_inputs, training=True)
        discriminator(images, training=True)
    for model, inputs, cls in ((generator, gen_inputs, ACGANGenerator if family == "acgan" else DCGANGenerator),
                               (discriminator, images,
                                ACGANDiscriminator if family == "acgan" else DCGANDiscriminator)):
        path = tmp_path / f"{model.name}.keras"
        model.save(path)
        loaded = keras.models.load_model(path)
        assert type(loaded) is cls
        assert loaded.get_config() == model.get_config()
        expected = tf.nest.flatten(model(inputs, training=False))
        actual = tf.nest.flatten(loaded(inputs, training=False))
        assert len(expected) == len(actual) == (2 if family == "acgan" and model is discriminator else 1)
        for want, got in zip(expected, actual):
            np.testing.assert_array_equal(want.numpy(), got.numpy())


def test_mixed_precision_outputs_are_float32(mixed_precision):
    generator, discriminator = build_gan(tiny_config("acgan", discriminator__spectral_norm=True))
    assert generator.blocks[0].compute_dtype == "float16"
    images = generator(generator_inputs(generator), training=True)
    assert images.dtype == tf.float32 and float(tf.reduce_max(tf.abs(images))) <= 1.0
    logits, class_logits = discriminator(images, training=True)
    assert logits.dtype == tf.float32 and class_logits.dtype == tf.float32


def test_flops_per_image_matches_hand_count():
    generator, discriminator = build_gan(tiny_config())
    # G: dense 8 -> 4*4*8; ConvT 3x3 8->4 on 4x4 input; ConvT 3x3 4->1 on 8x8 input.
    assert flops_per_image(generator) == 2 * (8 * 128 + 9 * 8 * 4 * 16 + 9 * 4 * 1 * 64)
    # D: conv 3x3 1->4 out 8x8; 4->8 out 4x4; 8->8 out 2x2; dense 32 -> 1.
    assert flops_per_image(discriminator) == 2 * (9 * 1 * 4 * 64 + 9 * 4 * 8 * 16 + 9 * 8 * 8 * 4 + 32)
    # Sub-pixel and nearest variants: plain convs with 4x the output channels / at the output size.
    sub_pixel, _ = BUILDERS["dcgan"](tiny_config(upsample="depth_to_space"))
    z = np.zeros((1, 8), np.float32)
    assert flops_per_image(sub_pixel, z) == 2 * (8 * 128 + 9 * 8 * 16 * 16 + 9 * 4 * 4 * 64)
    nearest, _ = BUILDERS["dcgan"](tiny_config(upsample="nearest"))
    assert flops_per_image(nearest, z) == 2 * (8 * 128 + 9 * 8 * 4 * 64 + 9 * 4 * 1 * 256)


def test_flops_per_image_of_a_plain_keras_model():
    model = keras.Sequential([keras.layers.Conv2D(3, 5, strides=2, padding="same"),
                              keras.layers.Flatten(), keras.layers.Dense(7)])
    assert flops_per_image(model, np.zeros((1, 8, 8, 2), np.float32)) == 2 * (25 * 2 * 3 * 16 + 48 * 7)


def test_preset_fridadar64_full_size():
    config = preset("fridadar64")
    generator, discriminator = build_gan(config)
    z = generator.sample_latent(2, tf.constant([0, 0]))
    assert generator(z).shape == (2, 64, 64, 1)
    assert discriminator(tf.zeros((2, 64, 64, 1))).shape == (2, 1)
    bn = 4  # gamma, beta, moving mean, moving variance per channel
    assert generator.count_params() == (100 * 16 * 1024 + bn * 1024 + 25 * 1024 * 512 + bn * 512
                                        + 25 * 512 * 256 + bn * 256 + 25 * 256 * 128 + bn * 128
                                        + 25 * 128 + 1) == 18_852_481
    assert discriminator.count_params() == (25 * 128 + 128 + 25 * 128 * 256 + bn * 256 + 25 * 256 * 512
                                            + bn * 512 + 25 * 512 * 1024 + bn * 1024 + 4 * 4 * 1024 + 1)


def test_preset_alyafi128_full_size():
    config = preset("alyafi128")
    generator, discriminator = build_gan(config)
    assert generator(generator.sample_latent(2, tf.constant([0, 0]))).shape == (2, 128, 128, 1)
    assert discriminator(tf.zeros((2, 128, 128, 1))).shape == (2, 1)
    assert [block.conv.kernel_size[0] for block in discriminator.blocks] == [4, 6, 6, 6, 6]
    bn = 4
    assert generator.count_params() == (16 * 200 * 450 + bn * 450 + 16 * 450 * 360 + bn * 360
                                        + 16 * 360 * 180 + bn * 180 + 16 * 180 * 90 + bn * 90
                                        + 16 * 90 * 45 + bn * 45 + 16 * 45 + 1) == 5_398_021
    assert discriminator.count_params() == (16 * 45 + 45 + 36 * 45 * 90 + bn * 90 + 36 * 90 * 180
                                            + bn * 180 + 36 * 180 * 360 + bn * 360 + 36 * 360 * 450
                                            + bn * 450 + 16 * 450 + 1) == 8_906_086


def test_preset_fridadar_acgan64_validates():
    config = preset("fridadar_acgan64")
    assert config.discriminator.downsampling_layers() == 2  # 64 -> 32 -> 32 -> 16 -> 16


@pytest.mark.parametrize("data,message", [
    ({"image_size": 48}, "power of two"),
    ({"family": "acgan"}, "num_classes >= 2"),
    ({"image_size": 16, "discriminator": {"num_layers": 5}}, "below 1 px"),
    ({"generator": {"upsample": "bilinear"}}, "generator.upsample"),
    ({"generator": {"base_filter": 3}}, "generator.base_filter: unknown key"),
    ({"family": "acgan", "num_classes": 2, "generator": {"class_conditioning": "multiply",
                                                         "class_embedding_dim": 5}}, "equal latent_dim"),
])
def test_model_config_errors_name_the_field(data, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(data, ModelConfig, source="exp.yaml")
