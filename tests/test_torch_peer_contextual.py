"""The PyTorch peer of the contextual presets (benchmarks/peers/torch_contextual.py) builds the same
networks as ours: equal trainable parameter counts (its ``--check-params`` compares against our TF
build in a subprocess), at tiny widths and 64 px, in both timed stages, and its step runs.

torch runs in a subprocess: TensorFlow and torch must not share a process. Skipped without torch.
"""
from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "peers" / "torch_contextual.py"
TINY = {"model.image_size": 64, "model.attention_resolution": 16, "model.border_crop": 2,
        "model.generator.base_filters": 2, "model.generator.center_filters": 8,
        "model.discriminator.base_filters": 4}

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")


def run_peer(preset: str) -> dict:
    settings = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={value}")]
    out = subprocess.run([sys.executable, str(SCRIPT), "--preset", preset, "--batch", "2", "--steps", "1",
                          "--warmup", "1", "--threads", "1", "--check-params", *settings],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def peers() -> dict:
    return {preset: run_peer(preset) for preset in ("contextual128", "contextual256")}


def test_counts_equal_ours_in_both_stages(peers):
    """--check-params exits non-zero on a mismatch; here it passed for the S/2 stage (progressive
    on) and the 256 px stage (progressive off)."""
    for result in peers.values():
        assert result["params_checked"] is True
        assert result["params"]["generator"] > 0 and result["params"]["discriminator"] > 0


def test_progressive_layers_are_the_only_difference(peers):
    """Progressive growing adds exactly the 1x1 "from image" convs (G and D) and G's 1x1 S/2
    "to lesion" conv: weights + biases of 1 -> w1 and w1 -> 1 channels."""
    g1, d1 = TINY["model.generator.base_filters"], TINY["model.discriminator.base_filters"]
    small, full = peers["contextual128"]["params"], peers["contextual256"]["params"]
    assert small["generator"] - full["generator"] == (g1 + g1) + (g1 + 1)
    assert small["discriminator"] - full["discriminator"] == d1 + d1


def test_timed_stage_and_finite_step(peers):
    assert (peers["contextual128"]["stage"], peers["contextual128"]["image_size"]) == (0, 32)
    assert (peers["contextual256"]["stage"], peers["contextual256"]["image_size"]) == (2, 64)
    for result in peers.values():
        assert math.isfinite(result["final_d_loss"]) and math.isfinite(result["final_g_loss"])
        assert result["final_d_loss"] > 0 and result["final_g_loss"] > 0
