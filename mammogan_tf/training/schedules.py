"""Per-epoch schedules of the GAN loop, as pure functions of (config, epoch).

Everything here is a function of the epoch number and the seed alone, never of what ran
before, so a resumed run follows the same schedule as an uninterrupted one.
"""
from __future__ import annotations

import math

import numpy as np

from mammogan_tf.training.config import OptimizerConfig


def steps_per_epoch(num_examples: int, batch_size: int, d_steps: int = 1) -> int:
    """Training steps per pass over ``num_examples`` (each step reads ``d_steps`` batches), >= 1."""
    return max(1, num_examples // (batch_size * d_steps))


def learning_rate(config: OptimizerConfig, epoch: int) -> float:
    """Learning rate during ``epoch`` (0-based).

    ``step``: ``lr * rate ** floor(epoch / every_epochs)`` (Alyafi: rate 0.99 every 8 epochs
    for D, every 10 for G); ``constant``: ``lr``.
    """
    if config.schedule.kind == "constant":
        return config.learning_rate
    return config.learning_rate * config.schedule.rate ** math.floor(epoch / config.schedule.every_epochs)


def real_label(value: float | tuple[float, float], seed: int, epoch: int) -> float:
    """Target of real images during ``epoch``: fixed, or drawn uniformly from [low, high] once
    per epoch from a generator seeded by (seed, epoch) (one-sided label smoothing)."""
    if isinstance(value, (int, float)):
        return float(value)
    low, high = value
    return float(np.random.default_rng([seed, epoch, 0x5A]).uniform(low, high))


def scheduled_value(config, step: int, images: int | None = None) -> float:
    """Value of a ``train.schedules`` entry (``ValueSchedule``) at training step ``step``, or, when
    its ``unit`` is ``images``, after ``images`` images seen (``step`` below then counts images).

    ``constant``: ``start``; ``linear``: ``start`` until ``start_step``, then linear to ``end`` at
    ``end_step``, then ``end`` (a fade-in alpha: 0 -> 1 over the fade); ``step``:
    ``start * rate ** floor(step / every_steps)``; ``exponential``: ``start * rate ** (step /
    every_steps)``.
    """
    if config.kind == "constant":
        return float(config.start)
    if getattr(config, "unit", "steps") == "images":
        if images is None:
            raise ValueError("an images schedule needs the images seen")
        step = images
    if config.kind == "linear":
        if step <= config.start_step:
            return float(config.start)
        if step >= config.end_step:
            return float(config.end)
        fraction = (step - config.start_step) / (config.end_step - config.start_step)
        return float(config.start + fraction * (config.end - config.start))
    exponent = step // config.every_steps if config.kind == "step" else step / config.every_steps
    return float(config.start * config.rate ** exponent)
