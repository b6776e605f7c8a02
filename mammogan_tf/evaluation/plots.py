"""Figures for reports (matplotlib, Agg, no pyplot state): t-SNE, sample grids, ROC and FROC
curves, metric curves over training steps, histograms and nearest-pair grids.

Every function writes one PNG to ``out_path`` and returns the path. Images are
``(N, H, W, 1)`` or ``(N, H, W)`` float in [-1, 1] and are shown grey, black = -1, white = 1.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from mammogan_tf.errors import InputError

GROUP_COLOURS = {"real normal": "tab:red", "real lesion": "tab:green", "synthetic lesion": "tab:blue",
                 "real": "tab:green", "synthetic": "tab:blue"}
DPI = 120


def _save(figure: Figure, out_path) -> Path:
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_path, dpi=DPI, bbox_inches="tight")
    return out_path


def _display(images) -> np.ndarray:
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 4:
        images = images[..., 0]
    return np.clip((images + 1.0) / 2.0, 0.0, 1.0)


def image_grid(images, ncols: int = 8, pad: int = 2) -> np.ndarray:
    """Tile images ``(N, H, W[, 1])`` in [-1, 1] into one ``(rows*(H+pad)-pad, ...)`` array in [0, 1]
    (padding white)."""
    tiles = _display(images)
    n, h, w = tiles.shape
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    grid = np.ones((nrows * (h + pad) - pad, ncols * (w + pad) - pad), dtype=np.float32)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, ncols)
        grid[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = tile
    return grid


def plot_sample_grid(real, synthetic, out_path, n: int = 32, ncols: int = 8, seed: int = 0) -> Path:
    """Side by side: up to ``n`` real and ``n`` synthetic images (seeded random picks)."""
    rng = np.random.default_rng(seed)
    figure = Figure(figsize=(12, 6))
    for k, (title, images) in enumerate((("real", real), ("synthetic", synthetic))):
        images = np.asarray(images)
        pick = np.sort(rng.choice(len(images), min(n, len(images)), replace=False))
        axis = figure.add_subplot(1, 2, k + 1)
        axis.imshow(image_grid(images[pick], ncols), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axis.set_title(f"{title} ({len(pick)} of {len(images)})")
        axis.axis("off")
    return _save(figure, out_path)


def tsne_embedding(features, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """2-D t-SNE ``(N, 2)`` of ``(N, D)`` features: PCA to at most 50 dimensions first, PCA
    initialisation, perplexity capped at (N - 1) / 3, Barnes-Hut, ``random_state=seed``. Runs on
    one thread: sklearn's OpenMP threads spin-wait and slow down many-fold on a busy machine."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    features = np.asarray(features, dtype=np.float64)
    if features.shape[0] < 5:
        raise InputError(f"t-SNE needs at least 5 samples, got {features.shape[0]}")
    if features.shape[1] > 50:
        features = PCA(50, random_state=seed).fit_transform(features)
    perplexity = float(min(perplexity, (features.shape[0] - 1) / 3.0))
    with threadpool_limits(limits=1):
        return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)


def plot_tsne(features, groups: Sequence[str], out_path, perplexity: float = 30.0, seed: int = 0,
              title: str = "t-SNE of backbone features") -> tuple[Path, np.ndarray]:
    """t-SNE scatter of ``(N, D)`` features coloured by group name (e.g. "real normal",
    "real lesion", "synthetic lesion"). Returns the path and the ``(N, 2)`` embedding."""
    groups = np.asarray(groups)
    if groups.shape[0] != np.shape(features)[0]:
        raise InputError(f"{groups.shape[0]} group names for {np.shape(features)[0]} feature rows")
    embedding = tsne_embedding(features, perplexity, seed)
    figure = Figure(figsize=(6.5, 6))
    axis = figure.add_subplot()
    for name in dict.fromkeys(groups):
        at = groups == name
        axis.scatter(embedding[at, 0], embedding[at, 1], s=8, alpha=0.7, label=f"{name} ({at.sum()})",
                     color=GROUP_COLOURS.get(str(name)))
    axis.set_title(title)
    axis.set_xticks([])
    axis.set_yticks([])
    axis.legend(loc="best", fontsize=8, markerscale=2)
    return _save(figure, out_path), embedding


def plot_roc(curves: Mapping[str, tuple], out_path, level: float = 0.95) -> Path:
    """ROC curves of several classifiers: ``{name: (y_true, scores)}``; the legend gives each
    AUC with its DeLong ``level`` confidence interval."""
    from mammogan_tf.evaluation.classification import auc_ci, roc_curve

    figure = Figure(figsize=(6, 6))
    axis = figure.add_subplot()
    for name, (y_true, scores) in curves.items():
        fpr, tpr, _ = roc_curve(y_true, scores)
        auc, low, high = auc_ci(y_true, scores, level)
        axis.plot(fpr, tpr, label=f"{name}: AUC {auc:.3f} ({level:.0%} CI {low:.3f}-{high:.3f})")
    axis.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1)
    axis.set_xlabel("1 - specificity (false positive rate)")
    axis.set_ylabel("sensitivity (true positive rate)")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.01)
    axis.legend(loc="lower right", fontsize=8)
    return _save(figure, out_path)


def plot_froc(curves: Mapping[str, tuple], out_path) -> Path:
    """FROC curves ``{name: (fps_per_image, sensitivity)}`` (e.g. per IoU threshold)."""
    figure = Figure(figsize=(6, 4.5))
    axis = figure.add_subplot()
    for name, (fps, sensitivity) in curves.items():
        axis.step(fps, sensitivity, where="post", label=name)
    axis.set_xlabel("false positives per image")
    axis.set_ylabel("sensitivity")
    axis.set_ylim(0, 1.01)
    axis.legend(loc="lower right", fontsize=8)
    return _save(figure, out_path)


def moving_average(values, window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` values (fewer at the start), same length."""
    values = np.asarray(values, dtype=np.float64)
    sums = np.cumsum(np.r_[0.0, values])
    idx = np.arange(1, values.size + 1)
    start = np.maximum(idx - window, 0)
    return (sums[idx] - sums[start]) / (idx - start)


def plot_metric_curves(history: Mapping[str, tuple], out_path, window: int = 0,
                       xlabel: str = "training step", ylabel: str = "value") -> Path:
    """Metric curves over training ``{name: (steps, values)}`` (e.g. FID per checkpoint, as in
    Alyafi's FID plot); ``window > 1`` adds each curve's trailing moving average."""
    figure = Figure(figsize=(7, 4))
    axis = figure.add_subplot()
    for name, (steps, values) in history.items():
        line, = axis.plot(steps, values, label=name, alpha=0.6 if window > 1 else 1.0)
        if window > 1:
            axis.plot(steps, moving_average(values, window), label=f"{name} (moving average, {window})",
                      color=line.get_color(), linewidth=2)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.legend(fontsize=8)
    return _save(figure, out_path)


def plot_histograms(values: Mapping[str, Sequence[float]], out_path, xlabel: str, bins: int = 40,
                    lines: Mapping[str, float] | None = None) -> Path:
    """Overlaid normalised histograms ``{label: values}`` with optional vertical lines ``{label: x}``."""
    figure = Figure(figsize=(7, 4))
    axis = figure.add_subplot()
    finite = [np.asarray(v, dtype=np.float64)[np.isfinite(v)] for v in values.values()]
    edges = np.histogram_bin_edges(np.concatenate(finite), bins=bins)
    for label, data in zip(values, finite):
        axis.hist(data, bins=edges, density=True, alpha=0.5, label=f"{label} ({data.size})")
    for label, x in (lines or {}).items():
        axis.axvline(x, color="black", linestyle="--", linewidth=1, label=label)
    axis.set_xlabel(xlabel)
    axis.set_ylabel("density")
    axis.legend(fontsize=8)
    return _save(figure, out_path)


def plot_pairs(left, right, captions: Sequence[str], out_path, titles=("synthetic", "nearest real"),
               ncols: int = 5) -> Path:
    """Pairs of images (``left[i]`` above ``right[i]``), ``ncols`` pairs a row, each captioned;
    one image axis (fast for many pairs)."""
    left, right = _display(left), _display(right)
    n = len(left)
    if n == 0 or len(right) != n or len(captions) != n:
        raise InputError(f"plot_pairs needs equally many left, right images and captions, got "
                         f"{len(left)}, {len(right)}, {len(captions)}")
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    h, w = left.shape[1:]
    gap_x, gap_y, pad = w // 4 + 2, h // 2 + 6, 2
    cell_w, cell_h = w + gap_x, 2 * h + pad + gap_y
    canvas = np.ones((nrows * cell_h, ncols * cell_w - gap_x), dtype=np.float32)
    figure = Figure(figsize=(max(4.0, 1.6 * ncols), 3.4 * nrows))
    axis = figure.add_subplot()
    for i in range(n):
        r, c = divmod(i, ncols)
        y, x = r * cell_h + gap_y, c * cell_w
        canvas[y:y + h, x:x + w] = left[i]
        canvas[y + h + pad:y + 2 * h + pad, x:x + w] = right[i]
        axis.text(x + w / 2, y - 1, captions[i], ha="center", va="bottom", fontsize=7)
    axis.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axis.set_title(f"top of each pair: {titles[0]}; below: {titles[1]}", fontsize=9)
    axis.axis("off")
    return _save(figure, out_path)


def save_grey_png(image, out_path: str | os.PathLike) -> Path:
    """Write one image ``(H, W[, 1])`` in [-1, 1] as an 8-bit grey PNG without metadata."""
    from PIL import Image

    pixels = np.round(_display(np.asarray(image)[None])[0] * 255.0).astype(np.uint8)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode="L").save(out_path, format="PNG")
    return out_path
