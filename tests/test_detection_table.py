"""``mammogan table`` with detection cells: both presets shrunk with ``--set`` to phantom data at
32 px run end to end (prepare, cPGGAN per cell, whole-image synthesis, one detector per regime)
and write the detection table, its FROC figures and reusable cells."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mammogan_tf.studies.detection_cells import IOUS
from mammogan_tf.studies.grid import load_grid

REPO = Path(__file__).resolve().parents[1]
TINY_GAN = ("[model.image_size=32, model.start_resolution=8, model.latent_dim=8, model.base_filters=4, "
            "model.max_filters=8, model.images_per_phase=100000, model.batch_sizes=null, train.images=null, "
            "train.steps=2, train.batch_size=4, "
            "train.checkpoint_every=2, train.sample_every=100, train.log_every=1, train.metric.name=none, "
            "train.ema.enabled=false, train.strategy=default]")


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    from mammogan_tf.data.phantom import write_phantom

    return write_phantom(tmp_path_factory.mktemp("phantom"), n_images=16, seed=5)


def shrink(table: Path, root: Path) -> list[str]:
    """``--set`` overrides that turn a detection preset into a CI-sized run on ``table`` (the
    prepared data beside the table, shared by the presets)."""
    return [f"output_dir={root}", f"data.manifest={table.parent / 'whole32'}", f"data.prepare.images={table.parent}",
            f"data.prepare.annotations={table}", "data.prepare.format=table", "data.prepare.workers=1",
            "data.prepare.patches.output_size=32", "data.prepare.patches.lesion_types=[mass, calcification]",
            "data.prepare.split.fractions=[0.5, 0.25, 0.25]", "gan.classes=[mass, calcification]",
            f"gan.set={TINY_GAN}", "gan.n=4", "detector.model.image_size=32", "detector.model.width=4",
            "detector.model.max_width=8", "detector.model.depth=0", "detector.model.strides=[8, 16]",
            "detector.model.anchors=[[[4, 4]], [[8, 8]]]", "detector.train.epochs=1", "detector.train.batch_size=4",
            "detector.train.strategy=default"]


@pytest.mark.parametrize("preset", ["mias_detection", "han2019_detection"])
def test_detection_presets_run_tiny_end_to_end(preset, phantom, tmp_path):
    from mammogan_tf.cli import main
    from mammogan_tf.data.whole import read_detection_set
    from mammogan_tf.studies.table import run_table

    path = REPO / "experiments" / "tables" / f"{preset}.yaml"
    overrides = [*shrink(phantom, tmp_path), "regimes=[{name: real, baseline: true}, {name: real + cPGGAN, "
                 "synthetic: true}]"]  # the contextual row of han2019: test_contextual_regime_...
    grid = load_grid(path, overrides)
    assert grid.kind == "detection" and [r.synthetic for r in grid.regimes] == [False, True]
    assert main(["table", str(path), "--quiet", *sum((["--set", o] for o in overrides), [])]) == 0
    root = tmp_path / preset
    content = json.loads((root / "table.json").read_text())
    rows = {r["regime"]: r for r in content["rows"]}
    real, synthetic = rows["real"], rows["real + cPGGAN"]
    n_train = len(read_detection_set(phantom.parent / "whole32", "train"))
    assert (real["train_real"], real["train_synthetic"]) == (n_train, 0)
    assert (synthetic["train_real"], synthetic["train_synthetic"]) == (n_train, 4)
    for cell in content["cells"]:  # every cell's row value is its metrics.json value
        metrics = json.loads((Path(cell["dir"]) / "metrics.json").read_text())
        row = rows[cell["regime"]]
        for iou in IOUS:
            m = metrics[f"iou_{iou}"]
            assert row[f"sensitivity_{iou}_mean"] == pytest.approx(m["sensitivity"])
            assert row[f"fps_per_image_{iou}_mean"] == pytest.approx(m["fps_per_image"])
            assert row[f"map_{iou}_mean"] == pytest.approx(m["map"], nan_ok=True)
            assert m["score_threshold"] == 0.001
            fps, sens = np.asarray(m["froc"]["fps_per_image"]), np.asarray(m["froc"]["sensitivity"])
            reached = sens[fps <= 1.0].max() if (fps <= 1.0).any() else 0.0
            assert row[f"sens_at_1fp_{iou}_mean"] == pytest.approx(reached)
        manifest = json.loads((Path(cell["dir"]) / "manifest.json").read_text())
        assert manifest["stage"] == "detect" and len(manifest["inputs"]) == 1 + bool(cell["synthetic"])
    synth = json.loads((root / "synthetic" / "fold0" / "lesion" / "manifest.json").read_text())
    assert synth["model_family"] == "cpggan" and synth["images"] == 4 and synth["synthetic"] is True
    assert content["figures"] == ["froc-iou0.5.png", "froc-iou0.25.png"]
    assert all((root / f).stat().st_size > 0 for f in content["figures"])
    text = (root / "table.md").read_text()
    assert "sensitivity @IoU 0.25" in text and "real (baseline)" in text
    assert list(pd.read_csv(root / "table.csv")["regime"]) == ["real", "real + cPGGAN"]
    # a re-run reuses every finished piece; changed settings are refused
    stamp = (root / "cells" / "real" / "fold0" / "metrics.json").stat().st_mtime
    run_table(path, overrides, progress=False)
    assert (root / "cells" / "real" / "fold0" / "metrics.json").stat().st_mtime == stamp
    assert main(["table", str(path), "--quiet", *sum((["--set", o] for o in overrides), []),
                 "--set", "detector.train.epochs=2"]) == 2


TINY_CONTEXTUAL = ("[prepare.patches.size=64, prepare.patches.output_size=32, prepare.patches.contextual_per_lesion=1, "
                   "prepare.patches.contextual_normal_per_image=2, model.image_size=32, model.attention_resolution=16, "
                   "model.border_crop=2, "
                   "model.generator.base_filters=4, model.generator.max_filters=8, model.generator.center_filters=8, "
                   "model.discriminator.base_filters=4, model.discriminator.max_filters=8, "
                   "model.progressive.enabled=false, train.steps=1, train.batch_size=2, train.checkpoint_every=1, "
                   "train.sample_every=1, train.log_every=1, train.metric.name=none]")


def test_contextual_regime_reinserts_into_training_mammograms_only(phantom, tmp_path, monkeypatch, capsys):
    """``source: contextual``: contextual patches split like the whole images, the contextual GAN and
    its seeds and reinsertions from training patients only, the reinserted mammograms (marked
    synthetic) in the regime's training set; the paper preset carries the same row."""
    from test_contextual_synthesis import Boosted, _patched

    from mammogan_tf.cli import main
    from mammogan_tf.data.whole import read_detection_set
    from mammogan_tf.studies.leakage import LeakageError, check_leakage, upstream_patients

    _patched(monkeypatch, Boosted)  # a 1-step generator paints nothing the post-processing keeps
    path = REPO / "experiments" / "tables" / "mias_detection_contextual.yaml"
    overrides = [*shrink(phantom, tmp_path), f"contextual.set={TINY_CONTEXTUAL}", "contextual.n=6",
                 "regimes=[{name: real + contextual GAN, synthetic: true, source: contextual}]"]  # the real row: above
    assert main(["table", str(path), "--quiet", *sum((["--set", o] for o in overrides), [])]) == 0
    root = tmp_path / "mias_detection_contextual"
    rows = {r["regime"]: r for r in json.loads((root / "table.json").read_text())["rows"]}
    real_dir = phantom.parent / "whole32"
    real = json.loads((real_dir / "manifest.json").read_text())
    train = {p for p, s in real["patients"].items() if s == "train"}
    cell = root / "contextual" / "fold0"
    patches = json.loads((root / "contextual" / "data" / "manifest.json").read_text())
    assert patches["config"]["patches"]["mode"] == "contextual" and patches["patients"] == real["patients"]
    assert set(json.loads((cell / "data" / "manifest.json").read_text())["patients"]) <= train
    synth = json.loads((cell / "synthetic" / "manifest.json").read_text())
    assert synth["source_split"] == "train" and synth["config"]["from"] == str(cell / "data")
    reinserted = pd.read_csv(cell / "synthetic" / "reinserted" / "lesions.csv", dtype={"patient_id": str})
    assert len(synth["reinserted"]) > 0 and reinserted.synthetic.all() and set(reinserted.patient_id) <= train
    assert set(pd.read_csv(cell / "full_images.csv", dtype={"patient_id": str}).patient_id) == train
    whole = json.loads((cell / "whole" / "manifest.json").read_text())
    assert set(whole["patients"].values()) == {"train"} and set(whole["patients"]) <= train
    upstream, chain = upstream_patients(cell / "whole")
    assert upstream and upstream <= train and "synthesis seeds" in chain
    with pytest.raises(LeakageError):  # the guard sees the seed/reinsertion patients behind the prepared set
        check_leakage({sorted(upstream)[0]}, [cell / "whole"])
    row = rows["real + contextual GAN"]
    assert row["train_synthetic"] == len(synth["reinserted"]) > 0
    assert row["train_real"] == len(read_detection_set(real_dir, "train"))
    from mammogan_tf.data.shards import make_dataset

    records = list(make_dataset(cell / "whole", "train", batch_size=None, shuffle=False, as_dict=True))
    assert len(records) == row["train_synthetic"] and all(int(r["synthetic"]) == 1 for r in records)
    # a re-run reuses every contextual piece; a patch set split otherwise is refused
    stamps = {p: p.stat().st_mtime_ns for p in cell.glob("*/manifest.json")}
    assert len(stamps) == 4 and main(["table", str(path), "--quiet", *sum((["--set", o] for o in overrides), [])]) == 0
    assert stamps == {p: p.stat().st_mtime_ns for p in cell.glob("*/manifest.json")}
    doctored = dict(patches, patients={**patches["patients"], next(iter(train)): "test"})
    (root / "contextual" / "data" / "manifest.json").write_text(json.dumps(doctored))
    assert main(["table", str(path), "--quiet", *sum((["--set", o] for o in overrides), [])]) == 2
    assert "patient split differs" in capsys.readouterr().err
    paper = load_grid(REPO / "experiments" / "tables" / "han2019_detection.yaml")
    assert [r.source for r in paper.regimes if r.synthetic] == ["gan", "contextual"]
    assert paper.contextual.experiment == "experiments/contextual_mass.yaml"


@pytest.mark.parametrize("preset", ["han2019_detection", "mias_detection_contextual"])
def test_contextual_source_presets_resolve(preset, tmp_path, monkeypatch):
    from mammogan_tf.errors import ConfigError
    from mammogan_tf.studies.contextual_source import _experiment

    monkeypatch.chdir(REPO)  # presets name their experiments relative to the project
    grid = load_grid(REPO / "experiments" / "tables" / f"{preset}.yaml")
    assert grid.uses("contextual") and grid.contextual.checkpoint == "last"
    patches, gan = _experiment(grid, tmp_path)
    assert patches["mode"] == "contextual" and patches["output_size" if preset.startswith("mias") else "size"] == \
        gan.model.image_size
    assert gan.model.family == "contextual" and gan.model.mode == "add" and gan.model.lesion_type == "mass"
    assert (gan.train.data.manifest, gan.train.data.split) == (str(tmp_path), "train")
    assert "mass" in grid.data.prepare.patches.lesion_types
    with pytest.raises(ConfigError, match="contextual.experiment"):
        load_grid(REPO / "experiments" / "tables" / f"{preset}.yaml", ["contextual.experiment=null"])
    with pytest.raises(ConfigError, match="needs synthetic: true"):
        load_grid(REPO / "experiments" / "tables" / f"{preset}.yaml",
                  ["regimes=[{name: a, baseline: true}, {name: b, source: contextual}]"])
