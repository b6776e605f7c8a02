"""Importing mammogan_tf turns TensorFlow's oneDNN CPU kernels on (TF enables them by default only
on AVX-512 VNNI/BF16 or AMX CPUs; on AVX2 machines our GAN steps run about 2x slower without), and
a user's TF_ENABLE_ONEDNN_OPTS=0 is kept."""
from __future__ import annotations

import os
import subprocess
import sys

PROBE = ("import os, mammogan_tf, tensorflow\n"
         "from tensorflow.python.util import _pywrap_util_port as port\n"
         "print(os.environ['TF_ENABLE_ONEDNN_OPTS'], port.IsMklEnabled())")


def probe(value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if value is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = value
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_onednn_is_on_by_default_and_a_user_choice_wins():
    assert probe(None) == "1 True"
    assert probe("0") == "0 False"
