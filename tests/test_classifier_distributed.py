"""The downstream classifier under `mirrored` over two logical CPU devices trains the same model as
under `default` for the same global batch (the Frid-Adar CNN: no batch norm, whose statistics are
per replica by design). A fresh Python process, because logical devices must be set before
TensorFlow initialises."""
from __future__ import annotations

import json
import sys
import textwrap

import pytest

from classifier_helpers import tiny_config, write_real
from conftest import launch_workers
from test_train_distributed import _python

SCRIPT = """
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from mammogan_tf.training.classifier import train_classifier
    from mammogan_tf.training.strategy import make_strategy
    out = {}
    for name, raw in json.loads(sys.argv[1]).items():
        summary = train_classifier(raw, sys.argv[2] + "/" + name, progress=False)
        rows = [json.loads(line) for line in open(sys.argv[2] + "/" + name + "/metrics.jsonl")]
        out[name] = {"replicas": make_strategy(name).num_replicas_in_sync, "test_auc": summary["test"]["auc"],
                     "losses": [r["loss"] for r in rows if r["kind"] == "train"]}
    print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_mirrored_classifier_matches_default(tmp_path):
    real = write_real(tmp_path / "real")
    model = {"family": "classifier", "architecture": "fridadar_cnn", "image_size": 16, "num_classes": 1,
             "filters": [4, 4, 8], "dense_units": [8, 8], "dropout": 0.0}
    configs = {name: {**tiny_config(real, strategy=name, samples=64), "model": model}
               for name in ("default", "mirrored")}
    result = _python(SCRIPT, json.dumps(configs), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.split("RESULT ", 1)[1])
    assert out["default"]["replicas"] == 1 and out["mirrored"]["replicas"] == 2
    default, mirrored = out["default"]["losses"], out["mirrored"]["losses"]
    assert len(default) == len(mirrored) == 2
    assert abs(default[1] - default[0]) > 1e-3  # training moves the loss
    assert mirrored == pytest.approx(default, abs=1e-4)
    assert out["mirrored"]["test_auc"] == pytest.approx(out["default"]["test_auc"], abs=1e-3)


WORKER = """
    import json, sys
    from mammogan_tf.training.classifier import train_classifier
    summary = train_classifier(json.loads(sys.argv[1]), sys.argv[2], progress=False)
    print("RESULT " + json.dumps({k: summary[k] for k in ("steps", "samples", "best_val_auc")}))
"""


@pytest.mark.slow
def test_two_worker_classifier_from_tf_config(tmp_path):
    """Two worker processes launched with a TF_CONFIG cluster spec on localhost: both finish the
    same steps with the same best validation AUC; only the chief writes the run folder."""
    real = write_real(tmp_path / "real")
    config = tiny_config(real, strategy="multi_worker", samples=64)
    command = [sys.executable, "-c", textwrap.dedent(WORKER), json.dumps(config), str(tmp_path / "run")]
    outputs = launch_workers(command, workers=2)
    finals = [json.loads(stdout.split("RESULT ", 1)[1]) for _, stdout, _ in outputs]
    assert finals[0] == finals[1] and finals[0]["steps"] == 8
    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "checkpoints").glob("*.index")) == ["ckpt-4.index", "ckpt-8.index"]
    assert (run / "best.keras").is_file() and (run / "manifest.json").is_file() and not list(run.glob(".worker-*"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["best_val_auc"] == finals[0]["best_val_auc"] and "auc" in metrics["test"]
