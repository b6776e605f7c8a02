"""Shared fixtures: the real data beside the project, and quiet TensorFlow."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as `import mammogan_tf` does, before any test imports TF
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


# ------------------------------------------------------------------- tiny training fixtures

N_PATCHES, SIZE, BATCH = 24, 16, 8  # 3 steps per epoch


def write_tiny_shards(root: Path, n: int = N_PATCHES, size: int = SIZE, value: float | None = None) -> Path:
    """A prepare-like manifest over ``n`` random patches (or constant ``value`` ones, in [0, 1]),
    alternately mass and calcification, in shard files of 10."""
    from mammogan_tf.data.shards import ShardWriter, serialize_patch
    from mammogan_tf.manifest import write_json_atomic

    root = Path(root)
    with ShardWriter(root / "shards", "train", per_shard=10) as writer:
        for i in range(n):
            pixels = np.clip(0.5 + 0.2 * np.random.default_rng(i).standard_normal((size, size)), 0, 1)
            if value is not None:
                pixels = np.full((size, size), value)
            kind = ("mass", "calcification")[i % 2]
            writer.write(serialize_patch(pixels.astype(np.float32), label=1 + i % 2, lesion_type=kind,
                                         pathology="benign", patient_id=f"p{i}", image_id=f"i{i}", kind="lesion"))
    write_json_atomic(root / "manifest.json", {
        "stage": "prepare", "splits": {"train": [f"shards/{f}" for f in writer.files]},
        "classes": ["normal", "mass", "calcification"], "patch_size": size,
        "counts": {"train": {"mass": n // 2, "calcification": n - n // 2}}})
    return root / "manifest.json"


def tiny_experiment(manifest, steps: int, **train) -> dict:
    """Raw experiment dict: a 16 px DCGAN with every technique of the loop switched on."""
    base = {
        "data": {"manifest": str(manifest)}, "steps": steps, "batch_size": BATCH,
        "loss": "non_saturating", "real_label": [0.7, 1.0], "gradient_penalty_weight": 0.5,
        "generator_optimizer": {"learning_rate": 5e-3, "schedule": {"kind": "step", "rate": 0.5, "every_epochs": 1}},
        "discriminator_optimizer": {"learning_rate": 2e-3},
        "ema": {"enabled": True, "decay": 0.9},
        "augment": {"ops": ["hflip", "translation", "cutout"], "p": 0.3, "adaptive": True, "interval": 2,
                    "speed_images": 200},
        "log_every": 1, "checkpoint_every": 3, "sample_every": 3, "grid_size": 2,
        "metric": {"name": "none"}, "seed": 7,
    }
    base.update(train)
    return {"name": "tiny", "model": {
        "family": "dcgan", "latent_dim": 8, "image_size": SIZE,
        "generator": {"base_filters": 4, "max_filters": 8},
        "discriminator": {"base_filters": 4, "max_filters": 8, "num_layers": 2}}, "train": base}


@pytest.fixture(scope="session")
def tiny_shards():
    """``write_tiny_shards(root, n=24, size=16, value=None) -> manifest path``."""
    return write_tiny_shards


@pytest.fixture(scope="session")
def acgan_run(tmp_path_factory):
    """A finished 16 px ACGAN run (mass, calcification) with an EMA generator and best/."""
    from mammogan_tf.config import validate_config
    from mammogan_tf.training.run import train

    root = tmp_path_factory.mktemp("acgan")
    manifest = write_tiny_shards(root / "data")
    config = validate_config({"model": {
        "family": "acgan", "num_classes": 2, "latent_dim": 8, "image_size": 16, "latent_distribution": "uniform",
        "generator": {"base_filters": 4, "max_filters": 8},
        "discriminator": {"base_filters": 4, "max_filters": 8, "num_layers": 2, "strides": "odd", "dropout": 0.5,
                          "batch_norm": False}}, "train": {
        "data": {"manifest": str(manifest), "lesion_types": ["mass", "calcification"]}, "steps": 2, "batch_size": 8,
        "ema": {"enabled": True, "decay": 0.5}, "checkpoint_every": 2, "sample_every": 2, "log_every": 2,
        "metric": {"name": "kid", "backbone": "random", "every": 2, "n_samples": 8, "batch_size": 8}}})
    train(config, root / "run", progress=False)
    return root / "run"


def png_pixels(path) -> np.ndarray:
    """The pixel array of a PNG file, as stored (uint8 or uint16)."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image).copy()


CONTEXTUAL_TINY = ["prepare.manufacturers=[]", "prepare.processed_only=false", "prepare.patches.size=64",
                   "model.image_size=64", "model.attention_resolution=16", "model.generator.base_filters=4",
                   "model.generator.max_filters=8", "model.generator.center_filters=8",
                   "model.discriminator.base_filters=4", "model.discriminator.max_filters=8",
                   "train.metric.name=none", "train.log_every=1"]
"""``--set`` items that shrink ``experiments/contextual_mass.yaml`` to a phantom-sized 64 px run."""


def launch_workers(command: list[str], workers: int = 2, timeout: int = 300, cwd=None) -> list[tuple]:
    """Run ``command`` in ``workers`` processes on localhost, each with its own TF_CONFIG (a cluster
    of free ports, its task index), as a user launches them on machines; returns
    ``(returncode, stdout, stderr)`` of each after asserting that all exited 0 (skips the test when
    localhost gRPC sockets are unavailable)."""
    import json
    import socket
    import subprocess

    def free_port() -> int:
        with socket.socket() as sock:
            sock.bind(("localhost", 0))
            return sock.getsockname()[1]

    cluster = {"worker": [f"localhost:{free_port()}" for _ in range(workers)]}

    def environment(index: int) -> dict:
        task = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2",
                "TF_CONFIG": json.dumps(task), "CUDA_VISIBLE_DEVICES": ""}

    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                              env=environment(i)) for i in range(workers)]
    outputs = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=timeout)
            outputs.append((proc.returncode, stdout, stderr))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    if any("UNAVAILABLE" in err and "socket" in err.lower() for _, _, err in outputs):
        pytest.skip("localhost gRPC sockets are not available in this environment")
    for returncode, _, stderr in outputs:
        assert returncode == 0, stderr[-3000:]
    return outputs
