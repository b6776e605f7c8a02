"""End to end on prepared mini-MIAS shards: `mammogan features fit`, `mammogan evaluate` on PNG
folders and on shards, the lesion-vs-normal distance check, cached real statistics."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("tensorflow")

from mammogan_tf.cli import main  # noqa: E402
from mammogan_tf.errors import InputError  # noqa: E402
from mammogan_tf.evaluation.features import extract_features, load_backbone  # noqa: E402
from mammogan_tf.evaluation.frechet import activation_statistics, frechet_distance  # noqa: E402
from mammogan_tf.evaluation.inputs import load_image_set  # noqa: E402
from mammogan_tf.evaluation.reference import RealReference  # noqa: E402
from mammogan_tf.manifest import read_manifest, sha256_file  # noqa: E402

N_NORMAL_IMAGES = 40


@pytest.fixture(scope="session")
def mias_shards(tmp_path_factory, mias_dir):
    """Every abnormal mini-MIAS image plus 40 normal ones, prepared as 32 px patches."""
    root = tmp_path_factory.mktemp("eval_mias")
    (root / "png").mkdir()
    lines = [line for line in (mias_dir / "Info.txt").read_text().splitlines() if line.startswith("mdb")]
    normal = [line for line in lines if line.split()[2] == "NORM"][:N_NORMAL_IMAGES]
    chosen = [line for line in lines if line.split()[2] != "NORM"] + normal
    for image_id in {line.split()[0] for line in chosen}:
        (root / "png" / f"{image_id}.png").symlink_to(mias_dir / "png" / f"{image_id}.png")
    (root / "Info.txt").write_text("\n".join(chosen) + "\n")
    out = root / "shards"
    code = main(["prepare", "--images", str(root / "png"), "--annotations", str(root / "Info.txt"),
                 "--out", str(out), "--workers", "1", "--quiet", "--set", "prepare.patches.output_size=32",
                 "--set", "prepare.patches.normal_per_image=2"])
    assert code in (0, 3)  # 3: written, with the known unusable rows in rejected.csv
    return out


@pytest.fixture(scope="session")
def all_patches(mias_shards):
    patches = load_image_set(mias_shards, None, progress=False)
    return patches.subset(patches.where_lesion()), patches.subset(patches.where_normal())


@pytest.fixture(scope="session")
def fitted(mias_shards, tmp_path_factory):
    path = tmp_path_factory.mktemp("backbone") / "mias.keras"
    assert main(["features", "fit", "--shards", str(mias_shards), "--out", str(path), "--epochs", "3", "--min-steps", "0",
                 "--steps-per-epoch", "8", "--batch-size", "32", "--quiet"]) == 0
    return path


@pytest.fixture(scope="session")
def png_folders(all_patches, tmp_path_factory):
    """The lesion patches as 16-bit PNG in two folders (even / odd), standing in for real / synthetic."""
    lesions, _ = all_patches
    root = tmp_path_factory.mktemp("png")
    for i, image in enumerate(lesions.images):
        folder = root / ("real" if i % 2 == 0 else "synthetic")
        folder.mkdir(exist_ok=True)
        Image.fromarray(np.round((image[..., 0] + 1) / 2 * 65535).astype(np.uint16)).save(folder / f"p{i:03d}.png")
    return root / "real", root / "synthetic"


def test_fit_writes_a_backbone_and_its_validation_accuracy(mias_shards, fitted):
    info = json.loads(fitted.with_suffix(".json").read_text())
    manifest = read_manifest(mias_shards)
    assert info["val_count"] == sum(manifest["counts"]["val"].values())
    assert 0.0 <= info["val_accuracy"] <= 1.0 and 0.0 <= info["val_balanced_accuracy"] <= 1.0
    assert info["classes"] == ["normal", "lesion"] and info["input_size"] == 32
    assert info["manifest"]["sha256"] == sha256_file(mias_shards / "manifest.json")
    backbone = load_backbone(f"classifier:{fitted}")
    assert backbone.dim == 64 and backbone.input_size == 32 and backbone.identity["layer"] == "features"


def test_lesions_are_farther_from_normal_tissue_than_from_each_other(all_patches, fitted):
    lesions, normal = all_patches
    assert len(lesions) >= 100 and len(normal) > len(lesions)
    backbone = load_backbone(f"classifier:{fitted}")
    acts_lesion = extract_features(backbone, lesions.images, progress=False)
    acts_normal = extract_features(backbone, normal.images, progress=False)
    order = np.random.default_rng(0).permutation(len(acts_lesion))
    half = len(order) // 2
    between_halves = frechet_distance(acts_lesion[order[:half]], acts_lesion[order[half:]])
    lesion_vs_normal = frechet_distance(acts_lesion, acts_normal)
    assert lesion_vs_normal > between_halves > 0


def _check_output(out, n_real, n_synthetic):
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("fid", "precision", "recall", "density", "coverage"):
        assert isinstance(metrics[key], float) and metrics[key] >= 0
    assert metrics["kid"]["std"] >= 0 and metrics["kid"]["subset_size"] == min(n_real, n_synthetic)
    assert metrics["counts"]["real_lesion"] == n_real and metrics["counts"]["synthetic"] == n_synthetic
    assert "bicubic" in metrics["resize_method"]
    memo = metrics["memorisation"]
    assert memo["n_synthetic"] == n_synthetic and 0 <= memo["n_flagged"] <= n_synthetic
    report = (out / "report.md").read_text()
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert len(linked) >= 5 and set(linked) == set(metrics["figures"].values())
    for name in linked:
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.size[0] > 100
    manifest = read_manifest(out, stage="evaluate")
    assert {"metrics.json", "report.md", *linked} <= set(manifest["files"])
    assert all(sha256_file(out / name) == digest for name, digest in manifest["files"].items())
    assert not out.with_name(out.name + ".partial").exists()
    return metrics


@pytest.mark.parametrize("which", ["random", "fitted"])
def test_evaluate_two_png_folders(png_folders, fitted, tmp_path, which, capsys):
    real, synthetic = png_folders
    backbone = "random" if which == "random" else f"classifier:{fitted}"
    out = tmp_path / "eval"
    assert main(["evaluate", "--real", str(real), "--synthetic", str(synthetic), "--backbone", backbone,
                 "--out", str(out), "--quiet", "--kid-subsets", "20"]) == 0
    assert "FID" in capsys.readouterr().out
    n_real, n_synth = len(list(real.glob("*.png"))), len(list(synthetic.glob("*.png")))
    metrics = _check_output(out, n_real, n_synth)
    assert metrics["backbone"]["spec"] == backbone and metrics["inputs"]["real"]["kind"] == "folder"
    assert "tsne" in metrics["figures"]


def test_evaluate_shards_with_train_real_and_fid_of_a_set_with_itself(mias_shards, png_folders, tmp_path):
    manifest = read_manifest(mias_shards)
    test_lesions = sum(n for name, n in manifest["counts"]["test"].items() if name != "normal")
    out = tmp_path / "eval"
    assert main(["evaluate", "--real", str(mias_shards), "--real-split", "test", "--synthetic", str(png_folders[1]),
                 "--train-real", str(mias_shards), "--backbone", "random", "--out", str(out), "--quiet",
                 "--no-tsne"]) == 0
    metrics = _check_output(out, test_lesions, len(list(png_folders[1].glob("*.png"))))
    assert metrics["memorisation"]["against"] == "train_real" and "tsne" not in metrics["figures"]
    assert metrics["counts"]["train_real"] == sum(n for k, n in manifest["counts"]["train"].items() if k != "normal")
    assert metrics["counts"]["real_normal"] == manifest["counts"]["test"]["normal"]
    same = tmp_path / "same"
    assert main(["evaluate", "--real", str(png_folders[0]), "--synthetic", str(png_folders[0]), "--backbone",
                 "random", "--out", str(same), "--quiet", "--no-tsne"]) == 0
    again = json.loads((same / "metrics.json").read_text())
    assert abs(again["fid"]) < 1e-6 and again["memorisation"]["n_flagged"] == again["counts"]["synthetic"]


def test_real_reference_statistics_are_cached_and_exact(mias_shards, all_patches, tmp_path):
    backbone = load_backbone("random")
    reference = RealReference(backbone, mias_shards, split="train", lesion_types=["mass"], keep=10,
                              cache_dir=tmp_path)
    masses = load_image_set(mias_shards, "train", progress=False)
    masses = masses.subset([t == "mass" for t in masses.lesion_types])
    mu, sigma = activation_statistics(extract_features(backbone, masses.images, progress=False))
    np.testing.assert_allclose(reference.stats.mean, mu, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(reference.stats.covariance(), sigma, rtol=1e-4, atol=1e-10)
    assert len(list(tmp_path.glob("stats-*.npz"))) == 1
    cached = RealReference(backbone, mias_shards, split="train", lesion_types=["mass"], keep=10, cache_dir=tmp_path)
    np.testing.assert_array_equal(cached.stats.covariance(), reference.stats.covariance())
    assert len(list(tmp_path.glob("stats-*.npz"))) == 1
    score = reference.score(masses.images)
    assert score["fid"] < 1e-6 and score["n"] == len(masses) and np.isfinite(score["kid"])


def test_folder_inputs_report_mixed_sizes(tmp_path):
    for name, side in (("a.png", 16), ("b.png", 20)):
        pixels = np.random.default_rng(side).integers(0, 255, (side, side), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / name)
    with pytest.raises(InputError, match="pass --size"):
        load_image_set(tmp_path, progress=False)
    resized = load_image_set(tmp_path, size=16, progress=False)
    assert resized.images.shape == (2, 16, 16, 1) and resized.ids == ["a.png", "b.png"]
    assert -1.0 <= resized.images.min() and resized.images.max() <= 1.0


def test_vtt_make_from_png_folders(png_folders, tmp_path, capsys):
    real, synthetic = png_folders
    out = tmp_path / "vtt"
    assert main(["vtt", "make", "--real", str(real), "--synthetic", str(synthetic), "--n", "10", "--out", str(out),
                 "--quiet"]) == 0
    assert "keep it away from the observers" in capsys.readouterr().out
    assert len(list((out / "observers" / "images").glob("vtt_*.png"))) == 20
    key = (out / "key.csv").read_text().splitlines()
    assert len(key) == 21 and sum(",synthetic," in row for row in key) == 10


def test_dicom_folder_is_read(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileDataset, FileMetaDataset

    rng = np.random.default_rng(0)
    for i in range(3):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = pydicom.uid.SecondaryCaptureImageStorage
        meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        ds = FileDataset(str(tmp_path / f"s{i}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID = "OT", "x"
        ds.Rows = ds.Columns = 16
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = rng.integers(0, 4096, (16, 16), dtype=np.uint16).tobytes()
        ds.save_as(tmp_path / f"s{i}.dcm", enforce_file_format=True)
    images = load_image_set(tmp_path, progress=False)
    assert images.images.shape == (3, 16, 16, 1) and images.ids == ["s0.dcm", "s1.dcm", "s2.dcm"]
    assert -1.0 <= images.images.min() < images.images.max() <= 1.0


def test_evaluate_without_inception_weights_fails_in_one_line(png_folders, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    real, synthetic = png_folders
    assert main(["evaluate", "--real", str(real), "--synthetic", str(synthetic), "--out", str(tmp_path / "o"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "InceptionV3 ImageNet weights not found" in err
    assert not (tmp_path / "o").exists()
