"""Discriminator augmentation and the adaptive (ADA) controller."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mammogan_tf.errors import ConfigError
from mammogan_tf.training.augment import AUGMENT_OPS, AdaptiveAugmentController, DiscriminatorAugment

SEED = tf.constant([3, 4])


def images(batch=16, size=32, seed=0):
    return tf.random.stateless_uniform((batch, size, size, 1), [seed, 9], -1.0, 1.0)


def changed(a, b):
    """Per-example: did anything change?"""
    return np.any(np.abs(a.numpy() - b.numpy()) > 0, axis=(1, 2, 3))


def test_p_zero_is_exactly_the_identity():
    x = images() * 1.5  # even outside [-1, 1]: nothing is clipped when no op is applied
    augment = DiscriminatorAugment(p=0.0)
    np.testing.assert_array_equal(augment(x, SEED).numpy(), x.numpy())


@pytest.mark.parametrize("op", AUGMENT_OPS)
def test_p_one_changes_every_image_and_stays_in_range(op):
    x = images()
    augment = DiscriminatorAugment(ops=[op], p=1.0, padding="zeros")
    y = augment(x, SEED)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(tf.reduce_min(y)) >= -1.0 and float(tf.reduce_max(y)) <= 1.0
    if op == "translation":  # a shift of (0, 0) is one of the allowed draws
        assert changed(x, y).mean() > 0.9
    else:
        assert changed(x, y).all()


def test_each_op_does_what_it_says():
    x = images(batch=4)
    np.testing.assert_array_equal(DiscriminatorAugment(["hflip"], p=1.0)(x, SEED).numpy(), x.numpy()[:, :, ::-1])
    np.testing.assert_array_equal(DiscriminatorAugment(["vflip"], p=1.0)(x, SEED).numpy(), x.numpy()[:, ::-1])
    np.testing.assert_array_equal(DiscriminatorAugment(["transpose"], p=1.0)(x, SEED).numpy(),
                                  x.numpy().transpose(0, 2, 1, 3))
    with pytest.raises(ConfigError, match="square"):
        DiscriminatorAugment(["transpose"], p=1.0)(tf.zeros((2, 8, 16, 1)), SEED)
    cut = DiscriminatorAugment(["cutout"], p=1.0)(x, SEED).numpy()
    holes = (cut == 0) & (x.numpy() != 0)
    assert np.all(holes.sum(axis=(1, 2, 3)) <= 16 * 16) and np.all(holes.sum(axis=(1, 2, 3)) >= 8 * 8)
    bright = DiscriminatorAugment(["brightness"], p=1.0, brightness=0.2)(tf.zeros((4, 8, 8, 1)), SEED).numpy()
    assert np.all(np.ptp(bright, axis=(1, 2, 3)) == 0) and np.abs(bright).max() <= 0.2  # one shift per image
    moved = DiscriminatorAugment(["translation"], p=1.0, translation_ratio=0.125)(x, SEED).numpy()
    for before, after in zip(x.numpy(), moved):  # some shift (dy, dx) with |d| <= 4 reproduces the interior
        matches = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)
                   if np.array_equal(after[8:24, 8:24], before[8 - dy:24 - dy, 8 - dx:24 - dx])]
        assert len(matches) == 1


def test_deterministic_given_seed_and_independent_per_example():
    x = images()
    augment = DiscriminatorAugment(p=0.25)
    a, b, c = augment(x, SEED), augment(x, SEED), augment(x, tf.constant([3, 5]))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(a.numpy(), c.numpy())
    fraction = changed(x, augment(images(batch=256), SEED)[:16]).mean()
    assert 0.5 < fraction < 1.0  # 7 ops at p = 0.25: most (87 %), but not all, images are touched


def test_gradients_flow_to_the_images():
    x = tf.Variable(images(batch=4))
    augment = DiscriminatorAugment(p=1.0)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(augment(x, SEED)))
    grad = tape.gradient(loss, x)
    assert grad is not None and float(tf.reduce_sum(tf.abs(grad))) > 0
    assert np.all(np.isfinite(grad.numpy()))


def test_works_inside_tf_function_and_p_is_checkpointed(tmp_path):
    augment = DiscriminatorAugment(p=0.0)
    step = tf.function(lambda x, seed: augment(x, seed))
    x = images(batch=4)
    np.testing.assert_array_equal(step(x, SEED).numpy(), x.numpy())
    augment.p.assign(1.0)  # the traced function reads the variable, no retrace needed
    assert changed(x, step(x, SEED)).all()
    path = tf.train.Checkpoint(augment=augment).save(str(tmp_path / "ckpt"))
    restored = DiscriminatorAugment(p=0.0)
    tf.train.Checkpoint(augment=restored).restore(path).assert_consumed()
    assert float(restored.p) == 1.0
    assert not augment.p.trainable


def test_flips_and_transpose_draw_all_eight_orientations_evenly():
    """hflip + vflip + transpose at p = 0.5: the 8 flips and quarter turns, each about 1/8."""
    x = tf.reshape(tf.range(16, dtype=tf.float32), (1, 4, 4, 1)) / 16.0
    out = DiscriminatorAugment(["hflip", "vflip", "transpose"], p=0.5)(tf.tile(x, [4000, 1, 1, 1]), SEED).numpy()
    base = x.numpy()[0, ..., 0]
    orientations = [np.rot90(base, k) for k in range(4)] + [np.rot90(base.T, k) for k in range(4)]
    counts = [sum(np.array_equal(o, image[..., 0]) for image in out) for o in orientations]
    assert sum(counts) == 4000 and min(counts) > 400 and max(counts) < 600


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="unknown"):
        DiscriminatorAugment(ops=["rotate"])
    with pytest.raises(ConfigError, match="padding"):
        DiscriminatorAugment(padding="wrap")


def run_controller(sign, steps, p=0.5):
    augment = DiscriminatorAugment(p=p)
    controller = AdaptiveAugmentController(augment, batch_size=8, target=0.6, adjust_every=4,
                                           speed_images=320)
    history = []
    for _ in range(steps):
        controller.accumulate(tf.fill((8, 1), sign))
        history.append(float(controller.update()))
    return controller, history


def test_controller_raises_p_when_d_is_overconfident_on_reals():
    controller, history = run_controller(+1.0, 8)
    step = 8 * 4 / 320  # batch * interval / speed
    assert history[:3] == [0.5] * 3  # p moves only every adjust_every steps
    assert history[3] == pytest.approx(0.5 + step) and history[7] == pytest.approx(0.5 + 2 * step)
    assert float(controller.rt) == pytest.approx(1.0)
    assert controller.p is controller.augment.p


def test_controller_lowers_p_otherwise_and_clips_to_zero():
    controller, history = run_controller(-1.0, 40, p=0.15)
    assert history[3] == pytest.approx(0.05)
    assert min(history) == 0.0 and history[-1] == 0.0
    assert float(controller.rt) == pytest.approx(-1.0)


def test_controller_rt_is_the_mean_sign():
    augment = DiscriminatorAugment(p=0.5)
    controller = AdaptiveAugmentController(augment, batch_size=4, adjust_every=1, target=0.6)
    controller.accumulate(tf.constant([[2.0], [1.0], [0.5], [-3.0]]))  # r_t = (1 + 1 + 1 - 1) / 4 = 0.5
    p = float(controller.update())
    assert float(controller.rt) == pytest.approx(0.5)
    assert p == pytest.approx(0.5 - 4 / 500_000)  # 0.5 < target: p goes down
