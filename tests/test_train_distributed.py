"""Strategies: `mirrored` over two logical CPU devices equals `default` for the same global
batch (two `multi_worker` processes on localhost: tests/test_multi_worker_cli.py).

Each case runs in fresh Python processes: logical devices and TF_CONFIG must be set before
TensorFlow initialises.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import write_tiny_shards

TESTS = Path(__file__).resolve().parent

MODEL = {"family": "dcgan", "latent_dim": 8, "image_size": 16,
         "generator": {"base_filters": 4, "max_filters": 8, "batch_norm": False},
         "discriminator": {"base_filters": 4, "max_filters": 8, "num_layers": 2, "batch_norm": False}}
"""No batch norm: its statistics are per replica, so with it mirrored != default by design."""


def _experiment(manifest, strategy: str, steps: int) -> dict:
    return {"model": MODEL, "train": {
        "data": {"manifest": str(manifest)}, "steps": steps, "batch_size": 8, "strategy": strategy,
        "loss": "non_saturating", "real_label": [0.7, 1.0], "ema": {"enabled": True, "decay": 0.5},
        "generator_optimizer": {"learning_rate": 1e-2}, "discriminator_optimizer": {"learning_rate": 1e-2},
        "log_every": 1, "checkpoint_every": 2, "sample_every": 100, "metric": {"name": "none"}, "seed": 3}}


def _python(script: str, *args, env=None, timeout=240) -> subprocess.CompletedProcess:
    code = textwrap.dedent(script)
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
                          cwd=TESTS)


MIRRORED = """
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from mammogan_tf.config import validate_config
    from mammogan_tf.training.run import train
    from mammogan_tf.training.run_log import read_metrics
    from mammogan_tf.training.strategy import make_strategy
    out = {}
    for name, raw in json.loads(sys.argv[1]).items():
        strategy = make_strategy(name)
        train(validate_config(raw), sys.argv[2] + "/" + name, strategy=strategy, progress=False)
        rows = read_metrics(sys.argv[2] + "/" + name + "/metrics.jsonl", "train")
        out[name] = {"replicas": strategy.num_replicas_in_sync,
                     "losses": [[r["d_loss"], r["g_loss"], r["d_real"], r["d_fake"]] for r in rows]}
    print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_mirrored_on_two_cpu_devices_matches_default(tmp_path):
    manifest = write_tiny_shards(tmp_path / "data")
    experiments = {name: _experiment(manifest, name, 5) for name in ("default", "mirrored")}
    result = _python(MIRRORED, json.dumps(experiments), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.split("RESULT ", 1)[1])
    assert out["default"]["replicas"] == 1 and out["mirrored"]["replicas"] == 2
    default, mirrored = out["default"]["losses"], out["mirrored"]["losses"]
    assert len(default) == len(mirrored) == 5
    assert abs(default[-1][0] - default[0][0]) > 1e-3  # the losses do move over the steps
    for step, (a, b) in enumerate(zip(default, mirrored), start=1):
        assert b == pytest.approx(a, abs=1e-4), f"step {step}"
