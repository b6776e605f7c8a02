"""Real/synthetic mixing and class balancing in ``tf.data``, driven by the sample count.

A classifier's training stream draws sample ``n`` (0, 1, 2, ... over the whole run) from one of
several sources (real or synthetic patches of one class). The probabilities are a pure function
of ``n``:

- class ``c`` is chosen with probability ``1 / C`` (``balance: equal``, Wu et al.: positives and
  negatives with equal probability) or in proportion to its count of patches, real and
  synthetic (``balance: natural``, Alyafi's imbalanced sets);
- within a class that has synthetic sources (and is listed in ``per_class``, when given), the
  sample is synthetic with probability ``share(n)`` (:func:`synthetic_share`), real otherwise;
  the synthetic share is split equally between that class's synthetic sets.

The choice itself is a stateless draw seeded by ``(seed, n)``, so a run resumed at sample ``n``
continues the exact sequence of choices an uninterrupted run makes (a plain
``sample_from_datasets`` would restart its random stream on resume). The selector feeds
``tf.data.Dataset.choose_from_datasets``, the deterministic core of ``sample_from_datasets``.
Every element carries ``synthetic`` (0/1) so the loop can log the realised share per window.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Sequence

import numpy as np
import tensorflow as tf
from pydantic import Field, model_validator

from mammogan_tf.sections import Section

tnp = tf.experimental.numpy


class ShareSchedule(Section):
    """The synthetic share as a function of the training sample count ``n``.

    - ``constant``: ``initial``;
    - ``step``: ``initial * rate ** floor(n / every_samples)`` (Wu et al.: rate 0.9 every 5000);
    - ``exponential``: ``initial * rate ** (n / every_samples)`` (the smooth version of step);
    - ``linear``: from ``initial`` at 0 to ``final`` at ``end_samples``, then ``final``.
    Values are clipped to [0, 1].
    """

    kind: Literal["constant", "step", "exponential", "linear"] = "constant"
    initial: float = Field(0.0, ge=0, le=1, description="synthetic share at sample 0")
    rate: float = Field(0.9, gt=0, le=1, description="step/exponential: factor per every_samples")
    every_samples: int = Field(5000, ge=1)
    final: float = Field(0.0, ge=0, le=1, description="linear: share at end_samples")
    end_samples: int = Field(100000, ge=1, description="linear: samples to reach final")


def synthetic_share(schedule: ShareSchedule, n, xp=np):
    """Share of synthetic samples at sample count ``n`` (scalar or array; ``xp`` = numpy or
    ``tf.experimental.numpy`` so the tf.data selector and the host use one formula)."""
    n = xp.asarray(n, dtype=xp.float64)
    if schedule.kind == "constant":
        value = xp.zeros_like(n) + schedule.initial
    elif schedule.kind == "step":
        value = schedule.initial * xp.power(schedule.rate, xp.floor(n / schedule.every_samples))
    elif schedule.kind == "exponential":
        value = schedule.initial * xp.power(schedule.rate, n / schedule.every_samples)
    else:
        fraction = xp.minimum(n / schedule.end_samples, 1.0)
        value = schedule.initial + (schedule.final - schedule.initial) * fraction
    return xp.clip(value, 0.0, 1.0)


class MixingConfig(Section):
    """``train.mixing``: synthetic shard sets, their share schedule and class balancing."""

    synthetic: list[str] = Field(default_factory=list, description="synthesize output folders (or manifests)")
    share: ShareSchedule = Field(default_factory=ShareSchedule)
    per_class: Optional[list[str]] = Field(None, description="classes the share applies to (None = every "
                                           "class that has synthetic data)")
    balance: Literal["equal", "natural"] = "equal"

    @model_validator(mode="after")
    def _needs_synthetic(self):
        if self.share.initial > 0 and not self.synthetic:
            raise ValueError("share.initial > 0 needs synthetic shard sets in train.mixing.synthetic")
        return self


@dataclass(frozen=True)
class Source:
    """One infinite stream of elements of one class: ``class_index`` into the task's classes,
    ``synthetic`` (bool), ``count`` (examples, for ``balance: natural``)."""

    dataset: tf.data.Dataset
    class_index: int
    synthetic: bool
    count: int = 1
    name: str = ""


def source_probabilities(sources: Sequence[Source], num_classes: int, schedule: ShareSchedule,
                         n, balance: str = "equal", share_classes: Sequence[int] | None = None, xp=np):
    """Probabilities ``(..., K)`` of drawing sample ``n`` from each of the K ``sources``."""
    counts = np.zeros(num_classes)
    for s in sources:
        counts[s.class_index] += s.count
    present = [c for c in range(num_classes) if any(s.class_index == c for s in sources)]
    if balance == "equal":
        class_p = {c: 1.0 / len(present) for c in present}
    else:
        total = sum(counts[c] for c in present) or 1.0
        class_p = {c: counts[c] / total for c in present}
    share = synthetic_share(schedule, n, xp)
    columns = []
    for s in sources:
        same = [t for t in sources if t.class_index == s.class_index]
        n_real = sum(1 for t in same if not t.synthetic)
        n_syn = len(same) - n_real
        mixed = n_syn > 0 and n_real > 0 and (share_classes is None or s.class_index in share_classes)
        if not mixed:  # only real (or, for CAS, only synthetic) sources of this class are used
            used = n_real if n_real else n_syn
            weight = xp.zeros_like(share) + (0.0 if s.synthetic and n_real else class_p[s.class_index] / used)
        elif s.synthetic:
            weight = class_p[s.class_index] * share / n_syn
        else:
            weight = class_p[s.class_index] * (1.0 - share) / n_real
        columns.append(weight)
    return xp.stack(columns, axis=-1)


def mixed_dataset(sources: Sequence[Source], num_classes: int, schedule: ShareSchedule, *, seed: int = 0,
                  start: int = 0, balance: str = "equal", share_classes: Sequence[int] | None = None
                  ) -> tf.data.Dataset:
    """An infinite, unbatched dataset whose element ``i`` is sample ``n = start + i`` of the run,
    drawn from the source that a stateless uniform draw seeded by ``(seed, n)`` picks with
    :func:`source_probabilities`. Each source must repeat indefinitely."""
    if not sources:
        raise ValueError("mixed_dataset needs at least one source")

    def choose(n):
        probs = source_probabilities(sources, num_classes, schedule, n, balance, share_classes, tnp)
        u = tf.random.stateless_uniform([], seed=tf.stack([tf.constant(seed, tf.int64), n]), dtype=tf.float64)
        below = tf.cast(tnp.cumsum(probs) <= u, tf.int64)
        return tf.minimum(tf.reduce_sum(below), len(sources) - 1)

    selector = tf.data.Dataset.counter(start, 1, tf.int64).map(choose)
    return tf.data.Dataset.choose_from_datasets([s.dataset for s in sources], selector, stop_on_empty_dataset=True)


def scheduled_share(sources: Sequence[Source], num_classes: int, schedule: ShareSchedule, n,
                    balance: str = "equal", share_classes: Sequence[int] | None = None) -> np.ndarray:
    """Expected synthetic fraction of all samples at count(s) ``n`` (what the realised share
    per window is compared with)."""
    probs = source_probabilities(sources, num_classes, schedule, np.asarray(n, np.float64), balance, share_classes)
    mask = np.array([s.synthetic for s in sources], bool)
    return probs[..., mask].sum(axis=-1)
