"""Differentiable discriminator augmentation (DiffAugment / StyleGAN2-ADA style).

``DiscriminatorAugment`` is applied to *everything* the discriminator sees, real and generated
images alike, inside the training step, so the generator's gradients flow through it. Each
enabled op is applied to each example independently with probability ``p``; ``p`` is a
non-trainable ``tf.Variable`` (so checkpoints hold it) that ``AdaptiveAugmentController``
moves with the StyleGAN2-ADA overfitting heuristic r_t = E[sign(D(real))].

Ops (``AUGMENT_OPS``), on images (B, H, W, C) in [-1, 1]:

- ``hflip`` / ``vflip``: left-right / up-down mirror (Alyafi's flips).
- ``translation``: integer shift of up to ``translation_ratio`` x size pixels along each
  axis (default 1/8, DiffAugment), the uncovered border filled by ``reflect`` padding (ADA) or
  ``zeros`` (0 = mid grey, DiffAugment).
- ``cutout``: a square of side ``cutout_ratio`` x size (default 1/2) at a random centre
  (may overlap the border) set to 0 (DiffAugment).
- ``brightness``: add b ~ U[-brightness, brightness], clipped to [-1, 1].
- ``contrast``: scale the deviation from the image mean by c ~ U[1 - contrast, 1 + contrast],
  clipped to [-1, 1].
- ``transpose``: swap rows and columns (square images only); with ``hflip`` and ``vflip`` at
  p = 0.5 every flip and quarter turn is equally likely, so the discriminator sees each pattern
  in every orientation (one it cannot see in one orientation is seen in another).

Randomness is stateless: the same images, ``seed`` and ``p`` give the same output. Each op
draws from its own stream (folded from its name's index in ``AUGMENT_OPS``), so enabling one
op does not change what another does.
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from mammogan_tf.errors import ConfigError

AUGMENT_OPS = ("hflip", "vflip", "translation", "cutout", "brightness", "contrast", "transpose")
PADDINGS = ("reflect", "zeros")


class DiscriminatorAugment(tf.Module):
    """Augment a batch with probability ``p`` per op and example.

    ``augment(images, seed) -> images``: images (B, H, W, C) float in [-1, 1] (static H, W);
    seed: int32/int64 tensor of shape (2,). Returns the same shape and dtype, in [-1, 1] when
    the input is. Exactly the identity when ``p == 0``. Differentiable w.r.t. ``images``.
    """

    def __init__(self, ops: Sequence[str] = AUGMENT_OPS, p: float = 0.0, translation_ratio: float = 0.125,
                 padding: str = "reflect", cutout_ratio: float = 0.5, brightness: float = 0.2,
                 contrast: float = 0.5, name: str | None = None):
        super().__init__(name=name)
        unknown = [op for op in ops if op not in AUGMENT_OPS]
        if unknown:
            raise ConfigError(f"augment ops {unknown}: unknown; choose from {', '.join(AUGMENT_OPS)}")
        if padding not in PADDINGS:
            raise ConfigError(f"augment padding {padding!r}: choose one of {', '.join(PADDINGS)}")
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"augment p {p}: must be in [0, 1]")
        self.ops = tuple(ops)
        self.translation_ratio = translation_ratio
        self.padding = padding
        self.cutout_ratio = cutout_ratio
        self.brightness = brightness
        self.contrast = contrast
        self.p = tf.Variable(float(p), trainable=False, dtype=tf.float32, name="p")

    def __call__(self, images, seed):
        images = tf.convert_to_tensor(images)
        if not self.ops:
            return images
        seed = tf.convert_to_tensor(seed)
        return tf.cond(self.p > 0.0, lambda: self._augment(images, seed), lambda: tf.identity(images))

    def _augment(self, images, seed):
        batch = tf.shape(images)[0]
        x = images
        for op in self.ops:
            op_seed = tf.random.experimental.stateless_fold_in(seed, AUGMENT_OPS.index(op))
            apply_seed, param_seed = tf.unstack(tf.random.experimental.stateless_split(op_seed, 2))
            apply = tf.random.stateless_uniform([batch], apply_seed) < self.p
            x = getattr(self, f"_{op}")(x, apply, param_seed)
        return x

    @staticmethod
    def _where(apply, new, old):
        return tf.where(tf.reshape(apply, [-1, 1, 1, 1]), new, old)

    def _hflip(self, x, apply, seed):
        return self._where(apply, tf.reverse(x, axis=[2]), x)

    def _vflip(self, x, apply, seed):
        return self._where(apply, tf.reverse(x, axis=[1]), x)

    def _translation(self, x, apply, seed):
        height, width = x.shape[1], x.shape[2]
        max_dy = max(1, int(round(height * self.translation_ratio)))
        max_dx = max(1, int(round(width * self.translation_ratio)))
        batch = tf.shape(x)[0]
        dy = tf.random.stateless_uniform([batch], seed, -max_dy, max_dy + 1, dtype=tf.int32)
        dx = tf.random.stateless_uniform([batch], tf.random.experimental.stateless_fold_in(seed, 1),
                                         -max_dx, max_dx + 1, dtype=tf.int32)
        dy = tf.where(apply, dy, 0)
        dx = tf.where(apply, dx, 0)
        mode = "REFLECT" if self.padding == "reflect" else "CONSTANT"
        padded = tf.pad(x, [[0, 0], [max_dy, max_dy], [max_dx, max_dx], [0, 0]], mode=mode)
        rows = tf.range(height)[None, :] + max_dy - dy[:, None]  # output row i <- input row i - dy
        cols = tf.range(width)[None, :] + max_dx - dx[:, None]
        shifted = tf.gather(padded, rows, axis=1, batch_dims=1)
        return tf.gather(shifted, cols, axis=2, batch_dims=1)

    def _cutout(self, x, apply, seed):
        height, width = x.shape[1], x.shape[2]
        size_y = max(1, int(height * self.cutout_ratio + 0.5))
        size_x = max(1, int(width * self.cutout_ratio + 0.5))
        batch = tf.shape(x)[0]
        centre = tf.random.stateless_uniform([batch, 2], seed, 0, 1 << 30, dtype=tf.int32)
        top = centre[:, 0] % height - size_y // 2
        left = centre[:, 1] % width - size_x // 2
        rows = tf.range(height)[None, :]
        cols = tf.range(width)[None, :]
        in_rows = (rows >= top[:, None]) & (rows < top[:, None] + size_y)  # (B, H)
        in_cols = (cols >= left[:, None]) & (cols < left[:, None] + size_x)  # (B, W)
        hole = in_rows[:, :, None] & in_cols[:, None, :] & apply[:, None, None]
        return tf.where(hole[..., None], tf.zeros_like(x), x)

    def _brightness(self, x, apply, seed):
        shift = tf.random.stateless_uniform([tf.shape(x)[0], 1, 1, 1], seed, -self.brightness, self.brightness)
        return self._where(apply, tf.clip_by_value(x + tf.cast(shift, x.dtype), -1.0, 1.0), x)

    def _contrast(self, x, apply, seed):
        factor = tf.random.stateless_uniform([tf.shape(x)[0], 1, 1, 1], seed,
                                             1.0 - self.contrast, 1.0 + self.contrast)
        mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
        scaled = (x - mean) * tf.cast(factor, x.dtype) + mean
        return self._where(apply, tf.clip_by_value(scaled, -1.0, 1.0), x)

    def _transpose(self, x, apply, seed):
        if x.shape[1] != x.shape[2]:
            raise ConfigError(f"augment op transpose: needs square images, got {x.shape[1]}x{x.shape[2]}")
        return self._where(apply, tf.transpose(x, [0, 2, 1, 3]), x)


class AdaptiveAugmentController(tf.Module):
    """StyleGAN2-ADA's rule for ``augment.p``.

    ``accumulate(real_logits)`` inside the train step adds sign(D(real)) (works in a replica
    context: the sums are sync-on-read variables, summed across replicas). ``update()`` after
    each step (cross-replica context): every ``adjust_every`` calls it sets
    r_t = mean sign(D(real)) over the accumulated batches and
    ``p += sign(r_t - target) * batch_size * adjust_every / speed_images``, clipped to [0, 1],
    then resets the sums. r_t near 1 means D is overconfident on reals (overfitting): p rises.

    batch_size: global images per step. speed_images: images over which p can move by 1
    (ADA: 500k). ``rt`` and ``p`` are variables to log. Create inside ``strategy.scope()``.
    """

    def __init__(self, augment: DiscriminatorAugment, batch_size: int = 64, target: float = 0.6,
                 adjust_every: int = 4, speed_images: int = 500_000, name: str | None = None):
        super().__init__(name=name)
        if adjust_every < 1 or speed_images <= 0 or batch_size < 1:
            raise ConfigError("ada: adjust_every and batch_size must be >= 1 and speed_images > 0")
        self.augment = augment
        self.batch_size = batch_size
        self.target = target
        self.adjust_every = adjust_every
        self.speed_images = speed_images
        summed = dict(trainable=False, dtype=tf.float32, synchronization=tf.VariableSynchronization.ON_READ,
                      aggregation=tf.VariableAggregation.SUM)
        self.sign_sum = tf.Variable(0.0, name="sign_sum", **summed)
        self.count = tf.Variable(0.0, name="count", **summed)
        self.steps = tf.Variable(0, trainable=False, dtype=tf.int64, name="steps")
        self.rt = tf.Variable(0.0, trainable=False, dtype=tf.float32, name="rt")

    @property
    def p(self) -> tf.Variable:
        return self.augment.p

    def accumulate(self, real_logits) -> None:
        """Add sign(real_logits) ((B, 1) logits of D on augmented reals) to the running sums."""
        logits = tf.reshape(tf.cast(real_logits, tf.float32), [-1])
        self.sign_sum.assign_add(tf.reduce_sum(tf.sign(logits)))
        self.count.assign_add(tf.cast(tf.size(logits), tf.float32))

    def update(self, batch_size: int | None = None) -> tf.Tensor:
        """Count one step; every ``adjust_every`` steps move p. Returns the current p.
        ``batch_size``: global images of this step when the batch changes during a run
        (default: the constructor's)."""
        self.steps.assign_add(1)
        images = self.batch_size if batch_size is None else batch_size
        return tf.cond(self.steps >= self.adjust_every, lambda: self._adjust(images),
                       lambda: tf.identity(self.augment.p))

    def _adjust(self, batch_size: int):
        rt = tf.math.divide_no_nan(self.sign_sum.read_value(), self.count.read_value())
        delta = tf.sign(rt - self.target) * (batch_size * self.adjust_every / self.speed_images)
        self.rt.assign(rt)
        self.augment.p.assign(tf.clip_by_value(self.augment.p + delta, 0.0, 1.0))
        self.sign_sum.assign(0.0)
        self.count.assign(0.0)
        self.steps.assign(0)
        return tf.identity(self.augment.p)
