"""Breast mask, histogram normalisation and lesion ground truth (mammogan_tf.data.preprocess)."""
from __future__ import annotations

import math

import cv2
import numpy as np

from mammogan_tf.config import MaskConfig, NormalizationConfig
from mammogan_tf.data.preprocess import (
    box_from_mask, breast_mask, centre_in_mask, fill_holes, lesion_mask, normalize_histogram, otsu_threshold,
)


def _phantom_breast(size: int = 96, seed: int = 0):
    """A bright disc (breast) with a dark hole, a small bright label apart and faint noise."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size]
    disc = (rows - size / 2) ** 2 + (cols - size / 3) ** 2 < (size / 3) ** 2
    image = rng.uniform(0.0, 0.03, (size, size))
    image[disc] = rng.uniform(0.3, 0.7, int(disc.sum()))
    hole = (rows - size / 2) ** 2 + (cols - size / 3) ** 2 < 9
    image[hole] = 0.0
    image[5:9, size - 10:size - 5] = 0.9  # a label, not touching the disc
    return image.astype(np.float32), disc, hole


# ----------------------------------------------------------------------------- breast mask

def test_breast_mask_nonzero_fills_holes_and_drops_labels():
    image, disc, hole = _phantom_breast()
    mask = breast_mask(image)
    assert mask.dtype == bool and mask.shape == image.shape
    assert np.array_equal(mask, disc)  # hole filled, label and noise (< 0.05) dropped


def test_breast_mask_options():
    image, disc, hole = _phantom_breast()
    raw = breast_mask(image, MaskConfig(largest_component=False, fill_holes=False))
    assert raw[6, -7] and not raw[hole].any()
    assert np.array_equal(raw, image > 0.05)
    no_fill = breast_mask(image, MaskConfig(fill_holes=False))
    assert not no_fill[hole].any() and not no_fill[6, -7]
    assert breast_mask(np.zeros((8, 8), np.float32)).sum() == 0


def test_breast_mask_otsu():
    image, disc, _ = _phantom_breast()
    threshold = otsu_threshold(image)
    assert 0.03 <= threshold <= 0.3
    assert np.array_equal(breast_mask(image, MaskConfig(method="otsu")), disc)


def test_fill_holes_matches_scipy():
    from scipy import ndimage

    rng = np.random.default_rng(1)
    mask = rng.uniform(size=(40, 50)) > 0.4
    assert np.array_equal(fill_holes(mask), ndimage.binary_fill_holes(mask))


# ----------------------------------------------------------------------------- normalisation

def test_normalize_none_returns_the_image():
    image, disc, _ = _phantom_breast()
    out = normalize_histogram(image, NormalizationConfig(method="none"), mask=disc)
    assert out.dtype == np.float32 and np.array_equal(out, image)


def test_equalize_flattens_the_breast_histogram_and_keeps_background_zero():
    rng = np.random.default_rng(0)
    image, disc, _ = _phantom_breast(128)
    image[disc] = rng.beta(5, 2, int(disc.sum())) * 0.6 + 0.2  # skewed breast histogram
    out = normalize_histogram(image, NormalizationConfig(method="equalize"), mask=disc)
    assert out.dtype == np.float32 and out.shape == image.shape
    assert out.min() == 0.0 and out.max() == 1.0
    assert np.all(out[~disc] == 0.0)
    # breast values become ~uniform on [0, 1] and their order is kept
    assert np.allclose(np.quantile(out[disc], [0.1, 0.5, 0.9]), [0.1, 0.5, 0.9], atol=0.02)
    order = np.argsort(image[disc], kind="stable")
    assert np.all(np.diff(out[disc][order]) >= 0)


def test_equalize_keeps_every_12_bit_level_distinct():
    levels = np.arange(4096, dtype=np.float32) / 4095  # one pixel per 12-bit level
    image = levels.reshape(64, 64)
    out = normalize_histogram(image, NormalizationConfig(method="equalize"))
    assert len(np.unique(out)) == 4096
    assert np.allclose(out, image, atol=1e-3)  # a flat histogram is a fixed point


def test_clahe_raises_local_contrast_more_with_a_higher_clip_limit():
    rng = np.random.default_rng(0)
    image = (0.4 + 0.02 * cv2.GaussianBlur(rng.standard_normal((256, 256)), (0, 0), 2)).astype(np.float32)
    mask = np.ones_like(image, dtype=bool)
    mask[:, :8] = False
    outs = [normalize_histogram(image, NormalizationConfig(method="clahe", clahe_clip_limit=clip, clahe_tile_grid=2),
                                mask=mask) for clip in (1.0, 64.0)]
    for out in outs:
        assert out.dtype == np.float32 and out.shape == image.shape
        assert 0.0 <= out.min() and out.max() <= 1.0
        assert np.all(out[~mask] == 0.0)
        assert np.corrcoef(out[mask], image[mask])[0, 1] > 0.9  # a monotone-ish local mapping
    assert image[mask].std() < outs[0][mask].std() < outs[1][mask].std()


def test_percentile_stretch_known_values():
    image = np.zeros((10, 20), np.float32)
    mask = np.zeros_like(image, dtype=bool)
    mask[:, 10:] = True
    image[mask] = np.linspace(0.2, 0.6, int(mask.sum()))
    config = NormalizationConfig(method="percentile", percentiles=(10.0, 90.0))
    out = normalize_histogram(image, config, mask=mask)
    low, high = np.percentile(image[mask], [10, 90])
    expected = np.clip((image - low) / (high - low), 0, 1)
    assert np.allclose(out[mask], expected[mask], atol=1e-6)
    assert np.all(out[~mask] == 0.0)
    assert np.isclose((out[mask] == 0).mean(), 0.1, atol=0.02) and np.isclose((out[mask] == 1).mean(), 0.1, atol=0.02)


# ----------------------------------------------------------------------------- lesion ground truth

def test_lesion_mask_rectangles_rois_and_clipping():
    roi = np.zeros((20, 30), bool)
    roi[15:18, 2:4] = True
    mask = lesion_mask((20, 30), [(2.5, 3.2, 5.0, 6.0), (28, 18, 40, 40), (np.nan, 1, 2, 3)], [roi])
    expected = np.zeros((20, 30), bool)
    expected[3:6, 2:5] = True  # floor start, ceil end
    expected[18:20, 28:30] = True  # clipped to the image
    expected |= roi
    assert np.array_equal(mask, expected)
    assert not lesion_mask((5, 5), []).any()


def test_box_from_mask_round_trip():
    mask = lesion_mask((40, 50), [(7, 11, 19, 13)])
    assert box_from_mask(mask) == (7, 11, 19, 13)
    assert box_from_mask(np.zeros((4, 4), bool)) is None


def test_centre_in_mask_uses_the_centre_pixel():
    mask = np.zeros((1024, 1024), bool)
    mask[400, 300] = True
    x, row, r = 300, 400, 5  # a MIAS circle turned into a box
    assert centre_in_mask((x - r, row - r, x + r + 1, row + r + 1), mask)
    assert not centre_in_mask((x - r + 1, row - r, x + r + 2, row + r + 1), mask)
    assert not centre_in_mask((2000, 5, 2010, 10), mask)
    assert not centre_in_mask((np.nan, 0, 1, 1), mask)


# ----------------------------------------------------------------------------- real mini-MIAS

def _mias_lesions(info_path):
    """(reference, x, y, r) of every Info.txt row with coordinates (a minimal parse)."""
    rows = []
    for line in info_path.read_text(encoding="latin-1").splitlines():
        parts = line.split()
        if len(parts) >= 7 and parts[0].startswith("mdb") and parts[4].isdigit():
            rows.append((parts[0], int(parts[4]), int(parts[5]), int(parts[6])))
    return rows


def test_mias_bad_annotations_fall_outside_the_breast(mias_dir):
    """mdb212 and mdb214 point at background; the other 117 located lesions are on the breast."""
    lesions = _mias_lesions(mias_dir / "Info.txt")
    assert len(lesions) == 119
    masks = {}
    outside = []
    for name, x, y, r in lesions:
        if name not in masks:
            image = cv2.imread(str(mias_dir / "png" / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
            masks[name] = breast_mask(image.astype(np.float32) / 255.0)
        row = 1024 - y
        if not centre_in_mask((x - r, row - r, x + r + 1, row + r + 1), masks[name]):
            outside.append(name)
    assert outside == ["mdb212", "mdb214"]
    # the breast is a sizeable region in every film (mdb151/152 nearly fill theirs)
    fractions = [mask.mean() for mask in masks.values()]
    assert min(fractions) > 0.1 and max(fractions) < 0.97
    assert math.isclose(np.mean(fractions), 0.4, abs_tol=0.15)
