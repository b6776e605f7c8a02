"""Study protocols (Alyafi's imbalanced sets, patient folds), the leakage guard, `mammogan table`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from classifier_helpers import patient_records, tiny_config, write_real
from mammogan_tf.cli import build_parser, run
from mammogan_tf.errors import InputError
from mammogan_tf.evaluation.classification import auc_ci, delong_test
from mammogan_tf.manifest import MANIFEST_NAME, build_manifest, input_record, write_json_atomic
from mammogan_tf.studies import protocols
from mammogan_tf.studies.leakage import LeakageError, check_leakage, heldout_patients, upstream_patients
from mammogan_tf.training.classifier import train_classifier


def _records(n_patients=40, seed=0):
    """Bare records (no images): patients with 3 masses and 30 normals each."""
    return [{"patient_id": r["patient_id"], "lesion_type": r["lesion_type"], "image_id": r["image_id"],
             "split": "train"} for r in patient_records(n_patients, {"mass": 3, "normal": 30}, seed)]


def test_imbalanced_sets_are_exact_and_nested():
    records = _records()
    previous = None
    for k in (10, 25, 50, 100):
        chosen = protocols.imbalanced_set(records, k, ["mass"], ["normal"], ir=10, seed=1)
        kinds = [r["lesion_type"] for r in chosen]
        assert kinds.count("mass") == k and kinds.count("normal") == 10 * k
        assert len({r["image_id"] for r in chosen}) == 11 * k
        ids = {r["image_id"] for r in chosen}
        if previous is not None:
            assert previous <= ids  # P_k within P_k' for k < k'
        previous = ids
        assert protocols.synthetic_count(k, 1.5) == round(1.5 * k)
    with pytest.raises(Exception, match="needs 130 positive"):
        protocols.imbalanced_set(records, 130, ["mass"], ["normal"])


def test_patient_folds_are_disjoint_and_test_every_patient_once():
    records = _records(30)
    folds = protocols.patient_folds(records, 3, positive=["mass"], seed=2)
    tested = []
    for fold in folds:
        sets = {name: {r["patient_id"] for r in fold[name]} for name in ("train", "val", "test")}
        assert not (sets["train"] & sets["val"] or sets["train"] & sets["test"] or sets["val"] & sets["test"])
        assert sum(len(fold[n]) for n in fold) == len(records)
        assert len(sets["test"]) == 10 and len(sets["val"]) == 2  # 6.6 / 66.6 of 20 rest patients
        tested += sorted(sets["test"])
    assert sorted(tested) == sorted({r["patient_id"] for r in records})


def _chain(tmp_path: Path, real: Path, gan_split: str, name: str) -> Path:
    """A GAN run manifest trained on ``gan_split`` of ``real`` and a synthesize manifest from it."""
    run_dir, syn_dir = tmp_path / f"gan-{name}", tmp_path / f"syn-{name}"
    for folder in (run_dir, syn_dir):
        folder.mkdir()
    run = build_manifest("train", run_dir, config={"train": {"data": {"split": gan_split}}},
                         inputs=[input_record(real / MANIFEST_NAME)], counts={}, files=[])
    write_json_atomic(run_dir / MANIFEST_NAME, run)
    syn = build_manifest("synthesize", syn_dir, config={}, inputs=[input_record(run_dir / MANIFEST_NAME)],
                         counts={}, files=[], extra={"splits": {"train": []}, "classes": ["mass"]})
    write_json_atomic(syn_dir / MANIFEST_NAME, syn)
    return syn_dir


def test_leakage_guard_refuses_an_overlapping_chain_and_accepts_a_clean_one(tmp_path):
    real = write_real(tmp_path / "real", n_patients=10)
    heldout = heldout_patients(real)
    assert len(heldout) == 4
    clean = _chain(tmp_path, real, "train", "clean")
    patients, chain = upstream_patients(clean)
    assert len(patients) == 6 and not patients & heldout and "GAN run" in chain
    check_leakage(heldout, [clean])  # no error
    leaky = _chain(tmp_path, real, "test", "leaky")
    with pytest.raises(LeakageError) as error:
        check_leakage(heldout, [clean, leaky])
    message = str(error.value)
    assert "\n" not in message and "2 patient(s)" in message and "GAN run" in message and "validation/test" in message
    assert error.value.exit_code == 2
    # seeds of contextual synthesis count too
    seeded = _chain(tmp_path, real, "train", "seeded")
    manifest = json.loads((seeded / MANIFEST_NAME).read_text())
    manifest["seed_patients"] = [sorted(heldout)[0]]
    write_json_atomic(seeded / MANIFEST_NAME, manifest)
    with pytest.raises(LeakageError, match="1 patient"):
        check_leakage(heldout, [seeded])
    # contextual synthesis: the patients of its --from manifest's source split seeded it
    for split, refused in (("train", False), ("test", True)):
        contextual = _chain(tmp_path, real, "train", f"contextual-{split}")
        manifest = json.loads((contextual / MANIFEST_NAME).read_text())
        manifest.update(model_family="contextual", source_kind="prepare", source_split=split,
                        config={"from": str(real.resolve()), "split": split})
        write_json_atomic(contextual / MANIFEST_NAME, manifest)
        patients, chain = upstream_patients(contextual)
        assert "synthesis seeds" in chain and (patients & heldout) == (heldout_patients(real, ["test"]) if refused
                                                                       else set())
        if refused:
            with pytest.raises(LeakageError, match="2 patient.*synthesis seeds"):
                check_leakage(heldout, [contextual])
    bare = tmp_path / "bare"  # a seed manifest without patients per split proves nothing either
    bare.mkdir()
    write_json_atomic(bare / MANIFEST_NAME, {k: v for k, v in json.loads((real / MANIFEST_NAME).read_text()).items()
                                             if k != "patients"})
    write_json_atomic(contextual / MANIFEST_NAME, {**manifest, "config": {"from": str(bare)}})
    with pytest.raises(InputError, match="names no patients"):
        upstream_patients(contextual)
    manifest["source_kind"] = "png"  # PNG sources name no patients: the guard cannot prove anything
    write_json_atomic(contextual / MANIFEST_NAME, manifest)
    with pytest.raises(InputError, match="PNG patches"):
        upstream_patients(contextual)
    # the classifier refuses before training
    with pytest.raises(LeakageError):
        train_classifier(tiny_config(real, mixing={"synthetic": [str(leaky)], "share": {"initial": 0.5}}),
                         tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


GAN_YAML = {"model": {"family": "dcgan", "latent_dim": 8, "image_size": 16,
                      "generator": {"base_filters": 4, "max_filters": 8, "kernel_size": 3},
                      "discriminator": {"base_filters": 4, "max_filters": 8, "kernel_size": 3, "num_layers": 2}},
            "train": {"data": {"manifest": "set-by-the-grid"}, "steps": 4, "batch_size": 8, "metric": {"name": "none"},
                      "checkpoint_every": 4, "log_every": 2, "sample_every": 4, "grid_size": 2}}


def test_table_end_to_end_and_delong_matches_the_saved_scores(tmp_path, capsys):
    real = write_real(tmp_path / "real", n_patients=12, per_patient={"mass": 3, "normal": 4})
    (tmp_path / "gan.yaml").write_text(yaml.safe_dump(GAN_YAML))
    base = tiny_config(real, samples=48)
    base["train"].pop("data")
    base.pop("name")
    grid = {"name": "tiny", "output_dir": str(tmp_path / "tables"), "data": {"manifest": str(real)},
            "gan": {"experiment": str(tmp_path / "gan.yaml"), "classes": ["mass"], "n": 16},
            "classifier": base, "tsne_samples": 0,
            "regimes": [{"name": "real", "baseline": True},
                        {"name": "gan50", "synthetic": True, "set": {"train.mixing.share.initial": 0.5}},
                        {"name": "classic", "set": {"train.augment": "classic"}}]}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    assert run(build_parser(), ["table", str(tmp_path / "grid.yaml"), "--quiet"]) == 0
    root = tmp_path / "tables" / "tiny"
    assert "| gan50 |" in capsys.readouterr().out
    table = json.loads((root / "table.json").read_text())
    rows = {r["regime"]: r for r in table["rows"]}
    assert set(rows) == {"real", "gan50", "classic"} and (root / "table.md").is_file() and (root / "roc.png").is_file()
    scores = {name: np.load(root / "cells" / name / "fold0" / "scores" / "test.npz") for name in rows}
    y = scores["real"]["labels"]
    for name in ("gan50", "classic"):
        np.testing.assert_array_equal(scores[name]["labels"], y)
        expected = delong_test(y, scores[name]["scores"], scores["real"]["scores"])
        assert rows[name]["p_vs_baseline"] == pytest.approx(expected.p, abs=1e-12)
        assert rows[name]["delta_auc"] == pytest.approx(expected.difference, abs=1e-12)
        auc, low, high = auc_ci(y, scores[name]["scores"])
        assert [rows[name]["auc"], rows[name]["auc_ci_low"], rows[name]["auc_ci_high"]] == pytest.approx(
            [auc, low, high], abs=1e-12)
    # the synthetic regime's classifier recorded the synthetic set, whose GAN saw training patients only
    cell = json.loads((root / "cells" / "gan50" / "fold0" / MANIFEST_NAME).read_text())
    assert any("synthetic" in i["path"] for i in cell["inputs"])
    # a re-run reuses every finished cell (no retraining: the checkpoints are untouched)
    stamp = (root / "cells" / "real" / "fold0" / "metrics.json").stat().st_mtime_ns
    assert run(build_parser(), ["table", str(tmp_path / "grid.yaml"), "--quiet"]) == 0
    assert (root / "cells" / "real" / "fold0" / "metrics.json").stat().st_mtime_ns == stamp
    # ... and refuses to mix in cells made with other settings
    assert run(build_parser(), ["table", str(tmp_path / "grid.yaml"), "--quiet",
                                "--set", "classifier.train.samples=40"]) == 2
    assert "made with other settings" in capsys.readouterr().err


PRESETS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.mark.parametrize("name", ["wu2020_table1", "alyafi2019_imbalanced", "fridadar2018", "mias_quick"])
def test_paper_grids_validate_and_every_cell_is_a_valid_classifier(name, tmp_path, monkeypatch):
    from mammogan_tf.studies.grid import _gan_config, cell_config, load_grid
    from mammogan_tf.training.classifier import as_config

    monkeypatch.chdir(PRESETS.parent)  # presets name their GAN experiments relative to the project
    grid = load_grid(PRESETS / "tables" / f"{name}.yaml", ["classifier.train.samples=64"])
    assert any(r.baseline for r in grid.regimes)
    for regime in grid.regimes:
        config = as_config(cell_config(grid, regime, tmp_path, [str(tmp_path / "syn")]))
        assert config.train.samples == 64
        assert bool(config.train.mixing.synthetic) == regime.synthetic
    for cls in grid.gan.classes:  # every class's GAN experiment resolves to a run that makes that class
        gan, contextual = _gan_config(grid, cls, tmp_path)
        assert gan.train.data.manifest == str(tmp_path) and gan.train.data.split == "train"
        assert contextual == (name == "wu2020_table1")
        if contextual:
            assert (gan.model.mode, gan.model.lesion_type) == (("remove", "mass") if cls == "normal" else ("add", cls))
    if name == "wu2020_table1":
        assert grid.gan.classes == ["mass", "calcification", "normal"]
    if name == "alyafi2019_imbalanced":
        assert grid.protocol.k == [100, 250, 500, 750, 1000, 1300] and grid.protocol.ir == 10
        assert grid.protocol.ar == 1.5 and grid.data.folds == 3
        gan = as_config(cell_config(grid, grid.regimes[2], tmp_path, ["s"]))
        assert gan.train.mixing.share.initial == pytest.approx(1.5 / 2.5)


def test_wu_classifier_preset_has_the_papers_numbers():
    from mammogan_tf.config import read_yaml
    from mammogan_tf.training.classifier import as_config

    config = as_config(read_yaml(PRESETS / "wu2020_classifier.yaml"))
    assert config.model.architecture == "resnet50" and config.model.weights == "imagenet"
    assert (config.train.samples, config.train.validate_every) == (500000, 5000)
    opt = config.train.optimizer
    assert (opt.name, opt.learning_rate, opt.beta_1, opt.beta_2) == ("adam", 1e-5, 0.9, 0.999)
    share = config.train.mixing.share
    assert (share.kind, share.rate, share.every_samples, config.train.mixing.balance) == ("step", 0.9, 5000, "equal")
