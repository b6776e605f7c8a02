"""Two `mammogan-train` workers on localhost from a TF_CONFIG cluster spec (MultiWorkerMirroredStrategy).

The test prepares a tiny phantom data set once (the workers would otherwise race to write it),
then starts two `python -m mammogan_tf train` processes (= `mammogan-train`), each with its own
TF_CONFIG task index, on the quickstart experiment shrunk to 16 px and 4 steps. See
benchmarks/multi_worker.md for launching the same on real machines.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import launch_workers

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"


def _overrides(data: Path) -> list[str]:
    """Quickstart at 16 px: 4 steps of a global batch of 8 (4 per worker), no metric."""
    return [f"train.data.manifest={data}", "train.data.phantom_images=4", "prepare.patches.output_size=16",
            "prepare.patches.patches_per_lesion=2", "model.image_size=16", "model.latent_dim=8",
            "model.generator.base_filters=4", "model.generator.max_filters=8",
            "model.discriminator.base_filters=4", "model.discriminator.max_filters=8",
            "model.discriminator.num_layers=2", "train.strategy=multi_worker", "train.steps=4",
            "train.batch_size=8", "train.checkpoint_every=2", "train.log_every=1", "train.sample_every=4",
            "train.metric.name=none", "train.grid_size=2"]


@pytest.mark.slow
def test_two_cli_workers_from_tf_config_train_one_run(tmp_path):
    from mammogan_tf.config import load_experiment
    from mammogan_tf.training.commands import ensure_training_data

    data, run = tmp_path / "data", tmp_path / "run"
    overrides = _overrides(data)
    ensure_training_data(load_experiment(QUICKSTART, overrides), progress=False)
    command = [sys.executable, "-m", "mammogan_tf", "train", str(QUICKSTART), "--out", str(run), "--quiet"]
    command += [arg for item in overrides for arg in ("--set", item)]
    outputs = launch_workers(command, timeout=240, cwd=tmp_path)
    # Both workers finished the same 4 global steps with the same all-reduced losses.
    finals = [json.loads(stdout.strip().splitlines()[-1]) for _, stdout, _ in outputs]
    assert finals[0] == finals[1] and {"d_loss", "g_loss"} <= finals[0].keys()
    assert all(f"trained 4 steps into {run}" in stdout for _, stdout, _ in outputs)
    # Only the chief (worker 0) wrote the run: checkpoints at the cadence, one metrics row per
    # step, the samples, the manifest; the other worker's scratch checkpoints are gone.
    assert sorted(p.name for p in (run / "checkpoints").glob("*.index")) == ["ckpt-2.index", "ckpt-4.index"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "d_loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
    assert train_rows[-1]["d_loss"] == pytest.approx(finals[0]["d_loss"], rel=1e-6)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["counts"]["steps"] == 4 and manifest["config"]["train"]["strategy"] == "multi_worker"
    assert list((run / "samples").glob("*.png")) and not list(run.glob(".worker-*"))
