"""GAN losses as plain functions of tensors.

Every function returns a per-example loss of shape (B,) float32; the training loop averages
it with ``tf.nn.compute_average_loss(loss, global_batch_size=...)``. Logits may be (B,) or
(B, 1) (or (B, ...): extra axes are averaged), never probabilities.

Kinds (``LOSS_KINDS``), with r = D(x) real logits, f = D(G(z)) fake logits, s = sigmoid:

===============  ==========================================  ===============================
kind             discriminator                               generator
===============  ==========================================  ===============================
minimax          BCE(r, real_label) + BCE(f, 0)              log(1 - s(f))  (Goodfellow)
non_saturating   BCE(r, real_label) + BCE(f, 0)              -log s(f)      (Alyafi's L_G)
least_squares    ((r - real_label)^2 + f^2) / 2              (f - 1)^2 / 2  (Mao et al.)
wasserstein      f - r                                       -f             (with GP / clipping)
hinge            relu(1 - r) + relu(1 + f)                   -f
===============  ==========================================  ===============================

``real_label < 1`` is one-sided label smoothing (Salimans et al.; used by Alyafi): it changes
only the targets of real images, and only for the three kinds that have targets.
"""
from __future__ import annotations

import tensorflow as tf

from mammogan_tf.errors import ConfigError

LOSS_KINDS = ("minimax", "non_saturating", "least_squares", "wasserstein", "hinge")
SMOOTHABLE_KINDS = ("minimax", "non_saturating", "least_squares")


def _per_example(values) -> tf.Tensor:
    """(B, ...) -> (B,) float32, averaging any axes after the batch axis."""
    values = tf.cast(values, tf.float32)
    if values.shape.rank == 1:
        return values
    return tf.reduce_mean(tf.reshape(values, [tf.shape(values)[0], -1]), axis=1)


def _check_kind(kind: str) -> None:
    if kind not in LOSS_KINDS:
        raise ConfigError(f"loss {kind!r}: unknown GAN loss; choose one of {', '.join(LOSS_KINDS)}")


def _bce(logits, target) -> tf.Tensor:
    logits = tf.cast(logits, tf.float32)
    labels = tf.fill(tf.shape(logits), tf.cast(target, tf.float32))
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)


def _d_bce(real, fake, real_label):
    return _per_example(_bce(real, real_label)) + _per_example(_bce(fake, 0.0))


def _d_least_squares(real, fake, real_label):
    return 0.5 * (_per_example(tf.square(real - tf.cast(real_label, tf.float32))) + _per_example(tf.square(fake)))


def _d_wasserstein(real, fake, real_label):
    return _per_example(fake) - _per_example(real)


def _d_hinge(real, fake, real_label):
    return _per_example(tf.nn.relu(1.0 - real)) + _per_example(tf.nn.relu(1.0 + fake))


def _g_minimax(fake):  # log(1 - sigmoid(f)) = -BCE(f, 0)
    return -_per_example(_bce(fake, 0.0))


def _g_non_saturating(fake):  # -log sigmoid(f) = BCE(f, 1)
    return _per_example(_bce(fake, 1.0))


def _g_least_squares(fake):
    return 0.5 * _per_example(tf.square(fake - 1.0))


def _g_linear(fake):
    return -_per_example(fake)


_LOSSES = {"minimax": (_d_bce, _g_minimax), "non_saturating": (_d_bce, _g_non_saturating),
           "least_squares": (_d_least_squares, _g_least_squares), "wasserstein": (_d_wasserstein, _g_linear),
           "hinge": (_d_hinge, _g_linear)}


class AdversarialLoss:
    """The loss ``kind`` as two callables of logits (see the module table).

    ``discriminator(real_logits, fake_logits, real_label=1.0)`` and ``generator(fake_logits)``
    return per-example losses (B,) float32. ``real_label`` (a Python number or a scalar float
    tensor, e.g. a schedule variable) is the target of real images (one-sided label smoothing);
    only minimax / non_saturating / least_squares use it.
    """

    def __init__(self, kind: str):
        _check_kind(kind)
        self.kind = kind
        self._d, self._g = _LOSSES[kind]

    def discriminator(self, real_logits, fake_logits, real_label=1.0) -> tf.Tensor:
        if isinstance(real_label, (int, float)) and real_label != 1.0 and self.kind not in SMOOTHABLE_KINDS:
            raise ConfigError(f"real_label {real_label}: one-sided label smoothing applies only to "
                              f"{', '.join(SMOOTHABLE_KINDS)}; set it to 1.0 for the {self.kind} loss")
        return self._d(tf.cast(real_logits, tf.float32), tf.cast(fake_logits, tf.float32), real_label)

    def generator(self, fake_logits) -> tf.Tensor:
        return self._g(tf.cast(fake_logits, tf.float32))


def discriminator_loss(kind: str, real_logits, fake_logits, real_label: float = 1.0) -> tf.Tensor:
    """Discriminator loss per example, (B,) float32 (``AdversarialLoss(kind).discriminator``).

    real_logits, fake_logits: (B, 1) float logits of D on real and generated images.
    real_label: target of real images (1.0 = no smoothing; 0.9 = one-sided label smoothing).
    """
    return AdversarialLoss(kind).discriminator(real_logits, fake_logits, real_label)


def generator_loss(kind: str, fake_logits) -> tf.Tensor:
    """Generator loss per example, (B,) float32. fake_logits: (B, 1) logits of D(G(z))."""
    return AdversarialLoss(kind).generator(fake_logits)


def _logits_of(output):
    """The real/fake logits of a discriminator output (an ACGAN returns (logits, class_logits))."""
    return output[0] if isinstance(output, (tuple, list)) else output


def _input_gradient(discriminator_fn, images) -> tf.Tensor:
    """d(sum of D logits)/d images, (B, H, W, C) float32: per-example input gradients
    (exact when D treats examples independently, i.e. no batch norm in training mode)."""
    images = tf.convert_to_tensor(images, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(images)
        logits = tf.cast(_logits_of(discriminator_fn(images)), tf.float32)
        total = tf.reduce_sum(logits)
    return tape.gradient(total, images)


def _squared_norm(grads) -> tf.Tensor:
    return tf.reduce_sum(tf.reshape(tf.square(grads), [tf.shape(grads)[0], -1]), axis=1)


def gradient_penalty(discriminator_fn, real, fake, seed) -> tf.Tensor:
    """WGAN-GP penalty (Gulrajani et al. 2017), (B,) float32: ``(||grad D(x_hat)||_2 - 1)^2``.

    x_hat = real + u * (fake - real) with u ~ UNIFORM[0, 1] drawn once per example
    (stateless, from ``seed``: int tensor of shape (2,)).
    discriminator_fn: images (B, H, W, C) -> logits (B, 1) (or a tuple whose first item is the
    logits); call it in training mode inside the discriminator's tape. Weight (lambda, e.g. 10)
    is applied by the caller.
    """
    real = tf.cast(real, tf.float32)
    fake = tf.cast(fake, tf.float32)
    weight_shape = tf.concat([tf.shape(real)[:1], tf.ones([tf.rank(real) - 1], tf.int32)], axis=0)
    u = tf.random.stateless_uniform(weight_shape, seed, minval=0.0, maxval=1.0)
    interpolated = real + u * (fake - real)
    norm = tf.sqrt(_squared_norm(_input_gradient(discriminator_fn, interpolated)) + 1e-12)
    return tf.square(norm - 1.0)


def r1_penalty(discriminator_fn, real) -> tf.Tensor:
    """R1 penalty (Mescheder et al. 2018), (B,) float32: ``||grad D(real)||_2^2`` per example.

    The caller multiplies by gamma / 2. discriminator_fn as for ``gradient_penalty``.
    """
    return _squared_norm(_input_gradient(discriminator_fn, real))


def perturbation_penalty(discriminator_fn, real, seed, k: float = 1.0, scale: float = 1.0) -> tf.Tensor:
    """Perturbation gradient penalty around real data (Kodali et al. 2017, DRAGAN; Wu et al. 2020
    eq. 6), (B,) float32: ``(||grad_x D(x + delta)||_2 - k)^2`` with ``delta = scale * U(0, 1)``
    drawn per pixel (stateless, from ``seed``). Wu et al.: weight lambda 10, k 1, scale 1 as the
    paper writes it. discriminator_fn as for ``gradient_penalty``; the caller applies lambda.
    """
    real = tf.cast(real, tf.float32)
    delta = scale * tf.random.stateless_uniform(tf.shape(real), seed, minval=0.0, maxval=1.0)
    norm = tf.sqrt(_squared_norm(_input_gradient(discriminator_fn, real + delta)) + 1e-12)
    return tf.square(norm - k)


def class_loss(labels, class_logits) -> tf.Tensor:
    """ACGAN auxiliary classification loss, (B,) float32: sparse softmax cross-entropy.

    labels: (B,) int in [0, C); class_logits: (B, C) float logits.
    """
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int32), logits=tf.cast(class_logits, tf.float32))
