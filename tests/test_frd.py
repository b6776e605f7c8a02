"""FRD: radiomic matrices against brute-force loops, features against their textbook sums, and
the distance's properties (0 on itself, symmetric, grows with blur and noise)."""
from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from scipy import ndimage, stats

from mammogan_tf.evaluation import radiomics as rad
from mammogan_tf.evaluation.frd import frd, frd_from_features, normalise_jointly


def _patches(n: int, size: int = 16, seed: int = 0) -> np.ndarray:
    """Smooth blobs plus texture in [-1, 1]: ``(n, size, size, 1)``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(n):
        cy, cx, r = rng.uniform(4, size - 4, 2).tolist() + [rng.uniform(2, 5)]
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r ** 2))
        texture = ndimage.gaussian_filter(rng.standard_normal((size, size)), 1.0)
        out.append(np.clip(-0.6 + 1.2 * blob + 0.5 * texture, -1, 1))
    return np.asarray(out, np.float32)[..., None]


@pytest.fixture(scope="module")
def levels():
    values = rad.to_intensities(_patches(1, 12, seed=3)[0])
    return values, rad.discretise(values)


def test_discretisation_is_pyradiomics_fixed_bin_width():
    values = np.array([[30.0, 49.9], [50.0, 255.0]])
    np.testing.assert_array_equal(rad.discretise(values, 25.0), [[1, 1], [2, 10]])


def _brute_glcm(lv, present):
    g = len(present)
    out = np.zeros((4, g, g))
    h, w = lv.shape
    for a, (dr, dc) in enumerate(rad.ANGLES):
        for r in range(h):
            for c in range(w):
                r2, c2 = r + dr, c + dc
                if 0 <= r2 < h and 0 <= c2 < w:
                    i, j = list(present).index(lv[r, c]), list(present).index(lv[r2, c2])
                    out[a, i, j] += 1
                    out[a, j, i] += 1
    return out


def _brute_runs(lv, offset):
    h, w = lv.shape
    dr, dc = offset
    found = []
    for r in range(h):
        for c in range(w):
            pr, pc = r - dr, c - dc  # a run starts where the previous pixel differs or is outside
            if 0 <= pr < h and 0 <= pc < w and lv[pr, pc] == lv[r, c]:
                continue
            length, rr, cc = 0, r, c
            while 0 <= rr < h and 0 <= cc < w and lv[rr, cc] == lv[r, c]:
                length, rr, cc = length + 1, rr + dr, cc + dc
            found.append((lv[r, c], length))
    return sorted(found)


def _brute_zones(lv):
    h, w = lv.shape
    seen = np.zeros_like(lv, bool)
    found = []
    for r in range(h):
        for c in range(w):
            if seen[r, c]:
                continue
            queue, size = deque([(r, c)]), 0
            seen[r, c] = True
            while queue:
                y, x = queue.popleft()
                size += 1
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        ny, nx = y + dy, x + dx
                        if 0 <= ny < h and 0 <= nx < w and not seen[ny, nx] and lv[ny, nx] == lv[r, c]:
                            seen[ny, nx] = True
                            queue.append((ny, nx))
            found.append((lv[r, c], size))
    return sorted(found)


def _brute_neighbourhood(lv):
    """Per pixel: equal 8-neighbours and |level - mean of in-patch 8-neighbours|."""
    h, w = lv.shape
    same, dev = np.zeros((h, w), int), np.zeros((h, w))
    for r in range(h):
        for c in range(w):
            around = [lv[r + dy, c + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                      if (dy, dx) != (0, 0) and 0 <= r + dy < h and 0 <= c + dx < w]
            same[r, c] = sum(v == lv[r, c] for v in around)
            dev[r, c] = abs(lv[r, c] - np.mean(around))
    return same, dev


def test_texture_matrices_equal_brute_force_loops(levels):
    _, lv = levels
    counts, present = rad.glcm_matrices(lv)
    np.testing.assert_array_equal(counts, _brute_glcm(lv, present))
    for offset in rad.ANGLES:
        grey, length = rad.runs(lv, offset)
        assert sorted(zip(grey.tolist(), length.tolist())) == _brute_runs(lv, offset)
        assert length.sum() == lv.size
    grey, size = rad.zones(lv)
    assert sorted(zip(grey.tolist(), size.tolist())) == _brute_zones(lv)
    same, dev = _brute_neighbourhood(lv)
    np.testing.assert_array_equal(rad.dependences(lv), same + 1)
    present, p, s = rad.ngtdm(lv)
    np.testing.assert_allclose(s, [dev[lv == g].sum() for g in present], rtol=1e-12)


def test_features_equal_textbook_sums(levels):
    values, lv = levels
    f = dict(zip(rad.FEATURE_NAMES, rad.patch_features(_patches(1, 12, seed=3)[0])))
    x = values.ravel()
    assert f["firstorder_Mean"] == pytest.approx(x.mean())
    assert f["firstorder_Skewness"] == pytest.approx(stats.skew(x))
    assert f["firstorder_Kurtosis"] == pytest.approx(stats.kurtosis(x, fisher=False))
    hist = np.unique(lv, return_counts=True)[1] / lv.size
    assert f["firstorder_Entropy"] == pytest.approx(stats.entropy(hist, base=2))
    # GLCM contrast, energy, homogeneity (Idm), correlation from the brute-force matrices
    present = np.unique(lv)
    sums = {"glcm_Contrast": 0.0, "glcm_JointEnergy": 0.0, "glcm_Idm": 0.0, "glcm_Correlation": 0.0}
    for matrix in _brute_glcm(lv, present):
        p = matrix / matrix.sum()
        i, j = np.meshgrid(present, present, indexing="ij")
        mu, sd = np.sum(p * i), np.sqrt(np.sum(p * (i - np.sum(p * i)) ** 2))
        sums["glcm_Contrast"] += np.sum(p * (i - j) ** 2) / 4
        sums["glcm_JointEnergy"] += np.sum(p ** 2) / 4
        sums["glcm_Idm"] += np.sum(p / (1 + (i - j) ** 2)) / 4
        sums["glcm_Correlation"] += np.sum(p * (i - mu) * (j - mu)) / sd ** 2 / 4
    for name, value in sums.items():
        assert f[name] == pytest.approx(value, rel=1e-10), name
    # run emphasis and run percentage, zone percentage, dependence entropy
    sre = np.mean([np.mean([1 / n ** 2 for _, n in _brute_runs(lv, o)]) for o in rad.ANGLES])
    rp = np.mean([len(_brute_runs(lv, o)) / lv.size for o in rad.ANGLES])
    assert f["glrlm_ShortEmphasis"] == pytest.approx(sre) and f["glrlm_Percentage"] == pytest.approx(rp)
    assert f["glszm_Percentage"] == pytest.approx(len(_brute_zones(lv)) / lv.size)
    same, _ = _brute_neighbourhood(lv)
    joint = np.unique(np.stack([lv.ravel(), same.ravel()]), axis=1, return_counts=True)[1] / lv.size
    assert f["gldm_Entropy"] == pytest.approx(stats.entropy(joint, base=2))


def test_frd_matches_an_independent_computation_on_a_fixed_set():
    """FRD from our features equals FRD from brute-force features (the cross-checked columns),
    normalised and compared with scipy's sqrtm rather than our Frechet code."""
    from scipy.linalg import sqrtm

    a, b = _patches(6, 12, seed=1), _patches(6, 12, seed=2)
    names = ["firstorder_Mean", "firstorder_Variance", "glcm_Contrast", "glszm_Percentage"]
    cols = [rad.FEATURE_NAMES.index(n) for n in names]

    def brute(images):
        rows = []
        for image in images:
            values = rad.to_intensities(image)
            lv = rad.discretise(values)
            present = np.unique(lv)
            i, j = np.meshgrid(present, present, indexing="ij")
            contrast = np.mean([np.sum(m / m.sum() * (i - j) ** 2) for m in _brute_glcm(lv, present)])
            rows.append([values.mean(), values.var(), contrast, len(_brute_zones(lv)) / lv.size])
        return np.array(rows)

    fa, fb = brute(a), brute(b)
    np.testing.assert_allclose(rad.radiomic_features(a)[:, cols], fa, rtol=1e-10)
    both = np.concatenate([fa, fb])
    na, nb = [(x - both.min(0)) / (both.max(0) - both.min(0)) * 7.45670747756958 for x in (fa, fb)]
    ca, cb = np.cov(na, rowvar=False), np.cov(nb, rowvar=False)
    expected = np.sum((na.mean(0) - nb.mean(0)) ** 2) + np.trace(ca + cb - 2 * np.real(sqrtm(ca @ cb)))
    assert frd_from_features(rad.radiomic_features(a)[:, cols], rad.radiomic_features(b)[:, cols]) == \
        pytest.approx(expected, rel=1e-6)


def test_normalisation_is_joint_and_handles_constant_columns():
    a, b = np.array([[0.0, 5.0], [2.0, 5.0]]), np.array([[4.0, 5.0], [np.nan, 5.0]])
    na, nb = normalise_jointly(a, b, high=1.0)
    np.testing.assert_allclose(na, [[0.0, 0.5], [0.5, 0.5]])
    np.testing.assert_allclose(nb, [[1.0, 0.5], [0.5, 0.5]])


def test_frd_is_zero_on_itself_symmetric_and_grows_with_blur_and_noise():
    real = _patches(24, 16, seed=0)
    other = _patches(24, 16, seed=1)
    assert frd(real, real) == pytest.approx(0.0, abs=1e-6)
    base = frd(real, other)
    assert frd(other, real) == pytest.approx(base, rel=1e-9)
    blurred = ndimage.gaussian_filter(other, sigma=(0, 1.5, 1.5, 0))
    noisy = np.clip(other + 0.3 * np.random.default_rng(5).standard_normal(other.shape), -1, 1)
    blur_value, noise_value = frd(real, blurred), frd(real, noisy)
    assert blur_value > 2 * base and noise_value > 2 * base
    mild = np.clip(other + 0.1 * np.random.default_rng(5).standard_normal(other.shape), -1, 1)
    assert base < frd(real, mild) < noise_value  # more noise, larger distance
