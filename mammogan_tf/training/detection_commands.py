"""``mammogan detect train EXPERIMENT.yaml`` (preparing ``data.manifest`` from the ``prepare``
section first when it does not exist) and ``mammogan detect evaluate``: the YOLO-style
detector on whole-image shards (``prepare`` with ``patches.mode: whole``), real only or real +
synthetic (synthetic shards of whole images with boxes, e.g. from the cPGGAN).

``train`` writes ``<output_dir>/<name>/`` with ``best.keras`` (highest validation sensitivity at
``train.select_fps`` FPs/image), ``last.keras``, ``history.json``, ``tensorboard/``, and
``metrics.json``: sensitivity, FPs per image, AP, mAP and the FROC curve at IoU 0.5 and 0.25 on
the test split, at the detection threshold ``train.score_threshold`` (Han: 0.1 %), and
``froc.png`` (FROC curves at both IoU thresholds), and ``manifest.json`` (stage "detect": the
config, the real and synthetic data manifests as inputs, the training images per source, the
sha256 of every file).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mammogan_tf.commands.config_commands import add_override_argument
from mammogan_tf.config import load_config
from mammogan_tf.data.whole import DetectionSet, read_detection_set
from mammogan_tf.training.detection_config import DetectionExperimentConfig


def _merge(sets: list[DetectionSet]) -> DetectionSet:
    return DetectionSet(np.concatenate([s.images for s in sets]), [b for s in sets for b in s.boxes],
                        [c for s in sets for c in s.classes], [i for s in sets for i in s.ids])


def run_detection_experiment(config: DetectionExperimentConfig, out_dir=None, verbose: int = 0) -> dict:
    """Train on train (+ synthetic), select on val, report on test; returns the test metrics."""
    manifest = Path(config.data.manifest)
    if not (manifest / "manifest.json").is_file() and config.prepare.images:
        from mammogan_tf.data.prepare import run_prepare

        print(f"no data at {manifest}: preparing it from the experiment's prepare section")
        run_prepare(config.prepare, manifest, progress=verbose > 0)
    names = config.model.class_names
    real = read_detection_set(config.data.manifest, "train", names)
    train = _merge([real] + [read_detection_set(path, "train", names) for path in config.data.synthetic])
    val = read_detection_set(config.data.manifest, config.data.val_split, names)
    test = read_detection_set(config.data.manifest, config.data.test_split, names)
    from mammogan_tf.training.detection import train_detector

    out = Path(out_dir or Path(config.output_dir) / config.name)
    train_detector(config.model, config.train, train, val, out, verbose=verbose)
    import keras

    from mammogan_tf.training.detection import evaluate_detector

    best = keras.models.load_model(out / "best.keras")
    t = config.train
    metrics = evaluate_detector(best, test, score_threshold=t.score_threshold, nms_iou=t.nms_iou,
                                max_detections=t.max_detections, num_classes=config.model.num_classes)
    metrics["train_images"] = {"real": len(real), "synthetic": len(train) - len(real)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    from mammogan_tf.evaluation.plots import plot_froc

    plot_froc({f"IoU {key[4:]}": (m["froc"]["fps_per_image"], m["froc"]["sensitivity"])
               for key, m in metrics.items() if key.startswith("iou_")}, out / "froc.png")
    _write_manifest(config, out, metrics["train_images"])
    return metrics


def _write_manifest(config: DetectionExperimentConfig, out: Path, counts: dict) -> None:
    from mammogan_tf.manifest import MANIFEST_NAME, build_manifest, input_record, write_json_atomic

    inputs = [input_record(Path(path) / MANIFEST_NAME) for path in [config.data.manifest, *config.data.synthetic]]
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)
    manifest = build_manifest("detect", out, config=config.model_dump(mode="json"), inputs=inputs,
                              counts={"train_images": counts}, files=files)
    write_json_atomic(out / MANIFEST_NAME, manifest)


def train_command(args) -> int:
    """``mammogan detect train`` (and ``mammogan-train`` on a ``family: detector`` experiment)."""
    config = load_config(args.experiment, args.overrides, model=DetectionExperimentConfig)
    metrics = run_detection_experiment(config, args.out, verbose=0 if args.quiet else 2)
    for key in ("iou_0.5", "iou_0.25"):
        m = metrics[key]
        print(f"{key}: sensitivity {m['sensitivity']:.3f}, FPs/image {m['fps_per_image']:.2f}, "
              f"mAP {m['map']:.3f}")
    return 0


def _evaluate(args) -> int:
    import keras

    from mammogan_tf.training.detection import evaluate_detector

    model = keras.models.load_model(args.model)
    data = read_detection_set(args.data, args.split, args.classes)
    metrics = evaluate_detector(model, data, score_threshold=args.score_threshold,
                                num_classes=model.num_classes)
    Path(args.out).write_text(json.dumps(metrics, indent=2))
    print(json.dumps({k: {n: v for n, v in m.items() if n != "froc"} for k, m in metrics.items()}, indent=2))
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("detect", help="train or evaluate the YOLO-style lesion detector")
    commands = parser.add_subparsers(dest="detect_command", metavar="ACTION")
    train = commands.add_parser("train", help="train on whole-image shards from an experiment YAML")
    train.add_argument("experiment")
    train.add_argument("--out", help="run folder (default: <output_dir>/<name>)")
    train.add_argument("--quiet", action="store_true")
    add_override_argument(train)
    train.set_defaults(func=train_command)
    evaluate = commands.add_parser("evaluate", help="sensitivity, FPs/image, mAP, FROC of a saved detector")
    evaluate.add_argument("--model", required=True, help="a detector .keras file (e.g. RUN/best.keras)")
    evaluate.add_argument("--data", required=True, help="whole-image shards (prepare output)")
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--score-threshold", type=float, default=0.001)
    evaluate.add_argument("--classes", nargs="+", default=["lesion"],
                          help="lesion types of the model's classes in order (default: one class)")
    evaluate.add_argument("--out", required=True, help="metrics JSON file")
    evaluate.set_defaults(func=_evaluate)
