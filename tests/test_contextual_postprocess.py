"""Wu et al.'s post-processing of the lesion channel, and reinsertion into a full mammogram."""
from __future__ import annotations

import numpy as np
import pytest

from mammogan_tf.models.postprocess import lesion_mask, mask_box, postprocess
from mammogan_tf.synthesis.reinsert import reinsert

S = 64


def blob(cy, cx, radius, value, size=S):
    y, x = np.mgrid[:size, :size]
    return np.where((y - cy) ** 2 + (x - cx) ** 2 <= radius ** 2, value, 0.0).astype(np.float32)


def distance(cy, cx, size=S):
    y, x = np.mgrid[:size, :size]
    return np.sqrt((y - cy) ** 2 + (x - cx) ** 2)


def lesion_channel():
    """A big object (radius 12: 453 px = 11 % of 64x64) at value 0.5, a smaller one (radius 5,
    value 0.9) and faint noise below the 0.1 threshold."""
    noise = np.random.default_rng(0).uniform(-0.09, 0.09, (S, S)).astype(np.float32)
    big, small = blob(30, 28, 12, 0.5), blob(54, 54, 5, 0.9)
    return np.where(big > 0, big, np.where(small > 0, small, noise))


def test_threshold_and_largest_component_then_dilation():
    binary = lesion_mask(lesion_channel(), dilate_px=0, smooth_px=0)
    np.testing.assert_array_equal(binary, blob(30, 28, 12, 1.0))  # the small object and the noise are gone
    dilated = lesion_mask(lesion_channel(), dilate_px=5, smooth_px=0)
    d = distance(30, 28)
    assert set(np.unique(dilated)) == {0.0, 1.0}
    assert dilated[d <= 16.5].all() and not dilated[d >= 17.6].any()  # grown by 5 px (disk)
    assert not dilated[distance(54, 54) <= 3].any()


def test_the_smooth_edge():
    soft = lesion_mask(lesion_channel())
    binary = lesion_mask(lesion_channel(), smooth_px=0)
    d = distance(30, 28)
    assert soft.dtype == np.float32 and soft.min() >= 0 and soft.max() <= 1
    np.testing.assert_allclose(soft[d <= 6], 1.0, atol=1e-3)  # deep inside (>= 11 px from the edge): ~1
    assert not soft[d >= 17.6 + 10 * np.sqrt(2)].any()  # beyond the 21x21 Gaussian kernel: nothing
    assert not soft[30, 28 + 17 + 11:].any()  # along a row: nothing beyond 10 px
    edge = (d > 14) & (d < 20)
    assert ((soft[edge] > 0.02) & (soft[edge] < 0.98)).mean() > 0.9  # a ramp, not a step
    np.testing.assert_allclose(soft[binary > 0].mean(), 0.9, atol=0.08)
    # along a ray the mask falls monotonically across the edge
    ray = soft[30, 28:64]
    assert (np.diff(ray) <= 1e-6).all() and ray[10] > 0.9 and ray[30] < 0.05


def test_postprocess_adds_the_masked_lesion_and_discards_small_objects():
    base = np.random.default_rng(1).uniform(-0.5, 0.5, (S, S)).astype(np.float32)
    lesion = lesion_channel()
    out = postprocess(lesion, base[..., None])
    assert out.kept
    np.testing.assert_allclose(out.image, np.clip(base + out.mask * lesion, -1, 1), atol=1e-6)
    np.testing.assert_allclose(out.lesion, out.mask * lesion, atol=1e-7)
    far = distance(30, 28) > 32
    np.testing.assert_array_equal(out.image[far], base[far])  # noise and the small object never reach the image
    # an object below 10 % of the patch area is discarded: the patch comes back unchanged
    small = postprocess(blob(30, 30, 11, 0.5), base)  # 401 px = 9.8 %
    assert not small.kept and not small.mask.any()
    np.testing.assert_array_equal(small.image, base)
    assert postprocess(blob(30, 30, 12, 0.5), base).kept
    # below the threshold: nothing
    assert not postprocess(blob(30, 30, 20, 0.09), base).kept


def test_removal_uses_the_negative_threshold():
    base = np.full((S, S), 0.4, np.float32)
    negative = blob(32, 32, 14, -0.3)
    assert not postprocess(negative, base).kept
    removed = postprocess(negative, base, removal=True)
    assert removed.kept and removed.image[32, 32] == pytest.approx(0.1, abs=1e-6)
    assert (removed.image <= base + 1e-7).all() and removed.image[0, 0] == pytest.approx(0.4)
    assert not postprocess(-negative, base, removal=True).kept


def test_mask_box():
    mask = np.zeros((S, S), np.float32)
    mask[10:20, 5:9] = 1.0
    mask[25, 40] = 0.4  # below the 0.5 level
    assert mask_box(mask) == (5, 10, 9, 20)
    assert mask_box(np.zeros((4, 4))) is None


def test_reinsert_writes_exactly_at_the_recorded_origin():
    image = np.random.default_rng(2).integers(0, 40000, (100, 120)).astype(np.uint16)
    patch = np.full((32, 32), 1.0, np.float32)  # -> 65535
    mask = np.zeros((32, 32), np.float32)
    mask[8:20, 4:30] = 1.0
    out = reinsert(image, patch, (30, 20, 62, 52), mask)
    expected = image.copy()
    expected[28:40, 34:60] = 65535
    np.testing.assert_array_equal(out.image, expected)
    assert out.image.dtype == np.uint16 and out.box == (34, 28, 60, 40)
    # a soft mask blends; the box is the mask >= 0.5 region
    mask[8:20, 4:30] = 0.5
    half = reinsert(np.zeros((100, 120), np.uint16), np.full((32, 32), 1.0), (30, 20, 62, 52), mask)
    assert set(np.unique(half.image)) == {0, 32768} and half.box == (34, 28, 60, 40)


def test_reinsert_resizes_clips_at_the_border_and_matches_the_postprocessed_box():
    base = np.zeros((S, S), np.float32)
    processed = postprocess(lesion_channel(), base)
    box = mask_box(processed.mask)
    image = np.zeros((200, 100), np.float32) - 1.0
    # the crop was 128 px wide in the image (resized to 64 at prepare time) and sticks out on the left
    out = reinsert(image, processed.image, (-40, 50, 88, 178), processed.mask)
    x0, y0, x1, y1 = box
    assert out.box == (max(-40 + 2 * x0, 0), 50 + 2 * y0, -40 + 2 * x1, 50 + 2 * y1)
    changed = np.nonzero(out.image != image)
    assert changed[1].min() >= 0 and changed[0].min() >= 50 and changed[0].max() < 178
    # outside the box only the Gaussian tail changes pixels: less than half-way to the patch
    outside = np.ones(image.shape, bool)
    outside[out.box[1]:out.box[3], out.box[0]:out.box[2]] = False
    target = np.full(image.shape, -1.0)
    target[50:178, 0:88] = np.kron(processed.image, np.ones((2, 2)))[:, 40:]
    moved = np.abs(out.image - image) / np.maximum(np.abs(target - image), 1e-6)
    assert moved[outside & (np.abs(target - image) > 0.1)].max() < 0.6
    with pytest.raises(ValueError, match="origin"):
        reinsert(image, processed.image, (10, 10, 10, 20))
