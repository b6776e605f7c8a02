"""Built-in phantom data (mammogan_tf.data.phantom): DICOM files, lesion table, image statistics."""
from __future__ import annotations

import csv
import importlib.util
import time

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from mammogan_tf.config import PatchConfig  # noqa: E402
from mammogan_tf.data.phantom import power_law_texture, write_phantom  # noqa: E402
from mammogan_tf.data.preprocess import breast_mask, lesion_mask  # noqa: E402
from mammogan_tf.data.sampling import sample_lesion_patches, sample_normal_patches  # noqa: E402
from mammogan_tf.data.table import COLUMNS  # noqa: E402

MAX_STORED = 4095  # BitsStored 12


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom")
    start = time.perf_counter()
    table = write_phantom(out, n_images=16, seed=0)
    seconds = time.perf_counter() - start
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    images = {row["image_id"]: pydicom.dcmread(out / row["path"]) for row in rows}
    return {"dir": out, "table": table, "rows": rows, "datasets": images, "seconds": seconds}


def _pixels(ds) -> np.ndarray:
    return ds.pixel_array.astype(np.float32) / MAX_STORED


def _box(row) -> tuple[int, int, int, int]:
    return tuple(int(float(row[k])) for k in ("x0", "y0", "x1", "y1"))


def test_table_layout_and_contents(phantom):
    with open(phantom["table"], newline="") as handle:
        header = next(csv.reader(handle))
    assert tuple(header) == COLUMNS
    rows = phantom["rows"]
    assert len(phantom["datasets"]) == 16
    assert {row["lesion_type"] for row in rows} <= {"normal", "mass", "calcification"}
    normal = {row["image_id"] for row in rows if row["lesion_type"] == "normal"}
    assert 3 <= len(normal) <= 7  # about a third of 16
    assert {row["pathology"] for row in rows if row["lesion_type"] != "normal"} == {"malignant", "benign"}
    patients = {}
    for row in rows:
        patients.setdefault(row["patient_id"], set()).add((row["image_id"], row["view"]))
        assert (phantom["dir"] / row["path"]).is_file() and "/" not in row["path"]
        assert row["manufacturer"] == "mammogan_tf phantom" and row["laterality"] in ("L", "R")
    assert len(patients) == 8
    assert all({view for _, view in images} == {"CC", "MLO"} and len(images) == 2 for images in patients.values())
    assert phantom["seconds"] < 6.0  # ~1 s on one core; generous for a loaded CI machine


def test_dicom_tags(phantom):
    from pydicom.uid import DigitalMammographyXRayImageStorageForPresentation

    uids = set()
    for row in phantom["rows"]:
        ds = phantom["datasets"][row["image_id"]]
        assert ds.SOPClassUID == DigitalMammographyXRayImageStorageForPresentation
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.Modality == "MG" and ds.PresentationIntentType == "FOR PRESENTATION"
        assert ds.PhotometricInterpretation == "MONOCHROME2"
        assert ds.BitsAllocated == 16 and ds.BitsStored == 12 and ds.PixelRepresentation == 0
        assert (ds.Rows, ds.Columns) == (512, 416) and ds.pixel_array.dtype == np.uint16
        assert ds.pixel_array.max() <= MAX_STORED
        assert ds.ImageLaterality == row["laterality"] and ds.ViewPosition == row["view"]
        assert [float(v) for v in ds.PixelSpacing] == [0.4, 0.4]
        assert ds.Manufacturer == "mammogan_tf phantom" and ds.BodyPartExamined == "BREAST"
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]
        assert "SYNTHETIC PHANTOM" in ds.SeriesDescription
        assert ds.PatientID == row["patient_id"] and ds.PatientID.startswith("PHANTOM-")
        assert str(ds.PatientName).startswith("PHANTOM")
        uids.add(ds.SOPInstanceUID)
    assert len(uids) == 16
    studies = {phantom["datasets"][row["image_id"]].StudyInstanceUID for row in phantom["rows"]}
    assert len(studies) == 8  # one study per patient


def test_same_seed_same_bytes_other_seed_differs(phantom, tmp_path):
    again = write_phantom(tmp_path / "again", n_images=16, seed=0)
    assert again.read_bytes() == phantom["table"].read_bytes()
    for row in phantom["rows"]:
        assert (tmp_path / "again" / row["path"]).read_bytes() == (phantom["dir"] / row["path"]).read_bytes()
    small = {seed: write_phantom(tmp_path / f"seed{seed}", n_images=2, seed=seed, size=(128, 96)) for seed in (0, 1)}
    first = {seed: pydicom.dcmread(sorted(path.parent.glob("*.dcm"))[0]) for seed, path in small.items()}
    assert first[0].pixel_array.shape == (128, 96)
    assert not np.array_equal(first[0].pixel_array, first[1].pixel_array)
    assert first[0].SOPInstanceUID != first[1].SOPInstanceUID
    assert first[0].StudyInstanceUID != first[1].StudyInstanceUID


def _spectrum_slope(window: np.ndarray) -> float:
    """Slope of log radially averaged power vs log frequency (Hann-windowed), 4/N .. 0.25 cycles/px."""
    n = window.shape[0]
    hann = np.hanning(n)
    power = np.abs(np.fft.fftshift(np.fft.fft2((window - window.mean()) * np.outer(hann, hann)))) ** 2
    rows, cols = np.indices(power.shape)
    radius = np.hypot(rows - n // 2, cols - n // 2).astype(int)
    profile = np.bincount(radius.ravel(), power.ravel()) / np.bincount(radius.ravel())
    freq = np.arange(profile.size) / n
    use = (np.arange(profile.size) >= 4) & (freq <= 0.25)
    return float(np.polyfit(np.log(freq[use]), np.log(profile[use]), 1)[0])


def test_tissue_power_spectrum_slope_is_about_minus_3(phantom):
    slopes = []
    for row in phantom["rows"]:
        if row["lesion_type"] != "normal":
            continue
        image = _pixels(phantom["datasets"][row["image_id"]])
        breast = breast_mask(image)
        rows, cols = np.flatnonzero(breast.any(axis=1)), np.flatnonzero(breast.any(axis=0))
        cy = (rows[0] + rows[-1]) // 2
        depth = int(0.4 * (cols[-1] - cols[0]))
        cx = cols[0] + depth if row["laterality"] == "L" else cols[-1] - depth
        window = image[cy - 64:cy + 64, cx - 64:cx + 64]
        assert breast[cy - 64:cy + 64, cx - 64:cx + 64].all()
        slopes.append(_spectrum_slope(window))
    assert slopes and all(-3.6 <= s <= -2.4 for s in slopes), slopes
    assert np.mean(slopes) == pytest.approx(-3.0, abs=0.25)
    texture = power_law_texture((256, 256), 3.0, np.random.default_rng(0))
    assert abs(texture.mean()) < 1e-5 and texture.std() == pytest.approx(1.0, rel=1e-4)
    assert _spectrum_slope(texture[64:192, 64:192]) == pytest.approx(-3.0, abs=0.3)


def test_lesions_inside_the_breast_and_brighter(phantom):
    contrasts = []
    for row in phantom["rows"]:
        image = _pixels(phantom["datasets"][row["image_id"]])
        breast = breast_mask(image)
        assert breast.mean() > 0.3
        if row["lesion_type"] == "normal":
            continue
        x0, y0, x1, y1 = _box(row)
        assert 0 < x0 < x1 < image.shape[1] and 0 < y0 < y1 < image.shape[0]
        assert breast[y0:y1, x0:x1].all()
        ring = np.zeros_like(breast)
        ring[y0 - 6:y1 + 6, x0 - 6:x1 + 6] = True
        ring[y0:y1, x0:x1] = False
        contrasts.append(image[y0:y1, x0:x1].mean() - image[ring].mean())
    assert len(contrasts) >= 10
    assert np.mean(contrasts) > 0.02 and np.mean(np.array(contrasts) > 0) >= 0.7


def test_phantom_feeds_the_patch_sampler(phantom):
    rows = [row for row in phantom["rows"] if row["lesion_type"] != "normal"]
    image = _pixels(phantom["datasets"][rows[0]["image_id"]])
    lesions = [dict(row, **dict(zip(("x0", "y0", "x1", "y1"), _box(row))))
               for row in rows if row["image_id"] == rows[0]["image_id"]]
    breast = breast_mask(image)
    config = PatchConfig(size=64, output_size=32)
    patches = sample_lesion_patches(image, breast, lesions, config, np.random.default_rng(0))
    assert len(patches) == len(lesions)
    truth = lesion_mask(image.shape, [_box(row) for row in lesions])
    normals = sample_normal_patches(image, breast, truth, config, np.random.default_rng(0), n=4)
    assert len(normals) == 4
    assert all(p.pixels.shape == (32, 32) for p in patches + normals)


@pytest.mark.skipif(importlib.util.find_spec("mammogan_tf.data.images") is None,
                    reason="mammogan_tf.data.images not written yet")
def test_read_back_with_read_image(phantom):
    from mammogan_tf.data.images import read_image

    row = next(row for row in phantom["rows"] if row["lesion_type"] != "normal")
    image, _meta = read_image(phantom["dir"] / row["path"])
    assert image.shape == (512, 416) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    x0, y0, x1, y1 = _box(row)
    assert breast_mask(image)[y0:y1, x0:x1].all()
