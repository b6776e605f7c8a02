"""Training of a downstream patch classifier on real (+ synthetic) patches.

``train_classifier(config, run_dir, resume=False)`` with a :class:`ClassifierExperimentConfig`
(``model.family: classifier``) writes into ``run_dir``::

    checkpoints/        model + optimizer + step + best AUC (every ``checkpoint_every`` samples)
    best.keras          the model with the best validation AUC (evaluated every ``validate_every``)
    scores/val.npz, scores/test.npz   labels, logits, probabilities, scores, patients (best model)
    metrics.json        the test report (``classifier_metrics.run_report``)
    metrics.jsonl, tensorboard/       ``training.run_log.RunLog`` with ``step`` = samples seen: kind
                        ``train`` (loss), ``mix`` (scheduled_share, realised_share), ``val`` (auc)
    manifest.json       stage "classifier": inputs (real and synthetic manifests), patients per split

The length of a run is counted in samples (Wu et al.: 500K, validation every 5000). The
training stream is ``training.mixing`` (class balance and the synthetic share schedule, a
function of the sample count). Resume restores the checkpoint and replays the input stream up
to the checkpoint's sample (decoding only), so a resumed run matches an uninterrupted one.
Before training, ``studies.leakage`` refuses synthetic data whose GAN saw a val/test patient.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import tensorflow as tf
from pydantic import Field, model_validator
from tqdm.auto import tqdm

from mammogan_tf.errors import ConfigError, TrainingError
from mammogan_tf.manifest import MANIFEST_NAME, build_manifest, input_record, manifest_path, write_json_atomic
from mammogan_tf.models.classifiers import ClassifierModelConfig, build_classifier
from mammogan_tf.models.weights import NamedState, optimizer_paths, variable_paths
from mammogan_tf.sections import Section
from mammogan_tf.training.classifier_augment import AUGMENTATIONS
from mammogan_tf.training.classifier_data import TaskData, collect
from mammogan_tf.training.classifier_metrics import run_report, scores_arrays, validation_auc
from mammogan_tf.training.mixing import MixingConfig, scheduled_share
from mammogan_tf.training.run_log import RunLog
from mammogan_tf.training.checkpoints import RunCheckpoints
from mammogan_tf.training.strategy import is_chief, make_strategy, worker_id


class OptimizerConfig(Section):
    """Adam (Wu et al.: 1e-5, beta 0.9 / 0.999) or SGD (Frid-Adar et al.: 1e-3)."""

    name: Literal["adam", "sgd"] = "adam"
    learning_rate: float = Field(1e-4, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1, description="sgd")
    beta_1: float = Field(0.9, ge=0, lt=1)
    beta_2: float = Field(0.999, ge=0, lt=1)
    epsilon: float = Field(1e-7, gt=0)


class ClassifierDataConfig(Section):
    """Real patches: a prepare (or study subset) folder and the split names."""

    manifest: Optional[str] = Field(None, description="prepare output folder or its manifest.json")
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"


class TaskConfig(Section):
    """Classes of the task: name -> lesion types (two classes = binary, class 1 positive)."""

    classes: dict[str, list[str]] = Field(
        default_factory=lambda: {"normal": ["normal"],
                                 "lesion": ["mass", "calcification", "architectural_distortion", "asymmetry"]})
    pathologies: Optional[list[str]] = Field(None, description="keep lesions of these pathologies (e.g. "
                                             "[malignant] for cancer / no cancer); normals always kept")

    @model_validator(mode="after")
    def _two_or_more(self):
        if len(self.classes) < 2:
            raise ValueError("task.classes needs at least two classes")
        return self


class ClassifierTrainConfig(Section):
    """``train:`` of a classifier experiment."""

    data: ClassifierDataConfig = Field(default_factory=ClassifierDataConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    mixing: MixingConfig = Field(default_factory=MixingConfig)
    augment: Literal[AUGMENTATIONS] = Field("none", description="real training patches: none | flips "
                                            "(Alyafi Aug ORG) | classic (Frid-Adar)")
    samples: int = Field(20000, ge=1, description="training length in samples (Wu: 500000)")
    batch_size: int = Field(32, ge=1)
    validate_every: int = Field(5000, ge=1, description="samples between validations (Wu: 5000)")
    checkpoint_every: Optional[int] = Field(None, ge=1, description="samples between checkpoints "
                                            "(default validate_every)")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    strategy: Literal["default", "mirrored", "multi_worker"] = "default"
    threshold: Literal["youden", "f1"] = Field("youden", description="criterion on validation for F1/sens/spec")
    bootstrap: int = Field(200, ge=0, description="bootstrap resamples of the test CIs")
    seed: int = 0


class ClassifierExperimentConfig(Section):
    """An experiment YAML whose ``model.family`` is ``classifier``."""

    name: str = "classifier"
    output_dir: str = "runs"
    model: ClassifierModelConfig = Field(default_factory=ClassifierModelConfig)
    train: ClassifierTrainConfig = Field(default_factory=ClassifierTrainConfig)

    @model_validator(mode="after")
    def _head_matches_task(self):
        n = len(self.train.task.classes)
        if not (self.model.num_classes == n or (self.model.num_classes == 1 and n == 2)):
            raise ValueError(f"model.num_classes {self.model.num_classes} does not fit {n} task classes "
                             "(1 or 2 for a binary task, else the number of classes)")
        return self


def as_config(config) -> ClassifierExperimentConfig:
    """A ``ClassifierExperimentConfig`` from itself, a dict or any pydantic model dumping to one."""
    if isinstance(config, ClassifierExperimentConfig):
        return config
    if hasattr(config, "model_dump"):
        config = config.model_dump(mode="json")
    from mammogan_tf.config import validate_config

    return validate_config(dict(config), ClassifierExperimentConfig, source="classifier config")


def _loss_fn(num_outputs: int):
    if num_outputs == 1:
        return lambda y, logits: tf.nn.sigmoid_cross_entropy_with_logits(tf.cast(y, tf.float32), logits[:, 0])
    return lambda y, logits: tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits)


def _save_model(model, path: Path) -> None:
    tmp = path.with_name(path.stem + ".partial.keras")
    model.save(tmp)
    os.replace(tmp, path)


def train_classifier(config, run_dir: str | os.PathLike, resume: bool = False, progress: bool = True) -> dict:
    """Train, validate, checkpoint and test one classifier (see the module doc); returns the summary."""
    config = as_config(config)
    mcfg, tcfg = config.model, config.train
    if not tcfg.data.manifest:
        raise ConfigError("train.data.manifest: name the real patches (a `mammogan prepare` output folder)")
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    if not resume and ckpt_dir.exists() and any(ckpt_dir.iterdir()):
        raise ConfigError(f"{run_dir}: holds a run already; pass --resume to continue it or choose another --out")
    data = TaskData(tcfg.data.manifest, tcfg.task.classes, mcfg.image_size, tcfg.task.pathologies)
    for split in (tcfg.data.val_split, tcfg.data.test_split):
        if not data.info.get("splits", {}).get(split):
            raise ConfigError(f"{data.path}: no '{split}' split (train.data.val_split / test_split): the best "
                              "model is chosen on validation and reported on test")
    from mammogan_tf.studies.leakage import check_leakage, heldout_patients

    check_leakage(heldout_patients(data.path, (tcfg.data.val_split, tcfg.data.test_split)), tcfg.mixing.synthetic)

    strategy = make_strategy(tcfg.strategy)
    chief = is_chief(strategy)
    batch = tcfg.batch_size
    total = -(-tcfg.samples // batch)
    val_every = max(1, tcfg.validate_every // batch)
    ckpt_every = max(1, (tcfg.checkpoint_every or tcfg.validate_every) // batch)
    tf.keras.utils.set_random_seed(tcfg.seed)
    with strategy.scope():
        model = build_classifier(mcfg, tcfg.seed)
        opt = tcfg.optimizer
        optimizer = (tf.keras.optimizers.Adam(opt.learning_rate, beta_1=opt.beta_1, beta_2=opt.beta_2,
                                              epsilon=opt.epsilon) if opt.name == "adam"
                     else tf.keras.optimizers.SGD(opt.learning_rate, momentum=opt.momentum))
        optimizer.build(model.trainable_variables)
        step = tf.Variable(0, dtype=tf.int64, name="step")
        best = tf.Variable(-1.0, dtype=tf.float64, name="best_val_auc")
    names = variable_paths(model)
    state = NamedState({**{f"model/{k}": v for k, v in names.items()},
                        **{f"optimizer/{k}": v for k, v in optimizer_paths(optimizer, names).items()},
                        "step": step, "best": best})
    checkpoints = RunCheckpoints(run_dir, state, keep=2, chief=chief, worker=worker_id(strategy))
    if resume:
        checkpoints.restore_latest()
    start = int(step.numpy())

    mixed, sources = data.training(tcfg.data.train_split, tcfg.mixing, tcfg.augment, tcfg.seed, 0)
    dataset = mixed.batch(batch, drop_remainder=True).skip(start).prefetch(tf.data.AUTOTUNE)
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    loss_fn = _loss_fn(mcfg.num_classes)
    share_classes = ([list(tcfg.task.classes).index(c) for c in tcfg.mixing.per_class]
                     if tcfg.mixing.per_class is not None else None)

    @tf.autograph.experimental.do_not_convert  # no Python control flow; avoids AutoGraph's closure warnings
    def replica_step(element):
        with tf.GradientTape() as tape:
            logits = model(element["image"], training=True)
            loss = tf.nn.compute_average_loss(loss_fn(element["label"], logits), global_batch_size=batch)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss, tf.reduce_sum(element["synthetic"])

    @tf.function(autograph=False)
    def train_step(it):
        loss, synthetic = strategy.run(replica_step, args=(next(it),))
        return (strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
                strategy.reduce(tf.distribute.ReduceOp.SUM, synthetic, axis=None))

    val_set = data.evaluation(tcfg.data.val_split, batch)
    log = RunLog(run_dir, enabled=chief, resume_step=start * batch if resume else None)
    window = {"loss": 0.0, "synthetic": 0, "steps": 0, "first": start}
    bar = tqdm(total=total, initial=start, unit="step", desc="classifier", disable=not progress)
    try:
        for s in range(start + 1, total + 1):
            loss, synthetic = train_step(iterator)
            loss = float(loss)
            if not np.isfinite(loss):
                raise TrainingError(f"non-finite loss at step {s}; the last checkpoint in {ckpt_dir} is kept")
            window["loss"] += loss
            window["synthetic"] += int(synthetic)
            window["steps"] += 1
            step.assign(s)
            bar.update(1)
            if s % val_every == 0 or s == total:
                samples = np.arange(window["first"] * batch, s * batch)
                loss = window["loss"] / window["steps"]
                log.scalars(s * batch, {"loss": loss}, kind="train")
                log.scalars(s * batch, {"realised_share": window["synthetic"] / samples.size,
                                        "scheduled_share": float(np.mean(scheduled_share(
                                            sources, len(tcfg.task.classes), tcfg.mixing.share, samples,
                                            tcfg.mixing.balance, share_classes)))}, kind="mix")
                val = collect(model, val_set)
                auc = float("nan")
                if val is not None:
                    auc = validation_auc(val["labels"], val["logits"])
                    log.scalars(s * batch, {"auc": auc}, kind="val")
                    if np.isfinite(auc) and auc > float(best.numpy()):
                        best.assign(auc)
                        if chief:
                            _save_model(model, run_dir / "best.keras")
                bar.set_postfix(loss=f"{loss:.3f}", val_auc=f"{auc:.3f}", refresh=False)
                window = {"loss": 0.0, "synthetic": 0, "steps": 0, "first": s}
            if s % ckpt_every == 0 or s == total:
                checkpoints.save(s)
    finally:
        bar.close()
        log.close()
    return _finish(config, data, model, run_dir, chief, total, float(best.numpy()))


def _finish(config: ClassifierExperimentConfig, data: TaskData, model, run_dir: Path, chief: bool,
            total: int, best_auc: float) -> dict:
    """Test the best model (or the last one when there is no validation), write scores,
    metrics.json and the manifest."""
    import keras

    tcfg = config.train
    batch = tcfg.batch_size
    summary = {"run_dir": str(run_dir), "steps": total, "samples": total * batch,
               "best_val_auc": best_auc if best_auc >= 0 else None, "test": {}}
    if not chief:  # other workers: the chief tests and writes (they would race its best.keras)
        return summary
    best_path = run_dir / "best.keras"
    final = keras.saving.load_model(best_path) if best_path.is_file() else model
    if not best_path.is_file():
        _save_model(model, best_path)
    val = collect(final, data.evaluation(tcfg.data.val_split, batch))
    test = collect(final, data.evaluation(tcfg.data.test_split, batch))
    summary["test"] = run_report(val, test, data.class_names, tcfg.threshold, tcfg.bootstrap, tcfg.seed) if test else {}
    (run_dir / "scores").mkdir(exist_ok=True)
    files = ["best.keras", "metrics.json"]
    for name, result in (("val", val), ("test", test)):
        if result is not None:
            np.savez(run_dir / "scores" / f"{name}.npz", **scores_arrays(result))
            files.append(f"scores/{name}.npz")
    write_json_atomic(run_dir / "metrics.json", summary)
    inputs = [input_record(data.path)] + [input_record(manifest_path(p)) for p in tcfg.mixing.synthetic]
    patients: dict[str, list[str]] = {}
    for patient, split in data.info.get("patients", {}).items():
        patients.setdefault(split, []).append(patient)
    manifest = build_manifest("classifier", run_dir, config=config.model_dump(mode="json"), inputs=inputs,
                              counts={"steps": total, "samples": total * batch}, files=files,
                              extra={"class_names": data.class_names, "best_val_auc": summary["best_val_auc"],
                                     "patients": {k: sorted(v) for k, v in patients.items()}})
    write_json_atomic(run_dir / MANIFEST_NAME, manifest)
    return summary
