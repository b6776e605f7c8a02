"""The one training loop: every model family, every strategy, one code path.

Reading order:

- ``Trainer``: a family's networks, one optimizer per updated network, schedule variables, the
  discriminator augmentation and EMA, all built inside ``strategy.scope()``; one training *step*
  = the family's phases in order (e.g. ``d_steps`` discriminator updates, each on a fresh batch,
  then ``g_steps`` generator updates), as explicit ``@tf.function`` code run with
  ``strategy.run``. It knows nothing about architectures or losses: a phase's loss callable
  returns weighted per-example terms and the loop averages them over the global batch.
- ``training.run.train(config, run_dir)``: the loop around the step: one long-lived input
  pipeline per batch size (``training.batches``: one for the run unless a family changes the
  batch between phases), host-side schedules, logs, sample grids, the metric and ``best/``, checkpoints,
  resume, interruption (``training.interrupt``), the run manifest.

Determinism: every random draw of a step is stateless, seeded by ``(train.seed, step)``; the data
of epoch ``e`` is shuffled with a seed made of ``(train.seed, e)`` and a resumed run skips the
batches already used in its epoch, so a run resumed from step N follows the same path as one that
never stopped. Under a strategy with R replicas the global batch B is split in R; draws made for
the whole global batch are sliced per replica (``StepContext.local``), so they do not depend on R.
The batch size, the images seen and the epoch of a step are pure functions of the step too
(``training.batches``), so resume is exact across batch size changes.
"""
from __future__ import annotations

import functools
import math

import keras
import numpy as np
import tensorflow as tf

from mammogan_tf.errors import ConfigError
from mammogan_tf.models.layers import renormalize_spectral
from mammogan_tf.models.weights import NamedState, optimizer_paths, variable_paths
from mammogan_tf.training import schedules
from mammogan_tf.training.augment import AdaptiveAugmentController, DiscriminatorAugment
from mammogan_tf.training.batches import DataPlan
from mammogan_tf.training.config import TrainConfig, ValueSchedule
from mammogan_tf.training.families.base import StepContext
from mammogan_tf.training.optimizers import Adam
from mammogan_tf.training.strategy import make_strategy

CONFIG_FILE = "config.yaml"
_SEEDS_PER_STEP = 1024


def _module_state(prefix: str, module: tf.Module) -> dict:
    names: dict = {}
    for variable in module.variables:
        key = f"{prefix}/{variable.name.split(':')[0]}"
        while key in names:
            key += "_"
        names[key] = variable
    return names


class Trainer:
    """A family's networks, optimizers, schedules, augmentation and training step.

    ``family``: a ``training.families`` object; ``config``: ``TrainConfig``; ``strategy``: a
    ``tf.distribute.Strategy`` (default: the one ``config.strategy`` names). Everything a
    checkpoint must hold is in ``state`` (a ``NamedState``).
    """

    def __init__(self, family, config: TrainConfig, strategy: tf.distribute.Strategy | None = None):
        self.family, self.config = family, config
        self.strategy = strategy or make_strategy(config.strategy)
        self.replicas = self.strategy.num_replicas_in_sync
        self.batches = family.batch_schedule()
        for segment in self.batches.segments:
            if segment.batch_size % self.replicas:
                raise ConfigError(f"{segment.field} {segment.batch_size} must be a multiple of the "
                                  f"{self.replicas} replicas of strategy {config.strategy}")
            family.check_batch(segment.batch_size // self.replicas, segment.field)
        self.batch_size = self.batches.segments[0].batch_size
        self.phases = family.phases()
        self.batches_per_step = sum(p.repeats for p in self.phases if p.uses_data)
        self.schedule_configs = self._schedule_configs()
        keras.utils.set_random_seed(config.seed)
        previous_policy = keras.mixed_precision.dtype_policy()
        if config.mixed_precision:
            keras.mixed_precision.set_dtype_policy(f"mixed_{config.mixed_precision}")
        try:
            with self.strategy.scope():
                self._build()
        finally:
            keras.mixed_precision.set_dtype_policy(previous_policy)
        self._steps: dict = {}
        self._generators: dict = {}
        self._jit: dict = {}

    # ------------------------------------------------------------------------- building
    def _schedule_configs(self) -> dict[str, ValueSchedule]:
        defaults = {name: ValueSchedule.model_validate(value) if isinstance(value, dict) else value
                    for name, value in self.family.schedules().items()}
        unknown = sorted(set(self.config.schedules) - set(defaults))
        if unknown:
            raise ConfigError(f"train.schedules.{unknown[0]}: the {self.family.name} family reads no such schedule "
                              f"(it reads: {', '.join(defaults) or 'none'})")
        return {**defaults, **self.config.schedules}

    def _optimizer(self, phase, variables):
        key = f"{phase.optimizer or phase.network}_optimizer"
        settings = getattr(self.config, key, None)
        if settings is None:
            raise ConfigError(f"train.{key}: no optimizer settings for network '{phase.network}'")
        optimizer = Adam(learning_rate=settings.learning_rate, beta_1=settings.beta_1,
                                          beta_2=settings.beta_2, epsilon=settings.epsilon)
        if self.config.mixed_precision == "float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(variables)
        return optimizer, settings

    def _build(self) -> None:
        config, family = self.config, self.family
        self.networks = family.build_networks()
        if config.sync_batch_norm:
            for network in self.networks.values():
                for layer in network._flatten_layers(include_self=False, recursive=True):
                    if isinstance(layer, keras.layers.BatchNormalization):
                        layer.synchronized = True
        self.ema_network = family.build_networks()[family.sampler] if config.ema.enabled else None
        if self.ema_network is not None:
            self._ema_pairs = [(variable_paths(self.ema_network)[name], v)
                               for name, v in variable_paths(self.networks[family.sampler]).items()]
            for target, source in self._ema_pairs:
                target.assign(source)
        self.optimizers, self.optimizer_settings = {}, {}
        for phase in self.phases:
            if phase.network not in self.optimizers:
                self.optimizers[phase.network], self.optimizer_settings[phase.network] = self._optimizer(
                    phase, self.networks[phase.network].trainable_variables)
        self.schedule_vars = {"real_label": tf.Variable(1.0, trainable=False, name="real_label")}
        for name in self.schedule_configs:
            self.schedule_vars[name] = tf.Variable(0.0, trainable=False, name=name)
        aug = config.augment
        self.augment = self.ada = None
        if aug.ops:
            self.augment = DiscriminatorAugment(aug.ops, p=aug.p, translation_ratio=aug.translation_ratio,
                                                padding=aug.padding, cutout_ratio=aug.cutout_ratio,
                                                brightness=aug.brightness, contrast=aug.contrast)
            if aug.adaptive:
                self.ada = AdaptiveAugmentController(self.augment, batch_size=self.batch_size * self.batches_per_step,
                                                     target=aug.target, adjust_every=aug.interval,
                                                     speed_images=aug.speed_images)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.nonfinite_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="nonfinite_step")
        self.best_value = tf.Variable(math.inf, dtype=tf.float64, trainable=False, name="best_value")
        self.state = NamedState(self._state())

    def _state(self) -> dict:
        state: dict = {"step": self.step, "best_value": self.best_value}
        for name, network in self.networks.items():
            paths = variable_paths(network)
            state.update({f"networks/{name}/{p}": v for p, v in paths.items()})
            if name in self.optimizers:
                state.update({f"optimizers/{name}/{p}": v
                              for p, v in optimizer_paths(self.optimizers[name], paths).items()})
        if self.ema_network is not None:
            state.update({f"ema/{self.family.sampler}/{p}": v for p, v in variable_paths(self.ema_network).items()})
        state.update({f"schedules/{name}": v for name, v in self.schedule_vars.items()})
        for name, module in (("augment", self.augment), ("ada", self.ada)):
            if module is not None:
                state.update(_module_state(name, module))
        seen, unique = set(), {}
        for key, variable in state.items():  # ada also holds the augment p
            if id(variable) not in seen:
                seen.add(id(variable))
                unique[key] = variable
        return unique

    @property
    def sampler(self) -> keras.Model:
        """The network used for samples, metrics and synthesis: the EMA copy when enabled."""
        return self.ema_network if self.ema_network is not None else self.networks[self.family.sampler]

    @property
    def sampler_key(self) -> str:
        """Checkpoint key prefix of ``sampler`` (recorded in the run manifest for synthesis)."""
        return f"{'ema' if self.ema_network is not None else 'networks'}/{self.family.sampler}"

    # ------------------------------------------------------------------------ schedules
    def set_schedules(self, step: int, epoch: int) -> dict[str, float]:
        """Set every schedule variable and learning rate for ``step`` (in ``epoch``) from the host;
        returns the values (logged)."""
        values = {"real_label": schedules.real_label(self.config.real_label, self.config.seed, epoch)}
        images = self.batches.images(step)
        values.update({name: schedules.scheduled_value(cfg, step, images)
                       for name, cfg in self.schedule_configs.items()})
        for name, value in values.items():
            variable = self.schedule_vars[name]
            if float(variable.numpy()) != np.float32(value):
                variable.assign(value)
        for network, optimizer in self.optimizers.items():
            rate = schedules.learning_rate(self.optimizer_settings[network], epoch)
            values[f"lr_{network}"] = rate
            if float(optimizer.learning_rate.numpy()) != np.float32(rate):
                optimizer.learning_rate = rate
        return values

    # ---------------------------------------------------------------------------- step
    def _seed(self, step, index: int) -> tf.Tensor:
        """Stateless seed (2,) int64 of draw ``index`` in step ``step``."""
        return tf.stack([tf.constant(self.config.seed, tf.int64),
                         tf.cast(step, tf.int64) * _SEEDS_PER_STEP + index])

    def _augment(self, images, seed):
        return images if self.augment is None else self.augment(images, StepContext.replica_seed(seed))

    def _average(self, per_example) -> tf.Tensor:
        per_example = tf.reshape(tf.cast(per_example, tf.float32), [-1])
        return tf.reduce_sum(per_example) / tf.cast(tf.size(per_example) * self.replicas, tf.float32)

    def _gradients(self, index: int, batch_size: int, batch, seed):
        phase = self.phases[index]
        network = self.networks[phase.network]
        optimizer = self.optimizers[phase.network]
        context = StepContext(seed=seed, schedules=self.schedule_vars, global_batch_size=batch_size,
                              augment=self._augment)
        with tf.GradientTape() as tape:
            terms, stats = phase.loss(self.networks, batch, context)
            loss = tf.add_n([self._average(term) for term in terms.values()])
            scaled = optimizer.scale_loss(loss) if self.config.mixed_precision == "float16" else loss
        grads = tape.gradient(scaled, network.trainable_variables)
        out = {f"{phase.name}_loss": loss}
        if len(terms) > 1:
            out.update({f"{phase.name}/{name}": self._average(term) for name, term in terms.items()})
        out.update({f"{phase.name}_{name}": self._average(value) for name, value in stats.items()})
        return grads, out, stats.get("real_sign")

    def _update(self, index: int, batch_size: int, batch, seed):
        phase = self.phases[index]
        variables = self.networks[phase.network].trainable_variables
        compute = functools.partial(self._gradients, index, batch_size)
        if self.config.jit_compile:
            compute = self._jit.setdefault((index, batch_size),
                                           tf.function(compute, jit_compile=True, autograph=False))
        grads, out, real_sign = compute(batch, seed)
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        self.optimizers[phase.network].apply_gradients(pairs)
        if self.ada is not None and real_sign is not None:
            self.ada.accumulate(real_sign)
        return out

    def _reduce(self, per_replica: dict) -> dict:
        return {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}

    def _update_ema(self, step) -> None:
        """EMA of the sampler's trainable weights (the rest copied); spectrally normalised kernels
        are renormalised after averaging (an average of unit-norm kernels has a norm below 1)."""
        ema = self.config.ema
        decay = tf.where(step >= ema.start_step, tf.constant(ema.decay, tf.float32), 0.0)
        for target, source in self._ema_pairs:
            if source.trainable:
                target.assign(tf.cast(decay, target.dtype) * target + tf.cast(1.0 - decay, target.dtype) * source)
            else:
                target.assign(source)
        renormalize_spectral(self.ema_network)

    def _train_step(self, stage, active, batch_size, iterator, step):
        """One step (cross-replica) on global batches of ``batch_size``: every phase in order;
        returns global means of its stats."""
        self.family.current_stage = stage
        totals: dict = {}
        for index, phase in enumerate(self.phases):
            for repeat in range(phase.repeats):
                batch = next(iterator) if phase.uses_data else None
                if not active[index]:
                    continue
                seed = self._seed(step, index * 64 + repeat)
                if batch is None:
                    result = self.strategy.run(lambda s, i=index: self._update(i, batch_size, None, s),
                                               args=(seed,))
                else:
                    result = self.strategy.run(functools.partial(self._update, index, batch_size),
                                               args=(batch, seed))
                for key, value in self._reduce(result).items():
                    totals[key] = totals.get(key, 0.0) + value / phase.repeats
                if phase.network == self.family.sampler and self.ema_network is not None:
                    self._update_ema(step)
        if self.ada is not None:
            self.ada.update(batch_size * self.batches_per_step)
        losses = [value for key, value in totals.items() if key.endswith("_loss")]
        finite = tf.reduce_all(tf.math.is_finite(tf.stack(losses)))
        self.nonfinite_step.assign(tf.where(finite | (self.nonfinite_step > 0), self.nonfinite_step, step + 1))
        self.step.assign(step + 1)
        return totals

    def train_step(self, iterator, step: int) -> dict:
        """Run step ``step`` (0-based) on batches from the distributed ``iterator``; returns the
        phases' stats (``d_loss``, ``g_loss``, ... scalar tensors, global means). The iterator
        must be ``iterator``'s for the batch segment of ``step``."""
        stage = self.family.stage(step)
        active = tuple(step % phase.every == 0 for phase in self.phases)
        key = (stage, active, self.batches.batch_size(step))
        if key not in self._steps:
            # No autograph: the step has no tensor-dependent Python control flow.
            self._steps[key] = tf.function(functools.partial(self._train_step, *key), autograph=False)
        return self._steps[key](iterator, tf.constant(step, tf.int64))

    def data_plan(self, num_examples: int, steps_per_epoch: int | None = None) -> DataPlan:
        """Epoch and data position of every step over ``num_examples`` (``training.batches``);
        ``steps_per_epoch`` overrides the length of an epoch (benchmarks: one endless epoch)."""
        return DataPlan(self.batches, num_examples, self.batches_per_step, steps_per_epoch)

    def iterator(self, data, start_step: int, steps_per_epoch: int | None = None):
        """The distributed iterator of the batch segment that holds ``start_step`` (the whole run
        when the batch size is fixed), positioned at ``start_step``."""
        epoch, offset, per_epoch = self.data_plan(data.num_examples, steps_per_epoch).position(start_step)
        batch_size, per_step = self.batches.batch_size(start_step), self.batches_per_step

        def dataset_fn(context: tf.distribute.InputContext):
            per_pipeline = context.num_replicas_in_sync // context.num_input_pipelines
            return data.dataset(epoch, offset * per_step * per_pipeline, per_epoch * per_step * per_pipeline,
                                context, batch_size=batch_size)

        return iter(self.strategy.distribute_datasets_from_function(dataset_fn))

    # ------------------------------------------------------------------------ sampling
    def generate(self, inputs: dict, batch_size: int = 64, written: bool = False) -> np.ndarray:
        """Images (N, S, S, 1) in [-1, 1] from ``family.fixed_inputs``-like inputs, in batches, as the
        family presents them (``Family.present``: e.g. post-processed); ``written``: only those that
        synthesis would write (``Family.written``, M <= N of them)."""
        stage = self.family.stage(int(self.step.numpy()))
        function = self._generators.get(stage)
        if function is None:
            self.family.current_stage = stage
            function = self._generators[stage] = tf.function(
                lambda x: self.family.generate(self.sampler, x), reduce_retracing=True, autograph=False)
        count = len(next(iter(inputs.values())))
        outputs = np.concatenate([function({k: tf.constant(v[i:i + batch_size]) for k, v in inputs.items()}).numpy()
                                  for i in range(0, count, batch_size)])
        return (self.family.written if written else self.family.present)(outputs, inputs)
