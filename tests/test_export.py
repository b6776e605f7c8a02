"""`mammogan export`: SavedModel / ONNX outputs equal the run's generator, `synthesize --model`
equals `synthesize --run`, and the model card's numbers are those of the files they came from."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mammogan_tf.cli import main
from mammogan_tf.config import validate_config
from mammogan_tf.manifest import read_manifest
from mammogan_tf.synthesis.model_card import NOT_MEASURED
from conftest import png_pixels as _png_pixels, tiny_experiment, write_tiny_shards

tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def dcgan_run(tmp_path_factory):
    """A finished 16 px DCGAN run (EMA, 3 steps, no metric: no best/)."""
    from mammogan_tf.training.run import train

    root = tmp_path_factory.mktemp("dcgan")
    config = validate_config(tiny_experiment(write_tiny_shards(root / "data"), steps=3))
    train(config, root / "run", progress=False)
    return root / "run"


@pytest.fixture(scope="module")
def exports(acgan_run, dcgan_run, tmp_path_factory):
    run = acgan_run
    root = tmp_path_factory.mktemp("exports")
    onnx = ["--onnx"] if _has("tf2onnx") else []
    assert main(["export", "--run", str(run), "--out", str(root / "acgan"), *onnx]) == 0
    assert main(["export", "--run", str(dcgan_run), "--checkpoint", "last", "--out", str(root / "dcgan")]) == 0
    return {"acgan": (run, "best", root / "acgan"), "dcgan": (dcgan_run, "last", root / "dcgan")}


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def _reference(run_dir, checkpoint, z, labels):
    """The run's generator (restored from its checkpoint) on fixed inputs, as [0, 1] pixels."""
    from mammogan_tf.synthesis.sampling import load_generator

    loaded = load_generator(run_dir, checkpoint)
    out = loaded.generator((z, labels) if loaded.num_classes else z, training=False).numpy()
    return np.clip((out + 1.0) / 2.0, 0.0, 1.0), loaded


@pytest.mark.parametrize("name", ["acgan", "dcgan"])
def test_saved_model_and_onnx_equal_the_run_generator(exports, name):
    run_dir, checkpoint, out = exports[name]
    manifest = read_manifest(out, stage="export")
    signature = manifest["signature"]
    z = np.random.default_rng(0).standard_normal((5, signature["inputs"]["latent"]["shape"][1])).astype(np.float32)
    labels = np.array([0, 1, 1, 0, 1], np.int32)
    expected, loaded = _reference(run_dir, checkpoint, z, labels)
    assert manifest["generator_sha256"] == loaded.sha256 and manifest["checkpoint_step"] == loaded.step
    feeds = {"latent": z, **({"class_label": labels} if "class_label" in signature["inputs"] else {})}
    assert (name == "acgan") == ("class_label" in feeds)
    serving = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"]
    image = serving(**{k: tf.constant(v) for k, v in feeds.items()})["image"].numpy()
    assert image.shape == (5, 16, 16, 1) and image.min() >= 0.0 and image.max() <= 1.0
    np.testing.assert_allclose(image, expected, atol=1e-5, rtol=0)
    assert (out / "generator.onnx").is_file() == (name == "acgan" and _has("tf2onnx"))
    if (out / "generator.onnx").is_file():
        ort = pytest.importorskip("onnxruntime")
        session = ort.InferenceSession(str(out / "generator.onnx"), providers=["CPUExecutionProvider"])
        (onnx_image,) = session.run(["image"], feeds)
        np.testing.assert_allclose(onnx_image, expected, atol=1e-5, rtol=0)
    assert manifest["files"]["generator.keras"] and "saved_model/saved_model.pb" in manifest["files"]


def test_synthesize_from_the_export_equals_synthesize_from_the_run(exports, tmp_path):
    from mammogan_tf.synthesis.export import read_png_provenance

    run_dir, _, out = exports["acgan"]
    common = ["--n", "4", "--format", "png", "--seed", "5", "--quiet"]
    assert main(["synthesize", "--run", str(run_dir), "--out", str(tmp_path / "r"), *common]) == 0
    assert main(["synthesize", "--model", str(out), "--out", str(tmp_path / "m"), *common, "--batch-size", "3"]) == 0
    names = sorted(p.name for p in (tmp_path / "r").glob("*.png"))
    assert names == sorted(p.name for p in (tmp_path / "m").glob("*.png")) and len(names) == 4
    for name in names:
        np.testing.assert_array_equal(_png_pixels(tmp_path / "r" / name), _png_pixels(tmp_path / "m" / name))
        assert read_png_provenance(tmp_path / "r" / name) == read_png_provenance(tmp_path / "m" / name)
    from_model = read_manifest(tmp_path / "m", stage="synthesize")
    assert from_model["generator_sha256"] == read_manifest(tmp_path / "r")["generator_sha256"]
    assert from_model["inputs"][0]["path"] == str((out / "manifest.json").resolve())
    with pytest.raises(SystemExit):  # argparse: --run and --model exclude each other
        main(["synthesize", "--model", str(out), "--run", str(run_dir), "--n", "1", "--out", str(tmp_path / "x")])


def test_a_changed_keras_file_is_refused(exports, tmp_path):
    import shutil

    from mammogan_tf.errors import InputError
    from mammogan_tf.synthesis.model_export import load_export

    copy = tmp_path / "copy"
    shutil.copytree(exports["dcgan"][2], copy)
    (copy / "generator.keras").write_bytes(b"not the exported generator")
    with pytest.raises(InputError, match="changed since export"):
        load_export(copy)


def test_card_numbers_equal_the_manifests_and_reports(acgan_run, tmp_path):
    run = acgan_run
    from mammogan_tf.evaluation.report import run_evaluation
    from mammogan_tf.evaluation.vtt import score_vtt

    assert main(["synthesize", "--run", str(run), "--out", str(tmp_path / "s"), "--n", "12", "--format", "png",
                 "--quiet"]) == 0
    train_manifest = read_manifest(run, stage="train")
    data_manifest = train_manifest["inputs"][0]["path"]
    metrics = run_evaluation(data_manifest, tmp_path / "s", tmp_path / "eval", backbone="random", tsne=False,
                             kid_subsets=3, kid_subset_size=6, k=2, progress=False)
    key = {f"img{i}": i % 2 == 0 for i in range(6)}
    scores = score_vtt(key, {"A": {f"img{i}": i < 3 for i in range(6)}, "B": dict(key)})
    (tmp_path / "scores.json").write_text(json.dumps(scores))
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "x"), "--evaluation", str(tmp_path / "eval"),
                 "--vtt", str(tmp_path / "scores.json")]) == 0
    card = json.loads((tmp_path / "x" / "model_card.json").read_text())
    perf = card["selection"]["performance"]
    assert perf["FID"]["value"] == metrics["fid"] and perf["KID"]["mean"] == metrics["kid"]["mean"]
    assert perf["FRD"]["value"] == metrics["frd"] and perf["FRD"]["value"] > 0
    assert f"| FRD | {metrics['frd']:.4g} |" in (tmp_path / "eval" / "report.md").read_text()
    assert perf["precision"] == metrics["precision"] and perf["coverage"] == metrics["coverage"]
    assert perf["FID"]["backbone"] == "random" and perf["FID"]["n_synthetic"] == 12
    assert perf["memorisation"]["n_flagged"] == metrics["memorisation"]["n_flagged"]
    assert perf["turing_test"]["observers"]["A"]["accuracy"] == scores["observers"]["A"]["accuracy"]
    assert perf["turing_test"]["observers"]["B"]["accuracy"] == 1.0
    best = json.loads((run / "best" / "best.json").read_text())
    assert card["training"]["best"] == best and card["training"]["checkpoint"]["step"] == best["step"]
    assert perf["in_training_metric"] == {"name": "kid", "value": best["value"], "step": best["step"],
                                          "backbone": "random"}
    assert card["training"]["steps"] == train_manifest["counts"]["steps"] == 2
    data = json.loads(open(data_manifest).read())
    assert card["training_data"]["patches_per_split"] == data["counts"]
    assert card["training_data"]["manifest_sha256"] == train_manifest["inputs"][0]["sha256"]
    assert card["selection"]["generates"] == ["mass", "calcification"] and card["selection"]["type"] == "ACGAN"
    assert card["description"]["publication"].startswith("Odena")  # the ACGAN family's paper
    assert isinstance(card["training"]["time_seconds"], float) and card["training"]["time_seconds"] > 0
    text = (tmp_path / "x" / "MODEL_CARD.md").read_text()
    assert f"| FID | value {metrics['fid']:.4g};" in text and "| SSIM | not measured |" in text
    inputs = read_manifest(tmp_path / "x", stage="export")["inputs"]
    assert inputs[2]["path"] == str((tmp_path / "eval" / "metrics.json").resolve())


def test_card_of_a_run_without_evaluation_says_not_measured(exports):
    out = exports["dcgan"][2]
    card = json.loads((out / "model_card.json").read_text())
    perf = card["selection"]["performance"]
    for key in ("FID", "KID", "FRD", "precision", "recall", "density", "coverage", "memorisation",
                "turing_test", "downstream_task", "in_training_metric", "SSIM", "PSNR", "IS"):
        assert perf[key] == NOT_MEASURED, key
    assert card["training"]["best"] == NOT_MEASURED  # no metric, no best/
    assert card["training_data"]["dataset"] == NOT_MEASURED  # the tiny manifest names no data set
    assert card["description"]["publication"].startswith("Radford")
    assert card["execution"]["onnx"] == "not exported"
    text = (out / "MODEL_CARD.md").read_text()
    assert "| FID | not measured |" in text and "| turing_test | not measured |" in text
