"""Shared fixtures: the real data beside the project, and quiet TensorFlow."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MAMMOGAN_SHARED", REPO_ROOT.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A path inside ``../shared``; the test is skipped with a reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found at {path} (expected ../shared beside the project)")
    return path


@pytest.fixture(scope="session")
def mias_dir() -> Path:
    """``../shared/data/mini-mias`` (``Info.txt`` and ``png/``)."""
    return shared_path("data", "mini-mias")


@pytest.fixture(scope="session")
def cbis_dir() -> Path:
    """``../shared/data/cbis-ddsm`` (the two training-set case-description CSVs)."""
    return shared_path("data", "cbis-ddsm")


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """``../shared/reference`` (known metric values)."""
    return shared_path("reference")
