"""``family: cpggan``: Han et al.'s conditional progressive GAN with bounding boxes.

Loss (Karras et al. 2018 / Gulrajani et al. 2017): D minimises ``D(fake) - D(real)`` + lambda *
GP (uniform interpolation, ``training.losses.gradient_penalty``) + ``drift_weight * D(real)^2``;
G minimises ``-D(fake)``. Both networks get the binary box mask of the batch's boxes
(``"boxes"`` (b, N, 4) when the stream has it, else ``"box"`` (b, 4); -1 = none); the fakes
are drawn inside the real batch's boxes, so G learns the training box distribution's conditions.

Growth is the schedule ``progress`` (by images seen: linear 0 -> 2K + 1, one unit per
``images_per_phase`` images, then 2K + 1 to the end of the run): [0, 1) trains the first
resolution; then each resolution j + 1 is faded in over one unit and stabilised over the next
(``level_from_progress``). Real images are blended exactly as G's output is
(``progressive_blend``). ``stage(step)`` = ceil(level) lets the loop trace one step per grown
resolution that skips the resolutions not grown yet; the sample grid (``generate``) shows the
highest grown resolution at full weight. With ``model.batch_sizes`` each phase has the batch of
its resolution (``batch_schedule``); the steps of a phase follow from its images, so the fade-in
alpha at a step does not depend on the batch.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import tensorflow as tf

from mammogan_tf.data.boxes import sample_boxes
from mammogan_tf.errors import ConfigError
from mammogan_tf.models.pggan import CPGGANModelConfig, box_masks, cpggan_networks, progressive_blend
from mammogan_tf.training.batches import BatchSchedule
from mammogan_tf.training.config import ValueSchedule
from mammogan_tf.training.families.base import Family, Phase
from mammogan_tf.training.losses import discriminator_loss, generator_loss, gradient_penalty
from mammogan_tf.training.schedules import scheduled_value


def level_from_progress(progress, num_levels: int) -> tf.Tensor:
    """Network level in [0, K] from the schedule ``progress`` in [0, 2K + 1] (module docstring)."""
    t = tf.clip_by_value(tf.cast(progress, tf.float32) - 1.0, 0.0, 2.0 * num_levels)
    stage = tf.floor(t / 2.0)
    return tf.minimum(stage + tf.minimum(t - 2.0 * stage, 1.0), float(num_levels))


class CPGGANFamily(Family):
    """Conditional PGGAN with box masks; networks ``generator`` and ``discriminator``."""

    name = "cpggan"
    model_config: CPGGANModelConfig

    def __init__(self, model_config, train_config):
        super().__init__(model_config, train_config)
        self.current_stage = None  # set by the loop before tracing; None = every resolution
        self._batches = None

    def build_networks(self) -> dict[str, object]:
        return cpggan_networks(self.model_config)

    def check_data(self, data) -> None:
        size = getattr(data, "patch_size", None)
        if size not in (None, self.model_config.image_size):
            raise ConfigError(f"model.image_size {self.model_config.image_size} differs from the {size} px images "
                              f"of {getattr(data, 'path', 'the training data')}; prepare with patches.mode: whole "
                              f"and patches.output_size {self.model_config.image_size}")

    def schedules(self) -> dict[str, object]:
        """``progress``: linear 0 -> 2K + 1 over ``(2K + 1) * images_per_phase`` images seen."""
        units = 2 * self.model_config.num_levels + 1
        return {"progress": {"kind": "linear", "unit": "images", "start_step": 0,
                             "end_step": units * self.model_config.images_per_phase,
                             "start": 0.0, "end": float(units)}}

    def batch_schedule(self) -> BatchSchedule:
        """``model.batch_sizes`` per phase (phase ``u`` of ``images_per_phase`` images trains
        resolution ``ceil(u / 2)``: a fade-in uses the batch of the resolution it brings in), or
        ``train.batch_size`` throughout."""
        sizes = self.model_config.batch_sizes
        if self._batches is None:
            custom = (getattr(self.train_config, "schedules", {}) or {}).get("progress")
            if sizes is None:
                self._batches = super().batch_schedule()
            elif custom is not None and custom.unit != "images":
                raise ConfigError("train.schedules.progress: give unit: images with model.batch_sizes (each phase "
                                  "is a number of images, and its batch is set by the images seen)")
            else:
                config = self.model_config
                units = range(2 * config.num_levels + 1)
                resolutions = [config.start_resolution * 2 ** ((u + 1) // 2) for u in units]
                self._batches = BatchSchedule.from_images(
                    [(config.images_per_phase, sizes[r], f"model.batch_sizes[{r}]") for r in resolutions])
        return self._batches

    def check_batch(self, per_replica: int, field: str) -> None:
        group = min(self.model_config.mbstd_group, per_replica)
        if per_replica % group:
            raise ConfigError(f"{field}: {per_replica} examples per replica is not a multiple of "
                              f"model.mbstd_group {self.model_config.mbstd_group} (the minibatch stddev groups)")

    def stage(self, step: int) -> int:
        """The highest resolution index in use at ``step``: ``ceil(level)`` of the ``progress``
        schedule (``train.schedules.progress`` or the default) at ``step``; K for a non-linear one."""
        custom = getattr(self.train_config, "schedules", {}) or {}
        schedule = custom.get("progress") or ValueSchedule.model_validate(self.schedules()["progress"])
        if schedule.kind != "linear":
            return self.model_config.num_levels
        progress = scheduled_value(schedule, step, self.batch_schedule().images(step))
        level = float(level_from_progress(progress, self.model_config.num_levels))
        return min(int(np.ceil(level - 1e-6)), self.model_config.num_levels)

    @property
    def top(self) -> int:
        """The stage the loop traced this step for (``current_stage``; K outside the loop)."""
        stage = getattr(self, "current_stage", None)
        return self.model_config.num_levels if stage is None else int(stage)

    def phases(self) -> list[Phase]:
        return [Phase("discriminator", "discriminator", self.discriminator_loss),
                Phase("generator", "generator", self.generator_loss)]

    # ------------------------------------------------------------------------------ losses
    def level(self, ctx) -> tf.Tensor:
        return level_from_progress(ctx.schedules["progress"], self.model_config.num_levels)

    def _condition(self, stream: Mapping[str, tf.Tensor]) -> tf.Tensor:
        boxes = stream["boxes"] if "boxes" in stream else stream["box"]
        return box_masks(boxes, self.model_config.image_size)

    def _fakes(self, networks, masks, seed, level):
        latent = tf.random.stateless_normal([tf.shape(masks)[0], self.model_config.latent_dim], seed)
        return networks["generator"]({"latent": latent, "mask": masks}, level=level, top=self.top,
                                     training=True)

    def discriminator_loss(self, networks, batch, ctx):
        """WGAN-GP critic loss with drift; terms and stats per example (b,)."""
        real_stream = batch["real"]
        level = self.level(ctx)
        masks = self._condition(real_stream)
        noise_seed, gp_seed = ctx.split(2)
        fake = tf.stop_gradient(self._fakes(networks, masks, ctx.replica_seed(noise_seed), level))
        real = progressive_blend(real_stream["image"], level, self.model_config.start_resolution,
                                 self.model_config.num_levels)

        def critic(images):
            return networks["discriminator"]({"image": images, "mask": masks}, level=level, top=self.top,
                                             training=True)

        real_scores, fake_scores = critic(real), critic(fake)
        config = self.model_config
        terms = {"wasserstein": discriminator_loss("wasserstein", real_scores, fake_scores),
                 "gradient_penalty": config.gp_weight * gradient_penalty(critic, real, fake,
                                                                          ctx.replica_seed(gp_seed)),
                 "drift": config.drift_weight * tf.square(real_scores[:, 0])}
        stats = {"real_score": real_scores[:, 0], "fake_score": fake_scores[:, 0],
                 "real_sign": tf.sign(real_scores[:, 0]), "level": tf.fill(tf.shape(real_scores[:, 0]), level)}
        return terms, stats

    def generator_loss(self, networks, batch, ctx):
        """``-D(G(z, mask))`` per example, masks from the batch's real boxes."""
        level = self.level(ctx)
        masks = self._condition(batch["real"])
        fake = self._fakes(networks, masks, ctx.replica_seed(ctx.split(1)[0]), level)
        scores = networks["discriminator"]({"image": fake, "mask": masks}, level=level, top=self.top,
                                           training=True)
        return {"wasserstein": generator_loss("wasserstein", scores)}, {"fake_score": scores[:, 0]}

    # ----------------------------------------------------------------------------- sampling
    def fixed_inputs(self, networks, count: int, seed: int, data) -> dict[str, np.ndarray]:
        """Latents and boxes sampled from the training boxes (``data.boxes`` (N, 4) when the run's
        data gives them) with their masks: ``{"latent", "box", "mask"}``."""
        rng = np.random.default_rng(seed)
        size = self.model_config.image_size
        boxes = sample_boxes(getattr(data, "boxes", None), count, size, rng)
        return {"latent": rng.standard_normal((count, self.model_config.latent_dim)).astype(np.float32),
                "box": boxes, "mask": box_masks(boxes, size).numpy()}

    def generate(self, sampler, inputs) -> tf.Tensor:
        top = self.top
        images = sampler({"latent": inputs["latent"], "mask": inputs["mask"]}, level=float(top), top=top,
                         training=False)
        return tf.clip_by_value(images, -1.0, 1.0)
