"""benchmarks/gpu_suite.sh --smoke: the GPU suite's code paths on CPU with tiny models."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_suite_smoke_prints_one_measured_line_per_case():
    env = {**os.environ, "PYTHON": sys.executable, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), "--smoke"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [line["case"] for line in lines] == ["fridadar64/float32/graph/default",
                                                "fridadar64/bfloat16/jit/mirrored"]
    for line in lines:
        assert "error" not in line, line
        assert line["image_size"] == 16 and line["batch"] == 4
        assert line["images_per_second"] > 0 and line["achieved_tflop_per_second"] > 0
        assert 0 < line["mfu"] < 1 and line["peak_memory_mb"] > 0
        assert line["params"]["generator"] > 0
    fast, full = lines
    assert (fast["mixed_precision"], fast["jit_compile"], fast["strategy"]) == (None, False, "default")
    assert (full["mixed_precision"], full["jit_compile"], full["strategy"]) == ("bfloat16", True, "mirrored")
    assert full["replicas"] == 1  # MirroredStrategy over the one CPU device
