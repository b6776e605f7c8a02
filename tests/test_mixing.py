"""Real/synthetic mixing: the schedule, its realised share per window, resume, class balance."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mammogan_tf.training.mixing import (MixingConfig, ShareSchedule, Source, mixed_dataset, scheduled_share,
                                         source_probabilities, synthetic_share)


def _source(class_index: int, synthetic: bool, count: int = 1) -> Source:
    element = {"label": tf.constant(class_index, tf.int32), "synthetic": tf.constant(int(synthetic), tf.int32)}
    return Source(tf.data.Dataset.from_tensors(element).repeat(), class_index, synthetic, count)


def _draw(sources, schedule, n, start=0, seed=7, **kwargs) -> np.ndarray:
    dataset = mixed_dataset(sources, 2, schedule, seed=seed, start=start, **kwargs).take(n).batch(n)
    batch = next(iter(dataset))
    return np.stack([batch["label"].numpy(), batch["synthetic"].numpy()], axis=1)


def test_schedules_values_and_tf_formula_match():
    wu = ShareSchedule(kind="step", initial=0.5, rate=0.9, every_samples=5000)
    n = np.array([0, 4999, 5000, 15000, 17500])
    np.testing.assert_allclose(synthetic_share(wu, n), [0.5, 0.5, 0.45, 0.5 * 0.9 ** 3, 0.5 * 0.9 ** 3])
    expo = ShareSchedule(kind="exponential", initial=0.5, rate=0.9, every_samples=5000)
    np.testing.assert_allclose(synthetic_share(expo, 2500), 0.5 * 0.9 ** 0.5)
    lin = ShareSchedule(kind="linear", initial=0.8, final=0.2, end_samples=1000)
    np.testing.assert_allclose(synthetic_share(lin, [0, 500, 1000, 5000]), [0.8, 0.5, 0.2, 0.2])
    const = ShareSchedule(kind="constant", initial=0.25)
    np.testing.assert_allclose(synthetic_share(const, [0, 10 ** 6]), [0.25, 0.25])
    for schedule in (wu, expo, lin, const):
        tf_values = synthetic_share(schedule, tf.constant(n, tf.int64), tf.experimental.numpy)
        np.testing.assert_allclose(np.asarray(tf_values), synthetic_share(schedule, n), rtol=1e-12)


def test_realised_share_follows_schedule_and_resume_continues_exactly():
    sources = [_source(0, False), _source(1, False), _source(1, True)]  # synthetic positives only
    schedule = ShareSchedule(kind="step", initial=0.75, rate=0.5, every_samples=1500)
    window = 1500
    draws = _draw(sources, schedule, 6 * window)
    for w in range(6):
        realised = draws[w * window:(w + 1) * window, 1].mean()
        expected = 0.5 * 0.75 * 0.5 ** w  # balanced classes, share applied within the positive class
        assert expected == pytest.approx(scheduled_share(sources, 2, schedule, w * window))
        sigma = np.sqrt(expected * (1 - expected) / window)
        assert abs(realised - expected) <= 4 * sigma + 1e-9, (w, realised, expected)
    # synthetic elements only ever come from the synthetic class
    assert set(draws[draws[:, 1] == 1, 0]) == {1}
    # a run resumed at sample 4000 makes exactly the choices of the uninterrupted run
    resumed = _draw(sources, schedule, 5000, start=4000)
    np.testing.assert_array_equal(resumed, draws[4000:9000])
    # and another seed makes other choices
    assert not np.array_equal(_draw(sources, schedule, 2000, seed=8), draws[:2000])


def test_balanced_sampling_gives_equal_classes_whatever_the_counts():
    sources = [_source(0, False, count=1000), _source(1, False, count=10)]
    draws = _draw(sources, ShareSchedule(), 8000)
    assert abs(draws[:, 0].mean() - 0.5) <= 4 * np.sqrt(0.25 / 8000)
    natural = _draw(sources, ShareSchedule(), 8000, balance="natural")
    assert abs(natural[:, 0].mean() - 10 / 1010) <= 4 * np.sqrt((10 / 1010) / 8000)


def test_per_class_share_and_alyafi_composition():
    # Alyafi GAN mode: k real positives + 1.5 k synthetic, 10 k negatives, natural proportions
    k = 100
    sources = [_source(0, False, 10 * k), _source(1, False, k), _source(1, True, int(1.5 * k))]
    schedule = ShareSchedule(kind="constant", initial=1.5 / 2.5)
    probs = source_probabilities(sources, 2, schedule, 0.0, balance="natural")
    np.testing.assert_allclose(probs, np.array([10 * k, k, 1.5 * k]) / (12.5 * k))
    # per_class naming only class 0 (which has no synthetic data) leaves class 1 all real
    probs = source_probabilities(sources, 2, schedule, 0.0, balance="equal", share_classes=[0])
    np.testing.assert_allclose(probs, [0.5, 0.5, 0.0])


def test_mixing_config_needs_synthetic_for_a_share():
    with pytest.raises(ValueError, match="synthetic shard sets"):
        MixingConfig(share={"initial": 0.5})
