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
from mammogan_tf.manifest import manifest_path

def ensure_training_data(config: ExperimentConfig, progress: bool = True) -> Path:
    """Path of the training data manifest; writes the phantom and prepares it when asked to."""
    data = config.train.data
    if not data.manifest:
        raise ConfigError("train.data.manifest: name the prepared data (a `mammogan prepare` output folder)")
    manifest = manifest_path(data.manifest)
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
    from mammogan_tf.training.backbone_fit import fit_backbone

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
    if config.train.steps is None and config.train.epochs is None and config.train.images is None:
        raise ConfigError(f"{args.experiment}: train.steps, train.epochs or train.images must be given")
    progress = not args.quiet
    manifest = ensure_training_data(config, progress)
    config.train.data.manifest = str(manifest)
    ensure_backbone(config, manifest, progress)
    from mammogan_tf.training.run import train

    run_dir = run_dir_of(config, args.out)
    summary = train(config, run_dir, resume=args.resume, progress=progress)
    best = summary["best"]
    best_text = f"; best {best['metric']} {best['value']:.4g} at step {best['step']}" if best else ""
    print(f"trained {summary['steps']} steps into {run_dir}{best_text}")
    print(json.dumps(summary["final"], sort_keys=True))
    return 0


def register(subparsers) -> None:
    _register_train(subparsers)
    _register_features(subparsers)


def _features_fit(args) -> int:
    from mammogan_tf.training.backbone_fit import fit_backbone

    filters = tuple(int(f) for f in args.filters.split(","))
    result = fit_backbone(args.shards, args.out, epochs=args.epochs, min_steps=args.min_steps,
                          batch_size=args.batch_size,
                          steps_per_epoch=args.steps_per_epoch, learning_rate=args.learning_rate,
                          filters=filters, size=args.size, task=args.task, seed=args.seed,
                          progress=not args.quiet)
    if result["val_accuracy"] is None:
        print("no validation split: accuracy not measured")
    else:
        print(f"validation accuracy {result['val_accuracy']:.3f}, balanced accuracy "
              f"{result['val_balanced_accuracy']:.3f} on {result['val_count']} patches")
    print(f"wrote {args.out} (use --backbone classifier:{args.out}) and {Path(args.out).with_suffix('.json')}")
    return 0


def _register_features(subparsers) -> None:
    """``mammogan features fit``."""
    features = subparsers.add_parser("features", help="feature backbones for evaluation")
    sub = features.add_subparsers(dest="features_command", metavar="COMMAND")
    fit = sub.add_parser("fit", help="train a small CNN on prepared shards as a classifier: backbone",
                         description="Train a small CNN (lesion vs normal tissue, or every class) on the "
                                     "train split of prepared shards; save BACKBONE.keras and BACKBONE.json "
                                     "(validation accuracy).")
    fit.add_argument("--shards", required=True, help="prepared shards (folder or manifest.json)")
    fit.add_argument("--out", required=True, help="BACKBONE.keras")
    fit.add_argument("--task", choices=("lesion", "classes"), default="lesion",
                     help="lesion: any lesion vs normal (default); classes: every class")
    fit.add_argument("--epochs", type=int, default=15)
    fit.add_argument("--min-steps", type=int, default=300,
                     help="train at least this many steps (more epochs on small data; default 300)")
    fit.add_argument("--steps-per-epoch", type=int, help="default: one pass over the train split")
    fit.add_argument("--batch-size", type=int, default=64)
    fit.add_argument("--learning-rate", type=float, default=1e-3)
    fit.add_argument("--filters", default="16,32,64", help="conv widths, comma-separated (default: 16,32,64)")
    fit.add_argument("--size", type=int, help="train at this input side (default: the shards' patch size, at most 64)")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--quiet", action="store_true")
    fit.set_defaults(func=_features_fit)
    features.set_defaults(func=lambda args: features.print_help() or 2)


def _register_train(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a GAN from an experiment YAML (= mammogan-train)")
    parser.add_argument("experiment", help="experiment YAML (model: and train: sections)")
    parser.add_argument("--resume", action="store_true", help="continue the run in the output folder")
    parser.add_argument("--out", help="run folder (default: <output_dir>/<name>)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_override_argument(parser)
    parser.set_defaults(func=_train)
