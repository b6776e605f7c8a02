"""The one adversarial training loop: every GAN family, every strategy, one code path.

Reading order:

- ``ShardData``: the real patches, one seeded ``tf.data`` pipeline per epoch.
- ``GANTrainer``: networks, optimizers and one training *step* = ``d_steps`` discriminator
  updates (each on a fresh real batch) then ``g_steps`` generator updates, as explicit
  ``@tf.function`` code run with ``strategy.run``. It knows nothing about architectures: it
  calls ``generator(z)`` / ``generator((z, labels))`` and ``discriminator(images)`` (logits, plus
  class logits for a conditional GAN) and the loss functions of ``training.losses``.
- ``SampleMetric``: FID or KID of generated samples against real patches (best/ keeping).
- ``train(config, run_dir)``: the loop around the step: per-epoch schedules, logs, sample
  grids, checkpoints, the best checkpoint, resume, the run manifest.

Determinism: every random draw of a step is stateless, seeded by ``(train.seed, step)``, the
data of epoch ``e`` is shuffled with a seed made of ``(train.seed, e)`` and a resumed run skips
the batches already used in its epoch, so a run resumed from step N follows the same path as
one that never stopped.

Under a strategy with R replicas the global batch B is split in R; latent vectors are drawn for
the whole global batch and each replica takes its slice, so the draws do not depend on R.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from mammogan_tf.config import ExperimentConfig, dump_config
from mammogan_tf.errors import ConfigError, InputError, TrainingError
from mammogan_tf.manifest import MANIFEST_NAME, build_manifest, input_record, read_manifest, write_json_atomic
from mammogan_tf.models.registry import build_gan
from mammogan_tf.synthesis.sampling import latent_vectors
from mammogan_tf.training import schedules
from mammogan_tf.training.augment import AdaptiveAugmentController, DiscriminatorAugment
from mammogan_tf.training.checkpoints import RunCheckpoints, read_best
from mammogan_tf.training.config import TrainConfig
from mammogan_tf.training.losses import (class_loss, discriminator_loss, generator_loss, gradient_penalty,
                                         r1_penalty)
from mammogan_tf.training.run_log import CURVE_FILE, RunLog, plot_metric_curve
from mammogan_tf.training.strategy import is_chief, make_strategy, worker_id

CONFIG_FILE = "config.yaml"
_SEEDS_PER_STEP = 1024


# ----------------------------------------------------------------------------------- data

def _manifest_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path / MANIFEST_NAME if path.is_dir() else path


def count_examples(manifest_path: str | os.PathLike, split: str, lesion_types=None) -> int:
    """Records of ``split`` (of ``lesion_types`` only, when given) from the manifest's counts,
    or by reading the shards when the manifest has none."""
    manifest = read_manifest(manifest_path)
    counts = manifest.get("counts", {}).get(split)
    if isinstance(counts, dict) and counts:
        return int(sum(n for name, n in counts.items() if not lesion_types or name in lesion_types))
    from mammogan_tf.data.shards import make_dataset

    dataset = make_dataset(manifest_path, split, batch_size=None, shuffle=False, lesion_types=lesion_types)
    return int(dataset.reduce(np.int64(0), lambda n, _: n + 1))


class ShardData:
    """Real patches of one split of a ``prepare`` (or ``synthesize``) manifest.

    ``epoch(e, batches)`` -> dataset of ``batches`` global batches ``(images (B, S, S, 1) float32
    in [-1, 1], labels (B,) int32)``, shuffled with a seed made of (seed, e). Labels are class
    indices into ``class_names``: ``lesion_types`` when given (conditional GANs), otherwise the
    manifest's classes.
    """

    def __init__(self, manifest_path: str | os.PathLike, split: str = "train", lesion_types=None,
                 batch_size: int = 64, seed: int = 0, cache: bool = True):
        self.path = _manifest_file(manifest_path)
        manifest = read_manifest(self.path)
        self.classes = list(manifest.get("classes", []))
        self.patch_size = manifest.get("patch_size")
        self.split, self.batch_size, self.seed, self.cache = split, batch_size, seed, cache
        self.lesion_types = list(lesion_types) if lesion_types else None
        self.class_names = self.lesion_types or self.classes
        self.num_examples = count_examples(self.path, split, self.lesion_types)
        if self.num_examples == 0:
            raise InputError(f"{self.path}: split '{split}' holds no patches of {self.lesion_types or 'any class'}")
        lookup = np.full(max(len(self.classes), 1), -1, np.int32)
        for position, name in enumerate(self.class_names):
            if name in self.classes:
                lookup[self.classes.index(name)] = position
        self._lookup = lookup

    def epoch_seed(self, epoch: int) -> int:
        return int((self.seed * 1_000_003 + epoch * 7919 + 17) % (2 ** 31 - 1))

    def epoch(self, epoch: int, batches: int) -> tf.data.Dataset:
        from mammogan_tf.data.shards import make_dataset

        dataset = make_dataset(self.path, self.split, self.batch_size, shuffle=True, repeat=True,
                               seed=self.epoch_seed(epoch), cache=self.cache, drop_remainder=True,
                               lesion_types=self.lesion_types)
        lookup = tf.constant(self._lookup)
        shape = [self.batch_size, self.patch_size, self.patch_size, 1]
        return dataset.map(lambda images, labels: (tf.ensure_shape(images, shape), tf.gather(lookup, labels))
                           ).take(batches)


class RandomData:
    """Random images in [-1, 1] and labels, for throughput benchmarks (no files read)."""

    def __init__(self, image_size: int, batch_size: int, num_classes: int = 0, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.images = rng.uniform(-1, 1, (batch_size, image_size, image_size, 1)).astype(np.float32)
        self.labels = rng.integers(0, max(num_classes, 1), batch_size).astype(np.int32)
        self.num_examples, self.batch_size = 10 ** 9, batch_size
        self.class_names = [str(i) for i in range(max(num_classes, 1))]

    def epoch(self, epoch: int, batches: int) -> tf.data.Dataset:
        return tf.data.Dataset.from_tensors((self.images, self.labels)).repeat(batches)


# -------------------------------------------------------------------------------- trainer

def _heads(output):
    """(logits (B, 1), class logits (B, C) or None) of a discriminator output."""
    if isinstance(output, (tuple, list)):
        return output[0], output[1]
    return output, None


class GANTrainer:
    """Networks, optimizers, augmentation and the training step of one GAN.

    ``model_config``: ``ModelConfig``; ``config``: ``TrainConfig``; ``strategy``: a
    ``tf.distribute.Strategy`` (default: the one ``config.strategy`` names). Everything that a
    checkpoint must hold is in ``checkpoint`` (a ``tf.train.Checkpoint``).
    """

    def __init__(self, model_config, config: TrainConfig, strategy: tf.distribute.Strategy | None = None):
        self.model_config, self.config = model_config, config
        self.strategy = strategy or make_strategy(config.strategy)
        self.replicas = self.strategy.num_replicas_in_sync
        if config.batch_size % self.replicas:
            raise ConfigError(f"train.batch_size {config.batch_size} must be a multiple of the "
                              f"{self.replicas} replicas of strategy {config.strategy}")
        self.batch_size = config.batch_size
        keras.utils.set_random_seed(config.seed)
        previous_policy = keras.mixed_precision.dtype_policy()
        if config.mixed_precision:
            keras.mixed_precision.set_dtype_policy(f"mixed_{config.mixed_precision}")
        try:
            with self.strategy.scope():
                self._build()
        finally:
            keras.mixed_precision.set_dtype_policy(previous_policy)
        self.num_classes = int(getattr(self.generator, "num_classes", 0) or 0)
        # No autograph: the step has no tensor-dependent Python control flow, and tracing
        # without it takes half the time.
        self._step_fn = tf.function(self._train_step, autograph=False)
        self._generate_fn = tf.function(self._generate, reduce_retracing=True, autograph=False)
        compute = dict(jit_compile=True, autograph=False) if config.jit_compile else None
        self._d_compute = tf.function(self._d_gradients, **compute) if compute else self._d_gradients
        self._g_compute = tf.function(self._g_gradients, **compute) if compute else self._g_gradients

    # ------------------------------------------------------------------------- building
    def _optimizer(self, settings, variables):
        optimizer = keras.optimizers.Adam(learning_rate=settings.learning_rate, beta_1=settings.beta_1,
                                          beta_2=settings.beta_2, epsilon=settings.epsilon)
        if self.config.mixed_precision == "float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(variables)
        return optimizer

    def _build(self) -> None:
        config = self.config
        self.generator, self.discriminator = build_gan(self.model_config)
        self.ema_generator = None
        if config.ema.enabled:
            self.ema_generator = build_gan(self.model_config)[0]
            for target, source in zip(self.ema_generator.variables, self.generator.variables):
                target.assign(source)
        self.g_optimizer = self._optimizer(config.generator_optimizer, self.generator.trainable_variables)
        self.d_optimizer = self._optimizer(config.discriminator_optimizer, self.discriminator.trainable_variables)
        aug = config.augment
        self.augment = self.ada = None
        if aug.ops:
            self.augment = DiscriminatorAugment(aug.ops, p=aug.p, translation_ratio=aug.translation_ratio,
                                                padding=aug.padding, cutout_ratio=aug.cutout_ratio,
                                                brightness=aug.brightness, contrast=aug.contrast)
            if aug.adaptive:
                self.ada = AdaptiveAugmentController(self.augment, batch_size=self.batch_size * config.d_steps,
                                                     target=aug.target, adjust_every=aug.interval,
                                                     speed_images=aug.speed_images)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.nonfinite_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="nonfinite_step")
        self.best_value = tf.Variable(math.inf, dtype=tf.float64, trainable=False, name="best_value")
        # Keras 3 models are checkpointed as ordered variable lists: tf.train.Checkpoint does not
        # see layers kept in Python lists, and variable names depend on creation order.
        state = dict(generator=list(self.generator.variables), discriminator=list(self.discriminator.variables),
                     generator_optimizer=self.g_optimizer, discriminator_optimizer=self.d_optimizer,
                     step=self.step, best_value=self.best_value)
        if self.ema_generator is not None:
            state["ema_generator"] = list(self.ema_generator.variables)
        if self.augment is not None:
            state["augment"] = self.augment
        if self.ada is not None:
            state["ada"] = self.ada
        self.checkpoint = tf.train.Checkpoint(**state)

    @property
    def sampler(self) -> keras.Model:
        """The generator used for samples, metrics and synthesis: the EMA one when enabled."""
        return self.ema_generator if self.ema_generator is not None else self.generator

    # ---------------------------------------------------------------------------- randomness
    def _seed(self, step, index: int) -> tf.Tensor:
        """Stateless seed (2,) int64 of draw ``index`` in step ``step``."""
        return tf.stack([tf.constant(self.config.seed, tf.int64),
                         tf.cast(step, tf.int64) * _SEEDS_PER_STEP + index])

    def _local(self, values):
        """This replica's slice of a tensor drawn for the whole global batch."""
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return values
        size = self.batch_size // context.num_replicas_in_sync
        start = context.replica_id_in_sync_group * size
        return values[start:start + size]

    def _replica_seed(self, seed):
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return seed
        return tf.random.experimental.stateless_fold_in(seed, context.replica_id_in_sync_group)

    def _fake(self, seed, training: bool = True):
        """Generated images of this replica (b, S, S, 1) and their class labels (b,) or None."""
        z_seed, label_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        z = self._local(self.generator.sample_latent(self.batch_size, z_seed))
        if not self.num_classes:
            return self.generator(z, training=training), None
        labels = self._local(tf.random.stateless_uniform([self.batch_size], label_seed, 0, self.num_classes,
                                                         dtype=tf.int32))
        return self.generator((z, labels), training=training), labels

    def _augmented(self, images, seed):
        return images if self.augment is None else self.augment(images, self._replica_seed(seed))

    # ------------------------------------------------------------------------ loss pieces
    def _average(self, per_example):
        return tf.nn.compute_average_loss(per_example, global_batch_size=self.batch_size)

    def _scaled(self, optimizer, loss):
        return optimizer.scale_loss(loss) if self.config.mixed_precision == "float16" else loss

    def _d_gradients(self, images, labels, seed, real_label):
        config = self.config
        fake_seed, real_aug, fake_aug, penalty_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
        fake, fake_labels = self._fake(fake_seed)
        discriminator = self.discriminator

        def logits_of(x):
            return _heads(discriminator(x, training=True))[0]

        with tf.GradientTape() as tape:
            real_in, fake_in = self._augmented(images, real_aug), self._augmented(fake, fake_aug)
            real_logits, real_classes = _heads(discriminator(real_in, training=True))
            fake_logits, fake_classes = _heads(discriminator(fake_in, training=True))
            per_example = discriminator_loss(config.loss, real_logits, fake_logits, real_label=real_label)
            if self.num_classes:
                per_example += config.class_loss_weight * (class_loss(labels, real_classes)
                                                           + class_loss(fake_labels, fake_classes))
            if config.gradient_penalty_weight:
                per_example += config.gradient_penalty_weight * gradient_penalty(
                    logits_of, real_in, fake_in, self._replica_seed(penalty_seed))
            if config.r1_weight:
                per_example += 0.5 * config.r1_weight * r1_penalty(logits_of, real_in)
            loss = self._average(per_example)
            scaled = self._scaled(self.d_optimizer, loss)
        grads = tape.gradient(scaled, discriminator.trainable_variables)
        scale = 1.0 / self.batch_size
        stats = {"d_loss": loss, "d_real": tf.reduce_sum(real_logits) * scale,
                 "d_fake": tf.reduce_sum(fake_logits) * scale,
                 "d_real_sign": tf.reduce_sum(tf.sign(real_logits)) * scale}
        return grads, stats, real_logits

    def _g_gradients(self, seed):
        config = self.config
        fake_seed, aug_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        with tf.GradientTape() as tape:
            fake, fake_labels = self._fake(fake_seed)
            logits, classes = _heads(self.discriminator(self._augmented(fake, aug_seed), training=True))
            per_example = generator_loss(config.loss, logits)
            if self.num_classes:
                per_example += config.class_loss_weight * class_loss(fake_labels, classes)
            loss = self._average(per_example)
            scaled = self._scaled(self.g_optimizer, loss)
        grads = tape.gradient(scaled, self.generator.trainable_variables)
        return grads, {"g_loss": loss}

    # ------------------------------------------------------------------ replica functions
    def _d_update(self, images, labels, seed, real_label):
        grads, stats, real_logits = self._d_compute(images, labels, seed, real_label)
        self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_variables))
        if self.ada is not None:
            self.ada.accumulate(real_logits)
        return stats

    def _g_update(self, seed):
        grads, stats = self._g_compute(seed)
        self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_variables))
        return stats

    def _reduce(self, per_replica: dict) -> dict:
        return {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}

    def _update_ema(self, step) -> None:
        ema = self.config.ema
        decay = tf.where(step >= ema.start_step, tf.constant(ema.decay, tf.float32), 0.0)
        for target, source in zip(self.ema_generator.trainable_variables, self.generator.trainable_variables):
            target.assign(decay * target + (1.0 - decay) * source)
        for target, source in zip(self.ema_generator.non_trainable_variables,
                                  self.generator.non_trainable_variables):
            target.assign(source)

    def _train_step(self, iterator, step, real_label):
        """One step (cross-replica): d_steps D updates, g_steps G updates; returns global means."""
        config = self.config
        totals: dict = {}
        for i in range(config.d_steps):
            images, labels = next(iterator)
            stats = self._reduce(self.strategy.run(self._d_update, args=(images, labels, self._seed(step, i),
                                                                         real_label)))
            for key, value in stats.items():
                totals[key] = totals.get(key, 0.0) + value / config.d_steps
        for j in range(config.g_steps):
            stats = self._reduce(self.strategy.run(self._g_update, args=(self._seed(step, 512 + j),)))
            totals["g_loss"] = totals.get("g_loss", 0.0) + stats["g_loss"] / config.g_steps
            if self.ema_generator is not None:
                self._update_ema(step)
        if self.ada is not None:
            self.ada.update()
        finite = tf.reduce_all(tf.math.is_finite(tf.stack([totals["d_loss"], totals["g_loss"]])))
        self.nonfinite_step.assign(tf.where(finite | (self.nonfinite_step > 0), self.nonfinite_step, step + 1))
        self.step.assign(step + 1)
        return totals

    def train_step(self, iterator, step: int, real_label: float) -> dict:
        """Run step ``step`` (0-based) on batches from a distributed ``iterator``; returns
        ``{d_loss, g_loss, d_real, d_fake, d_real_sign}`` scalar tensors (global means)."""
        return self._step_fn(iterator, tf.constant(step, tf.int64), tf.constant(real_label, tf.float32))

    def distribute(self, dataset: tf.data.Dataset):
        """A distributed iterator over a dataset of global batches."""
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return iter(self.strategy.experimental_distribute_dataset(dataset.with_options(options)))

    def set_learning_rates(self, epoch: int) -> dict:
        """Apply the learning-rate schedules for ``epoch``; returns {"lr_g", "lr_d"}."""
        rates = {"lr_g": schedules.learning_rate(self.config.generator_optimizer, epoch),
                 "lr_d": schedules.learning_rate(self.config.discriminator_optimizer, epoch)}
        self.g_optimizer.learning_rate = rates["lr_g"]
        self.d_optimizer.learning_rate = rates["lr_d"]
        return rates

    # ------------------------------------------------------------------------ sampling
    def _generate(self, z, labels):
        inputs = (z, labels) if self.num_classes else z
        return self.sampler(inputs, training=False)

    def latents(self, count: int, seed: int, offset: int = 0) -> np.ndarray:
        """Latent vectors (count, L) of the fixed stream ``seed`` (see ``synthesis.sampling``)."""
        return latent_vectors(self.generator, seed, offset, count)

    def generate(self, z: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """Images (N, S, S, 1) in [-1, 1] from latents (N, L) [and labels (N,)], inference mode."""
        labels = np.zeros(len(z), np.int32) if labels is None else np.asarray(labels, np.int32)
        return self._generate_fn(tf.constant(z, tf.float32), tf.constant(labels)).numpy()


# -------------------------------------------------------------------------------- metric

class SampleMetric:
    """FID or KID (``metric.name``) between generated patches, always from the same latents
    (stream ``metric.seed``), and as many real patches of ``metric.split`` (``n_samples``, or all
    of them when fewer; a fixed seeded draw), in the feature space of ``metric.backbone``.
    Conditional generators get the class labels of the real sample. Real features are computed
    once per process."""

    def __init__(self, config, data_path: str | os.PathLike, lesion_types, backbone=None):
        from mammogan_tf.evaluation.features import load_backbone

        self.config = config
        self.backbone = backbone if backbone is not None else load_backbone(config.backbone)
        self.data_path, self.lesion_types = data_path, lesion_types
        self._real = None
        self._labels = None

    def _real_features(self, class_names):
        if self._real is None:
            from mammogan_tf.data.shards import make_dataset

            dataset = make_dataset(self.data_path, self.config.split, self.config.batch_size, shuffle=True,
                                   seed=self.config.seed, lesion_types=self.lesion_types)
            images, labels, total = [], [], 0
            for batch, batch_labels in dataset:
                images.append(batch.numpy())
                labels.append(batch_labels.numpy())
                total += len(images[-1])
                if total >= self.config.n_samples:
                    break
            images = np.concatenate(images)[: self.config.n_samples]
            names = read_manifest(self.data_path).get("classes", [])
            labels = np.concatenate(labels)[: self.config.n_samples]
            self._labels = np.array([class_names.index(names[l]) if names[l] in class_names else 0
                                     for l in labels], np.int32)
            if len(images) < 2:
                raise InputError(f"{self.data_path}: split '{self.config.split}' has {len(images)} patches; "
                                 "the metric needs at least 2")
            self._real = self._features(images)
        return self._real

    def _features(self, images: np.ndarray) -> np.ndarray:
        size = self.config.batch_size
        return np.concatenate([self.backbone(images[i:i + size]) for i in range(0, len(images), size)])

    def __call__(self, trainer: GANTrainer, class_names) -> float:
        real = self._real_features(class_names)
        count = min(self.config.n_samples, len(real))
        z = trainer.latents(count, self.config.seed)
        labels = np.resize(self._labels, count) if trainer.num_classes else None
        size = self.config.batch_size
        fake = np.concatenate([trainer.generate(z[i:i + size], None if labels is None else labels[i:i + size])
                               for i in range(0, count, size)])
        from mammogan_tf.evaluation.frechet import frechet_distance, kid

        acts = self._features(fake)
        if self.config.name == "fid":
            return frechet_distance(real, acts)
        return kid(real, acts)[0]


# ---------------------------------------------------------------------------------- train

def _grid_inputs(trainer: GANTrainer, config: TrainConfig):
    count = config.grid_size ** 2
    z = trainer.latents(count, config.seed, offset=10 ** 9)
    labels = (np.arange(count) // config.grid_size) % trainer.num_classes if trainer.num_classes else None
    return z, labels


def _files_of(run_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")
                  if p.is_file() and p.name != MANIFEST_NAME and not p.relative_to(run_dir).parts[0].startswith("."))


def _check_finite(trainer: GANTrainer, checkpoints: RunCheckpoints | None, values: dict | None = None) -> None:
    bad = int(trainer.nonfinite_step.numpy())
    if not bad:
        return
    last = checkpoints.latest if checkpoints is not None else None
    where = f"; the last good checkpoint is {last}" if last else "; no checkpoint was saved before it"
    shown = "" if not values else " (" + ", ".join(f"{k}={v:.4g}" for k, v in values.items() if "loss" in k) + ")"
    raise TrainingError(f"non-finite loss at step {bad}{shown}{where}; lower the learning rates or "
                        "check the data, then resume with --resume")


def train(config: ExperimentConfig, run_dir: str | os.PathLike, *, resume: bool = False,
          data=None, strategy: tf.distribute.Strategy | None = None, backbone=None,
          progress: bool = True) -> dict:
    """Train ``config.model`` with ``config.train`` into ``run_dir``; returns a summary dict.

    ``resume``: continue from the newest checkpoint in ``run_dir/checkpoints`` (a fresh start
    when there is none). Without it, a ``run_dir`` that already holds checkpoints is an error.
    ``data``: a ``ShardData``-like source (default: ``train.data``); ``backbone``: a feature
    callable for the metric (default: ``train.metric.backbone`` loaded). Raises
    ``TrainingError`` on a non-finite loss, naming the step and the last good checkpoint.
    """
    tcfg = config.train
    run_dir = Path(run_dir)
    if tcfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    if data is None:
        if not tcfg.data.manifest:
            raise ConfigError("train.data.manifest: name the prepared data (a `mammogan prepare` output folder)")
        data = ShardData(tcfg.data.manifest, tcfg.data.split, tcfg.data.lesion_types, tcfg.batch_size,
                         tcfg.seed, tcfg.data.cache)
    if getattr(data, "patch_size", None) not in (None, config.model.image_size):
        raise ConfigError(f"model.image_size {config.model.image_size} differs from the {data.patch_size} px "
                          f"patches of {data.path}; prepare with patches.output_size {config.model.image_size}")
    if config.model.family == "acgan" and config.model.num_classes != len(data.class_names):
        raise ConfigError(f"model.num_classes {config.model.num_classes} != {len(data.class_names)} classes "
                          f"of the data ({', '.join(data.class_names)}); set train.data.lesion_types")
    trainer = GANTrainer(config.model, tcfg, strategy)
    chief = is_chief(trainer.strategy)
    checkpoints = RunCheckpoints(run_dir, trainer.checkpoint, keep=tcfg.keep, chief=chief,
                                 worker=worker_id(trainer.strategy))
    saved_config = run_dir / CONFIG_FILE
    if checkpoints.latest is not None and not resume:
        raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or --out to start another")
    if resume and saved_config.is_file():
        from mammogan_tf.config import load_config

        previous = load_config(saved_config)
        if previous.model != config.model:
            raise ConfigError(f"{saved_config}: the model section differs from the run being resumed; "
                              "resume with the same model or start a new run with --out")
    start = checkpoints.restore_latest() if resume else None
    start = start or 0
    per_epoch = schedules.steps_per_epoch(data.num_examples, tcfg.batch_size, tcfg.d_steps)
    total = schedules.total_steps(tcfg.steps, tcfg.epochs, per_epoch)
    if chief:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / MANIFEST_NAME).unlink(missing_ok=True)  # the run is in progress again
        tmp = saved_config.with_name(CONFIG_FILE + ".tmp")
        tmp.write_text(dump_config(config), encoding="utf-8")
        os.replace(tmp, saved_config)
    log = RunLog(run_dir, enabled=chief, resume_step=start if start else None)
    metric = None
    if tcfg.metric.name != "none" and getattr(data, "path", None) is not None:
        metric = SampleMetric(tcfg.metric, data.path, data.lesion_types, backbone)
    grid_z, grid_labels = _grid_inputs(trainer, tcfg)
    best = read_best(run_dir)

    def evaluate(step: int) -> None:
        nonlocal best
        _check_finite(trainer, checkpoints)
        value = float(metric(trainer, data.class_names))
        log.scalars(step, {tcfg.metric.name: value}, kind="metric")
        if value < float(trainer.best_value.numpy()):
            trainer.best_value.assign(value)
            path = checkpoints.save_best(step, tcfg.metric.name, value, {"backbone": tcfg.metric.backbone})
            best = {"step": step, "metric": tcfg.metric.name, "value": value, "checkpoint": Path(path).name}
        if chief:
            plot_metric_curve(log.metrics_path, tcfg.metric.name, run_dir / CURVE_FILE,
                              best_step=best["step"] if best else None)

    bar = tqdm(total=total, initial=start, unit="step", desc=config.name, disable=not (progress and chief),
               dynamic_ncols=True)
    step, last_log, last_time = start, start, time.perf_counter()
    stats: dict = {}
    try:
        while step < total:
            epoch, offset = divmod(step, per_epoch)
            rates = trainer.set_learning_rates(epoch)
            real_label = schedules.real_label(tcfg.real_label, tcfg.seed, epoch)
            count = min(per_epoch - offset, total - step)
            dataset = data.epoch(epoch, per_epoch * tcfg.d_steps).skip(offset * tcfg.d_steps)
            iterator = trainer.distribute(dataset)
            for _ in range(count):
                stats = trainer.train_step(iterator, step, real_label)
                step += 1
                bar.update(1)
                if step % tcfg.log_every == 0 or step == total:
                    values = {k: float(v) for k, v in stats.items()}
                    _check_finite(trainer, checkpoints, values)
                    now = time.perf_counter()
                    images = (step - last_log) * tcfg.batch_size * tcfg.d_steps / max(now - last_time, 1e-9)
                    last_log, last_time = step, now
                    extra = {"epoch": epoch, "real_label": real_label, "images_per_second": images, **rates}
                    if trainer.augment is not None:
                        extra["augment_p"] = float(trainer.augment.p.numpy())
                    log.scalars(step, {**values, **extra})
                    bar.set_postfix(d=f"{values['d_loss']:.3f}", g=f"{values['g_loss']:.3f}", refresh=False)
                if step % tcfg.sample_every == 0 or step == total:
                    _check_finite(trainer, checkpoints)
                    log.images(step, trainer.generate(grid_z, grid_labels), tcfg.grid_size)
                if metric is not None and (step % tcfg.metric.every == 0 or step == total):
                    evaluate(step)
                if step % tcfg.checkpoint_every == 0 or step == total:
                    _check_finite(trainer, checkpoints)
                    checkpoints.save(step)
    finally:
        bar.close()
        log.close()
    summary = {"run_dir": str(run_dir), "steps": total, "steps_per_epoch": per_epoch,
               "examples": data.num_examples, "last_checkpoint": checkpoints.latest, "best": best,
               "final": {k: float(v) for k, v in stats.items()}}
    if chief:
        inputs = [input_record(data.path)] if getattr(data, "path", None) is not None else []
        sampler = "ema_generator" if trainer.ema_generator is not None else "generator"
        manifest = build_manifest("train", run_dir, config=config.model_dump(mode="json"), inputs=inputs,
                                  counts={"steps": total, "examples": data.num_examples}, files=_files_of(run_dir),
                                  extra={"best": best, "last_checkpoint": Path(checkpoints.latest).name,
                                         "class_names": list(data.class_names), "sampler": sampler})
        write_json_atomic(run_dir / MANIFEST_NAME, manifest)
    return summary
