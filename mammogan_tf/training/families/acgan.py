"""ACGAN family (Odena et al. 2017; Frid-Adar et al. 2018): the DCGAN game plus a class.

The generator gets ``(z, label)``; the discriminator returns ``(logits, class_logits)``. Both
phases add the auxiliary class loss, weighted by ``train.class_loss_weight``: D on real and
generated images, G on generated ones. Labels of generated images are drawn uniformly per step;
sample grids and the metric use labels in proportion to the training classes.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from mammogan_tf.errors import ConfigError
from mammogan_tf.training.families.dcgan import DCGANFamily
from mammogan_tf.training.losses import class_loss


class ACGANFamily(DCGANFamily):
    """Class-conditional DCGAN; class ``c`` is ``train.data.lesion_types[c]``."""

    name = "acgan"

    def check_data(self, data) -> None:
        super().check_data(data)
        if self.model_config.num_classes != len(data.class_names):
            raise ConfigError(f"model.num_classes {self.model_config.num_classes} != {len(data.class_names)} classes "
                              f"of the data ({', '.join(data.class_names)}); set train.data.lesion_types")

    def fake(self, networks, ctx, seed, training: bool = True):
        generator = networks["generator"]
        z_seed, label_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        z = ctx.local(generator.sample_latent(ctx.global_batch_size, z_seed))
        labels = ctx.local(tf.random.stateless_uniform([ctx.global_batch_size], label_seed, 0,
                                                       generator.num_classes, dtype=tf.int32))
        return generator((z, labels), training=training), labels

    def split_output(self, output):
        return output[0], output[1]

    def aux_terms(self, real_aux, fake_aux, real_labels, fake_labels, discriminator: bool) -> dict:
        weight = self.train_config.class_loss_weight
        loss = class_loss(fake_labels, fake_aux)
        if discriminator:
            loss = loss + class_loss(real_labels, real_aux)
        return {"class": weight * loss}

    def fixed_inputs(self, networks, count, seed, data):
        inputs = super().fixed_inputs(networks, count, seed, data)
        inputs["label"] = proportional_labels(count, data.class_counts)
        return inputs

    def generate(self, sampler, inputs):
        return sampler((inputs["z"], inputs["label"]), training=False)


def proportional_labels(count: int, class_counts) -> np.ndarray:
    """``count`` labels (int32), class c about ``count * n_c / sum(n)`` times, in class order
    (so a sample grid shows the classes in blocks of rows)."""
    counts = np.asarray(class_counts, np.float64)
    counts = counts / counts.sum() if counts.sum() > 0 else np.full(len(counts), 1 / len(counts))
    edges = np.floor(np.cumsum(counts) * count + 0.5).astype(int)
    labels = np.searchsorted(edges, np.arange(count), side="right")
    return np.minimum(labels, len(counts) - 1).astype(np.int32)
