"""Classic augmentation (mammogan_tf.data.augment): Frid-Adar's set and Alyafi's flips."""
from __future__ import annotations

import numpy as np
import pytest

from mammogan_tf.data.augment import classic_augment, flip, flip_augment, rotate, translate, zoom


def _blob(side: int = 33, radius: float = 6.0, centre=None) -> np.ndarray:
    rows, cols = np.mgrid[0:side, 0:side]
    cy, cx = centre if centre is not None else ((side - 1) / 2, (side - 1) / 2)
    return np.where((rows - cy) ** 2 + (cols - cx) ** 2 <= radius ** 2, 0.9, 0.1).astype(np.float32)


def _centroid(image: np.ndarray) -> np.ndarray:
    weights = image - image.min()
    rows, cols = np.indices(image.shape)
    return np.array([(weights * cols).sum(), (weights * rows).sum()]) / weights.sum()


def test_classic_augment_count_shapes_range_and_determinism():
    patch = np.random.default_rng(0).uniform(0, 1, (32, 32)).astype(np.float32)
    out = classic_augment(patch, np.random.default_rng(1), lesion_diameter=12, n_rot=3, n_flip=3, n_trans=2, n_scale=2)
    assert len(out) == 3 * (1 + 3 + 2 + 2)
    for image in out:
        assert image.shape == (32, 32) and image.dtype == np.float32
        assert 0.0 <= image.min() and image.max() <= 1.0
    again = classic_augment(patch, np.random.default_rng(1), 12, n_rot=3, n_flip=3, n_trans=2, n_scale=2)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(out, again))
    other = classic_augment(patch, np.random.default_rng(2), 12, n_rot=3, n_flip=3, n_trans=2, n_scale=2)
    assert not np.array_equal(out[0], other[0])


def test_classic_augment_default_counts_are_the_papers():
    out = classic_augment(_blob(16, 4), np.random.default_rng(0), lesion_diameter=8)
    assert len(out) == 30 * (1 + 3 + 7 + 5) == 480


def test_classic_augment_group_structure():
    """Per rotation: the rotated ROI, its 3 flips, translations by <= p, then scalings."""
    patch = _blob(33, 6, centre=(12.0, 19.0))
    d = 20.0  # p = min(4, 0.1 d) = 2
    out = classic_augment(patch, np.random.default_rng(3), lesion_diameter=d, n_rot=2, n_flip=3, n_trans=4, n_scale=3)
    group = 1 + 3 + 4 + 3
    for g in range(2):
        rotated = out[g * group]
        assert np.array_equal(out[g * group + 1], rotated[::-1, :])
        assert np.array_equal(out[g * group + 2], rotated[:, ::-1])
        assert np.array_equal(out[g * group + 3], rotated[::-1, ::-1])
        for shifted in out[g * group + 4:g * group + 8]:
            shift = _centroid(shifted) - _centroid(rotated)
            assert np.all(np.abs(shift) <= 2.0 + 0.3)
        for scaled in out[g * group + 8:g * group + 11]:
            # side 33, s in [-2, 8] px -> zoom 33 / (33 + s) in [0.80, 1.07]: blob area ratio in [0.6, 1.2]
            ratio = (scaled > 0.5).sum() / (rotated > 0.5).sum()
            assert 0.55 <= ratio <= 1.25
    # rotations about the centre, counter-clockwise by an angle in [0, 180] degrees
    def polar(image):
        x, y = _centroid(image) - 16.0
        return np.hypot(x, y), np.degrees(np.arctan2(-y, x))  # y up

    radius, angle = polar(patch)
    for g in range(2):
        r, a = polar(out[g * group])
        assert r == pytest.approx(radius, abs=1.0)
        assert -3.0 <= (a - angle) % 360 <= 183.0 or (a - angle) % 360 >= 357.0


def test_transform_helpers():
    patch = np.random.default_rng(0).uniform(0, 1, (17, 17)).astype(np.float32)
    assert np.allclose(rotate(patch, 90), np.rot90(patch), atol=1e-5)  # counter-clockwise
    assert np.allclose(translate(patch, 0, 0), patch) and np.allclose(zoom(patch, 1.0), patch)
    shifted = translate(patch, 2, 1)
    assert np.allclose(shifted[1:, 2:], patch[:-1, :-2], atol=1e-5)
    assert np.array_equal(flip(patch, "both"), patch[::-1, ::-1])
    with pytest.raises(ValueError):
        flip(patch, "diagonal")
    with pytest.raises(ValueError):
        classic_augment(patch, np.random.default_rng(0), 5, n_flip=4)


def test_flip_augment_returns_originals_then_h_then_v_flips():
    patches = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    out = flip_augment(patches)
    assert out.shape == (6, 3, 4) and out.dtype == patches.dtype
    assert np.array_equal(out[:2], patches)
    assert np.array_equal(out[2:4], patches[:, :, ::-1])
    assert np.array_equal(out[4:], patches[:, ::-1, :])
    channels = flip_augment(patches[..., None])
    assert channels.shape == (6, 3, 4, 1) and np.array_equal(channels[..., 0], out)
    assert flip_augment([patches[0]]).shape == (3, 3, 4)
