#!/usr/bin/env bash
# Step benchmark of every preset on the visible GPUs: float32 / mixed precision, with and
# without jit_compile, one device and MirroredStrategy; one JSON line per case (< 8 min).
#   bash benchmarks/gpu_suite.sh            # all presets, paper batch sizes
#   bash benchmarks/gpu_suite.sh --smoke    # CPU, tiny models, seconds (CI)
# Other options: see benchmarks/gpu_suite.py --help.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" benchmarks/gpu_suite.py "$@"
