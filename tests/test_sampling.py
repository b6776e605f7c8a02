"""Patch sampling (mammogan_tf.data.sampling): shapes, ranges, boxes, determinism, masks."""
from __future__ import annotations

import numpy as np
import pytest

from mammogan_tf.config import PatchConfig
from mammogan_tf.data.preprocess import box_from_mask, lesion_mask
from mammogan_tf.data.sampling import (
    Patch, crop, flip_box, rot90_box, sample_contextual_patches, sample_lesion_patches, sample_normal_patches,
)

H, W = 160, 128


def _scene(seed: int = 0):
    """A 160 x 128 image: a breast disc against the left edge, two lesions and one diffuse finding."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:H, 0:W]
    breast = (rows - H / 2) ** 2 / (0.48 * H) ** 2 + cols ** 2 / (0.9 * W) ** 2 < 1
    image = np.where(breast, rng.uniform(0.3, 0.6, (H, W)), 0.0).astype(np.float32)
    lesions = [
        {"lesion_type": "mass", "pathology": "malignant", "x0": 30, "y0": 60, "x1": 42, "y1": 70},
        {"lesion_type": "calcification", "pathology": "benign", "x0": 20.5, "y0": 100.2, "x1": 25.5, "y1": 106.0},
        {"lesion_type": "calcification", "pathology": "benign", "x0": np.nan, "y0": np.nan, "x1": np.nan, "y1": np.nan},
    ]
    for lesion in lesions[:2]:
        image[lesion_mask((H, W), [[lesion[k] for k in ("x0", "y0", "x1", "y1")]])] = 0.9
    return image, breast, lesions


def _box(lesion):
    return tuple(float(lesion[k]) for k in ("x0", "y0", "x1", "y1"))


def _same(a: list[Patch], b: list[Patch]) -> bool:
    return len(a) == len(b) and all(
        p.pixels.tobytes() == q.pixels.tobytes() and p.bbox == q.bbox and p.origin == q.origin
        and (p.mask is None) == (q.mask is None) and (p.mask is None or np.array_equal(p.mask, q.mask))
        for p, q in zip(a, b))


def _check_patch(patch: Patch, side: int):
    assert isinstance(patch, Patch)
    assert patch.pixels.shape == (side, side) and patch.pixels.dtype == np.float32
    assert 0.0 <= patch.pixels.min() and patch.pixels.max() <= 1.0
    if patch.bbox is not None:
        x0, y0, x1, y1 = patch.bbox
        assert 0 <= x0 < x1 <= side and 0 <= y0 < y1 <= side
    if patch.mask is not None:
        assert patch.mask.shape == (side, side) and patch.mask.dtype == bool


# ----------------------------------------------------------------------------- lesion patches

def test_lesion_patches_are_centred_crops():
    image, breast, lesions = _scene()
    config = PatchConfig(size=32)
    patches = sample_lesion_patches(image, breast, lesions, config, np.random.default_rng(0))
    assert [p.lesion_type for p in patches] == ["mass", "calcification"]  # the diffuse one has no box
    assert [p.pathology for p in patches] == ["malignant", "benign"]
    for patch, lesion in zip(patches, lesions):
        _check_patch(patch, 32)
        assert patch.kind == "lesion" and patch.scale == 1.0
        x0, y0, x1, y1 = patch.origin
        assert x1 - x0 == 32 and y1 - y0 == 32
        assert np.array_equal(patch.pixels, image[y0:y1, x0:x1])  # an exact crop, nothing resized
        bx0, by0, bx1, by1 = patch.bbox
        assert (bx0 + x0, by0 + y0, bx1 + x0, by1 + y0) == _box(lesion)
        assert abs((bx0 + bx1) / 2 - 16) <= 1 and abs((by0 + by1) / 2 - 16) <= 1
        expected_mask_box = tuple(int(f(v)) for f, v in zip((np.floor, np.floor, np.ceil, np.ceil), patch.bbox))
        assert box_from_mask(patch.mask) == expected_mask_box


def test_lesion_patches_resize_to_output_size_and_filter_types():
    image, breast, lesions = _scene()
    config = PatchConfig(size=32, output_size=16, lesion_types=["mass"])
    patches = sample_lesion_patches(image, breast, lesions, config, np.random.default_rng(0))
    assert len(patches) == 1
    patch = patches[0]
    _check_patch(patch, 16)
    assert patch.scale == 0.5
    x0, y0 = patch.origin[:2]
    expected = tuple((v - o) * 0.5 for v, o in zip(_box(lesions[0]), (x0, y0, x0, y0)))
    assert np.allclose(patch.bbox, expected)
    assert patch.pixels.max() > 0.8  # the bright lesion survives INTER_AREA


def test_too_large_lesion_resize_or_skip():
    image, breast, _ = _scene()
    big = [{"lesion_type": "mass", "pathology": "benign", "x0": 10, "y0": 50, "x1": 40, "y1": 100}]  # 50 px tall
    resized = sample_lesion_patches(image, breast, big, PatchConfig(size=32, lesion_margin=1.2),
                                    np.random.default_rng(0))
    assert len(resized) == 1
    patch = resized[0]
    _check_patch(patch, 32)
    crop_side = patch.origin[2] - patch.origin[0]
    assert crop_side == 60 and np.isclose(patch.scale, 32 / 60)  # ceil(50 * 1.2)
    x0, y0, x1, y1 = patch.bbox
    assert y1 - y0 == pytest.approx(50 * 32 / 60) and x1 - x0 == pytest.approx(30 * 32 / 60)
    skipped = sample_lesion_patches(image, breast, big, PatchConfig(size=32, too_large="skip"),
                                    np.random.default_rng(0))
    assert skipped == []


def test_crops_leaving_the_image_are_zero_padded():
    image = np.full((40, 40), 0.5, np.float32)
    breast = np.ones_like(image, dtype=bool)
    corner = [{"lesion_type": "mass", "pathology": "benign", "x0": 0, "y0": 0, "x1": 4, "y1": 4}]
    (patch,) = sample_lesion_patches(image, breast, corner, PatchConfig(size=16), np.random.default_rng(0))
    assert patch.origin == (-6, -6, 10, 10)
    assert np.all(patch.pixels[:6, :] == 0) and np.all(patch.pixels[:, :6] == 0)
    assert np.all(patch.pixels[6:, 6:] == 0.5)
    assert patch.bbox == (6.0, 6.0, 10.0, 10.0)
    assert np.array_equal(crop(np.ones((3, 3)), -1, -1, 2), [[0, 0], [0, 1]])


def test_lesion_centre_outside_the_breast_is_dropped():
    image, breast, lesions = _scene()
    outside = [{"lesion_type": "mass", "pathology": "benign", "x0": 120, "y0": 2, "x1": 126, "y1": 8}]
    assert not breast[5, 123]
    assert sample_lesion_patches(image, breast, outside, PatchConfig(size=16), np.random.default_rng(0)) == []


def test_lesion_jitter_is_deterministic_and_keeps_the_lesion():
    image, breast, lesions = _scene()
    config = PatchConfig(size=32, patches_per_lesion=4)
    first = sample_lesion_patches(image, breast, lesions, config, np.random.default_rng([7, 3]))
    again = sample_lesion_patches(image, breast, lesions, config, np.random.default_rng([7, 3]))
    other = sample_lesion_patches(image, breast, lesions, config, np.random.default_rng([8, 3]))
    assert len(first) == 8 and _same(first, again) and not _same(first, other)
    for index, patch in enumerate(first):
        _check_patch(patch, 32)
        x0, y0, x1, y1 = patch.bbox
        bx0, by0, bx1, by1 = _box(lesions[index // 4])
        assert (x1 - x0, y1 - y0) == pytest.approx((bx1 - bx0, by1 - by0))  # never clipped
    assert len({p.origin for p in first[:4]}) > 1  # jittered
    assert all(abs(p.origin[0] - first[0].origin[0]) <= 4 for p in first[:4])  # side / 8


def test_lesion_roi_mask_is_used_when_given():
    image, breast, lesions = _scene()
    roi = np.zeros((H, W), bool)
    roi[62:68, 33:40] = True
    lesion = dict(lesions[0], mask=roi)
    (patch,) = sample_lesion_patches(image, breast, [lesion], PatchConfig(size=32), np.random.default_rng(0))
    x0, y0 = patch.origin[:2]
    assert box_from_mask(patch.mask) == (33 - x0, 62 - y0, 40 - x0, 68 - y0)


# ----------------------------------------------------------------------------- normal patches

def test_normal_patches_stay_in_the_breast_and_off_lesions():
    image, breast, lesions = _scene()
    truth = lesion_mask((H, W), [_box(lesion) for lesion in lesions])
    config = PatchConfig(size=24, output_size=12, normal_min_breast_fraction=0.9)
    patches = sample_normal_patches(image, breast, truth, config, np.random.default_rng(0), n=8)
    assert len(patches) == 8
    assert len({p.origin for p in patches}) == 8
    for patch in patches:
        _check_patch(patch, 12)
        assert patch.kind == "normal" and patch.lesion_type == "normal" and patch.bbox is None and patch.mask is None
        x0, y0, x1, y1 = patch.origin
        assert 0 <= x0 and 0 <= y0 and x1 <= W and y1 <= H and x1 - x0 == 24
        assert not truth[y0:y1, x0:x1].any()
        assert breast[y0:y1, x0:x1].mean() >= 0.9
    again = sample_normal_patches(image, breast, truth, config, np.random.default_rng(0), n=8)
    assert _same(patches, again)


def test_normal_patches_may_come_back_fewer():
    image, breast, _ = _scene()
    tiny = np.zeros_like(breast)
    tiny[10:20, 10:20] = True
    config = PatchConfig(size=24, max_tries=20)
    assert sample_normal_patches(image, tiny, None, config, np.random.default_rng(0), n=3) == []
    everywhere = np.ones_like(breast)
    assert sample_normal_patches(image, breast, everywhere, config, np.random.default_rng(0), n=3) == []


# ----------------------------------------------------------------------------- contextual patches

@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_box_follows_flip_and_rot90(k):
    mask = np.zeros((20, 20), bool)
    mask[3:7, 11:18] = True
    box = box_from_mask(mask)
    assert box_from_mask(np.rot90(mask, k)) == rot90_box(box, 20, k)
    assert box_from_mask(np.fliplr(mask)) == flip_box(box, 20)


def test_contextual_patches():
    image, breast, lesions = _scene()
    config = PatchConfig(mode="contextual", size=48, min_breast_fraction=0.9, max_offset=24, scale_range=(0.8, 1.2),
                         contextual_per_lesion=3, contextual_normal_per_image=4)
    patches = sample_contextual_patches(image, breast, lesions, config, np.random.default_rng([0, 5]))
    lesion_patches = [p for p in patches if p.lesion_type != "normal"]
    normal_patches = [p for p in patches if p.lesion_type == "normal"]
    assert len(lesion_patches) == 6 and len(normal_patches) == 4
    truth = lesion_mask((H, W), [_box(lesion) for lesion in lesions])
    for patch in patches:
        _check_patch(patch, 48)
        assert patch.kind == "contextual"
        x0, y0, x1, y1 = patch.origin
        side = x1 - x0
        assert 40 <= side <= 60 and np.isclose(patch.scale, 48 / side)  # factor 0.8..1.2
        assert crop(breast, x0, y0, side).mean() >= 0.9
        if patch.lesion_type == "normal":
            assert patch.bbox is None and not crop(truth, x0, y0, side).any()
        else:
            box = box_from_mask(patch.mask)
            # the mask covers whole image pixels and is resized by nearest neighbour: within ~2 px
            assert box is not None and np.allclose(box, patch.bbox, atol=2.5)  # the box follows flips/rotations
            assert patch.pixels[patch.mask].mean() > 0.8  # the bright lesion is where the box says
    again = sample_contextual_patches(image, breast, lesions, config, np.random.default_rng([0, 5]))
    assert _same(patches, again)
    assert all(p.pixels.flags.c_contiguous for p in patches)


def test_contextual_patches_rotate_and_flip():
    """Without flips/rotations a contextual patch is the resized crop; with them, some differ."""
    image, breast, lesions = _scene()
    plain = PatchConfig(mode="contextual", size=48, max_offset=0, scale_range=(1.0, 1.0), flip=False, rot90=False,
                        contextual_normal_per_image=0)
    (patch, _) = sample_contextual_patches(image, breast, lesions, plain, np.random.default_rng(0))
    x0, y0, x1, y1 = patch.origin
    assert np.array_equal(patch.pixels, crop(image, x0, y0, 48))
    varied = PatchConfig(mode="contextual", size=48, max_offset=0, scale_range=(1.0, 1.0), contextual_per_lesion=8,
                         contextual_normal_per_image=0)
    boxes = {p.bbox for p in sample_contextual_patches(image, breast, lesions[:1], varied, np.random.default_rng(0))}
    assert len(boxes) > 2  # the same lesion lands in different orientations


def test_contextual_patches_record_their_orientation():
    """Each patch records the (flip, k) it was turned by: undoing it gives back the plain crop,
    and the record survives a shard round trip (older shards read -1s: unknown)."""
    from mammogan_tf.data.shards import parse_example, serialize_patch
    from mammogan_tf.synthesis.full_images import undo_orientation

    image, breast, lesions = _scene()
    config = PatchConfig(mode="contextual", size=48, max_offset=0, scale_range=(1.0, 1.0), contextual_per_lesion=8,
                         contextual_normal_per_image=2)
    patches = sample_contextual_patches(image, breast, lesions, config, np.random.default_rng(0))
    assert len({p.orientation for p in patches if p.lesion_type != "normal"}) > 2
    for patch in patches:
        x0, y0, _, _ = patch.origin
        flip, k = patch.orientation
        assert np.array_equal(undo_orientation(patch.pixels, bool(flip), k), crop(image, x0, y0, 48))
    fields = dict(label=1, lesion_type="mass", pathology="benign", patient_id="p", image_id="i", kind="contextual")
    stored = parse_example(serialize_patch(patches[0].pixels, orientation=patches[0].orientation, **fields))
    assert tuple(stored["orientation"].numpy()) == patches[0].orientation
    assert tuple(parse_example(serialize_patch(patches[0].pixels, **fields))["orientation"].numpy()) == (-1, -1)
