"""`mammogan synthesize`: deterministic batched sampling, provenance in every PNG, DICOM and
shard record, anonymous DICOM, shards that make_dataset reads like prepared ones."""
from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest

from mammogan_tf.cli import main
from mammogan_tf.config import validate_config
from mammogan_tf.data.table import LESION_TYPES
from mammogan_tf.manifest import read_manifest, sha256_file
from conftest import png_pixels as _png_pixels


@pytest.fixture
def run(acgan_run):
    """The session's tiny ACGAN run (``conftest.acgan_run``)."""
    return acgan_run


def _synth(run, out, *args):
    return main(["synthesize", "--run", str(run), "--out", str(out), "--quiet", *args])


def test_png_is_deterministic_per_index_and_carries_provenance(run, tmp_path):
    from mammogan_tf.synthesis.export import read_png_provenance
    from mammogan_tf.models.weights import checkpoint_sha256

    assert _synth(run, tmp_path / "a", "--n", "5", "--format", "png", "--seed", "3", "--batch-size", "2") == 0
    assert _synth(run, tmp_path / "b", "--n", "3", "--format", "png", "--seed", "3", "--batch-size", "3") == 0
    assert _synth(run, tmp_path / "c", "--n", "3", "--format", "png", "--seed", "4") == 0
    files = sorted((p.name for p in (tmp_path / "a").glob("*.png")), key=lambda name: name[-11:])
    assert files == [f"synthetic-{('mass', 'calcification')[i % 2]}-{i:07d}.png" for i in range(5)]
    for name in sorted(p.name for p in (tmp_path / "b").glob("*.png")):
        np.testing.assert_array_equal(_png_pixels(tmp_path / "a" / name), _png_pixels(tmp_path / "b" / name))
    first = sorted((tmp_path / "c").glob("*.png"))[0]
    assert not np.array_equal(_png_pixels(first), _png_pixels(tmp_path / "a" / first.name))  # another seed
    pixels = _png_pixels(tmp_path / "a" / files[3])
    assert pixels.dtype == np.uint16 and pixels.shape == (16, 16)
    record = read_png_provenance(tmp_path / "a" / files[3])
    best = json.loads((run / "best" / "best.json").read_text())
    assert record["synthetic"] is True and record["seed"] == 3 and record["latent_index"] == 3
    assert record["class"] == "calcification" and record["class_index"] == 1
    assert record["checkpoint"] == best["checkpoint"] and record["generator"] == "ema/generator"
    assert record["generator_sha256"] == checkpoint_sha256(run / "best" / best["checkpoint"])
    assert record["package"] == "mammogan_tf" and record["package_version"]
    manifest = read_manifest(tmp_path / "a", stage="synthesize")
    assert manifest["counts"] == {"mass": 3, "calcification": 2}
    assert all(sha256_file(tmp_path / "a" / f) == d for f, d in manifest["files"].items())


def test_dicom_is_derived_secondary_synthetic_and_has_no_patient_identifiers(run, tmp_path):
    from mammogan_tf.synthesis.export import read_dicom_provenance

    assert _synth(run, tmp_path / "d", "--n", "3", "--format", "dicom", "--class", "mass") == 0
    paths = sorted((tmp_path / "d").glob("*.dcm"))
    assert len(paths) == 3
    datasets = [pydicom.dcmread(p) for p in paths]
    for ds in datasets:
        assert "PatientName" not in ds and "PatientID" not in ds
        assert not [e.keyword for e in ds.iterall() if e.keyword.startswith(("Patient", "Other Patient"))]
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY"] and ds.ConversionType == "SYN"
        assert "SYNTHETIC" in ds.SeriesDescription and "SYNTHETIC" in ds.ImageComments
        assert ds.BurnedInAnnotation == "NO"
        assert ds.private_block(0x0011, "MAMMOGAN_TF")[0x01].value == "SYNTHETIC"
        record = read_dicom_provenance(ds)
        assert record["synthetic"] is True and record["class"] == "mass"
        assert ds.pixel_array.shape == (16, 16) and ds.pixel_array.dtype == np.uint16
    uids = {ds.SOPInstanceUID for ds in datasets}
    assert len(uids) == 3 and len({ds.SeriesInstanceUID for ds in datasets}) == 1
    assert all(ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID for ds in datasets)
    again = tmp_path / "e"
    assert _synth(run, again, "--n", "1", "--format", "dicom", "--class", "mass") == 0
    redo = pydicom.dcmread(next(again.glob("*.dcm")))
    assert redo.SOPInstanceUID not in uids and redo.StudyInstanceUID != datasets[0].StudyInstanceUID  # fresh UIDs
    np.testing.assert_array_equal(redo.pixel_array, datasets[0].pixel_array)


def test_shards_read_like_prepared_data(run, tmp_path):
    from mammogan_tf.data.shards import make_dataset

    out = tmp_path / "shards"
    assert _synth(run, out, "--n", "6", "--format", "shards", "--class", "calcification",
                  "--checkpoint", "last") == 0
    manifest = read_manifest(out, stage="synthesize")
    assert manifest["counts"] == {"train": {"calcification": 6}} and manifest["patch_size"] == 16
    assert manifest["classes"] == list(LESION_TYPES) and manifest["inputs"][1]["path"].endswith("ckpt-2.index")
    records = list(make_dataset(out, "train", batch_size=None, shuffle=False, as_dict=True,
                                lesion_types=["calcification"]))
    assert len(records) == 6
    for i, record in enumerate(records):
        assert int(record["synthetic"]) == 1 and int(record["label"]) == LESION_TYPES.index("calcification")
        assert record["lesion_type"].numpy() == b"calcification" and record["image"].shape == (16, 16, 1)
        provenance = json.loads(record["provenance"].numpy())
        assert provenance["latent_index"] == i and provenance["checkpoint"] == "ckpt-2"


def test_user_errors_are_one_line_messages(run, tmp_path, capsys):
    assert _synth(run, tmp_path / "x", "--n", "2", "--class", "tumour") == 2
    assert "--class tumour: not one of the run's classes ['mass', 'calcification']" in capsys.readouterr().err
    assert _synth(tmp_path, tmp_path / "y", "--n", "2") == 2
    assert "no manifest here" in capsys.readouterr().err
    assert _synth(run, tmp_path / "z", "--n", "2", "--checkpoint", str(tmp_path / "nothing")) == 2
    assert "no checkpoint files" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "z").exists()
