"""Figures: every plot writes a readable PNG; the array helpers give exact values."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mammogan_tf.errors import InputError
from mammogan_tf.evaluation import plots


def _png(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_image_grid_and_moving_average_values():
    images = np.stack([np.full((2, 3, 1), v) for v in (-1.0, 0.0, 1.0)])
    grid = plots.image_grid(images, ncols=2, pad=1)
    assert grid.shape == (2 * 2 + 1, 2 * 3 + 1)
    assert grid[0, 0] == 0.0 and grid[0, 4] == 0.5 and grid[3, 0] == 1.0 and grid[0, 3] == 1.0  # pad is white
    np.testing.assert_allclose(plots.moving_average([1, 2, 3, 4, 5], 2), [1, 1.5, 2.5, 3.5, 4.5])


def test_every_plot_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (12, 16, 16, 1))
    assert _png(plots.plot_sample_grid(images, images[::-1], tmp_path / "grid.png", n=8))[0] > 100
    y = np.r_[np.zeros(30), np.ones(30)]
    curves = {"baseline": (y, rng.random(60) + 0.3 * y), "GAN": (y, rng.random(60) + 0.6 * y)}
    assert _png(plots.plot_roc(curves, tmp_path / "roc.png"))[0] > 100
    assert _png(plots.plot_froc({"IoU 0.5": ([0, 0.5, 1], [0.2, 0.6, 0.8])}, tmp_path / "froc.png"))[0] > 100
    history = {"FID": (np.arange(0, 100, 10), rng.random(10) * 50)}
    assert _png(plots.plot_metric_curves(history, tmp_path / "fid.png", window=3, ylabel="FID"))[0] > 100
    assert _png(plots.plot_histograms({"a": rng.random(50), "b": rng.random(40)}, tmp_path / "hist.png",
                                      xlabel="distance", lines={"threshold": 0.1}))[0] > 100
    assert _png(plots.plot_pairs(images[:6], images[6:], [f"d = {i}" for i in range(6)],
                                 tmp_path / "pairs.png"))[0] > 100
    grey = plots.save_grey_png(images[0], tmp_path / "one.png")
    with Image.open(grey) as image:
        assert image.mode == "L" and image.size == (16, 16)
        np.testing.assert_array_equal(np.asarray(image), np.round((images[0, ..., 0] + 1) / 2 * 255).astype(np.uint8))


def test_tsne_is_seeded_and_separates_groups(tmp_path):
    rng = np.random.default_rng(1)
    feats = np.concatenate([rng.standard_normal((30, 60)), rng.standard_normal((30, 60)) + 8.0])
    groups = ["real lesion"] * 30 + ["synthetic lesion"] * 30
    path, embedding = plots.plot_tsne(feats, groups, tmp_path / "tsne.png", seed=0)
    assert _png(path)[0] > 100 and embedding.shape == (60, 2)
    np.testing.assert_allclose(plots.tsne_embedding(feats, seed=0), embedding)
    centres = embedding[:30].mean(0), embedding[30:].mean(0)
    spread = max(embedding[:30].std(0).max(), embedding[30:].std(0).max())
    assert np.linalg.norm(centres[0] - centres[1]) > 2 * spread
    with pytest.raises(InputError, match="group names"):
        plots.plot_tsne(feats, groups[:10], tmp_path / "x.png")


def _grey(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("L"), np.float64)


def test_figures_show_their_data(tmp_path):
    """Pixel content follows the data: dark vs bright samples, a perfect vs a random ROC curve,
    a rising vs a falling metric curve."""
    dark, bright = np.full((8, 16, 16, 1), -1.0), np.full((8, 16, 16, 1), 1.0)
    grid_dark = _grey(plots.plot_sample_grid(dark, dark, tmp_path / "dark.png", n=8))
    grid_bright = _grey(plots.plot_sample_grid(bright, bright, tmp_path / "bright.png", n=8))
    assert grid_bright.mean() - grid_dark.mean() > 40
    y = np.r_[np.zeros(50), np.ones(50)]
    perfect = _grey(plots.plot_roc({"a": (y, y)}, tmp_path / "perfect.png"))
    chance = _grey(plots.plot_roc({"a": (y, np.random.default_rng(0).random(100))}, tmp_path / "chance.png"))
    assert perfect.shape == chance.shape and np.abs(perfect - chance).mean() > 0.5
    steps = np.arange(10)
    rising = _grey(plots.plot_metric_curves({"FID": (steps, steps * 1.0)}, tmp_path / "up.png"))
    falling = _grey(plots.plot_metric_curves({"FID": (steps, 9.0 - steps)}, tmp_path / "down.png"))
    assert np.abs(rising - falling).mean() > 0.5
    # the line goes up: in the left half of the plot its dark pixels sit lower than in the right half
    dark_rows, dark_cols = np.nonzero(rising < 128)
    middle = rising.shape[1] // 2
    assert dark_rows[dark_cols < middle].mean() > dark_rows[dark_cols >= middle].mean()
