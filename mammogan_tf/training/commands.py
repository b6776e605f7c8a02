"""``mammogan train EXPERIMENT.yaml [--resume] [--set k=v ...] [--out RUN_DIR]`` (= ``mammogan-train``).

Before training, two conveniences that the quickstart relies on:
- ``train.data.prepare_phantom_if_missing``: when ``train.data.manifest`` does not exist, write
  the built-in phantom beside it and run the experiment's ``prepare`` section on it;
- ``train.metric.fit_backbone_if_missing``: when the metric backbone is ``classifier:PATH`` and
  PATH does not exist, fit it on the training data (``mammogan features fit``).
"""
from __future__ import annotations

import json
from pathlib import Path

from mammogan_tf.commands.config_commands import add_override_argument
from mammogan_tf.config import ExperimentConfig, load_experiment
from mammogan_tf.errors import ConfigError, InputError
from mammogan_tf.manifest import MANIFEST_NAME

def _manifest_path(manifest: str) -> Path:
    path = Path(manifest)
    return path if path.suffix == ".json" else path / MANIFEST_NAME


def ensure_training_data(config: ExperimentConfig, progress: bool = True) -> Path:
    """Path of the training data manifest; writes the phantom and prepares it when asked to."""
    data = config.train.data
    if not data.manifest:
        raise ConfigError("train.data.manifest: name the prepared data (a `mammogan prepare` output folder)")
    manifest = _manifest_path(data.manifest)
    if manifest.is_file():
        return manifest
    if not data.prepare_phantom_if_missing:
        raise InputError(f"{manifest}: no prepared data here; run `mammogan prepare --out {manifest.parent} ...` "
                         "first (or set train.data.prepare_phantom_if_missing for the built-in phantom)")
    from mammogan_tf.data.phantom import write_phantom
    from mammogan_tf.data.prepare import run_prepare

    out_dir = manifest.parent
    phantom_dir = out_dir.with_name(out_dir.name + "-phantom")
    print(f"no data at {out_dir}: writing {data.phantom_images} phantom images to {phantom_dir} and preparing them")
    table = write_phantom(phantom_dir, n_images=data.phantom_images, seed=config.prepare.seed)
    prepare = config.prepare.model_copy(update={"images": str(phantom_dir), "annotations": str(table),
                                                "format": "table"})
    run_prepare(prepare, out_dir, progress=progress)
    return manifest


def ensure_backbone(config: ExperimentConfig, manifest: Path, progress: bool = True) -> None:
    """Fit the metric's ``classifier:PATH`` backbone on the training data when it is missing
    and ``train.metric.fit_backbone_if_missing`` is set."""
    metric = config.train.metric
    if metric.name in ("none", "frd") or not metric.backbone.startswith("classifier:"):
        return
    path = Path(metric.backbone[len("classifier:"):].split(":")[0])
    if path.is_file():
        return
    if not metric.fit_backbone_if_missing:
        raise InputError(f"{path}: metric backbone not found; make it with `mammogan features fit` "
                         "or set train.metric.fit_backbone_if_missing")
    from mammogan_tf.evaluation.features import fit_backbone

    print(f"fitting the metric backbone {path} on {manifest.parent}")
    result = fit_backbone(manifest, path, seed=config.train.seed, progress=progress)
    if result.get("val_balanced_accuracy") is not None:
        print(f"backbone balanced accuracy on val: {result['val_balanced_accuracy']:.3f}")


def run_dir_of(config: ExperimentConfig, out: str | None) -> Path:
    """``--out`` or ``<output_dir>/<name>``."""
    return Path(out) if out else Path(config.output_dir) / config.name


def _train_classifier(args) -> int:
    """``model.family: classifier``: the downstream classifier loop (``training.classifier``)."""
    from mammogan_tf.training.classifier import train_classifier

    config = load_experiment(args.experiment, args.overrides)
    run_dir = run_dir_of(config, args.out)
    summary = train_classifier(config, run_dir, resume=args.resume, progress=not args.quiet)
    print(f"trained the classifier into {run_dir}")
    print(json.dumps(summary, sort_keys=True, default=str))
    return 0


def _train_detector(args) -> int:
    """``model.family: detector``: the YOLO-style detector (= ``mammogan detect train``)."""
    from mammogan_tf.training.detection_commands import train_command

    if args.resume:
        raise ConfigError("--resume: the detector trainer keeps best.keras and last.keras but does not resume "
                          "a killed run; start it again")
    return train_command(args)


DOWNSTREAM = {"classifier": _train_classifier, "detector": _train_detector}
"""Families trained by their own loops rather than the GAN engine."""


def _train(args) -> int:
    config = load_experiment(args.experiment, args.overrides)
    if config.model.family in DOWNSTREAM:
        return DOWNSTREAM[config.model.family](args)
    if config.train.steps is None and config.train.epochs is None:
        raise ConfigError(f"{args.experiment}: train.steps or train.epochs must be given")
    progress = not args.quiet
    manifest = ensure_training_data(config, progress)
    config.train.data.manifest = str(manifest)
    ensure_backbone(config, manifest, progress)
    from mammogan_tf.training.loop import train

    run_dir = run_dir_of(config, args.out)
    summary = train(config, run_dir, resume=args.resume, progress=progress)
    best = summary["best"]
    best_text = f"; best {best['metric']} {best['value']:.4g} at step {best['step']}" if best else ""
    print(f"trained {summary['steps']} steps into {run_dir}{best_text}")
    print(json.dumps(summary["final"], sort_keys=True))
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a GAN from an experiment YAML (= mammogan-train)")
    parser.add_argument("experiment", help="experiment YAML (model: and train: sections)")
    parser.add_argument("--resume", action="store_true", help="continue the run in the output folder")
    parser.add_argument("--out", help="run folder (default: <output_dir>/<name>)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_override_argument(parser)
    parser.set_defaults(func=_train)
