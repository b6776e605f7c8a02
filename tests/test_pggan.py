"""Conditional PGGAN with boxes: equalised LR, fade-in, growth by name, the box channel, the family."""
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf

from mammogan_tf.errors import ConfigError
from mammogan_tf.models.pggan import (CPGGANModelConfig, EqualizedConv2D, EqualizedDense, box_masks,
                                      build_cpggan, minibatch_stddev, resize_to)
from mammogan_tf.training.families.base import StepContext
from mammogan_tf.training.families.cpggan import CPGGANFamily, level_from_progress, sample_boxes

CONFIG = CPGGANModelConfig(image_size=16, start_resolution=4, latent_dim=8, base_filters=4, max_filters=16,
                           images_per_phase=64)
BOXES = tf.constant([[2.0, 3, 9, 8], [6, 6, 14, 15], [0, 0, 5, 5], [10, 1, 15, 7]])
Z = tf.random.stateless_normal((4, 8), (0, 1))
MASK = box_masks(BOXES, 16)


@pytest.fixture(scope="module")
def nets():
    return build_cpggan(CONFIG)


def test_equalized_lr_scales_by_he_constant():
    x = tf.random.stateless_normal((2, 5, 5, 3), (1, 2))
    conv = EqualizedConv2D(4, 3)
    y = conv(x)
    assert conv.scale == pytest.approx(np.sqrt(2) / np.sqrt(3 * 3 * 3))
    expected = tf.nn.conv2d(x, conv.kernel * float(np.sqrt(2 / 27)), 1, "SAME") + conv.bias
    np.testing.assert_allclose(y.numpy(), expected.numpy(), atol=1e-5)
    assert abs(float(tf.math.reduce_std(conv.kernel)) - 1.0) < 0.35  # stored weights ~ N(0, 1)
    dense = EqualizedDense(6, gain=1.0)
    v = tf.ones((1, 10))
    np.testing.assert_allclose(dense(v).numpy(), (v @ dense.kernel).numpy() / np.sqrt(10) + dense.bias.numpy(), atol=1e-5)


def _spy(layer, seen):
    original = layer.call
    layer.call = lambda inputs, *a, **k: (seen.append(inputs), original(inputs, *a, **k))[1]
    return original


def test_generator_fade_in_is_exact(nets):
    generator, _ = nets
    out = {lv: generator({"latent": Z, "mask": MASK}, level=lv).numpy() for lv in (1.0, 1.5, 2.0)}
    np.testing.assert_allclose(out[1.5], 0.5 * (out[1.0] + out[2.0]), atol=1e-5)  # alpha 0.5
    coarse = out[1.0]  # alpha 0 of the 16 px stage: an 8 px image, upsampled
    np.testing.assert_array_equal(coarse, np.repeat(np.repeat(coarse[:, ::2, ::2], 2, 1), 2, 2))
    assert np.abs(out[2.0] - coarse).max() > 1e-3
    rgb = generator.to_rgb[2]
    saved = [w.numpy() for w in rgb.weights]
    rgb.kernel.assign(rgb.kernel * 3.0 + 1.0)  # the new stage's layer does not touch alpha 0
    np.testing.assert_array_equal(generator({"latent": Z, "mask": MASK}, level=1.0).numpy(), coarse)
    assert np.abs(generator({"latent": Z, "mask": MASK}, level=2.0).numpy() - out[2.0]).max() > 1e-3
    rgb.set_weights(saved)


def test_discriminator_fade_in_is_exact(nets):
    _, discriminator = nets
    images = tf.random.stateless_uniform((4, 16, 16, 1), (3, 4), -1, 1)
    entering = {}
    for lv in (1.0, 1.5, 2.0):  # the features entering the 8 px block: fromRGB_8 vs the 16 px block
        seen = []
        original = _spy(discriminator.convs[0][0], seen)
        discriminator({"image": images, "mask": MASK}, level=lv)
        discriminator.convs[0][0].call = original
        entering[lv] = seen[0].numpy()
    np.testing.assert_allclose(entering[1.5], 0.5 * (entering[1.0] + entering[2.0]), atol=1e-5)
    score = discriminator({"image": images, "mask": MASK}, level=1.0).numpy()
    new = discriminator.from_rgb[2]
    saved = new.get_weights()
    new.kernel.assign(new.kernel * 3.0 + 1.0)
    np.testing.assert_array_equal(discriminator({"image": images, "mask": MASK}, level=1.0).numpy(), score)
    new.set_weights(saved)


def test_skipping_resolutions_not_grown_changes_nothing(nets):
    generator, discriminator = nets
    images = generator({"latent": Z, "mask": MASK}).numpy()
    for level, top in ((0.0, 0), (0.5, 1), (1.0, 1)):
        np.testing.assert_allclose(generator({"latent": Z, "mask": MASK}, level=level, top=top),
                                   generator({"latent": Z, "mask": MASK}, level=level), atol=1e-6)
        np.testing.assert_allclose(discriminator({"image": images, "mask": MASK}, level=level, top=top),
                                   discriminator({"image": images, "mask": MASK}, level=level), atol=1e-5)


def test_growth_keeps_weights_by_name(nets, tmp_path):
    generator, discriminator = nets
    before = generator({"latent": Z, "mask": MASK}, level=1.0).numpy()
    paths = sorted(v.path for v in generator.weights)
    assert "to_rgb16/kernel" in paths and "conv4_0/kernel" in paths
    generator.save(tmp_path / "g.keras")
    discriminator.save(tmp_path / "d.keras")
    grown = keras.models.load_model(tmp_path / "g.keras")
    assert sorted(v.path for v in grown.weights) == paths
    # the next stage at alpha 0 reproduces the previous stage exactly from the restored weights
    np.testing.assert_allclose(grown({"latent": Z, "mask": MASK}, level=1.0).numpy(), before, atol=1e-6)
    images = generator({"latent": Z, "mask": MASK}).numpy()
    critic = keras.models.load_model(tmp_path / "d.keras")
    np.testing.assert_allclose(critic({"image": images, "mask": MASK}, level=1.5).numpy(),
                               discriminator({"image": images, "mask": MASK}, level=1.5).numpy(), atol=1e-5)


def test_box_channel_reaches_every_resolution(nets):
    generator, discriminator = nets
    layers = {f"G{r}": generator.convs[k][0] for k, r in enumerate(generator.resolutions)}
    layers.update({f"Drgb{r}": discriminator.from_rgb[k] for k, r in enumerate(discriminator.resolutions)})
    layers.update({f"D{r}": discriminator.convs[k - 1][0] for k, r in enumerate(discriminator.resolutions) if k})
    layers["Dfinal4"] = discriminator.final_conv
    seen = {name: [] for name in layers}
    originals = {name: _spy(layer, seen[name]) for name, layer in layers.items()}
    images = generator({"latent": Z, "mask": MASK}, level=0.5)
    discriminator({"image": images, "mask": MASK}, level=0.5)
    for name, layer in layers.items():
        layer.call = originals[name]
        inputs = seen[name][0]
        side = int(inputs.shape[1])
        assert name.endswith(str(side))
        expected = tf.nn.max_pool2d(MASK, 16 // side, 16 // side, "VALID") if side < 16 else MASK
        np.testing.assert_array_equal(inputs[..., -1].numpy(), expected[..., 0].numpy(), err_msg=name)
    assert len(seen) == 3 + 3 + 2 + 1


def test_box_masks_and_resizing_are_exact():
    mask = box_masks(tf.constant([[[2.0, 3, 9, 8], [-1, -1, -1, -1]]]), 12)[0, ..., 0].numpy()
    expected = np.zeros((12, 12))
    expected[3:8, 2:9] = 1
    np.testing.assert_array_equal(mask, expected)
    assert resize_to(tf.constant(expected[None, ..., None]), 4, "max")[0, ..., 0].numpy().sum() == 6
    y = minibatch_stddev(tf.constant([[[[1.0]]], [[[3.0]]]]), group_size=2)
    np.testing.assert_allclose(y[..., 1].numpy().ravel(), [1.0, 1.0], atol=1e-4)


def test_progress_schedule_stabilises_and_fades():
    values = [float(level_from_progress(p, 2)) for p in (0.0, 0.9, 1.0, 1.25, 2.0, 2.7, 3.5, 5.0, 6.0)]
    np.testing.assert_allclose(values, [0, 0, 0, 0.25, 1, 1, 1.5, 2, 2], atol=1e-6)


def test_sampled_boxes_follow_the_training_boxes():
    rng = np.random.default_rng(0)
    reference = np.array([[10, 10, 20, 30], [40, 40, 50, 60]], np.float32)
    boxes = sample_boxes(reference, 200, 64, rng)
    sides = boxes[:, 2:] - boxes[:, :2]
    assert np.all(boxes >= 0) and np.all(boxes <= 64)
    np.testing.assert_allclose(sides.mean(0), [10, 20], rtol=0.05)
    assert np.all(np.abs(sides[:, 1] / sides[:, 0] - 2) < 0.5)


def test_family_losses_and_sampling(nets):
    family = CPGGANFamily(CONFIG, SimpleNamespace(batch_size=4))
    networks = family.build_networks()
    schedule = family.schedules()["progress"]
    assert schedule["end"] == 5.0 and schedule["end_step"] == 5 * 64 and schedule["unit"] == "images"
    # 16 steps per phase: 4 px, fade 8, 8, fade 16, 16
    assert [family.stage(s) for s in (0, 15, 16, 17, 40, 48, 49, 80, 99)] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert family.top == 2  # outside the loop: every resolution
    with pytest.raises(ConfigError, match="output_size 16"):
        family.check_data(SimpleNamespace(patch_size=64, path="runs/data/x"))
    ctx = StepContext(seed=tf.constant([1, 2], tf.int64), schedules={"progress": tf.Variable(1.5)},
                      global_batch_size=4)
    batch = {"real": {"image": tf.random.stateless_uniform((4, 16, 16, 1), (5, 6), -1, 1),
                      "label": tf.zeros(4, tf.int32), "box": BOXES, "mask": tf.zeros((4, 16, 16, 1))}}
    with tf.GradientTape() as tape:
        terms, stats = family.discriminator_loss(networks, batch, ctx)
        total = sum(tf.reduce_mean(t) for t in terms.values())
    assert set(terms) == {"wasserstein", "gradient_penalty", "drift"}
    assert all(t.shape == (4,) for t in terms.values())
    np.testing.assert_allclose(terms["wasserstein"], stats["fake_score"] - stats["real_score"], atol=1e-5)
    np.testing.assert_allclose(terms["drift"], 0.001 * stats["real_score"] ** 2, rtol=1e-5)
    np.testing.assert_allclose(stats["level"], 0.5)
    assert float(tf.reduce_min(terms["gradient_penalty"])) >= 0
    grads = tape.gradient(total, networks["discriminator"].trainable_variables)
    assert all(g is not None and np.all(np.isfinite(g)) for g in grads)
    traced, _ = tf.function(lambda: family.discriminator_loss(networks, batch, ctx))()  # graph mode
    np.testing.assert_allclose(traced["wasserstein"], terms["wasserstein"], atol=1e-4)
    g_terms, _ = family.generator_loss(networks, batch, ctx)
    assert g_terms["wasserstein"].shape == (4,)
    inputs = family.fixed_inputs(networks, 3, 0, SimpleNamespace(boxes=BOXES.numpy()))
    assert inputs["latent"].shape == (3, 8) and inputs["mask"].shape == (3, 16, 16, 1)
    images = family.generate(networks["generator"], inputs)
    assert images.shape == (3, 16, 16, 1) and float(tf.reduce_max(tf.abs(images))) <= 1.0
