"""``mammogan table GRID.yaml``: run every cell of a grid and write the paper's table.

One row per (regime, k). Columns (binary tasks):

- ``auc``: AUC of the test scores pooled over folds (each patient is tested once), with its
  DeLong 95 % CI; ``auc_mean`` / ``auc_sd``: over folds;
- ``f1``, ``sensitivity``, ``specificity``: mean and sd over folds, each at the threshold chosen
  on that fold's validation split;
- ``p_vs_baseline``: paired DeLong p of the pooled test scores against the baseline regime's
  (same cases), and ``delta_auc``.

Detection grids (``kind: detection``): rows and figures of ``studies.detection_cells``.

Multi-class tasks: macro one-vs-rest AUC and accuracy (mean and sd over folds) and per-class
sensitivity and specificity. Outputs in ``<output_dir>/<name>/``: ``table.md``, ``table.csv``,
``table.json`` (rows and cells), ``roc[-k<k>].png``, ``metric_vs_k.png`` (imbalanced protocol),
``auc_vs_share.png`` (regimes that set an initial synthetic share),
``tsne.png`` (baseline classifier's features: real normal / real lesion / synthetic lesion).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from mammogan_tf.errors import ConfigError
from mammogan_tf.evaluation.classification import auc_ci, delong_test
from mammogan_tf.manifest import write_json_atomic
from mammogan_tf.studies.grid import GridConfig, load_grid, run_cells

METRICS = ("f1", "sensitivity", "specificity")


def _load_cell(cell: dict) -> dict:
    folder = Path(cell["dir"])
    report = json.loads((folder / "metrics.json").read_text())["test"]
    scores = dict(np.load(folder / "scores" / "test.npz"))
    return {**cell, "report": report, "scores": scores}


def _pooled(cells: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    cells = sorted(cells, key=lambda c: c["fold"])
    y = np.concatenate([(c["scores"]["labels"] == 1).astype(int) for c in cells])
    s = np.concatenate([c["scores"]["scores"] for c in cells])
    return y, s


def _mean_sd(values) -> tuple[float, float]:
    values = np.asarray([v for v in values if v is not None], float)
    if values.size == 0:
        return float("nan"), float("nan")
    return float(np.nanmean(values)), float(np.nanstd(values, ddof=1)) if values.size > 1 else 0.0


def summarise(grid: GridConfig, cells: list[dict]) -> list[dict]:
    """Table rows (see the module doc) from finished cells."""
    loaded = [_load_cell(c) for c in cells]
    baseline = next((r.name for r in grid.regimes if r.baseline), None)
    rows = []
    for regime in grid.regimes:
        for k in sorted({c["k"] for c in loaded}, key=lambda v: -1 if v is None else v):
            group = [c for c in loaded if c["regime"] == regime.name and c["k"] == k]
            if not group:
                continue
            row = {"regime": regime.name, "k": k, "folds": len(group), "baseline": regime.baseline}
            kind = group[0]["report"].get("kind")
            auc_mean, auc_sd = _mean_sd(c["report"].get("auc") for c in group)
            row.update(auc_mean=auc_mean, auc_sd=auc_sd)
            if kind == "binary":
                y, s = _pooled(group)
                auc, low, high = auc_ci(y, s)
                row.update(auc=auc, auc_ci_low=low, auc_ci_high=high, n_test=int(y.size), n_positive=int(y.sum()))
                for name in METRICS:
                    row[f"{name}_mean"], row[f"{name}_sd"] = _mean_sd(c["report"][name] for c in group)
                reference = regime.compare_to or baseline
                base = [c for c in loaded if c["regime"] == reference and c["k"] == k]
                if reference and regime.name != reference and len(base) == len(group):
                    yb, sb = _pooled(base)
                    if np.array_equal(y, yb):
                        test = delong_test(y, s, sb)
                        row.update(compared_to=reference, delta_auc=test.difference, p_vs_baseline=test.p)
                    elif regime.compare_to is not None:
                        raise ConfigError(f"regimes: {regime.name} and {reference} were tested on different "
                                          "cases; compare_to must name a regime of the same task")
                    # else: another task than the baseline's, no paired test
            else:
                row["accuracy_mean"], row["accuracy_sd"] = _mean_sd(c["report"]["accuracy"] for c in group)
                for cls in group[0]["report"]["classes"]:
                    for name in ("sensitivity", "specificity"):
                        row[f"{name}_{cls}"], _ = _mean_sd(c["report"]["per_class"][cls][name] for c in group)
            rows.append(row)
    return rows


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.2g}" if 0 < abs(value) < 1e-3 else f"{value:.{digits}f}"
    return str(value)


def markdown(rows: list[dict], title: str) -> str:
    """The table as GitHub markdown."""
    binary = any("auc" in r for r in rows)
    if binary:
        header = ["regime", "k", "folds", "AUC (DeLong 95% CI)", "AUC mean ± sd", "F1", "sensitivity",
                  "specificity", "ΔAUC", "DeLong p vs baseline"]
    else:
        header = ["regime", "k", "folds", "macro AUC mean ± sd", "accuracy mean ± sd"]
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        pm = lambda name: f"{_fmt(r.get(name + '_mean'))} ± {_fmt(r.get(name + '_sd'))}"  # noqa: E731
        if binary:
            cells = [r["regime"] + (" (baseline)" if r["baseline"] else ""), _fmt(r["k"]), str(r["folds"]),
                     f"{_fmt(r.get('auc'))} ({_fmt(r.get('auc_ci_low'))}-{_fmt(r.get('auc_ci_high'))})",
                     pm("auc"), pm("f1"), pm("sensitivity"), pm("specificity"), _fmt(r.get("delta_auc")),
                     _fmt(r.get("p_vs_baseline"))]
        else:
            cells = [r["regime"], _fmt(r["k"]), str(r["folds"]), pm("auc"), pm("accuracy")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _figures(grid: GridConfig, root: Path, rows: list[dict], cells: list[dict]) -> list[str]:
    from mammogan_tf.evaluation.plots import plot_metric_curves, plot_roc

    written = []
    loaded = [_load_cell(c) for c in cells]
    if not any("auc" in r for r in rows):
        return written
    for k in sorted({c["k"] for c in loaded}, key=lambda v: -1 if v is None else v):
        curves = {}
        for regime in grid.regimes:
            group = [c for c in loaded if c["regime"] == regime.name and c["k"] == k]
            if group:
                curves[regime.name] = _pooled(group)
        name = "roc.png" if k is None else f"roc-k{k}.png"
        plot_roc(curves, root / name)
        written.append(name)
    if grid.protocol.kind == "imbalanced":
        for metric in ("f1", "auc"):
            history = {r.name: ([row["k"] for row in rows if row["regime"] == r.name],
                                [row[f"{metric}_mean"] for row in rows if row["regime"] == r.name]) for r in grid.regimes}
            plot_metric_curves(history, root / f"{metric}_vs_k.png", xlabel="positive set size k", ylabel=metric)
            written.append(f"{metric}_vs_k.png")
    shares = {r.name: (0.0 if r.baseline else r.set.get("train.mixing.share.initial")) for r in grid.regimes
              if "train.mixing.share.kind" not in r.set}  # one schedule kind per curve
    shares = {name: v for name, v in shares.items() if v is not None}
    if len(shares) > 2 and grid.protocol.kind != "imbalanced":
        points = sorted((shares[row["regime"]], row["auc"]) for row in rows if row["regime"] in shares and "auc" in row)
        plot_metric_curves({"test AUC (pooled)": ([p[0] for p in points], [p[1] for p in points])},
                           root / "auc_vs_share.png", xlabel="initial synthetic share", ylabel="AUC")
        written.append("auc_vs_share.png")
    if grid.tsne_samples:
        from mammogan_tf.studies.embedding import plot_cell_tsne

        base = next((c for c in cells if c["regime"] == (next((r.name for r in grid.regimes if r.baseline), None))
                     and c["fold"] == 0), None)
        synthetic = next((c["synthetic"] for c in cells if c["synthetic"] and c["fold"] == 0), [])
        classes = list(grid.classifier.get("train", {}).get("task", {}).get("classes", {}).values())
        lesion_types = [t for t in classes[-1] if t != "normal"] if classes else None
        if base is not None and plot_cell_tsne(base, synthetic, root / "tsne.png", grid.tsne_samples, lesion_types):
            written.append("tsne.png")
    return written


def write_table(grid: GridConfig, root: Path, cells: list[dict]) -> dict:
    """Write table.md/csv/json (and figures) for finished cells; returns the JSON content."""
    import pandas as pd

    if grid.kind == "detection":
        from mammogan_tf.studies import detection_cells as kind

        rows, text = kind.summarise(grid, cells), kind.markdown
        make_figures = lambda: kind.figures(grid, root, cells)  # noqa: E731
    else:
        rows, text = summarise(grid, cells), markdown
        make_figures = lambda: _figures(grid, root, rows, cells)  # noqa: E731
    root.mkdir(parents=True, exist_ok=True)
    (root / "table.md").write_text(text(rows, grid.name), encoding="utf-8")
    pd.DataFrame(rows).to_csv(root / "table.csv", index=False)
    figures = make_figures() if grid.figures else []
    content = {"name": grid.name, "rows": rows, "figures": figures,
               "cells": [{k: v for k, v in c.items()} for c in cells], "grid": grid.model_dump(mode="json")}
    write_json_atomic(root / "table.json", content)
    return content


def run_table(grid_path: str | os.PathLike, overrides: list[str] | None = None, out: str | None = None,
              progress: bool = True) -> dict:
    """Run (or resume) every cell of the grid YAML and write its table; returns table.json's content."""
    grid = load_grid(grid_path, overrides)
    root = Path(out) if out else Path(grid.output_dir) / grid.name
    cells = run_cells(grid, root, progress)
    return write_table(grid, root, cells)
