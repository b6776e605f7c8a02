"""Model cards: ``model_card.json`` and ``MODEL_CARD.md`` of an exported generator.

The card has the fields of medigan's model metadata (``execution``, ``selection`` with
``performance``, ``description``) that apply to a lesion-patch generator, plus ``training``,
``training_data`` and ``intended_use``. Every value comes from a file the pipeline wrote:

* the run's ``manifest.json`` (config, steps, examples, class names, sampler, dates),
  ``best/best.json`` and ``metrics.jsonl`` (the in-training metric at the exported step),
  TensorBoard event times (training wall time);
* the ``prepare`` manifest the run names (data set format, manifest sha256, patient and patch
  counts per split; never a patient identifier), when it is still at its recorded path;
* an ``evaluate`` output's ``metrics.json`` (``--evaluation``) and a ``vtt score --out`` JSON (``--vtt``);
* ``CITATIONS`` / ``LICENCES``: which paper the preset follows and the licence, looked up by
  preset name (its prefix, e.g. ``fridadar2018``) and else by model family.

A field without data is ``NOT_MEASURED``, never a guess.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

from mammogan_tf import __version__
from mammogan_tf.errors import InputError
from mammogan_tf.manifest import input_record, read_manifest

NOT_MEASURED = "not measured"
CITATIONS = {
    "alyafi2019": "Alyafi B, Diaz O, Marti R. DCGANs for realistic breast mass augmentation in X-ray mammography. "
                  "Proc. SPIE Medical Imaging 2020: Computer-Aided Diagnosis, 11314:1131420. doi:10.1117/12.2543506",
    "fridadar2018": "Frid-Adar M, Diamant I, Klang E, Amitai M, Goldberger J, Greenspan H. GAN-based synthetic "
                    "medical image augmentation for increased CNN performance in liver lesion classification. "
                    "Neurocomputing 321:321-331, 2018. doi:10.1016/j.neucom.2018.09.013",
    "dcgan": "Radford A, Metz L, Chintala S. Unsupervised representation learning with deep convolutional "
             "generative adversarial networks. ICLR 2016. arXiv:1511.06434",
    "acgan": "Odena A, Olah C, Shlens J. Conditional image synthesis with auxiliary classifier GANs. "
             "ICML 2017. arXiv:1610.09585",
}
"""Preset-name prefix or model family -> the paper the preset follows."""
LICENCES = {"default": "Apache-2.0 (mammogan_tf); the weights also carry the terms of the training data's licence"}
"""Preset-name prefix or model family -> licence of the exported model ("default" otherwise)."""
DATASETS = {"mias": ("mini-MIAS", ["MMG", "mammography", "digitised film"], "public"),
            "cbis-ddsm": ("CBIS-DDSM", ["MMG", "mammography", "digitised film"], "public"),
            "vindr": ("VinDr-Mammo", ["MMG", "mammography", "full-field digital"], "public"),
            "inbreast": ("INbreast", ["MMG", "mammography", "full-field digital"], "public"),
            "optimam": ("OPTIMAM (OMI-DB)", ["MMG", "mammography", "full-field digital"], "restricted")}
"""Annotation format of the prepare manifest -> data set name, modality, access."""
INTENDED_USE = ("Research: data augmentation and simulation of lesion patches for training and testing "
                "computer-aided detection/diagnosis models. Not a medical device; not for diagnosis.")


def lookup(table: dict, preset: str | None, family: str, default=NOT_MEASURED):
    """``table[prefix]`` for the longest key that ``preset`` starts with, else ``table[family]``,
    else ``table["default"]``, else ``default``."""
    keys = sorted((k for k in table if preset and preset.startswith(k)), key=len, reverse=True)
    if keys:
        return table[keys[0]]
    return table.get(family, table.get("default", default))


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _metric_at(run_dir: Path, step: int) -> dict:
    """The ``kind: metric`` record of ``metrics.jsonl`` at ``step`` ({} when none)."""
    path = run_dir / "metrics.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    records = [json.loads(line) for line in lines if line.strip()]
    return next((r for r in records if r.get("kind") == "metric" and r.get("step") == step), {})


def _training_seconds(run_dir: Path) -> float | str:
    """Wall time between the first and last TensorBoard event of the run."""
    import tensorflow as tf

    times = []
    for events in sorted((run_dir / "tensorboard").glob("events.out.tfevents.*")):
        try:
            records = (tf.compat.v1.Event.FromString(raw.numpy()) for raw in tf.data.TFRecordDataset(str(events)))
            times += [event.wall_time for event in records if event.HasField("summary")]
        except Exception:  # noqa: BLE001 - a truncated event file only loses the time
            continue
    return round(max(times) - min(times), 1) if len(times) > 1 else NOT_MEASURED


def _training_data(run_manifest: dict) -> dict:
    inputs = run_manifest.get("inputs") or []
    record = inputs[0] if inputs else None
    data = {"manifest_sha256": record["sha256"] if record else NOT_MEASURED,
            "lesion_types": list(run_manifest.get("class_names") or []) or NOT_MEASURED}
    try:
        prepare = read_manifest(record["path"], stage="prepare") if record else None
    except InputError:
        prepare = None
    if prepare is None:
        return {**data, "dataset": NOT_MEASURED, "note": "the prepare manifest is not at its recorded path"}
    fmt = prepare.get("annotation_format") or (prepare.get("config") or {}).get("format")
    name, modality, access = DATASETS.get(fmt, (NOT_MEASURED, NOT_MEASURED, NOT_MEASURED))
    patients: dict = {}
    for split in (prepare.get("patients") or {}).values():
        patients[split] = patients.get(split, 0) + 1
    config = prepare.get("config") or {}
    tables = [Path(r["path"]) for r in prepare.get("inputs") or [] if r.get("path")]
    return {**data, "dataset": name, "annotation_format": fmt or NOT_MEASURED,
            "annotation_table": f"{tables[0].parent.name}/{tables[0].name}" if tables else NOT_MEASURED, "modality": modality,
            "dataset_type": access, "patch_size": prepare.get("patch_size", NOT_MEASURED),
            "patches_per_split": prepare.get("counts") or NOT_MEASURED,
            "patients_per_split": patients or NOT_MEASURED,
            "images": (prepare.get("summary") or {}).get("images", NOT_MEASURED),
            "vendors": config.get("manufacturers") or NOT_MEASURED,
            "processed_only": config.get("processed_only", NOT_MEASURED)}


def _evaluation(folder) -> dict:
    keys = ("FID", "KID", "FRD", "precision", "recall", "density", "coverage", "memorisation")
    if folder is None:
        return {k: NOT_MEASURED for k in keys}
    metrics = _json(Path(folder) / "metrics.json")
    if metrics is None:
        raise InputError(f"{Path(folder) / 'metrics.json'}: no readable evaluation (an `evaluate` output folder)")
    memo = metrics.get("memorisation") or {}
    backbone = metrics.get("backbone") or {}
    named = {"backbone": backbone.get("spec"),
             "backbone_weights_sha256": (backbone.get("identity") or {}).get("weights_sha256"),
             "n_real": metrics["counts"]["real_lesion"], "n_synthetic": metrics["counts"]["synthetic"]}
    value = (lambda v: NOT_MEASURED if v is None else v)
    return {"FID": {"value": value(metrics.get("fid")), **named},
            "KID": {"mean": value(metrics["kid"]["mean"]), "std": metrics["kid"]["std"], **named},
            "FRD": ({"value": metrics["frd"], **{k: v for k, v in (metrics.get("frd_settings") or {}).items()
                                                  if k in ("version", "features", "bin_width")}}
                    if metrics.get("frd") is not None else NOT_MEASURED),
            **{k: value(metrics.get(k)) for k in ("precision", "recall", "density", "coverage")},
            "memorisation": {"n_flagged": memo.get("n_flagged"), "n_synthetic": memo.get("n_synthetic"),
                             "fraction_flagged": memo.get("fraction_flagged"), "against": memo.get("against")}}


def _turing_test(path) -> dict | str:
    if path is None:
        return NOT_MEASURED
    path = Path(path)
    scores = _json(path / "scores.json" if path.is_dir() else path)
    if scores is None or "observers" not in scores:
        raise InputError(f"{path}: not a `mammogan vtt score --out` JSON")
    return {"n_images": scores["n_images"], "n_synthetic": scores["n_synthetic"],
            "observers": {name: {k: o[k] for k in ("accuracy", "sensitivity", "specificity", "p_vs_chance",
                                                  "n_answered")} for name, o in scores["observers"].items()},
            "kappa": scores.get("kappa", [])}


def card_inputs(evaluation, vtt) -> list[dict]:
    """Input records of the optional report files a card reads."""
    records = [input_record(Path(evaluation) / "metrics.json")] if evaluation else []
    if vtt:
        path = Path(vtt)
        records.append(input_record(path / "scores.json" if path.is_dir() else path))
    return records


def build_model_card(loaded, exported: dict, evaluation=None, vtt=None) -> dict:
    """The card of ``loaded`` (a ``LoadedGenerator`` of a run) as exported (``exported``: files,
    signature, checkpoint asked for); see the module doc for the sources."""
    import keras
    import tensorflow as tf

    manifest, config = loaded.run_manifest, loaded.run_manifest.get("config") or {}
    model, train = config.get("model") or {}, config.get("train") or {}
    preset, family = config.get("name"), loaded.model_config.family
    size, channels = loaded.model_config.image_size, getattr(loaded.model_config, "channels", 1)
    contextual = family == "contextual"
    data = _training_data(manifest)
    best = _json(loaded.run_dir / "best" / "best.json")
    metric = _metric_at(loaded.run_dir, loaded.step)
    metric_name = (train.get("metric") or {}).get("name")
    conditional = bool(loaded.num_classes)
    performance = {"SSIM": NOT_MEASURED, "MSE": NOT_MEASURED, "NSME": NOT_MEASURED, "PSNR": NOT_MEASURED,
                   "IS": NOT_MEASURED, **_evaluation(evaluation),
                   "in_training_metric": ({"name": metric_name, "value": metric[metric_name], "step": loaded.step,
                                           "backbone": (train.get("metric") or {}).get("backbone")}
                                          if metric_name in metric else NOT_MEASURED),
                   "turing_test": _turing_test(vtt),
                   "downstream_task": NOT_MEASURED}
    created = manifest.get("created", NOT_MEASURED)
    return {
        "card_version": 1,
        "model_id": f"{preset or family}-{loaded.sha256[:12]}",
        "execution": {"package_name": "mammogan_tf", "package_version": __version__,
                      "model_name": exported["files"]["keras"], "extension": ".keras",
                      "saved_model": exported["files"]["saved_model"],
                      "onnx": exported["files"]["onnx"] or "not exported",
                      "image_size": [size, size],
                      "dependencies": [f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"],
                      "generate_method": {"command": "mammogan synthesize --model EXPORT_DIR "
                                                     + ("--from PREPARE_DIR_OR_PNG_FOLDER" if contextual else "--n N")
                                                     + " --out DIR",
                                          "signature": exported["signature"]}},
        "selection": {
            "performance": performance,
            "use_cases": ["classification", "detection", "data augmentation"],
            "organ": ["breast"] if data.get("modality", NOT_MEASURED) != NOT_MEASURED else NOT_MEASURED,
            "modality": data.get("modality", NOT_MEASURED), "vendors": data.get("vendors", NOT_MEASURED),
            "centres": NOT_MEASURED,
            "function": (["image to image", f"lesion {loaded.model_config.mode} in real tissue (the SavedModel "
                          "gives the raw lesion; synthesize applies Wu et al.'s post-processing)"] if contextual
                         else ["noise to image", "class-conditional generation" if conditional
                               else "unconditional generation"]) + ["data augmentation"],
            "condition": loaded.class_names if conditional else [],
            "dataset": data["dataset"], "augmentations": (train.get("augment") or {}).get("ops") or [],
            "generates": loaded.class_names, "height": size, "width": size, "depth": None,
            "type": family.upper(), "license": lookup(LICENCES, preset, family),
            "dataset_type": data.get("dataset_type", NOT_MEASURED), "privacy_preservation": NOT_MEASURED,
            "year": created[:4] if created != NOT_MEASURED else NOT_MEASURED},
        "description": {"title": f"{family.upper()} generator of {', '.join(loaded.class_names)} patches, "
                                 f"{size} x {size} px ({preset or 'no preset'})",
                        "trained_date": created,
                        "provided_date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                        "provided_after_step": loaded.step, "version": __version__,
                        "publication": lookup(CITATIONS, preset, family)},
        "training": {"preset": preset or NOT_MEASURED, "family": family, "architecture": model,
                     "steps": (manifest.get("counts") or {}).get("steps", NOT_MEASURED),
                     "examples": (manifest.get("counts") or {}).get("examples", NOT_MEASURED),
                     "batch_size": train.get("batch_size", NOT_MEASURED), "loss": train.get("loss", NOT_MEASURED),
                     "time_seconds": _training_seconds(loaded.run_dir),
                     "checkpoint": {"asked": exported["checkpoint"], "name": Path(loaded.checkpoint).name,
                                    "step": loaded.step, "sha256": loaded.sha256, "generator": loaded.sampler},
                     "best": best or NOT_MEASURED},
        "training_data": data,
        "image": {"channels": channels, "height": size, "width": size, "value_range": [0.0, 1.0],
                  "bit_depth": "float32 from the SavedModel/ONNX; 16-bit PNG or DICOM from mammogan synthesize"},
        "intended_use": INTENDED_USE,
        "limitations": [f"trained on {data.get('images', NOT_MEASURED)} images (data set: {data['dataset']}); "
                        "generalisation to other scanners and populations: not measured",
                        "synthetic images carry provenance (PNG text, DICOM SYNTHETIC flags); keep it"],
    }


def _value(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return "; ".join(f"{k} {_value(x)}" for k, x in v.items() if x is not None)
    if isinstance(v, list):
        return ", ".join(_value(x) for x in v) if v else "none"
    return str(v)


def render_model_card(card: dict) -> str:
    """``MODEL_CARD.md`` from a card dict (every value from the dict, "not measured" kept)."""
    sel, desc, perf, tr = card["selection"], card["description"], card["selection"]["performance"], card["training"]
    data = card["training_data"]
    lines = [f"# {desc['title']}", "", f"Model id `{card['model_id']}`, mammogan_tf {desc['version']}, "
             f"trained {desc['trained_date']}, exported {desc['provided_date']}.", "",
             "## Use", "", card["intended_use"], "", *[f"- {x}" for x in card["limitations"]], "",
             "## Model", "",
             f"- type: {sel['type']} ({sel['function'][1]}); generates: {_value(sel['generates'])}",
             f"- image: {card['image']['height']} x {card['image']['width']} px, {card['image']['channels']} channel(s), "
             f"values in [0, 1]; {card['image']['bit_depth']}",
             f"- preset: {tr['preset']}; paper: {desc['publication']}",
             f"- licence: {sel['license']}",
             f"- checkpoint: {tr['checkpoint']['name']} (step {tr['checkpoint']['step']}, {tr['checkpoint']['generator']}), "
             f"sha256 `{tr['checkpoint']['sha256']}`",
             f"- training: {_value(tr['steps'])} steps, batch {_value(tr['batch_size'])}, {_value(tr['examples'])} "
             f"examples, loss {_value(tr['loss'])}, wall time {_value(tr['time_seconds'])} s",
             f"- files: `{card['execution']['model_name']}`, `{card['execution']['saved_model']}` "
             f"(signature `{card['execution']['generate_method']['signature']['name']}`), "
             f"ONNX: {card['execution']['onnx']}", "",
             "## Training data", "",
             f"- data set: {data['dataset']} (annotations `{data.get('annotation_table', NOT_MEASURED)}`, format "
             f"{data.get('annotation_format', NOT_MEASURED)}; modality: {_value(data.get('modality', NOT_MEASURED))}; "
             f"access: {data.get('dataset_type', NOT_MEASURED)})",
             f"- prepare manifest sha256 `{data['manifest_sha256']}`",
             f"- images: {_value(data.get('images', NOT_MEASURED))}; patients per split: "
             f"{_value(data.get('patients_per_split', NOT_MEASURED))}",
             f"- patches per split: {_value(data.get('patches_per_split', NOT_MEASURED))}",
             f"- lesion types trained on: {_value(data['lesion_types'])}; vendors: {_value(sel['vendors'])}", "",
             "## Performance", "", "| metric | value |", "|---|---|"]
    for name in ("in_training_metric", "FID", "KID", "FRD", "precision", "recall", "density", "coverage",
                 "memorisation", "SSIM", "PSNR", "IS", "turing_test", "downstream_task"):
        lines.append(f"| {name} | {_value(perf[name])} |")
    return "\n".join(lines) + "\n"
