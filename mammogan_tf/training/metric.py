"""The in-training metric that keeps ``best/`` (Alyafi's FID-guided checkpointing).

One metric path for training and ``mammogan evaluate``: real statistics come from
``evaluation.reference.RealReference`` (computed once, cached on disk by backbone, manifest,
split and classes, so a restart or ``--resume`` loads them in milliseconds); generated images are
always the same ``n_samples`` fixed inputs (stream ``metric.seed``), of which the metric scores
those that synthesis would write (``Family.written``: a contextual GAN's discarded sources are
left out); fewer than ``MIN_IMAGES`` of them score ``inf``, never best. Under multi-worker training
only the chief computes the value and every worker receives it, so all take the same save-best
decision.
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

MIN_IMAGES = 2
"""Fewest generated images a metric is computed from (a covariance needs two)."""


class TrainingMetric:
    """FID, KID or FRD (``config.name``) of the sampler against the real patches of ``config.split``.

    FID/KID: in the feature space of ``config.backbone``, against cached real statistics. FRD
    (Frechet Radiomics Distance, ``evaluation.frd``): radiomic features of ``n_samples`` real
    patches of the primary stream in ``config.split`` (its first ones, computed once per process) against
    those of the generated patches; no backbone.

    ``data``: the run's ``TrainingData`` (manifest and the primary stream's classes);
    ``backbone``: a feature ``Backbone`` (default: ``config.backbone`` loaded); ``chief``: whether
    this worker computes (others get the chief's value through ``broadcast``).
    """

    def __init__(self, config, data, backbone=None, chief: bool = True, progress: bool = True,
                 cache_dir=None):
        self.config, self.chief = config, chief
        self.reference = self.real_radiomics = None
        if chief and config.name == "frd":
            from mammogan_tf.evaluation.radiomics import radiomic_features

            from mammogan_tf.training.data import TrainingData

            primary = data.streams[data.primary]
            split = TrainingData(data.path, config.split, {"real": primary}, 1, cache=False)
            images = split.records(primary).take(config.n_samples).map(lambda example: example["image"])
            self.real_radiomics = radiomic_features(np.stack(list(images.as_numpy_iterator())))
        elif chief:
            from mammogan_tf.evaluation.reference import RealReference

            primary = data.streams[data.primary]
            lesion_types = list(primary.lesion_types) if primary.lesion_types else None
            self.reference = RealReference(backbone if backbone is not None else config.backbone, data.path,
                                           config.split, lesion_types, keep=config.n_samples,
                                           batch_size=config.batch_size, cache_dir=cache_dir, progress=progress)

    def value(self, images: np.ndarray) -> float:
        """The metric of generated ``images (N, S, S, 1)`` in [-1, 1] (chief only); ``inf`` when
        N < ``MIN_IMAGES``."""
        if len(images) < MIN_IMAGES:
            return math.inf
        if self.real_radiomics is not None:
            from mammogan_tf.evaluation.frd import frd_from_features
            from mammogan_tf.evaluation.radiomics import radiomic_features

            return float(frd_from_features(self.real_radiomics, radiomic_features(images)))
        scores = self.reference.score(images, seed=self.config.seed)
        return float(scores["fid" if self.config.name == "fid" else "kid"])


def broadcast(strategy: tf.distribute.Strategy, value: float) -> float:
    """``value`` of the chief (worker 0), on every worker (a no-op on one worker)."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        def chief_value():
            context = tf.distribute.get_replica_context()
            return tf.where(tf.equal(context.replica_id_in_sync_group, 0), tf.constant(value, tf.float64),
                            tf.constant(0.0, tf.float64))

        return float(strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(chief_value), axis=None))
    return float(value)
