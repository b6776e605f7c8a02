"""Every GAN paper preset trains two steps when shrunk with --set, so the presets cannot rot:
the YAML as shipped, only sizes, data and length overridden (the contextual preset has its own
test in test_contextual_train.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO_ROOT

PRESETS = ["alyafi2019_dcgan_mass", "fridadar2018_dcgan_mass", "fridadar2018_dcgan_calcification",
           "fridadar2018_acgan", "mias_dcgan_mass", "mias_acgan", "quickstart"]
SHRINK = ["model.image_size=16", "model.latent_dim=8", "model.generator.base_filters=4",
          "model.generator.max_filters=8", "model.discriminator.base_filters=4", "model.discriminator.max_filters=8",
          "model.discriminator.num_layers=2", "model.discriminator.first_kernel_size=null", "train.steps=2",
          "train.epochs=null", "train.batch_size=8", "train.metric.name=none", "train.checkpoint_every=2",
          "train.sample_every=2", "train.log_every=1", "train.data.prepare_phantom_if_missing=false"]


@pytest.fixture(scope="module")
def shards(tiny_shards, tmp_path_factory):
    return tiny_shards(tmp_path_factory.mktemp("presets"))


@pytest.mark.parametrize("name", PRESETS)
def test_paper_preset_trains_when_shrunk(name, shards, tmp_path):
    from mammogan_tf.cli import main
    from mammogan_tf.config import load_experiment
    from mammogan_tf.training.run_log import read_metrics

    path = REPO_ROOT / "experiments" / f"{name}.yaml"
    sets = [*SHRINK, f"train.data.manifest={shards.parent}"]
    if load_experiment(path).model.family == "acgan":
        sets += ["train.data.lesion_types=[mass, calcification]", "model.num_classes=2"]
    else:
        sets += ["train.data.lesion_types=[mass]"]
    args = ["train", str(path), "--out", str(tmp_path / "run"), "--quiet"]
    for item in sets:
        args += ["--set", item]
    assert main(args) == 0
    rows = read_metrics(Path(tmp_path / "run" / "metrics.jsonl"), "train")
    assert [r["step"] for r in rows] == [1, 2] and all(r["d_loss"] == r["d_loss"] for r in rows)
