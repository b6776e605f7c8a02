"""``train(config, run_dir)``: the loop around ``training.loop.Trainer``'s step: one long-lived
input pipeline, host-side schedules, logs, sample grids, the metric and ``best/``, checkpoints,
resume, interruption and the run manifest (see ``training.loop`` for the step and determinism)."""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import tensorflow as tf
from tqdm.auto import tqdm

from mammogan_tf.config import ExperimentConfig, dump_config
from mammogan_tf.errors import ConfigError, TrainingError
from mammogan_tf.manifest import MANIFEST_NAME, build_manifest, input_record, write_json_atomic
from mammogan_tf.training.checkpoints import RunCheckpoints, read_best
from mammogan_tf.training.data import TrainingData
from mammogan_tf.training.families import make_family
from mammogan_tf.training.interrupt import Interrupted, StopSignals
from mammogan_tf.training.loop import CONFIG_FILE, Trainer
from mammogan_tf.training.metric import TrainingMetric, broadcast
from mammogan_tf.training.resume import check_resume
from mammogan_tf.training.run_log import CURVE_FILE, RunLog, plot_metric_curve
from mammogan_tf.training.strategy import is_chief, worker_id


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
    plan = trainer.data_plan(data.num_examples)
    total = plan.total_steps(tcfg.steps, tcfg.epochs, tcfg.images)
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
        images = trainer.generate(metric_inputs, tcfg.metric.batch_size, written=True) if chief else []
        value = broadcast(trainer.strategy, metric.value(images) if chief else 0.0)
        scored = {tcfg.metric.name: value} if math.isfinite(value) else {}  # inf: too few images written
        log.scalars(step, {**scored, f"{tcfg.metric.name}_images": len(images)}, kind="metric")
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
    iterator, segment = None, None
    try:
        with StopSignals() as stop:
            while step < total:
                if trainer.batches.index(step) != segment:  # a new batch size: its own pipeline
                    segment = trainer.batches.index(step)
                    iterator = trainer.iterator(data, step)
                epoch = plan.epoch(step)
                scheduled = trainer.set_schedules(step, epoch)
                stats = trainer.train_step(iterator, step)
                step += 1
                bar.update(1)
                if step % tcfg.log_every == 0 or step == total:
                    values = {k: float(v) for k, v in stats.items()}
                    _check_finite(trainer, checkpoints, values)
                    now = time.perf_counter()
                    seen = trainer.batches.images(step)
                    images = ((seen - trainer.batches.images(last_log)) * trainer.batches_per_step
                              / max(now - last_time, 1e-9))
                    last_log, last_time = step, now
                    extra = {"epoch": epoch, "images_per_second": images, "images_seen": seen,
                             "batch_size": trainer.batches.batch_size(step - 1), **scheduled}
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
    summary = {"run_dir": str(run_dir), "steps": total, "steps_per_epoch": plan.position(max(total - 1, 0))[2],
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
