"""DCGAN family (Radford et al.; Frid-Adar et al. 2018, Alyafi et al. 2019): noise in, one logit out.

Discriminator phase (``d_steps`` per step, each on a fresh real batch): the adversarial loss of
``train.loss`` on augmented real and generated images with the real target ``real_label``
(one-sided smoothing), plus WGAN-GP (``gradient_penalty_weight``) and R1 (``r1_weight``) when set.
Generator phase (``g_steps`` per step, no real data): the generator loss of ``train.loss``.
Subclasses (ACGAN) add class conditioning through ``fake``, ``split_output`` and ``aux_terms``.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from mammogan_tf.models.latents import latent_vectors
from mammogan_tf.models.registry import build_networks
from mammogan_tf.training.families.base import Family, Phase
from mammogan_tf.training.losses import AdversarialLoss, gradient_penalty, r1_penalty


class DCGANFamily(Family):
    """``z -> G -> image``; ``D(image) -> logit``. Batches: one stream ``real``."""

    name = "dcgan"

    def __init__(self, model_config, train_config):
        super().__init__(model_config, train_config)
        self.adversarial = AdversarialLoss(train_config.loss)

    def build_networks(self):
        return build_networks(self.model_config)

    def phases(self):
        config = self.train_config
        return [Phase("d", "discriminator", self.discriminator_loss, repeats=config.d_steps, uses_data=True),
                Phase("g", "generator", self.generator_loss, repeats=config.g_steps, uses_data=False)]

    def check_data(self, data) -> None:
        from mammogan_tf.errors import ConfigError

        if data.patch_size not in (None, self.model_config.image_size):
            raise ConfigError(f"model.image_size {self.model_config.image_size} differs from the {data.patch_size} px "
                              f"patches of {data.path}; prepare with patches.output_size {self.model_config.image_size}")

    # -------------------------------------------------------------------- conditioning hooks
    def fake(self, networks, ctx, seed, training: bool = True):
        """This replica's generated images (b, S, S, C) and their labels (b,) (None here)."""
        generator = networks["generator"]
        z = ctx.local(generator.sample_latent(ctx.global_batch_size, seed))
        return generator(z, training=training), None

    def split_output(self, output):
        """(real/fake logits (b, 1), auxiliary output or None) of a discriminator output."""
        return output, None

    def aux_terms(self, real_aux, fake_aux, real_labels, fake_labels, discriminator: bool) -> dict:
        """Weighted auxiliary loss terms (b,) (none for an unconditional GAN)."""
        return {}

    # ------------------------------------------------------------------------------- losses
    def discriminator_loss(self, networks, batch, ctx):
        config = self.train_config
        real = batch["real"]
        fake_seed, real_aug, fake_aug, penalty_seed = ctx.split(4)
        fake, fake_labels = self.fake(networks, ctx, fake_seed)
        discriminator = networks["discriminator"]
        real_in, fake_in = ctx.augment(real["image"], real_aug), ctx.augment(fake, fake_aug)
        real_logits, real_aux = self.split_output(discriminator(real_in, training=True))
        fake_logits, fake_aux = self.split_output(discriminator(fake_in, training=True))
        terms = {"adversarial": self.adversarial.discriminator(real_logits, fake_logits, ctx.schedules["real_label"])}
        terms.update(self.aux_terms(real_aux, fake_aux, real["label"], fake_labels, discriminator=True))

        def logits_of(images):
            return self.split_output(discriminator(images, training=True))[0]

        if config.gradient_penalty_weight:
            terms["gradient_penalty"] = config.gradient_penalty_weight * gradient_penalty(
                logits_of, real_in, fake_in, ctx.replica_seed(penalty_seed))
        if config.r1_weight:
            terms["r1"] = 0.5 * config.r1_weight * r1_penalty(logits_of, real_in)
        flat_real, flat_fake = tf.reshape(real_logits, [-1]), tf.reshape(fake_logits, [-1])
        stats = {"real": flat_real, "fake": flat_fake, "real_sign": tf.sign(flat_real)}
        return terms, stats

    def generator_loss(self, networks, batch, ctx):
        fake_seed, aug_seed = ctx.split(2)
        fake, fake_labels = self.fake(networks, ctx, fake_seed)
        logits, aux = self.split_output(networks["discriminator"](ctx.augment(fake, aug_seed), training=True))
        terms = {"adversarial": self.adversarial.generator(logits)}
        terms.update(self.aux_terms(None, aux, None, fake_labels, discriminator=False))
        return terms, {}

    # ----------------------------------------------------------------------------- sampling
    def fixed_inputs(self, networks, count, seed, data):
        return {"z": latent_vectors(networks["generator"], seed, 0, count)}

    def generate(self, sampler, inputs):
        return sampler(inputs["z"], training=False)
