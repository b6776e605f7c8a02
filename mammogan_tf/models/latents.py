"""Latent vectors: one draw per image index, the same for training grids, metrics and synthesis.

Latent vector ``i`` of a stream with seed ``s`` is ``generator.sample_latent(1, seed=(s, i))``
(stateless), so image ``i`` is the same whatever the batch size, the number of images asked for
or the order in which they are made. A model concern: training and synthesis both import it.
"""
from __future__ import annotations

import weakref

import numpy as np
import tensorflow as tf


def sample_latent(distribution: str, batch_size: int, latent_dim: int, seed) -> tf.Tensor:
    """``(batch_size, latent_dim)`` float32 from ``distribution`` (``normal``: N(0, 1); ``uniform``:
    U[-1, 1]); stateless, so the same ``seed`` ((2,) int tensor) gives the same z."""
    shape = [batch_size, latent_dim]
    if distribution == "uniform":
        return tf.random.stateless_uniform(shape, seed, minval=-1.0, maxval=1.0)
    if distribution == "normal":
        return tf.random.stateless_normal(shape, seed)
    raise ValueError(f"latent distribution {distribution!r}: expected 'normal' or 'uniform'")


def latent_vectors(generator, seed: int, start: int, count: int) -> np.ndarray:
    """Latent vectors ``(count, latent_dim)`` float32 of indices ``start .. start+count-1`` of the
    stream ``seed``, each from ``generator.sample_latent(1, seed=(seed, index))``."""
    seeds = tf.stack([tf.fill([count], tf.constant(seed, tf.int64)),
                      tf.range(start, start + count, dtype=tf.int64)], axis=1)
    function = _LATENT_FUNCTIONS.get(generator)
    if function is None:
        function = tf.function(lambda batch: tf.map_fn(lambda one: generator.sample_latent(1, one)[0], batch,
                                                        fn_output_signature=tf.float32),
                               reduce_retracing=True, autograph=False)
        _LATENT_FUNCTIONS[generator] = function
    return function(seeds).numpy()


_LATENT_FUNCTIONS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
"""One traced latent sampler per generator object."""


def balanced_labels(indices: np.ndarray, num_classes: int, class_index: int | None = None) -> np.ndarray | None:
    """Class labels of images ``indices``: ``class_index`` for all, or ``index % num_classes``
    (balanced) when None; None for an unconditional generator (``num_classes`` 0)."""
    if not num_classes:
        return None
    if class_index is not None:
        return np.full(len(indices), class_index, np.int32)
    return (np.asarray(indices) % num_classes).astype(np.int32)
