"""Contextual GAN family (Wu et al., MIDL 2020): a U-Net generator adds a lesion to real tissue
(or removes one), judged by a four-way semi-supervised discriminator.

Streams (``model`` is a ``ContextualModelConfig``): ``lesion`` (``model.lesion_type`` with
``model.lesion_pathologies``, primary), ``benign`` (same lesion type, ``benign_pathologies``),
``normal`` (normal tissue). Mode ``add``: G reads ``normal`` patches; D's classes are
[real = lesion, fake, benign, normal]. Mode ``remove``: G reads ``lesion`` patches; D's classes
are [real = normal, fake, benign, lesion].

Discriminator phase (``d_steps``): softmax cross-entropy of the four classes on one batch of each
(Odena's semi-supervised GAN), the 3rd and 4th weighted by ``loss.aux_weights`` (0.2, 0.2), plus
``lambda * (||grad_x D(x + delta)|| - k)^2`` on the real class (Kodali et al.; lambda 10, k 1),
D(x) being the real-vs-fake log-odds ``logit_real - logit_fake``. Generator phase (``g_steps``,
2 for masses): non-saturating, ``-log softmax(D(G(x)))_real``. Each G update reads a fresh batch
(its inputs are real patches).

Progressive growing (``model.progressive``): ``stage(step)`` is 0 (S/2: every image is 2x2
average-pooled and both networks run their S/2 layers) for ``stage_steps`` steps, 1 during the
fade (full size, the S layers blended with weight ``ctx.schedules["fade_alpha"]``, a linear
0 -> 1 schedule over ``fade_steps``), 2 after (S layers only). All layers exist from step 0, so
the switch keeps every S/2 weight and a resumed run resumes the same alpha.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from mammogan_tf.models.contextual import combined_of
from mammogan_tf.models.contextual_blocks import downsample2
from mammogan_tf.models.contextual_config import build_contextual
from mammogan_tf.models.postprocess import postprocess
from mammogan_tf.training.families.base import Family, Phase, Stream
from mammogan_tf.training.losses import perturbation_penalty

REAL, FAKE, BENIGN, NORMAL = range(4)
"""Class indices of the discriminator's four-way output."""


def _float(x) -> tf.Tensor:
    """``x`` as float32 (float64 stays float64, for exact numeric checks)."""
    x = tf.convert_to_tensor(x)
    return x if x.dtype == tf.float64 else tf.cast(x, tf.float32)


def _cross_entropy(logits, label: int) -> tf.Tensor:
    logits = tf.cast(logits, tf.float32)
    labels = tf.fill(tf.shape(logits)[:1], label)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def four_way_loss(real_logits, fake_logits, benign_logits, normal_logits,
                  aux_weights=(0.2, 0.2)) -> dict[str, tf.Tensor]:
    """Weighted per-example terms (b,) of the four-way discriminator loss: cross-entropy of
    ``(b, 4)`` logits against classes 0 (real), 1 (fake), 2 (benign), 3 (normal); the benign and
    normal terms multiplied by ``aux_weights``. ``benign_logits`` None (no benign stream): no
    benign term."""
    terms = {"real": _cross_entropy(real_logits, REAL), "fake": _cross_entropy(fake_logits, FAKE)}
    if benign_logits is not None:
        terms["benign"] = aux_weights[0] * _cross_entropy(benign_logits, BENIGN)
    terms["normal"] = aux_weights[1] * _cross_entropy(normal_logits, NORMAL)
    return terms


def real_log_odds(logits) -> tf.Tensor:
    """``logit_real - logit_fake``, (b,): the scalar D whose input gradient is penalised."""
    logits = _float(logits)
    return logits[:, REAL] - logits[:, FAKE]


class ContextualFamily(Family):
    """Wu et al.'s contextual GAN; see the module docstring."""

    name = "contextual"

    def __init__(self, model_config, train_config):
        super().__init__(model_config, train_config)
        self.current_stage = self.stage(0)  # the loop sets it before tracing each stage
        self._alpha = None  # the fade schedule variable, once a loss has seen it (for generate)

    # ------------------------------------------------------------------ data and networks
    def streams(self):
        model = self.model_config
        lesion = (model.lesion_type,)
        streams = {"lesion": Stream(lesion, tuple(model.lesion_pathologies)),
                   "benign": Stream(lesion, tuple(model.benign_pathologies)), "normal": Stream(("normal",))}
        if not model.benign_pathologies:
            del streams["benign"]
        return streams

    @property
    def roles(self) -> dict[str, str]:
        """Stream of each role: ``source`` (G input), ``real``, ``benign`` (None without a benign
        stream), ``negative`` (4th class)."""
        benign = "benign" if self.model_config.benign_pathologies else None
        if self.model_config.mode == "add":
            return {"source": "normal", "real": "lesion", "benign": benign, "negative": "normal"}
        return {"source": "lesion", "real": "normal", "benign": benign, "negative": "lesion"}

    def build_networks(self):
        return build_contextual(self.model_config)

    def phases(self):
        config = self.train_config
        return [Phase("d", "discriminator", self.discriminator_loss, repeats=config.d_steps, uses_data=True),
                Phase("g", "generator", self.generator_loss, repeats=config.g_steps, uses_data=True)]

    def schedules(self):
        progressive = self.model_config.progressive
        if not progressive.enabled:
            return {"fade_alpha": {"kind": "constant", "start": 1.0}}
        return {"fade_alpha": {"kind": "linear", "start": 0.0, "end": 1.0, "start_step": progressive.stage_steps,
                               "end_step": progressive.stage_steps + progressive.fade_steps}}

    def stage(self, step: int) -> int:
        """0: S/2 stage, 1: fade, 2: full size (always 2 without progressive growing)."""
        progressive = self.model_config.progressive
        if not progressive.enabled:
            return 2
        return 0 if step < progressive.stage_steps else 1 if step < progressive.stage_steps + progressive.fade_steps else 2

    def check_data(self, data) -> None:
        from mammogan_tf.errors import ConfigError

        size = self.model_config.image_size
        if getattr(data, "patch_size", None) not in (None, size):
            raise ConfigError(f"model.image_size {size} differs from the {data.patch_size} px patches of "
                              f"{data.path}; prepare contextual patches with patches.output_size {size}")

    # ------------------------------------------------------------------------ networks at a stage
    def _alpha_for(self, ctx):
        if self.current_stage == 1:
            self._alpha = ctx.schedules["fade_alpha"] if ctx is not None else self._alpha
            return tf.convert_to_tensor(self._alpha) if self._alpha is not None else 1.0
        return None

    def _images(self, batch, stream):
        images = tf.cast(batch[stream]["image"], tf.float32)
        return downsample2(images) if self.current_stage == 0 else images

    def fake(self, networks, images, ctx, seed, training: bool = True):
        """Generator output ``(b, s, s, 3)`` [lesion, input, combined] for this replica's inputs."""
        generator = networks["generator"]
        noise = ctx.local(tf.random.stateless_uniform([ctx.global_batch_size, generator.noise_dim], seed, -1.0, 1.0))
        return generator(images, noise=noise, alpha=self._alpha_for(ctx), training=training)

    # ------------------------------------------------------------------------------- losses
    def discriminator_loss(self, networks, batch, ctx):
        roles, loss = self.roles, self.model_config.loss
        discriminator, alpha = networks["discriminator"], self._alpha_for(ctx)
        fake_seed, penalty_seed, *aug_seeds = ctx.split(6)
        fake = combined_of(self.fake(networks, self._images(batch, roles["source"]), ctx, fake_seed))
        sources = {"real": roles["real"], "fake": None, "benign": roles["benign"], "normal": roles["negative"]}
        inputs = {name: ctx.augment(fake if name == "fake" else self._images(batch, stream), seed)
                  for (name, stream), seed in zip(sources.items(), aug_seeds) if name == "fake" or stream}
        logits = {name: discriminator(images, alpha=alpha, training=True) for name, images in inputs.items()}
        terms = four_way_loss(logits["real"], logits["fake"], logits.get("benign"), logits["normal"],
                              aux_weights=loss.aux_weights)
        if loss.penalty_weight:
            terms["penalty"] = loss.penalty_weight * perturbation_penalty(
                lambda x: real_log_odds(discriminator(x, alpha=alpha, training=True)), inputs["real"],
                ctx.replica_seed(penalty_seed), k=loss.penalty_k, scale=loss.penalty_scale)
        real_odds, fake_odds = real_log_odds(logits["real"]), real_log_odds(logits["fake"])
        return terms, {"real": real_odds, "fake": fake_odds, "real_sign": tf.sign(real_odds)}

    def generator_loss(self, networks, batch, ctx):
        fake_seed, aug_seed = ctx.split(2)
        outputs = self.fake(networks, self._images(batch, self.roles["source"]), ctx, fake_seed)
        logits = networks["discriminator"](ctx.augment(combined_of(outputs), aug_seed),
                                           alpha=self._alpha_for(ctx), training=True)
        lesion_size = tf.reduce_mean(tf.abs(outputs[..., 0]), axis=[1, 2])
        return {"adversarial": _cross_entropy(logits, REAL)}, {"lesion_abs": lesion_size}

    # ----------------------------------------------------------------------------- sampling
    def fixed_inputs(self, networks, count, seed, data):
        """``{"image": (count, S, S, 1) source patches, "noise": (count, noise_dim) in [-1, 1]}``:
        the first ``count`` patches (cycled) of the source stream, and scalars from ``seed``."""
        stream = data.streams[self.roles["source"]]
        examples = data.records(stream).take(count).map(lambda example: example["image"])
        images = np.stack(list(examples.as_numpy_iterator())).astype(np.float32)
        images = np.resize(images, (count,) + images.shape[1:])
        noise = np.random.default_rng(seed).uniform(-1.0, 1.0, (count, networks["generator"].noise_dim))
        return {"image": images, "noise": noise.astype(np.float32)}

    def generate(self, sampler, inputs):
        """``(N, S, S, 3)`` [lesion, input, combined] (the S/2 output nearest-upsampled in stage 0)."""
        return self.generate_channels(sampler, inputs)

    def _postprocessed(self, outputs):
        removal = self.model_config.mode == "remove"
        return [postprocess(out[..., 0], out[..., 1], removal=removal) for out in outputs]

    def present(self, outputs, inputs):
        """The paper's post-processing (``models.postprocess``) of the lesion channel added to the
        input, ``(N, S, S, 1)`` (the input itself where the lesion was discarded); grids show this."""
        return np.stack([result.image for result in self._postprocessed(outputs)])[..., None]

    def written(self, outputs, inputs):
        """Only the post-processed patches whose lesion survived, ``(M, S, S, 1)``: synthesis writes
        nothing for a discarded source, so a checkpoint that paints nothing scores no metric (it
        would otherwise score the untouched normal patches' FID and could become ``best/``)."""
        kept = [result.image for result in self._postprocessed(outputs) if result.kept]
        return np.stack(kept)[..., None] if kept else np.zeros((0, *np.shape(outputs)[1:3], 1), np.float32)

    def generate_channels(self, sampler, inputs):
        """``(N, S, S, 3)`` [lesion, input, combined] at full size for the current stage."""
        alpha = {0: 0.0, 1: self._alpha_for(None), 2: 1.0}[self.current_stage]
        return sampler(inputs["image"], noise=inputs["noise"], alpha=alpha, training=False)
