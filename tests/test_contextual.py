"""Wu et al.'s contextual GAN: networks, `.keras` round trip, progressive fade, the family's losses.

Tiny widths at 32 px (16 px for the finite-difference check); post-processing and reinsertion
are in test_contextual_postprocess.py.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

from mammogan_tf.config import PrepareConfig
from mammogan_tf.models.attention import SelfAttention
from mammogan_tf.models.contextual import ContextualDiscriminator, ContextualGenerator
from mammogan_tf.models.contextual_blocks import border_mask, clip_unit, downsample2, fade, upsample2
from mammogan_tf.models.contextual_config import ContextualModelConfig, build_contextual
from mammogan_tf.models.postprocess import postprocess
from mammogan_tf.training.config import TrainConfig
from mammogan_tf.training.families.base import StepContext
from mammogan_tf.training.families.contextual import ContextualFamily, four_way_loss, real_log_odds
from mammogan_tf.training.losses import perturbation_penalty

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
TINY = dict(image_size=32, center_resolution=4, attention_resolution=8, border_crop=2,
            generator={"base_filters": 4, "max_filters": 16, "center_filters": 8},
            discriminator={"base_filters": 8, "max_filters": 32},
            progressive={"stage_steps": 10, "fade_steps": 20})


def tiny_config(**overrides) -> ContextualModelConfig:
    return ContextualModelConfig(**{**TINY, **overrides})


@pytest.fixture(scope="module")
def networks():
    keras.utils.set_random_seed(0)  # weights independent of the tests run before
    return build_contextual(tiny_config())


def images(batch=2, size=32, seed=0, low=-0.9, high=0.9):
    return tf.random.stateless_uniform((batch, size, size, 1), [seed, 7], low, high)


def differs(a, b, rel=1e-3) -> bool:
    """The lesion channels of two outputs differ by more than ``rel`` of their size (lesions are
    ~1e-5 at initialisation: spectrally normalised layers shrink activations)."""
    a, b = np.asarray(a)[..., 0], np.asarray(b)[..., 0]
    return np.abs(a - b).max() > rel * np.abs(a).max() > 0


def noise_for(generator, batch=2, seed=3):
    return tf.random.stateless_uniform((batch, generator.noise_dim), [seed, 1], -1.0, 1.0)


def test_shapes_widths_and_attention_placement(networks):
    generator, discriminator = networks["generator"], networks["discriminator"]
    x = images()
    assert generator(x).shape == (2, 32, 32, 3) and generator(downsample2(x)).shape == (2, 16, 16, 3)
    assert discriminator(x).shape == (2, 4) and discriminator(downsample2(x)).shape == (2, 4)
    assert generator.levels == 3 and generator.noise_dim == 6
    features = generator.encoder(x, scalars=noise_for(generator)[:, :3])
    assert [tuple(f.shape[1:]) for f in features] == [(16, 16, 4), (8, 8, 8), (4, 4, 16)]
    features = discriminator.encoder(x)
    assert [tuple(f.shape[1:]) for f in features] == [(16, 16, 8), (8, 8, 16), (4, 4, 32)]
    # attention at the 8x8 level (level 2) in the encoders and the generator's decoder
    assert generator.encoder.attention.channels == 8 and generator.decoder_attention.channels == 8
    assert discriminator.encoder.attention.channels == 16
    assert generator.compress.layer.units == 4 and generator.center.layer.filters == 8
    with pytest.raises(ValueError, match="input side"):
        generator(images(size=8))


def test_three_channels_and_lesion_plus_input_identity(networks):
    generator = networks["generator"]
    x = images(low=-1.3, high=1.3)  # inputs are clipped to [-1, 1] first
    bias = generator.to_lesion.layer.bias
    bias.assign([0.3])  # a visible lesion: 0.3 + the network's (small at initialisation) output
    try:
        out = generator(x, noise=noise_for(generator)).numpy()
    finally:
        bias.assign([0.0])
    lesion, given, combined = out[..., 0], out[..., 1], out[..., 2]
    np.testing.assert_array_equal(given, np.clip(x.numpy()[..., 0], -1, 1))
    np.testing.assert_allclose(lesion[:, 2:-2, 2:-2], 0.3, atol=1e-3)
    # combined = input + lesion before the final clip to [-1, 1]
    np.testing.assert_allclose(combined, np.clip(lesion + given, -1, 1), atol=1e-6)
    inside, clipped = np.abs(lesion + given) < 1, lesion + given > 1
    assert inside.mean() > 0.2 and clipped.mean() > 0.05
    np.testing.assert_allclose(combined[inside], (lesion + given)[inside], atol=1e-6)
    assert (combined[clipped] == 1.0).all()
    # 2 px border crop (padded back with zeros): the border is pure context
    for border in (lesion[:, :2], lesion[:, -2:], lesion[:, :, :2], lesion[:, :, -2:]):
        assert not border.any()


def test_clip_passes_back_only_the_gradients_that_leave_saturation():
    """``clip_unit``: the forward is the clip; ``recover`` passes the gradient inside [-1, 1] and,
    outside, only where a descent step moves the value back in; ``zero`` is tf.clip_by_value's."""
    x = tf.constant([-2.0, -2.0, -0.5, 0.5, 2.0, 2.0])
    upstream = tf.constant([1.0, -1.0, 3.0, -3.0, 1.0, -1.0])
    expected = {"recover": [0.0, -1.0, 3.0, -3.0, 1.0, 0.0], "zero": [0.0, 0.0, 3.0, -3.0, 0.0, 0.0]}
    for mode, gradient in expected.items():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = clip_unit(x, mode)
        np.testing.assert_array_equal(y, [-1.0, -1.0, -0.5, 0.5, 1.0, 1.0])
        np.testing.assert_array_equal(tape.gradient(y, x, output_gradients=upstream), gradient)
    with pytest.raises(ValueError, match="clip gradient"):
        clip_unit(x, "straight")


def test_a_saturated_lesion_window_still_gets_a_gradient(tmp_path):
    """A generator whose lesion is clipped at +1 over the whole window (its output bias driven
    high, as a seed-1 mini-MIAS run does in its first 40 steps) learns to lower it with
    ``clip_gradient: recover``; with ``zero`` the lesion bias gets no gradient at all."""
    keras.utils.set_random_seed(0)
    gradients = {}
    for mode in ("recover", "zero"):
        generator = build_contextual(tiny_config(generator={**TINY["generator"], "clip_gradient": mode}))["generator"]
        bias = generator.to_lesion.layer.bias
        bias.assign([5.0])
        with tf.GradientTape() as tape:
            out = generator(images(), noise=noise_for(generator), training=True)
            loss = tf.reduce_mean(out[..., 0]) + tf.reduce_mean(out[..., 2])  # both want the lesion lower
        np.testing.assert_array_equal(out[:, 2:-2, 2:-2, 0], 1.0)
        gradients[mode] = float(tape.gradient(loss, bias)[0])
    assert gradients["zero"] == 0.0 and gradients["recover"] > 0.1
    path = tmp_path / "generator.keras"
    generator.save(path)
    assert keras.saving.load_model(path).clip_gradient == "zero"


def test_disc_lesion_window_confines_the_lesion_to_a_round_centre(tmp_path):
    """``lesion_window: disc``: the mask is 0 on the border frame and in the corners of the
    square interior, about 1 at the centre, 0.5 on the circle of radius S/2 - border, radially
    symmetric; the generator's lesion channel follows it and the setting survives a round trip."""
    square, disc = (border_mask(32, 4, w).numpy()[0, ..., 0] for w in ("square", "disc"))
    assert square[4:28, 4:28].min() == 1 and square[:4].max() == square[:, 28:].max() == 0
    assert disc[:4].max() == disc[:, 28:].max() == 0 and disc[4, 4] < 1e-3 and disc[16, 16] > 0.99
    np.testing.assert_allclose(disc, disc.T, atol=1e-7)
    np.testing.assert_allclose(disc, disc[::-1, ::-1], atol=1e-7)
    assert 0.5 < disc[16, 27] < 0.9 and disc[16, 26] > disc[16, 27]  # pixel centre 11.5 px out, radius 12
    with pytest.raises(ValueError, match="lesion window"):
        border_mask(32, 4, "circle")
    with pytest.raises(ValueError, match="lesion_window"):
        tiny_config(lesion_window="circle")

    keras.utils.set_random_seed(0)
    nets = {w: build_contextual(tiny_config(lesion_window=w, border_crop=4))["generator"] for w in ("square", "disc")}
    nets["disc"].set_weights(nets["square"].get_weights())
    lesion = {w: g(images(), noise=noise_for(g), training=False).numpy()[..., 0] for w, g in nets.items()}
    scale = np.abs(lesion["square"]).max()
    assert scale > 0
    np.testing.assert_allclose(lesion["disc"], lesion["square"] * disc, rtol=1e-4, atol=1e-4 * scale)
    generator = nets["disc"]
    path = tmp_path / "generator.keras"
    generator.save(path)
    assert keras.saving.load_model(path).lesion_window == "disc"


def test_random_scalars_vary_and_a_seed_reproduces(networks):
    generator = networks["generator"]
    x = images()
    first, second = generator(x).numpy(), generator(x).numpy()
    assert differs(first, second)  # SeedGenerator: two calls differ
    seeded = generator(x, seed=tf.constant([4, 2], tf.int64)).numpy()
    np.testing.assert_array_equal(seeded, generator(x, seed=tf.constant([4, 2], tf.int64)).numpy())
    assert differs(seeded, generator(x, seed=tf.constant([4, 3], tf.int64)).numpy())
    noise = tf.random.stateless_uniform((2, 6), tf.constant([4, 2], tf.int64), -1.0, 1.0)
    np.testing.assert_array_equal(seeded, generator(x, noise=noise).numpy())
    # every block's scalar matters (the inner ones little at initialisation: ~4e-5 relative)
    for index in range(6):
        changed = noise.numpy().copy()
        changed[:, index] = -changed[:, index]
        assert differs(seeded, generator(x, noise=changed).numpy(), rel=1e-3 if index in (0, 3) else 1e-6)


def test_keras_round_trip_keeps_spectral_norm_and_attention(networks, tmp_path):
    built = networks
    x, noise = images(), noise_for(built["generator"])
    for model in built.values():
        for layer in model._flatten_layers():
            if isinstance(layer, SelfAttention):
                layer.gamma.assign(0.7)  # gamma starts at 0: make attention visible
        for _ in range(2):  # move the spectral-norm vectors off their initial values
            model(x, training=True, **({"noise": noise} if model is built["generator"] else {}))
        path = tmp_path / f"{model.name}.keras"
        model.save(path)
        loaded = keras.models.load_model(path)
        assert type(loaded) is type(model) and loaded.get_config() == model.get_config()
        kinds = [type(layer).__name__ for layer in loaded._flatten_layers()]
        assert "SelfAttention" in kinds and "SpectralNormalization" in kinds
        assert len(loaded.weights) == len(model.weights)
        for want, got in zip(model.weights, loaded.weights):  # incl. the spectral-norm u vectors and gammas
            assert want.name == got.name
            np.testing.assert_array_equal(np.asarray(want), np.asarray(got))
        kwargs = {"noise": noise} if model is built["generator"] else {}
        for alpha in (None, 0.5):
            np.testing.assert_allclose(model(x, alpha=alpha, **kwargs).numpy(),
                                       loaded(x, alpha=alpha, **kwargs).numpy(), atol=1e-6)


def test_fade_blend_values():
    low, high = tf.fill((1, 2, 2, 1), 2.0), tf.fill((1, 4, 4, 1), 6.0)
    up = upsample2(low)
    np.testing.assert_array_equal(up.numpy(), np.full((1, 4, 4, 1), 2.0))
    np.testing.assert_array_equal(downsample2(up).numpy(), low.numpy())
    for alpha, want in ((0.0, 2.0), (0.5, 4.0), (1.0, 6.0)):
        np.testing.assert_allclose(fade(up, high, "blend", tf.constant(alpha)).numpy(), want)
    assert fade(up, None, "low", None) is up and fade(None, high, "high", None) is high


def test_stage_switch_keeps_the_half_size_weights(networks, tmp_path):
    generator, discriminator = networks["generator"], networks["discriminator"]
    x, noise = images(), noise_for(generator)
    variables = [id(v) for v in generator.weights + discriminator.weights]
    half = generator(downsample2(x), noise=noise).numpy()
    # alpha 0 at full size is exactly the S/2 network, nearest-upsampled (border 1 px -> 2 px)
    at_zero = generator(x, noise=noise, alpha=0.0).numpy()
    np.testing.assert_allclose(at_zero[..., 0:1], upsample2(half[..., 0:1]).numpy(), atol=1e-6)
    np.testing.assert_allclose(discriminator(x, alpha=0.0).numpy(), discriminator(downsample2(x)).numpy(), atol=1e-5)
    # a schedule variable blends like the same Python number
    alpha = tf.Variable(0.5)
    np.testing.assert_allclose(generator(x, noise=noise, alpha=alpha).numpy(),
                               generator(x, noise=noise, alpha=0.5).numpy(), atol=1e-6)
    np.testing.assert_allclose(discriminator(x, alpha=alpha).numpy(), discriminator(x, alpha=0.5).numpy(), atol=1e-6)
    assert [id(v) for v in generator.weights + discriminator.weights] == variables  # nothing new was created
    # the S/2-only layers do not touch alpha = 1 and do change alpha = 0.5
    full, blend = generator(x, noise=noise, alpha=1.0).numpy(), generator(x, noise=noise, alpha=0.5).numpy()
    old = [np.asarray(v) for v in generator.to_lesion_low.weights]
    for v in generator.to_lesion_low.layer.weights:
        v.assign(v * 3.0 + 0.01)
    np.testing.assert_array_equal(generator(x, noise=noise, alpha=1.0).numpy(), full)
    assert differs(blend, generator(x, noise=noise, alpha=0.5).numpy())
    for v, value in zip(generator.to_lesion_low.weights, old):
        v.assign(value)
    # S/2-stage weights restored by name into a fresh full-size network give the same S/2 network
    path = tmp_path / "stage0.weights.h5"
    generator.save_weights(path)
    fresh = build_contextual(tiny_config())["generator"]
    fresh.load_weights(path)
    np.testing.assert_allclose(fresh(x, noise=noise, alpha=0.0).numpy(), at_zero, atol=1e-6)


def test_four_way_loss_against_hand_computation():
    rng = np.random.default_rng(0)
    logits = [rng.normal(size=(3, 4)).astype(np.float32) for _ in range(4)]
    terms = four_way_loss(*logits)

    def ce(z, k):
        return np.log(np.exp(z).sum(axis=1)) - z[:, k]

    for name, index, weight in (("real", 0, 1.0), ("fake", 1, 1.0), ("benign", 2, 0.2), ("normal", 3, 0.2)):
        np.testing.assert_allclose(terms[name].numpy(), weight * ce(logits[index], index), rtol=1e-5)
    custom = four_way_loss(*logits, aux_weights=(0.5, 0.0))
    np.testing.assert_allclose(custom["benign"].numpy(), 0.5 * ce(logits[2], 2), rtol=1e-5)
    assert not custom["normal"].numpy().any()


def test_perturbation_penalty_matches_a_finite_difference_gradient():
    keras.utils.set_random_seed(3)  # the weights: not whatever the tests before left in the global RNG
    model = ContextualDiscriminator(image_size=16, base_filters=4, max_filters=8, attention_resolution=8,
                                    spectral_norm=False, init_std=0.3, dtype="float64")
    real = tf.random.stateless_uniform((1, 16, 16, 1), [5, 5], -1.0, 1.0, tf.float64)
    seed = tf.constant([9, 9], tf.int64)

    def odds(x):
        return real_log_odds(model(tf.cast(x, tf.float64), training=False))

    model(real)
    for layer in model._flatten_layers():
        if isinstance(layer, SelfAttention):
            layer.gamma.assign(0.5)
    penalty = perturbation_penalty(odds, real, seed, k=1.0, scale=0.5).numpy()
    real32 = tf.cast(real, tf.float32)  # the penalty draws delta = 0.5 * U(0, 1) in float32
    point = (real32 + 0.5 * tf.random.stateless_uniform(tf.shape(real32), seed, 0.0, 1.0)).numpy().astype(np.float64)
    assert (point - real.numpy() >= 0).all() and (point - real.numpy() <= 0.5).all()
    eps, basis = 1e-4, np.eye(256).reshape(256, 16, 16, 1)
    plus = model(point + eps * basis, training=False).numpy()
    minus = model(point - eps * basis, training=False).numpy()
    grad = ((plus[:, 0] - plus[:, 1]) - (minus[:, 0] - minus[:, 1])) / (2 * eps)
    expected = (np.linalg.norm(grad) - 1.0) ** 2
    assert np.linalg.norm(grad) > 0.05
    np.testing.assert_allclose(penalty, [expected], rtol=2e-3)


class StubDiscriminator:
    """logits (m, 2m, -m, m/2) of the per-example pixel mean m: d(log-odds)/dx = -1/N per pixel."""

    def __call__(self, x, alpha=None, training=None):
        m = tf.reduce_mean(tf.cast(x, tf.float32), axis=[1, 2, 3])
        return tf.stack([m, 2 * m, -m, 0.5 * m], axis=1)


def family(mode="add", **overrides):
    train = TrainConfig(g_steps=2)
    return ContextualFamily(tiny_config(mode=mode, progressive={"enabled": False}, **overrides), train)


def stub_batch(values=(0.5, -0.2, 0.1), size=32, b=2):
    return {name: {"image": tf.fill((b, size, size, 1), value)} for name, value in zip(("lesion", "benign", "normal"), values)}


def test_family_discriminator_loss_by_hand():
    fam = family(generator={"base_filters": 4, "max_filters": 16, "center_filters": 8, "spectral_norm": False})
    nets = {"generator": fam.build_networks()["generator"], "discriminator": StubDiscriminator()}
    ctx = StepContext(seed=tf.constant([1, 2], tf.int64), schedules={"fade_alpha": tf.Variable(1.0)}, global_batch_size=2)
    terms, stats = fam.discriminator_loss(nets, stub_batch(), ctx)

    def ce(m, k):
        z = np.array([m, 2 * m, -m, 0.5 * m])
        return np.log(np.exp(z).sum()) - z[k]

    np.testing.assert_allclose(terms["real"].numpy(), [ce(0.5, 0)] * 2, rtol=1e-5)
    np.testing.assert_allclose(terms["benign"].numpy(), [0.2 * ce(-0.2, 2)] * 2, rtol=1e-5)
    np.testing.assert_allclose(terms["normal"].numpy(), [0.2 * ce(0.1, 3)] * 2, rtol=1e-5)
    fake = fam.fake(nets, stub_batch()["normal"]["image"], ctx, ctx.split(6)[0])[..., 2].numpy().mean(axis=(1, 2))
    np.testing.assert_allclose(terms["fake"].numpy(), [ce(m, 1) for m in fake], rtol=1e-4)
    # ||grad (-mean)|| = 1/sqrt(N) = 1/32 everywhere: lambda (1/32 - 1)^2
    np.testing.assert_allclose(terms["penalty"].numpy(), [10 * (1 / 32 - 1) ** 2] * 2, rtol=1e-4)
    np.testing.assert_allclose(stats["real"].numpy(), [-0.5, -0.5], rtol=1e-6)
    g_terms, _ = fam.generator_loss(nets, stub_batch(), ctx)
    assert g_terms["adversarial"].shape == (2,)


def test_without_a_benign_stream_the_benign_term_is_dropped():
    fam = family(lesion_pathologies=["malignant", "benign"], benign_pathologies=[],
                 generator={"base_filters": 4, "max_filters": 16, "center_filters": 8, "spectral_norm": False})
    assert list(fam.streams()) == ["lesion", "normal"] and fam.roles["benign"] is None
    assert fam.streams()["lesion"].pathologies == ("malignant", "benign")
    nets = {"generator": fam.build_networks()["generator"], "discriminator": StubDiscriminator()}
    ctx = StepContext(seed=tf.constant([1, 2], tf.int64), schedules={"fade_alpha": tf.Variable(1.0)}, global_batch_size=2)
    batch = stub_batch()
    del batch["benign"]  # the data pipeline reads no benign stream
    terms, _ = fam.discriminator_loss(nets, batch, ctx)
    assert set(terms) == {"real", "fake", "normal", "penalty"}
    # the same seeds as with a benign stream: real, fake and normal terms unchanged
    with_benign, _ = family(generator={"base_filters": 4, "max_filters": 16, "center_filters": 8,
                                       "spectral_norm": False}).discriminator_loss(nets, stub_batch(), ctx)
    for name in ("real", "fake", "normal"):
        np.testing.assert_allclose(terms[name].numpy(), with_benign[name].numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="benign_pathologies repeats"):
        tiny_config(lesion_pathologies=["malignant", "benign"], benign_pathologies=["benign"])


def test_family_streams_phases_roles_and_schedules():
    add, remove = family("add"), family("remove", lesion_type="calcification")
    assert list(add.streams()) == ["lesion", "benign", "normal"]
    assert add.streams()["lesion"].lesion_types == ("mass",) and add.streams()["lesion"].pathologies == ("malignant",)
    assert remove.streams()["benign"].lesion_types == ("calcification",)
    assert add.roles["source"] == "normal" and add.roles["real"] == "lesion"
    assert remove.roles["source"] == "lesion" and remove.roles["real"] == "normal" and remove.roles["negative"] == "lesion"
    phases = add.phases()
    assert [(p.name, p.network, p.repeats, p.uses_data) for p in phases] == [
        ("d", "discriminator", 1, True), ("g", "generator", 2, True)]
    grower = ContextualFamily(tiny_config(), TrainConfig())
    assert grower.schedules() == {"fade_alpha": {"kind": "linear", "start": 0.0, "end": 1.0,
                                                 "start_step": 10, "end_step": 30}}
    assert [grower.stage(s) for s in (0, 9, 10, 29, 30, 99)] == [0, 0, 1, 1, 2, 2]
    assert add.stage(0) == 2 and add.schedules()["fade_alpha"]["start"] == 1.0


def test_family_stages_route_images(networks):
    fam, nets = ContextualFamily(tiny_config(), TrainConfig()), networks
    ctx = StepContext(seed=tf.constant([1, 2], tf.int64), schedules={"fade_alpha": tf.Variable(0.25)}, global_batch_size=2)
    inputs = {"image": np.full((2, 32, 32, 1), 0.1, np.float32), "noise": np.zeros((2, 6), np.float32)}
    for stage, side in ((0, 16), (1, 32)):
        fam.current_stage = stage
        terms, _ = fam.discriminator_loss(nets, stub_batch(), ctx)
        assert set(terms) == {"real", "fake", "benign", "normal", "penalty"}
        assert all(t.shape == (2,) and np.isfinite(t.numpy()).all() for t in terms.values())
        assert fam.fake(nets, fam._images(stub_batch(), "normal"), ctx, ctx.split(2)[0]).shape == (2, side, side, 3)
    fam.current_stage = 0  # grids at the S/2 stage: the S/2 network, upsampled to S
    grid = fam.generate_channels(nets["generator"], inputs).numpy()
    half = nets["generator"](downsample2(inputs["image"]), noise=inputs["noise"]).numpy()
    np.testing.assert_allclose(grid, upsample2(half).numpy(), atol=1e-6)
    outputs = fam.generate(nets["generator"], inputs).numpy()
    assert outputs.shape == (2, 32, 32, 3)
    lesion = np.zeros((2, 32, 32, 3), np.float32)
    lesion[:, 8:24, 8:24, 0], lesion[..., 1] = 0.5, 0.1  # a bright square lesion on a flat input
    shown = fam.present(lesion, inputs)
    assert shown.shape == (2, 32, 32, 1) and shown[0, 16, 16, 0] > 0.5 and shown[0, 0, 0, 0] == pytest.approx(0.1)
    np.testing.assert_allclose(shown[1, ..., 0], postprocess(lesion[1, ..., 0], lesion[1, ..., 1]).image)


def test_config_defaults_are_the_paper_and_errors_name_the_field():
    config = ContextualModelConfig()
    assert (config.image_size, config.attention_resolution, config.center_resolution, config.border_crop) == (256, 32, 4, 10)
    assert (config.generator.base_filters, config.generator.center_filters, config.generator.embedding_dim) == (16, 2048, 4)
    assert config.discriminator.base_filters == 8 * config.generator.base_filters
    assert config.loss.aux_weights == (0.2, 0.2) and (config.loss.penalty_weight, config.loss.penalty_k) == (10.0, 1.0)
    assert config.progressive.fade_steps == 3000
    for bad in ({"attention_resolution": 4}, {"image_size": 48}, {"center_resolution": 64, "image_size": 64},
                {"image_size": 64, "attention_resolution": 16, "border_crop": 32}):
        with pytest.raises(ValueError):
            ContextualModelConfig(**bad)
    assert ContextualModelConfig(image_size=64, attention_resolution=16, border_crop=20).border_crop == 20  # 10 at 32 px


@pytest.mark.parametrize("name", ["contextual_mass", "contextual_calcification", "contextual_removal",
                                  "mias_contextual_mass"])
def test_presets(name):
    data = yaml.safe_load((EXPERIMENTS / f"{name}.yaml").read_text())
    model, train = ContextualModelConfig(**data["model"]), TrainConfig(**data["train"])
    prepare = PrepareConfig(**data["prepare"])
    assert prepare.patches.mode == "contextual" and prepare.patches.min_breast_fraction == 0.9
    assert (prepare.patches.output_size or prepare.patches.size) == model.image_size
    generator, discriminator = train.generator_optimizer, train.discriminator_optimizer
    assert (generator.beta_1, generator.beta_2, generator.epsilon) == (0.0, 0.99, 1e-8)
    assert generator.model_copy(update={"learning_rate": discriminator.learning_rate}) == discriminator
    assert train.g_steps == (2 if model.lesion_type == "mass" and model.mode == "add" else 1)
    if name.startswith("contextual"):
        assert model.image_size == 256 and generator.learning_rate == discriminator.learning_rate == 1e-5
        assert model.mode == ("remove" if "removal" in name else "add")
    else:  # the mini-MIAS variant: two time scales, D 4x G (a discriminator that learns too slowly is fooled by bars)
        assert discriminator.learning_rate == 4 * generator.learning_rate


def test_fixed_inputs_take_source_patches_and_seeded_scalars(networks):
    fam = ContextualFamily(tiny_config(), TrainConfig())
    patches = np.arange(3, dtype=np.float32)[:, None, None, None] * np.ones((1, 32, 32, 1), np.float32) / 10
    streams = {name: object() for name in ("lesion", "benign", "normal")}
    data = SimpleNamespace(streams=streams, records=lambda stream: tf.data.Dataset.from_tensor_slices(
        {"image": patches if stream is streams["normal"] else -patches}))
    inputs = fam.fixed_inputs(networks, 5, 7, data)
    assert inputs["image"].shape == (5, 32, 32, 1) and inputs["noise"].shape == (5, 6)
    np.testing.assert_allclose(inputs["image"][:, 0, 0, 0], [0.0, 0.1, 0.2, 0.0, 0.1])  # normal stream, cycled
    np.testing.assert_array_equal(inputs["noise"], fam.fixed_inputs(networks, 5, 7, data)["noise"])
    assert np.abs(inputs["noise"]).max() <= 1 and not np.array_equal(inputs["noise"], fam.fixed_inputs(networks, 5, 8, data)["noise"])


def test_metric_scores_only_the_patches_synthesis_writes():
    """A discarded source is left out of the in-training metric (synthesis writes nothing for
    it); fewer than two written patches score inf, so such a checkpoint never becomes best."""
    import math

    from mammogan_tf.training.metric import TrainingMetric

    fam = ContextualFamily(tiny_config(), TrainConfig())
    outputs = np.zeros((3, 32, 32, 3), np.float32)
    outputs[..., 1] = 0.1
    outputs[0, 8:24, 8:24, 0] = outputs[2, 6:26, 6:26, 0] = 0.5  # sources 0 and 2 paint; 1 paints nothing
    shown, written = fam.present(outputs, {}), fam.written(outputs, {})
    assert shown.shape == (3, 32, 32, 1) and written.shape == (2, 32, 32, 1)
    np.testing.assert_array_equal(written, shown[[0, 2]])
    assert fam.written(outputs[1:2], {}).shape == (0, 32, 32, 1)
    metric = TrainingMetric.__new__(TrainingMetric)
    metric.config, metric.real_radiomics = SimpleNamespace(name="fid", seed=0), None
    metric.reference = SimpleNamespace(score=lambda images, seed: {"fid": float(len(images))})
    assert metric.value(written) == 2.0 and math.isinf(metric.value(written[:1]))


def test_ema_of_a_spectrally_normalised_generator_keeps_unit_norm_kernels():
    """Keras keeps the normalised kernel and uses it as is at inference; the EMA of two different
    unit-norm kernels has a norm below 1, so the EMA copy is renormalised after each update."""
    from mammogan_tf.training.loop import Trainer

    config = TrainConfig(ema={"enabled": True, "decay": 0.5})
    trainer = Trainer(ContextualFamily(tiny_config(), config), config)
    layers = [layer for layer in trainer.networks["generator"]._flatten_layers(include_self=False, recursive=True)
              if isinstance(layer, keras.layers.SpectralNormalization)]
    assert len(layers) > 10
    rng = np.random.default_rng(0)
    for layer in layers:  # a training step's worth of change: new unit-norm kernels in the source
        layer.kernel.assign(rng.normal(size=layer.kernel.shape).astype(np.float32))
        for _ in range(30):
            vector_u, kernel = layer.normalized_weights()
            layer.vector_u.assign(vector_u)
        layer.kernel.assign(kernel)

    def largest_singular_values(network):
        return np.array([np.linalg.norm(np.reshape(layer.kernel.numpy(), (-1, layer.kernel.shape[-1])), 2)
                         for layer in network._flatten_layers(include_self=False, recursive=True)
                         if isinstance(layer, keras.layers.SpectralNormalization)])

    np.testing.assert_allclose(largest_singular_values(trainer.networks["generator"]), 1.0, atol=1e-2)
    trainer._update_ema(tf.constant(1, tf.int64))  # EMA = (initial + new) / 2, then renormalised
    ema = largest_singular_values(trainer.ema_network)
    assert np.all(np.abs(ema - 1.0) < 0.1), ema
