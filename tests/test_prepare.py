"""`mammogan prepare` end to end: mini-MIAS, the phantom, bad input, resume, determinism."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pandas
import pydicom
import pytest

from mammogan_tf.cli import main
from mammogan_tf.config import PrepareConfig
from mammogan_tf.data import prepare as prepare_module
from mammogan_tf.data.prepare import select_images
from mammogan_tf.data.shards import make_dataset
from mammogan_tf.data.table import COLUMNS
from mammogan_tf.manifest import partial_dir, read_manifest, sha256_file


def _rejected(out):
    with open(out / "rejected.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _cli(*args):
    """Run the installed CLI in a subprocess (exit codes as a user sees them)."""
    return subprocess.run([sys.executable, "-m", "mammogan_tf", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def mias_out(tmp_path_factory, mias_dir):
    mias = mias_dir
    out = tmp_path_factory.mktemp("mias") / "out"
    result = _cli("prepare", "--images", str(mias / "png"), "--annotations", str(mias / "Info.txt"),
                  "--out", str(out), "--workers", "2", "--quiet")
    return mias, out, result


def test_mias_prepare_outputs(mias_out):
    _, out, result = mias_out
    assert result.returncode == 3, result.stderr  # written, some inputs rejected
    assert "source rows" in result.stdout and "mass" in result.stdout
    assert "cuda" not in result.stderr.lower()  # no CUDA driver lines on a prepare run
    manifest = read_manifest(out, stage="prepare")
    rejected = _rejected(out)
    outside = {row["image_id"] for row in rejected if "outside the breast" in row["reason"]}
    assert outside == {"mdb212", "mdb214"}
    diffuse = {row["image_id"] for row in rejected if "diffuse" in row["reason"]}
    assert diffuse == {"mdb059", "mdb216", "mdb233", "mdb245"}
    counts = manifest["counts"]
    lesions = sum(n for split in counts.values() for kind, n in split.items() if kind != "normal")
    normals = sum(split.get("normal", 0) for split in counts.values())
    assert lesions >= 115 and normals > lesions
    assert manifest["summary"]["images"] == 322 and manifest["summary"]["images_read"] == 322
    for name, digest in manifest["files"].items():
        assert sha256_file(out / name) == digest
    patients = manifest["patients"]
    assert patients["mias001"] in {"train", "val", "test"} and len(patients) == 161
    # no patient in two splits: every record's patient belongs to its split only
    for split in ("train", "val", "test"):
        ids = {ex["patient_id"].numpy().decode() for ex in make_dataset(
            out, split, batch_size=None, shuffle=False, as_dict=True)}
        assert ids and all(patients[p] == split for p in ids)
    images, labels = next(iter(make_dataset(out, "train", batch_size=32, shuffle=False)))
    assert images.shape == (32, 128, 128, 1) and float(images.numpy().min()) >= -1.0


def test_mias_rerun_is_byte_identical_with_one_worker(mias_out, tmp_path):
    mias, out, _ = mias_out
    config = PrepareConfig(images=str(mias / "png"), annotations=str(mias / "Info.txt"), workers=1)
    again = prepare_module.run_prepare(config, tmp_path / "again", progress=False)
    first = read_manifest(out)
    assert again["files"] == first["files"]  # same sha256 for every shard and rejected.csv


def _write_dicom(path, pixels, **tags):
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds = pydicom.dataset.FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PhotometricInterpretation, ds.SamplesPerPixel = "MG", "MONOCHROME2", 1
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)


def _breast(rng, size=160):
    yy, xx = np.mgrid[:size, :size]
    breast = (xx / (size * 0.8)) ** 2 + ((yy - size / 2) / (size * 0.45)) ** 2 < 1
    pixels = np.where(breast, 20000 + 8000 * rng.random((size, size)), 0)
    pixels[70:90, 30:50] += 20000
    return pixels


def test_bad_inputs_are_rejected_and_the_rest_processed(tmp_path):
    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    images.mkdir()
    _write_dicom(images / "good1.dcm", _breast(rng))
    _write_dicom(images / "good2.dcm", _breast(rng))
    _write_dicom(images / "constant.dcm", np.full((160, 160), 1000))
    full = (images / "good1.dcm").read_bytes()
    (images / "truncated.dcm").write_bytes(full[: len(full) // 2])
    (images / "notdicom.dcm").write_bytes(b"this is not an image")
    rows = [
        ("good1", "pA", "good1.dcm", "mass", 30, 70, 50, 90),
        ("good1", "pA", "good1.dcm", "mass", 500, 500, 540, 540),  # box outside the image
        ("good2", "pB", "good2.dcm", "normal", "", "", "", ""),
        ("constant", "pC", "constant.dcm", "normal", "", "", "", ""),
        ("truncated", "pD", "truncated.dcm", "normal", "", "", "", ""),
        ("notdicom", "pE", "notdicom.dcm", "normal", "", "", "", ""),
        ("missing", "pF", "missing.dcm", "normal", "", "", "", ""),
        ("", "pG", "good2.dcm", "mass", 1, 1, 5, 5),  # row with a missing field
    ]
    table = tmp_path / "lesions.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for image_id, patient, path, kind, x0, y0, x1, y1 in rows:
            record = dict.fromkeys(COLUMNS, "")
            record.update(image_id=image_id, patient_id=patient, path=path, lesion_type=kind,
                          x0=x0, y0=y0, x1=x1, y1=y1)
            writer.writerow([record[c] for c in COLUMNS])
    out = tmp_path / "out"
    code = main(["prepare", "--images", str(images), "--annotations", str(table), "--out", str(out),
                 "--quiet", "--set", "prepare.patches.size=32", "--set", "prepare.split.fractions=[1,0,0]"])
    assert code == 3
    reasons = {row["image_id"] or row["rows"]: row["reason"] for row in _rejected(out)}
    assert set(reasons) >= {"good1", "constant", "truncated", "notdicom", "missing"}
    assert "outside the image" in reasons["good1"]
    assert len(_rejected(out)) == 6
    manifest = read_manifest(out)
    assert manifest["counts"]["train"]["mass"] == 1 and manifest["counts"]["train"]["normal"] > 0
    assert manifest["summary"]["images_read"] == 2


def test_killed_run_resumes_to_identical_output(tmp_path, monkeypatch):
    from mammogan_tf.data.phantom import write_phantom
    table = write_phantom(tmp_path / "phantom", n_images=8, seed=1)
    config = PrepareConfig(images=str(table.parent), annotations=str(table), images_per_shard=2)
    config.patches.size = 48
    clean = prepare_module.run_prepare(config, tmp_path / "clean", progress=False)

    calls = {"n": 0}
    real_finish = prepare_module._finish_unit

    def dying(*args, **kwargs):
        if calls["n"] == 2:
            raise KeyboardInterrupt
        calls["n"] += 1
        real_finish(*args, **kwargs)

    monkeypatch.setattr(prepare_module, "_finish_unit", dying)
    with pytest.raises(KeyboardInterrupt):
        prepare_module.run_prepare(config, tmp_path / "resumed", progress=False)
    staging = partial_dir(tmp_path / "resumed")
    assert not (tmp_path / "resumed").exists() and len(list((staging / "units").iterdir())) == 2
    monkeypatch.setattr(prepare_module, "_finish_unit", real_finish)
    resumed = prepare_module.run_prepare(config, tmp_path / "resumed", progress=False)
    assert resumed["files"] == clean["files"] and not staging.exists()


def test_phantom_then_prepare_from_the_cli(tmp_path):
    assert main(["phantom", "--out", str(tmp_path / "P"), "--n-images", "6", "--seed", "2"]) == 0
    out = tmp_path / "out"
    code = main(["prepare", "--images", str(tmp_path / "P"), "--annotations", str(tmp_path / "P" / "lesions.csv"),
                 "--out", str(out), "--quiet", "--set", "prepare.patches.size=64"])
    assert code == 0
    manifest = read_manifest(out)
    assert manifest["annotation_format"] == "table"
    total = {}
    for split in manifest["counts"].values():
        for kind, n in split.items():
            total[kind] = total.get(kind, 0) + n
    assert total["normal"] > 0 and sum(n for k, n in total.items() if k != "normal") > 0
    assert json.loads((out / "manifest.json").read_text())["inputs"][0]["sha256"]


def test_prepare_argument_errors_exit_2(tmp_path):
    result = _cli("prepare", "--images", str(tmp_path / "nope"), "--annotations", "x.csv", "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and result.stderr.strip().startswith("error: --images")
    assert len(result.stderr.strip().splitlines()) == 1


def test_image_filters_keep_manufacturer_and_processed_rows():
    table = pandas.DataFrame({"manufacturer": ["HOLOGIC, Inc.", "GE", None, "Hologic"],
                              "processed": [True, True, True, False]})
    assert select_images(table, [], False).index.tolist() == [0, 1, 2, 3]
    assert select_images(table, ["hologic"], False).index.tolist() == [0, 3]
    assert select_images(table, ["hologic"], True).index.tolist() == [0]
    assert select_images(table, [], True).index.tolist() == [0, 1, 2]
