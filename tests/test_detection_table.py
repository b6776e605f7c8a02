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
    overrides = shrink(phantom, tmp_path)
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
