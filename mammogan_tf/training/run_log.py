"""What a training run writes besides checkpoints: TensorBoard, ``metrics.jsonl``, grids, curves.

Layout inside a run folder::

    tensorboard/         event files (scalars: losses, D(real)/D(fake), learning rates, p, images/s,
                         metric values; images: the sample grid)
    metrics.jsonl        one JSON object a line: {"step": 10, "kind": "train", "d_loss": ...} or
                         {"step": 500, "kind": "metric", "fid": ...}
    samples/step-NNNNNNN.png   grids of generator samples from one fixed latent batch
    metric_curve.png     the metric over steps (written after each evaluation and at the end)

Only the chief worker writes (``enabled=False`` elsewhere).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

METRICS_FILE = "metrics.jsonl"
CURVE_FILE = "metric_curve.png"
TENSORBOARD_DIR = "tensorboard"
SAMPLES_DIR = "samples"


def image_grid(images: np.ndarray, columns: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile ``images (N, S, S, 1) float in [-1, 1]`` into one ``(rows*(S+pad)-pad, ...)`` uint8
    grey image (0 = -1, 255 = +1), ``columns`` per row (default: ceil(sqrt(N))), padding black."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 4:
        images = images[..., 0]
    count, height, width = images.shape
    columns = columns or int(math.ceil(math.sqrt(count)))
    rows = int(math.ceil(count / columns))
    grid = np.zeros((rows * (height + pad) - pad, columns * (width + pad) - pad), np.uint8)
    pixels = np.rint((np.clip(images, -1, 1) + 1) * 127.5).astype(np.uint8)
    for index in range(count):
        r, c = divmod(index, columns)
        top, left = r * (height + pad), c * (width + pad)
        grid[top:top + height, left:left + width] = pixels[index]
    return grid


def save_png(path: str | os.PathLike, grey: np.ndarray) -> Path:
    """Write a 2-D uint8 array as a grey PNG atomically; returns the path."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(grey).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def read_metrics(path: str | os.PathLike, kind: str | None = None) -> list[dict]:
    """Records of a ``metrics.jsonl`` (only those of ``kind`` when given); [] if absent."""
    path = Path(path)
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in records if kind is None or r.get("kind") == kind]


def plot_metric_curve(metrics_path: str | os.PathLike, name: str, out_path: str | os.PathLike,
                      best_step: int | None = None) -> Path | None:
    """Plot metric ``name`` over steps from ``metrics.jsonl`` into a PNG (None when no values)."""
    points = [(r["step"], r[name]) for r in read_metrics(metrics_path, "metric") if r.get(name) is not None]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, values = zip(*points)
    figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
    axes.plot(steps, values, marker="o", markersize=3, label=name.upper())
    if best_step is not None and best_step in steps:
        axes.scatter([best_step], [values[steps.index(best_step)]], color="red", zorder=3, label="best/")
    axes.set_xlabel("step")
    axes.set_ylabel(name.upper())
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    out_path = Path(out_path)
    tmp = out_path.with_name(out_path.name + ".tmp.png")
    figure.savefig(tmp)
    plt.close(figure)
    os.replace(tmp, out_path)
    return out_path


class RunLog:
    """TensorBoard scalars/images and ``metrics.jsonl`` of one run.

    ``resume_step``: on resume, records after this step (logged by the interrupted process
    after its last checkpoint) are dropped, so the file holds one record per step and kind.
    """

    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True, resume_step: int | None = None):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.metrics_path = self.run_dir / METRICS_FILE
        self._writer = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            kept = [r for r in read_metrics(self.metrics_path) if r["step"] <= resume_step]
            tmp = self.metrics_path.with_name(METRICS_FILE + ".tmp")
            tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept), encoding="utf-8")
            os.replace(tmp, self.metrics_path)
        import tensorflow as tf

        self._tf = tf
        self._writer = tf.summary.create_file_writer(str(self.run_dir / TENSORBOARD_DIR))

    def _append(self, record: dict) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")

    def scalars(self, step: int, values: dict, kind: str = "train") -> None:
        """Log ``{name: float}`` at ``step`` (TensorBoard tag ``kind/name``) and as one JSON line."""
        if not self.enabled:
            return
        values = {k: float(v) for k, v in values.items()}
        with self._writer.as_default(step=step):
            for name, value in values.items():
                self._tf.summary.scalar(f"{kind}/{name}", value)
        self._append({"step": int(step), "kind": kind, **values})

    def images(self, step: int, images: np.ndarray, columns: int | None = None,
               name: str | None = None) -> Path | None:
        """Save a grid of ``images (N, S, S, 1) in [-1, 1]`` as ``samples/<name>.png``
        (default ``step-NNNNNNN``) and as the TensorBoard image ``samples``."""
        if not self.enabled:
            return None
        grid = image_grid(images, columns)
        path = save_png(self.run_dir / SAMPLES_DIR / f"{name or f'step-{step:07d}'}.png", grid)
        with self._writer.as_default(step=step):
            self._tf.summary.image("samples", grid[None, :, :, None], max_outputs=1)
        return path

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
