"""`mammogan-train experiments/contextual_mass.yaml` shrunk with --set: the phantom prepared as
contextual patches, six steps through both progressive stages (S/2, the fade, S)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import CONTEXTUAL_TINY, REPO_ROOT

TINY = [*CONTEXTUAL_TINY, "model.progressive.stage_steps=2", "model.progressive.fade_steps=2", "train.steps=6",
        "train.batch_size=4", "train.checkpoint_every=3", "train.sample_every=3"]


@pytest.mark.slow
def test_contextual_preset_trains_through_the_stage_switch(tmp_path):
    import tensorflow as tf

    from mammogan_tf.cli import main
    from mammogan_tf.manifest import read_manifest
    from mammogan_tf.training.run_log import read_metrics

    sets = [f"train.data.manifest={tmp_path / 'data'}", "train.data.prepare_phantom_if_missing=true", *TINY]
    args = ["train", str(REPO_ROOT / "experiments" / "contextual_mass.yaml"), "--out", str(tmp_path / "run"), "--quiet"]
    for item in sets:
        args += ["--set", item]
    assert main(args) == 0
    run = tmp_path / "run"
    rows = read_metrics(run / "metrics.jsonl", "train")
    assert [r["fade_alpha"] for r in rows] == [0.0, 0.0, 0.0, 0.5, 1.0, 1.0]  # steps 0-1 S/2, 2-3 fade, 4-5 S
    assert all(np.isfinite(r["d_loss"]) and np.isfinite(r["g_loss"]) for r in rows)
    assert {"d/real", "d/fake", "d/benign", "d/normal", "d/penalty"} <= set(rows[0])
    assert rows[0]["d/benign"] < rows[0]["d/fake"]  # the benign and normal terms carry the 0.2 weight
    names = {tuple(sorted(name for name, _ in tf.train.list_variables(str(run / "checkpoints" / f"ckpt-{s}"))))
             for s in (3, 6)}
    assert len(names) == 1  # the stage switch neither adds nor drops a variable: the S/2 weights are kept
    manifest = read_manifest(run, stage="train")
    assert manifest["family"] == "contextual" and manifest["sampler"] == "networks/generator"
    assert (run / "samples" / "step-0000006.png").is_file()
    data = read_manifest(tmp_path / "data")
    assert data["patch_size"] == 64 and data["counts"]["train"]["normal"] > 0
