"""Grid cells of ``kind: detection`` (Han et al. 2019's Table 1): the YOLO-style detector per regime,
real only or real + synthetic whole images, and the table's detection rows and FROC figures.

A cell is a detector experiment (``training.detection_config``): the grid's ``detector`` dict, the
regime's ``set`` overrides, ``data.manifest`` = the cell's whole-image data and, for a regime
with ``synthetic: true``, the cell's synthetic sets of the regime's ``source`` appended to
``data.synthetic``: ``gan`` (default), whole images from the box-conditioned GAN trained on the
cell's training patients; ``contextual``, the cell's training mammograms with contextual-GAN
lesions reinserted (``studies.contextual_source``). A regime may list more there (e.g. a prepared
``synthesize --reinsert`` output). Before training, ``leakage.check_leakage`` refuses a cell whose
synthetic sets have a validation or test patient behind them. ``run_detection_experiment``
writes the cell.

Rows, one per regime (mean and sd over folds; one fold = the prepare split): at IoU 0.5 and 0.25,
sensitivity and FPs per image at the detection threshold ``train.score_threshold`` (Han: 0.1 %),
sensitivity at 1 FP per image (from the FROC), AP and mAP; training images real / synthetic.
Figures: ``froc-iou0.5.png`` and ``froc-iou0.25.png``, one FROC curve per regime (the mean over
folds of the sensitivity at each FP rate).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np

from mammogan_tf.manifest import MANIFEST_NAME, read_manifest

IOUS = ("0.5", "0.25")
FIELDS = ("sensitivity", "fps_per_image", "sens_at_1fp", "average_precision", "map")


def cell_config(grid, regime, data_dir: Path, synthetic: list[str]) -> dict:
    """The detector experiment dict of one cell: base, the regime's overrides, the cell's data."""
    from mammogan_tf.studies.grid import _set_dotted

    config = _set_dotted(copy.deepcopy(grid.detector), regime.set)
    data = config.setdefault("data", {})
    data["manifest"] = str(data_dir)
    data["synthetic"] = list(data.get("synthetic") or []) + (list(synthetic) if regime.synthetic else [])
    config["name"] = regime.name
    config.pop("prepare", None)
    return config


def run_cell(grid, regime, data_dir: Path, synthetic: list[str], cell_dir: Path) -> None:
    """Train and test one cell's detector, or reuse it when it was made with the same config."""
    from mammogan_tf.config import validate_config
    from mammogan_tf.studies.grid import _same
    from mammogan_tf.training.detection_commands import run_detection_experiment
    from mammogan_tf.training.detection_config import DetectionExperimentConfig

    config = validate_config(cell_config(grid, regime, data_dir, synthetic), DetectionExperimentConfig,
                             source=f"{grid.name}: regime {regime.name}")
    if (cell_dir / MANIFEST_NAME).is_file():
        _same(read_manifest(cell_dir)["config"], config.model_dump(mode="json"), cell_dir)
        return
    from mammogan_tf.studies.leakage import check_leakage, heldout_patients

    check_leakage(heldout_patients(data_dir), config.data.synthetic, stage="detector validation/test")
    run_detection_experiment(config, cell_dir)


def _cell_values(cell: dict) -> dict:
    from mammogan_tf.evaluation.detection import sensitivity_at_fps

    metrics = json.loads((Path(cell["dir"]) / "metrics.json").read_text())
    values = {"train_real": metrics["train_images"]["real"], "train_synthetic": metrics["train_images"]["synthetic"],
              "score_threshold": metrics[f"iou_{IOUS[0]}"]["score_threshold"]}
    for iou in IOUS:
        m = metrics[f"iou_{iou}"]
        froc = m["froc"]
        at_one = sensitivity_at_fps(np.asarray(froc["fps_per_image"]), np.asarray(froc["sensitivity"]), (1.0,))
        values.update({f"{name}_{iou}": m.get(name) for name in FIELDS if name in m})
        values[f"sens_at_1fp_{iou}"] = at_one[1.0]
        values[f"froc_{iou}"] = froc
    return values


def summarise(grid, cells: list[dict]) -> list[dict]:
    """Table rows (module docstring) from finished cells."""
    loaded = [{**c, "values": _cell_values(c)} for c in cells]
    rows = []
    for regime in grid.regimes:
        group = [c for c in loaded if c["regime"] == regime.name]
        if not group:
            continue
        row = {"regime": regime.name, "folds": len(group), "baseline": regime.baseline,
               "score_threshold": group[0]["values"]["score_threshold"],
               "train_real": int(np.mean([c["values"]["train_real"] for c in group])),
               "train_synthetic": int(np.mean([c["values"]["train_synthetic"] for c in group]))}
        for iou in IOUS:
            for name in FIELDS:
                values = np.asarray([c["values"].get(f"{name}_{iou}", np.nan) for c in group], float)
                row[f"{name}_{iou}_mean"] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
                row[f"{name}_{iou}_sd"] = float(np.nanstd(values, ddof=1)) if np.isfinite(values).sum() > 1 else 0.0
        rows.append(row)
    return rows


def markdown(rows: list[dict], title: str) -> str:
    """The detection table as GitHub markdown (mean ± sd over folds when there are several)."""
    from mammogan_tf.studies.table import _fmt

    header = ["regime", "train images (real + synthetic)"]
    for iou in IOUS:
        header += [f"sensitivity @IoU {iou}", f"FPs/image @IoU {iou}", f"sens. at 1 FP/image @IoU {iou}",
                   f"mAP @IoU {iou}"]
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        def value(name):
            mean, sd = r.get(f"{name}_mean"), r.get(f"{name}_sd")
            return _fmt(mean) + (f" ± {_fmt(sd)}" if r["folds"] > 1 else "")

        cells = [r["regime"] + (" (baseline)" if r["baseline"] else ""),
                 f"{r['train_real']} + {r['train_synthetic']}"]
        for iou in IOUS:
            cells += [value(f"sensitivity_{iou}"), value(f"fps_per_image_{iou}"), value(f"sens_at_1fp_{iou}"),
                      value(f"map_{iou}")]
        lines.append("| " + " | ".join(cells) + " |")
    threshold = rows[0].get("score_threshold") if rows else None
    note = f"\nSensitivity and FPs/image at the detection threshold{'' if threshold is None else f' {threshold}'}.\n"
    return "\n".join(lines) + "\n" + note


def figures(grid, root: Path, cells: list[dict]) -> list[str]:
    """``froc-iou<t>.png``: one FROC curve per regime (mean over folds on a common FP grid)."""
    from mammogan_tf.evaluation.plots import plot_froc

    loaded = [{**c, "values": _cell_values(c)} for c in cells]
    written = []
    for iou in IOUS:
        curves = {}
        for regime in grid.regimes:
            frocs = [c["values"][f"froc_{iou}"] for c in loaded if c["regime"] == regime.name]
            if not frocs:
                continue
            top = max(max(f["fps_per_image"] or [0.0]) for f in frocs)
            grid_fps = np.linspace(0.0, top, 200)
            mean = np.mean([np.interp(grid_fps, f["fps_per_image"] or [0.0], f["sensitivity"] or [0.0])
                            for f in frocs], axis=0)
            curves[regime.name] = (grid_fps, mean)
        name = f"froc-iou{iou}.png"
        plot_froc(curves, root / name)
        written.append(name)
    return written
