"""GAN losses against values computed by hand with numpy."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mammogan_tf.errors import ConfigError
from mammogan_tf.training.losses import (LOSS_KINDS, class_loss, discriminator_loss, generator_loss,
                                         gradient_penalty, r1_penalty)

REAL = np.array([[2.0], [-1.0], [0.5]], np.float32)  # (B, 1) logits
FAKE = np.array([[-3.0], [0.0], [1.5]], np.float32)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def bce(logits, target):
    p = sigmoid(logits)
    return -(target * np.log(p) + (1 - target) * np.log(1 - p))


def np_disc(kind, r, f, real_label=1.0):
    r, f = r[:, 0].astype(np.float64), f[:, 0].astype(np.float64)
    if kind in ("minimax", "non_saturating"):
        return bce(r, real_label) + bce(f, 0.0)
    if kind == "least_squares":
        return 0.5 * ((r - real_label) ** 2 + f ** 2)
    if kind == "wasserstein":
        return f - r
    return np.maximum(0, 1 - r) + np.maximum(0, 1 + f)


def np_gen(kind, f):
    f = f[:, 0].astype(np.float64)
    return {"minimax": np.log(1 - sigmoid(f)), "non_saturating": -np.log(sigmoid(f)),
            "least_squares": 0.5 * (f - 1) ** 2, "wasserstein": -f, "hinge": -f}[kind]


@pytest.mark.parametrize("kind", LOSS_KINDS)
def test_losses_match_numpy(kind):
    d_loss = discriminator_loss(kind, REAL, FAKE)
    g_loss = generator_loss(kind, FAKE)
    assert d_loss.shape == (3,) and g_loss.shape == (3,)
    assert d_loss.dtype == tf.float32 and g_loss.dtype == tf.float32
    np.testing.assert_allclose(d_loss.numpy(), np_disc(kind, REAL, FAKE), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g_loss.numpy(), np_gen(kind, FAKE), rtol=1e-5, atol=1e-6)
    # (B,) logits give the same per-example losses as (B, 1).
    np.testing.assert_allclose(discriminator_loss(kind, REAL[:, 0], FAKE[:, 0]).numpy(), d_loss.numpy())


def test_minimax_and_non_saturating_share_d_but_not_g():
    np.testing.assert_allclose(discriminator_loss("minimax", REAL, FAKE).numpy(),
                               discriminator_loss("non_saturating", REAL, FAKE).numpy())
    # at f = -3 (D sure it is fake) minimax's gradient vanishes, non-saturating's does not
    f = tf.constant([[-3.0]])
    grads = {}
    for kind in ("minimax", "non_saturating"):
        with tf.GradientTape() as tape:
            tape.watch(f)
            loss = generator_loss(kind, f)
        grads[kind] = float(tape.gradient(loss, f)[0, 0])
    assert abs(grads["minimax"]) == pytest.approx(sigmoid(-3.0), rel=1e-5)
    assert abs(grads["non_saturating"]) == pytest.approx(1 - sigmoid(-3.0), rel=1e-5)


@pytest.mark.parametrize("kind", ["minimax", "non_saturating", "least_squares"])
def test_one_sided_label_smoothing_changes_only_real_targets(kind):
    smoothed = discriminator_loss(kind, REAL, FAKE, real_label=0.9).numpy()
    np.testing.assert_allclose(smoothed, np_disc(kind, REAL, FAKE, 0.9), rtol=1e-5, atol=1e-6)
    # the fake half is unchanged: identical real logits -> difference is only in the real term
    zeros = np.zeros_like(REAL)
    fake_only = discriminator_loss(kind, zeros, FAKE, real_label=0.9) - discriminator_loss(kind, zeros, zeros,
                                                                                           real_label=0.9)
    np.testing.assert_allclose(fake_only.numpy(), (np_disc(kind, zeros, FAKE) - np_disc(kind, zeros, zeros)),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", LOSS_KINDS)
def test_real_label_may_be_a_tensor_in_a_traced_step(kind):
    step = tf.function(lambda label: discriminator_loss(kind, REAL, FAKE, real_label=label))
    for label in (1.0, 0.8):
        expected = np_disc(kind, REAL, FAKE, label if kind in ("minimax", "non_saturating", "least_squares")
                           else 1.0)
        np.testing.assert_allclose(step(tf.constant(label)).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_label_smoothing_and_unknown_kind_are_config_errors():
    with pytest.raises(ConfigError, match="hinge"):
        discriminator_loss("hinge", REAL, FAKE, real_label=0.9)
    with pytest.raises(ConfigError, match="unknown GAN loss"):
        generator_loss("wgan", FAKE)


def linear_discriminator(w):
    """D(x) = <w, x> per example, (B, 1); its input gradient is w everywhere."""
    w = tf.constant(w, tf.float32)
    return lambda images: tf.reduce_sum(images * w, axis=[1, 2, 3])[:, None]


def test_gradient_penalty_of_a_linear_discriminator():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(1, 4, 4, 1)).astype(np.float32)
    real = rng.uniform(-1, 1, (5, 4, 4, 1)).astype(np.float32)
    fake = rng.uniform(-1, 1, (5, 4, 4, 1)).astype(np.float32)
    penalty = gradient_penalty(linear_discriminator(w), real, fake, seed=tf.constant([1, 2]))
    assert penalty.shape == (5,)
    np.testing.assert_allclose(penalty.numpy(), (np.linalg.norm(w) - 1.0) ** 2 * np.ones(5), rtol=1e-5)
    # an ACGAN-style (logits, class_logits) output is accepted
    acgan_like = (lambda images: (linear_discriminator(w)(images), tf.zeros((5, 3))))
    np.testing.assert_allclose(gradient_penalty(acgan_like, real, fake, tf.constant([1, 2])).numpy(),
                               penalty.numpy())


def test_gradient_penalty_interpolates_uniformly_and_deterministically():
    """D(x) = 0.5 * ||x||^2 has gradient x, so the penalty reveals the interpolation weight u:
    with real = 0 and fake = constant c, x_hat = u * c and ||grad|| = u * ||c||."""
    batch = 4000
    real = tf.zeros((batch, 2, 2, 1))
    fake = tf.fill((batch, 2, 2, 1), 0.5)  # ||c|| = 1
    quadratic = lambda images: 0.5 * tf.reduce_sum(tf.square(images), axis=[1, 2, 3])[:, None]  # noqa: E731
    penalty = gradient_penalty(quadratic, real, fake, tf.constant([7, 7])).numpy()
    u = 1.0 - np.sqrt(penalty)  # penalty = (u - 1)^2 with u in [0, 1]
    assert u.min() >= 0.0 and u.max() <= 1.0
    assert u.mean() == pytest.approx(0.5, abs=0.02) and u.var() == pytest.approx(1 / 12, abs=0.01)
    again = gradient_penalty(quadratic, real, fake, tf.constant([7, 7])).numpy()
    np.testing.assert_array_equal(penalty, again)


def test_r1_penalty_of_a_linear_discriminator():
    w = np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3, 1) / 10
    real = np.random.default_rng(1).normal(size=(3, 3, 3, 1)).astype(np.float32)
    penalty = r1_penalty(linear_discriminator(w), real)
    np.testing.assert_allclose(penalty.numpy(), np.full(3, np.sum(w ** 2)), rtol=1e-6)


def test_gradient_penalty_is_differentiable_for_the_discriminator_update():
    w = tf.Variable(tf.fill((1, 2, 2, 1), 0.25))  # ||w|| = 0.5 -> GP = 0.25, dGP/dw = 2 (||w|| - 1) w / ||w||
    real = tf.ones((2, 2, 2, 1))
    with tf.GradientTape() as tape:
        penalty = tf.reduce_mean(gradient_penalty(lambda x: tf.reduce_sum(x * w, axis=[1, 2, 3])[:, None],
                                                  real, -real, tf.constant([0, 1])))
    grad = tape.gradient(penalty, w).numpy()
    np.testing.assert_allclose(float(penalty), 0.25, rtol=1e-5)
    np.testing.assert_allclose(grad, np.full((1, 2, 2, 1), 2 * (0.5 - 1) * 0.25 / 0.5), rtol=1e-5)


def test_class_loss_is_sparse_cross_entropy():
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]], np.float32)
    labels = np.array([0, 2])
    expected = [-np.log(np.exp(2) / (np.exp(2) + 1 + np.exp(-1))), np.log(3.0)]
    loss = class_loss(labels, logits)
    assert loss.shape == (2,)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-6)


def test_perturbation_penalty_matches_a_numeric_gradient():
    """(||grad D(x + delta)|| - k)^2 with delta ~ U(0, 1) per pixel, against finite differences."""
    from mammogan_tf.training.losses import perturbation_penalty

    rng = np.random.default_rng(0)
    real = rng.uniform(-1, 1, (3, 4, 4, 1)).astype(np.float64)
    weights = rng.uniform(0.2, 1.0, (4, 4, 1))

    def d_numpy(x):  # (B, 4, 4, 1) -> (B,): a smooth non-linear critic
        return np.sum(weights * np.sin(x) * x, axis=(1, 2, 3))

    def d_tf(x):
        return tf.reduce_sum(tf.constant(weights, tf.float32) * tf.sin(x) * x, axis=[1, 2, 3])[:, None]

    seed = tf.constant([5, 9], tf.int64)
    got = perturbation_penalty(d_tf, real.astype(np.float32), seed, k=1.0).numpy()
    delta = tf.random.stateless_uniform(real.shape, seed, 0.0, 1.0).numpy().astype(np.float64)
    point, eps = real + delta, 1e-6
    grads = np.zeros_like(point)
    for index in np.ndindex(point.shape[1:]):
        step = np.zeros_like(point)
        step[(slice(None), *index)] = eps
        grads[(slice(None), *index)] = (d_numpy(point + step) - d_numpy(point - step)) / (2 * eps)
    expected = (np.sqrt(np.sum(grads ** 2, axis=(1, 2, 3))) - 1.0) ** 2
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    assert got.shape == (3,) and np.all(got > 0)
    # k moves the target norm; a different seed draws a different perturbation
    assert not np.allclose(perturbation_penalty(d_tf, real.astype(np.float32), seed, k=2.0).numpy(), got)
    assert not np.allclose(perturbation_penalty(d_tf, real.astype(np.float32), seed + 1).numpy(), got)
