"""Every paper table preset, and the Wu classifier preset, runs end to end when shrunk with --set,
so the presets cannot rot: the YAML as shipped, only sizes, data and length overridden (16 px
patches of 15 constructed patients, tiny networks, 1-2 steps, one positive set size, 1-2 folds).

The Wu table runs its contextual mass GAN only (a contextual run costs ~15 s of tracing; the
calcification and removal experiments are resolved per class in test_studies). Trained one step,
it paints almost nothing; as in test_contextual_synthesis, the restored generator is wrapped to add
a disk to its lesion channel so that post-processing keeps the synthetic lesions.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from classifier_helpers import write_real
from conftest import REPO_ROOT
from test_contextual_synthesis import Boosted, _patched
from test_presets_run import SHRINK as DCGAN_SHRINK

TABLES = REPO_ROOT / "experiments" / "tables"
PER_PATIENT = {"mass": 2, "mass:benign": 1, "calcification": 2, "calcification:benign": 1, "normal": 5}
CLASSIFIER = ["classifier.model.image_size=16", "classifier.train.samples=16", "classifier.train.batch_size=8",
              "classifier.train.validate_every=16", "classifier.train.bootstrap=20", "tsne_samples=0"]
CONTEXTUAL = ["model.image_size=16", "model.attention_resolution=8", "model.border_crop=1",
              "model.generator.base_filters=2", "model.generator.max_filters=4", "model.generator.center_filters=4",
              "model.discriminator.base_filters=2", "model.discriminator.max_filters=4", "train.steps=1",
              "train.batch_size=2", "train.checkpoint_every=1", "train.sample_every=1", "train.grid_size=2",
              "train.metric.name=none", "train.log_every=1"]
GAN_DCGAN = [s for s in DCGAN_SHRINK if not s.startswith("train.data.")]


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> Path:
    """16 px patches of 15 patients (9 train, 3 val, 3 test), malignant and benign lesions, normals."""
    return write_real(tmp_path_factory.mktemp("tables") / "real", n_patients=15, per_patient=PER_PATIENT)


def _table(name: str, out: Path, sets: list[str]) -> dict:
    from mammogan_tf.cli import main

    args = ["table", str(TABLES / f"{name}.yaml"), "--out", str(out), "--quiet"]
    for item in sets:
        args += ["--set", item]
    assert main(args) == 0
    return json.loads((out / "table.json").read_text())


def _check_rows(table: dict, binary: list[str], folds: int, k=None) -> dict:
    """Rows as shipped (one per regime): pooled AUC with its CI in [0, 1], a DeLong p against the
    baseline for the binary non-baseline rows of the baseline's task."""
    rows = {r["regime"]: r for r in table["rows"]}
    assert list(rows) == [r["name"] for r in table["grid"]["regimes"]]
    baseline = next(r["name"] for r in table["grid"]["regimes"] if r.get("baseline"))
    for name in binary:
        row = rows[name]
        assert row["folds"] == folds and row["k"] == k
        assert 0 <= row["auc_ci_low"] <= row["auc"] <= row["auc_ci_high"] <= 1
        if name == baseline:
            assert "p_vs_baseline" not in row
        else:
            assert row["compared_to"] == baseline and 0 <= row["p_vs_baseline"] <= 1
    return rows


@pytest.fixture(scope="module")
def wu_table(real, tmp_path_factory):
    out = tmp_path_factory.mktemp("wu") / "table"
    sets = [f"data.manifest={real}", *CLASSIFIER, "classifier.model.architecture=small_cnn",
            "classifier.model.weights=none", "classifier.model.filters=[4, 8]", "tsne_samples=20",
            f"gan.set={json.dumps(CONTEXTUAL)}", "gan.n=6", "gan.classes=[mass]"]
    with pytest.MonkeyPatch.context() as patch:
        _patched(patch, Boosted)
        patch.chdir(REPO_ROOT)  # the preset names its GAN experiments relative to the project
        return out, _table("wu2020_table1", out, sets)


def test_wu_table_synthesizes_with_contextual_gans_from_training_patients(wu_table, real):
    from mammogan_tf.manifest import read_manifest
    from mammogan_tf.studies.leakage import heldout_patients, upstream_patients
    from mammogan_tf.studies.subsets import read_records

    out, table = wu_table
    _check_rows(table, ["real", "gan10", "gan25", "gan50", "gan75", "gan100"], folds=1)
    assert {"roc.png", "auc_vs_share.png", "tsne.png"} <= set(table["figures"])
    data = out / "data" / "fold0"
    train = {p for p, s in read_manifest(data)["patients"].items() if s == "train"}
    heldout = heldout_patients(data)
    assert len(train) == 9 and len(heldout) == 6
    for cls, source in (("mass", "normal"),):
        synthetic = out / "synthetic" / "fold0" / cls
        manifest = read_manifest(synthetic)
        assert manifest["model_family"] == "contextual" and manifest["source_split"] == "train"
        assert Path(manifest["config"]["from"]) == data.resolve() and manifest["discarded"]["count"] == 0
        run = read_manifest(out / "gan" / "fold0" / cls)
        assert run["config"]["model"]["family"] == "contextual"
        records = read_records(synthetic)
        # one synthetic patch per source patch of the train split (at most gan.n), each seeded by a training patient
        n_sources = sum(1 for r in read_records(data, ["train"]) if r["lesion_type"] == source)
        assert len(records) == min(6, n_sources) and {r["lesion_type"] for r in records} == {cls}
        assert {r["patient_id"] for r in records} <= train
        # the leakage guard sees the GAN's training patients and the seeding patients, none held out
        patients, chain = upstream_patients(synthetic)
        assert patients == train and "synthesis seeds" in chain and "GAN run" in chain
    cell = read_manifest(out / "cells" / "gan50" / "fold0")
    assert sum("synthetic" in i["path"] for i in cell["inputs"]) == 1


def test_wu_classifier_preset_trains_on_real_and_contextual_synthetic(wu_table, real, tmp_path):
    """The preset with a small CNN for its ResNet-50 (25 s of CPU for two steps; test_classifiers
    builds and round-trips the ResNet-50): Adam 1e-5, equal classes, the decaying share."""
    from mammogan_tf.cli import main
    from mammogan_tf.manifest import read_manifest
    from mammogan_tf.training.run_log import read_metrics

    out, _ = wu_table
    synthetic = [str(out / "synthetic" / "fold0" / "mass")]
    sets = ["model.architecture=small_cnn", "model.image_size=16", "model.weights=none", "model.filters=[4, 8]",
            f"train.data.manifest={real}",
            f"train.mixing.synthetic={json.dumps(synthetic)}", "train.samples=16", "train.batch_size=8",
            "train.validate_every=8"]
    args = ["train", str(REPO_ROOT / "experiments" / "wu2020_classifier.yaml"), "--out", str(tmp_path / "run"),
            "--quiet"]
    for item in sets:
        args += ["--set", item]
    assert main(args) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["steps"] == 2 and 0 <= metrics["test"]["auc"] <= 1
    manifest = read_manifest(tmp_path / "run")
    train = manifest["config"]["train"]
    assert (train["optimizer"]["learning_rate"], train["mixing"]["balance"], train["mixing"]["share"]["rate"]) == (
        1e-5, "equal", 0.9)
    assert Path(manifest["inputs"][1]["path"]).parent.name == "mass"
    mix = read_metrics(tmp_path / "run" / "metrics.jsonl", "mix")
    assert [r["step"] for r in mix] == [8, 16] and all(0 <= r["realised_share"] <= 1 for r in mix)
    assert [r["scheduled_share"] for r in mix] == pytest.approx([0.25, 0.25])  # 0.5 in the cancer class, half the samples
    scores = np.load(tmp_path / "run" / "scores" / "test.npz")
    assert scores["scores"].shape == scores["labels"].shape and scores["labels"].size > 0


def test_alyafi_table_k_positives_ir_negatives_ar_synthetic_over_patient_folds(real, tmp_path, monkeypatch):
    from mammogan_tf.manifest import read_manifest

    monkeypatch.chdir(REPO_ROOT)
    sets = [f"data.manifest={real}", "data.folds=2", "protocol.k=[4]", *CLASSIFIER,
            "classifier.model.filters=[4, 8]", f"gan.set={json.dumps(GAN_DCGAN)}"]
    table = _table("alyafi2019_imbalanced", tmp_path, sets)
    _check_rows(table, ["ORG", "Aug ORG", "GAN", "Aug GAN"], folds=2, k=4)
    assert {"roc-k4.png", "f1_vs_k.png", "auc_vs_k.png"} <= set(table["figures"])
    tested = []
    for fold in (0, 1):
        data = read_manifest(tmp_path / "data" / f"k4-fold{fold}")
        counts = data["counts"]
        assert sum(c.get("mass", 0) for c in counts.values()) == 4  # k
        assert sum(c.get("normal", 0) for c in counts.values()) == 40  # IR x k
        tested += [p for p, s in data["patients"].items() if s == "test"]
        synthetic = read_manifest(tmp_path / "synthetic" / f"k4-fold{fold}" / "mass")
        assert synthetic["counts"]["train"] == {"mass": 6}  # AR x k
    assert len(tested) == len(set(tested))  # each patient tested once


def test_fridadar_table_binary_and_three_class_rows(real, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    sets = [f"data.manifest={real}", "data.folds=0", *CLASSIFIER, "classifier.model.filters=[4, 8, 8]",
            "classifier.model.dense_units=[8, 8]", f"gan.set={json.dumps(GAN_DCGAN)}", "gan.n=8"]
    table = _table("fridadar2018", tmp_path, sets)
    rows = _check_rows(table, ["classic", "classic + GAN"], folds=1)
    for name in ("classic 3-class", "classic + GAN 3-class"):
        row = rows[name]
        assert 0 <= row["accuracy_mean"] <= 1 and "p_vs_baseline" not in row
        assert {f"sensitivity_{c}" for c in ("normal", "mass", "calcification")} <= set(row)
    for cls in ("mass", "calcification"):
        assert (tmp_path / "synthetic" / "fold0" / cls / "manifest.json").is_file()


def test_mias_quick_table_on_a_tiny_prepared_set(real, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    sets = [f"data.manifest={real}", "data.prepare=null", "data.folds=0", *CLASSIFIER,
            "classifier.model.filters=[4, 8]", f"gan.set={json.dumps(GAN_DCGAN)}", "gan.n=8"]
    table = _table("mias_quick", tmp_path, sets)
    _check_rows(table, ["real", "gan25", "gan50", "classic", "cas"], folds=1)
    md = (tmp_path / "table.md").read_text()
    assert md.count("\n| ") == 6 and "DeLong p vs baseline" in md  # header + 5 regimes
    csv = (tmp_path / "table.csv").read_text().splitlines()
    assert len(csv) == 6 and "p_vs_baseline" in csv[0]
