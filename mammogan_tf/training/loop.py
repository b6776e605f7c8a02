"""The one training loop: every model family, every strategy, one code path.

Reading order:

- ``Trainer``: a family's networks, one optimizer per updated network, schedule variables, the
  discriminator augmentation and EMA, all built inside ``strategy.scope()``; one training *step*
  = the family's phases in order (e.g. ``d_steps`` discriminator updates, each on a fresh batch,
  then ``g_steps`` generator updates), as explicit ``@tf.function`` code run with
  ``strategy.run``. It knows nothing about architectures or losses: a phase's loss callable
  returns weighted per-example terms and the loop averages them over the global batch.
- ``train(config, run_dir)``: the loop around the step: one long-lived input pipeline, host-side
  schedules, logs, sample grids, the metric and ``best/``, checkpoints, resume, interruption,
  the run manifest.

Determinism: every random draw of a step is stateless, seeded by ``(train.seed, step)``; the data
of epoch ``e`` is shuffled with a seed made of ``(train.seed, e)`` and a resumed run skips the
batches already used in its epoch, so a run resumed from step N follows the same path as one that
never stopped. Under a strategy with R replicas the global batch B is split in R; draws made for
the whole global batch are sliced per replica (``StepContext.local``), so they do not depend on R.
"""
from __future__ import annotations

import functools
import math
import os
import signal
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from mammogan_tf.config import ExperimentConfig, dump_config
from mammogan_tf.errors import ConfigError, MammoganError, TrainingError
from mammogan_tf.manifest import MANIFEST_NAME, build_manifest, input_record, write_json_atomic
from mammogan_tf.models.weights import NamedState, optimizer_paths, variable_paths
from mammogan_tf.training import schedules
from mammogan_tf.training.augment import AdaptiveAugmentController, DiscriminatorAugment
from mammogan_tf.training.checkpoints import RunCheckpoints, read_best
from mammogan_tf.training.config import TrainConfig, ValueSchedule
from mammogan_tf.training.data import TrainingData
from mammogan_tf.training.families import make_family
from mammogan_tf.training.families.base import StepContext
from mammogan_tf.training.metric import TrainingMetric, broadcast
from mammogan_tf.training.optimizers import Adam
from mammogan_tf.training.resume import check_resume
from mammogan_tf.training.run_log import CURVE_FILE, RunLog, plot_metric_curve
from mammogan_tf.training.strategy import is_chief, make_strategy, worker_id

CONFIG_FILE = "config.yaml"
_SEEDS_PER_STEP = 1024


class Interrupted(MammoganError):
    """SIGINT/SIGTERM during training: the state at the current step was saved."""

    exit_code = 130


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
        if config.batch_size % self.replicas:
            raise ConfigError(f"train.batch_size {config.batch_size} must be a multiple of the "
                              f"{self.replicas} replicas of strategy {config.strategy}")
        self.batch_size = config.batch_size
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
        values.update({name: schedules.scheduled_value(cfg, step) for name, cfg in self.schedule_configs.items()})
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

    def _gradients(self, index: int, batch, seed):
        phase = self.phases[index]
        network = self.networks[phase.network]
        optimizer = self.optimizers[phase.network]
        context = StepContext(seed=seed, schedules=self.schedule_vars, global_batch_size=self.batch_size,
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

    def _update(self, index: int, batch, seed):
        phase = self.phases[index]
        variables = self.networks[phase.network].trainable_variables
        compute = functools.partial(self._gradients, index)
        if self.config.jit_compile:
            compute = self._jit.setdefault(index, tf.function(compute, jit_compile=True, autograph=False))
        grads, out, real_sign = compute(batch, seed)
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        self.optimizers[phase.network].apply_gradients(pairs)
        if self.ada is not None and real_sign is not None:
            self.ada.accumulate(real_sign)
        return out

    def _reduce(self, per_replica: dict) -> dict:
        return {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}

    def _update_ema(self, step) -> None:
        ema = self.config.ema
        decay = tf.where(step >= ema.start_step, tf.constant(ema.decay, tf.float32), 0.0)
        for target, source in self._ema_pairs:
            if source.trainable:
                target.assign(tf.cast(decay, target.dtype) * target + tf.cast(1.0 - decay, target.dtype) * source)
            else:
                target.assign(source)

    def _train_step(self, stage, active, iterator, step):
        """One step (cross-replica): every phase in order; returns global means of its stats."""
        self.family.current_stage = stage
        totals: dict = {}
        for index, phase in enumerate(self.phases):
            for repeat in range(phase.repeats):
                batch = next(iterator) if phase.uses_data else None
                if not active[index]:
                    continue
                seed = self._seed(step, index * 64 + repeat)
                if batch is None:
                    result = self.strategy.run(lambda s, i=index: self._update(i, None, s), args=(seed,))
                else:
                    result = self.strategy.run(functools.partial(self._update, index), args=(batch, seed))
                for key, value in self._reduce(result).items():
                    totals[key] = totals.get(key, 0.0) + value / phase.repeats
                if phase.network == self.family.sampler and self.ema_network is not None:
                    self._update_ema(step)
        if self.ada is not None:
            self.ada.update()
        losses = [value for key, value in totals.items() if key.endswith("_loss")]
        finite = tf.reduce_all(tf.math.is_finite(tf.stack(losses)))
        self.nonfinite_step.assign(tf.where(finite | (self.nonfinite_step > 0), self.nonfinite_step, step + 1))
        self.step.assign(step + 1)
        return totals

    def train_step(self, iterator, step: int) -> dict:
        """Run step ``step`` (0-based) on batches from the distributed ``iterator``; returns the
        phases' stats (``d_loss``, ``g_loss``, ... scalar tensors, global means)."""
        stage = self.family.stage(step)
        active = tuple(step % phase.every == 0 for phase in self.phases)
        key = (stage, active)
        if key not in self._steps:
            # No autograph: the step has no tensor-dependent Python control flow.
            self._steps[key] = tf.function(functools.partial(self._train_step, stage, active), autograph=False)
        return self._steps[key](iterator, tf.constant(step, tf.int64))

    def iterator(self, data, start_step: int, steps_per_epoch: int):
        """The run's one distributed iterator, positioned at ``start_step``."""
        epoch, offset = divmod(start_step, steps_per_epoch)
        per_step = self.batches_per_step

        def dataset_fn(context: tf.distribute.InputContext):
            per_pipeline = context.num_replicas_in_sync // context.num_input_pipelines
            return data.dataset(epoch, offset * per_step * per_pipeline, steps_per_epoch * per_step * per_pipeline,
                                context)

        return iter(self.strategy.distribute_datasets_from_function(dataset_fn))

    # ------------------------------------------------------------------------ sampling
    def generate(self, inputs: dict, batch_size: int = 64) -> np.ndarray:
        """Images (N, S, S, 1) in [-1, 1] from ``family.fixed_inputs``-like inputs, in batches, as the
        family presents them (``Family.present``: e.g. post-processed)."""
        stage = self.family.stage(int(self.step.numpy()))
        function = self._generators.get(stage)
        if function is None:
            self.family.current_stage = stage
            function = self._generators[stage] = tf.function(
                lambda x: self.family.generate(self.sampler, x), reduce_retracing=True, autograph=False)
        count = len(next(iter(inputs.values())))
        outputs = np.concatenate([function({k: tf.constant(v[i:i + batch_size]) for k, v in inputs.items()}).numpy()
                                  for i in range(0, count, batch_size)])
        return self.family.present(outputs, inputs)


class _StopSignals:
    """Turn SIGINT/SIGTERM into a flag the loop checks after each step (main thread only)."""

    def __init__(self):
        self.received: str | None = None
        self._previous: dict = {}

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, number, frame) -> None:
        if self.received is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.received = signal.Signals(number).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


def _files_of(run_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")
                  if p.is_file() and p.name != MANIFEST_NAME and not p.relative_to(run_dir).parts[0].startswith("."))


def _check_finite(trainer: Trainer, checkpoints: RunCheckpoints | None, values: dict | None = None) -> None:
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

    ``resume``: continue from the newest checkpoint in ``run_dir/checkpoints`` (a fresh start when
    there is none); refused when a setting that changes the step sequence differs. Without it, a
    ``run_dir`` that already holds checkpoints is an error. ``data``: a ``TrainingData``-like
    source (default: ``train.data`` with the family's streams); ``backbone``: a feature backbone
    for the metric (default: ``train.metric.backbone``). Raises ``TrainingError`` on a non-finite
    loss and ``Interrupted`` (after saving) on SIGINT/SIGTERM.
    """
    tcfg = config.train
    run_dir = Path(run_dir)
    if tcfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    family = make_family(config.model, tcfg)
    if data is None:
        if not tcfg.data.manifest:
            raise ConfigError("train.data.manifest: name the prepared data (a `mammogan prepare` output folder)")
        data = TrainingData(tcfg.data.manifest, tcfg.data.split, family.streams(), tcfg.batch_size, tcfg.seed,
                            tcfg.data.cache)
    family.check_data(data)
    saved_config = run_dir / CONFIG_FILE
    if resume and saved_config.is_file():
        check_resume(saved_config, config)
    trainer = Trainer(family, tcfg, strategy)
    chief = is_chief(trainer.strategy)
    checkpoints = RunCheckpoints(run_dir, trainer.state, keep=tcfg.keep, chief=chief,
                                 worker=worker_id(trainer.strategy))
    if checkpoints.latest is not None and not resume:
        raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or --out to start another")
    start = (checkpoints.restore_latest() if resume else None) or 0
    per_epoch = schedules.steps_per_epoch(data.num_examples, tcfg.batch_size, trainer.batches_per_step)
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
        metric = TrainingMetric(tcfg.metric, data, backbone, chief=chief, progress=progress and chief)
    grid_inputs = family.fixed_inputs(trainer.networks, tcfg.grid_size ** 2, tcfg.seed, data)
    metric_inputs = None
    best = read_best(run_dir)

    def evaluate(step: int) -> None:
        nonlocal best, metric_inputs
        _check_finite(trainer, checkpoints)
        if metric_inputs is None:
            metric_inputs = family.fixed_inputs(trainer.networks, tcfg.metric.n_samples, tcfg.metric.seed, data)
        value = metric.value(trainer.generate(metric_inputs, tcfg.metric.batch_size)) if chief else 0.0
        value = broadcast(trainer.strategy, value)
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
    iterator = trainer.iterator(data, start, per_epoch) if start < total else None
    try:
        with _StopSignals() as stop:
            while step < total:
                epoch = step // per_epoch
                scheduled = trainer.set_schedules(step, epoch)
                stats = trainer.train_step(iterator, step)
                step += 1
                bar.update(1)
                if step % tcfg.log_every == 0 or step == total:
                    values = {k: float(v) for k, v in stats.items()}
                    _check_finite(trainer, checkpoints, values)
                    now = time.perf_counter()
                    images = (step - last_log) * tcfg.batch_size * trainer.batches_per_step / max(now - last_time, 1e-9)
                    last_log, last_time = step, now
                    extra = {"epoch": epoch, "images_per_second": images, **scheduled}
                    if trainer.augment is not None:
                        extra["augment_p"] = float(trainer.augment.p.numpy())
                    log.scalars(step, {**values, **extra})
                    shown = {k: f"{v:.3f}" for k, v in values.items() if k.endswith("_loss")}
                    bar.set_postfix(shown, refresh=False)
                if step % tcfg.sample_every == 0 or step == total:
                    _check_finite(trainer, checkpoints)
                    log.images(step, trainer.generate(grid_inputs), tcfg.grid_size)
                if metric is not None and (step % tcfg.metric.every == 0 or step == total):
                    evaluate(step)
                saved = step % tcfg.checkpoint_every == 0 or step == total
                if saved:
                    _check_finite(trainer, checkpoints)
                    checkpoints.save(step)
                if stop.received and step < total:
                    _check_finite(trainer, checkpoints)
                    path = checkpoints.latest if saved else checkpoints.save(step)
                    raise Interrupted(f"{stop.received} at step {step} of {total}: saved {path}; continue with "
                                      f"`mammogan-train EXPERIMENT --out {run_dir} --resume`")
    finally:
        bar.close()
        log.close()
    summary = {"run_dir": str(run_dir), "steps": total, "steps_per_epoch": per_epoch,
               "examples": data.num_examples, "last_checkpoint": checkpoints.latest, "best": best,
               "final": {k: float(v) for k, v in stats.items()}}
    if chief:
        inputs = [input_record(data.path)] if getattr(data, "path", None) is not None else []
        manifest = build_manifest("train", run_dir, config=config.model_dump(mode="json"), inputs=inputs,
                                  counts={"steps": total, "examples": data.num_examples}, files=_files_of(run_dir),
                                  extra={"best": best, "last_checkpoint": Path(checkpoints.latest).name,
                                         "class_names": list(data.class_names), "family": family.name,
                                         "sampler": trainer.sampler_key})
        write_json_atomic(run_dir / MANIFEST_NAME, manifest)
    return summary
