"""The GAN training loop: schedules, the `train` command's artefacts, exact resume, NaN stop.

Tiny models (16 px, 4-8 filters) on 24 random 16 px patches in shards (``conftest``); a few
steps each.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from mammogan_tf.config import validate_config
from mammogan_tf.errors import ConfigError, TrainingError
from mammogan_tf.training import schedules
from mammogan_tf.training.batches import BatchSchedule, DataPlan
from mammogan_tf.training.config import OptimizerConfig

from conftest import BATCH, tiny_experiment


@pytest.fixture(scope="module")
def manifest(tiny_shards, tmp_path_factory):
    return tiny_shards(tmp_path_factory.mktemp("shards"))


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, manifest):
    """`mammogan train` for 6 steps with the FID (random backbone) every 3 steps."""
    from mammogan_tf.cli import main

    root = tmp_path_factory.mktemp("cli")
    experiment = tiny_experiment(manifest, 6, metric={"name": "fid", "backbone": "random", "every": 3,
                                                      "n_samples": 16, "batch_size": 16})
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(experiment))
    code = main(["train", str(path), "--out", str(root / "run"), "--quiet", "--set", "train.log_every=2"])
    return code, root / "run", experiment


# ------------------------------------------------------------------------------- pure parts

def test_step_decay_learning_rate_per_epoch():
    d = OptimizerConfig(learning_rate=1e-3, schedule={"kind": "step", "rate": 0.99, "every_epochs": 8})
    assert [schedules.learning_rate(d, e) for e in (0, 7, 8, 15, 16)] == pytest.approx(
        [1e-3, 1e-3, 0.99e-3, 0.99e-3, 0.99 ** 2 * 1e-3])
    assert schedules.learning_rate(OptimizerConfig(learning_rate=3e-4), 500) == 3e-4
    assert schedules.steps_per_epoch(2215, 64) == 34 and schedules.steps_per_epoch(10, 64) == 1
    plan = DataPlan(BatchSchedule.fixed(64), 2215, 1)
    assert plan.total_steps(None, 1000) == 34000 and plan.total_steps(7, None) == 7
    assert plan.position(34 * 5 + 3) == (5, 3, 34) and plan.total_steps(None, None, 640) == 10


def test_real_label_drawn_once_per_epoch_in_range():
    draws = [schedules.real_label((0.7, 1.0), seed=0, epoch=e) for e in range(200)]
    assert all(0.7 <= d <= 1.0 for d in draws) and len(set(draws)) == 200
    assert min(draws) < 0.72 and max(draws) > 0.98  # uniform over the range
    assert schedules.real_label((0.7, 1.0), 0, 5) == draws[5]  # a function of (seed, epoch) only
    assert schedules.real_label(0.9, 0, 5) == 0.9


def test_train_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="train: Value error, give one of steps, epochs and images"):
        validate_config({"train": {"steps": 3, "epochs": 2}})
    with pytest.raises(ConfigError, match="label smoothing has no meaning for the hinge loss"):
        validate_config({"train": {"loss": "hinge", "real_label": 0.9}})
    with pytest.raises(ConfigError, match=r"train.real_label: .*low <= high"):
        validate_config({"train": {"real_label": [0.9, 0.7]}})
    with pytest.raises(ConfigError, match=r"train.augment.ops.0"):
        validate_config({"train": {"augment": {"ops": ["rotate"]}}})


EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.mark.parametrize("name", sorted(p.name for p in EXPERIMENTS.glob("*.yaml")))
def test_experiment_presets_validate(name):
    from mammogan_tf.config import load_experiment

    config = load_experiment(EXPERIMENTS / name)
    assert config.name == name[:-5]
    if config.model.family == "detector":
        assert config.data.manifest and config.train.epochs
        return
    assert config.train.data.manifest
    if config.model.family == "classifier":
        return  # its length is in samples (tests/test_classifiers.py)
    assert sum(v is not None for v in (config.train.steps, config.train.epochs, config.train.images)) == 1
    if config.model.family == "acgan":
        assert config.model.num_classes == len(config.train.data.lesion_types)


def test_presets_hold_the_papers_numbers():
    from mammogan_tf.config import load_config

    alyafi = load_config(EXPERIMENTS / "alyafi2019_dcgan_mass.yaml")
    assert alyafi.model.image_size == 128 and alyafi.model.latent_distribution == "normal"
    assert alyafi.train.real_label == (0.7, 1.0) and alyafi.train.epochs == 1000
    assert alyafi.train.discriminator_optimizer.schedule.model_dump() == {"kind": "step", "rate": 0.99,
                                                                          "every_epochs": 8}
    assert alyafi.train.generator_optimizer.schedule.every_epochs == 10
    assert alyafi.train.augment.ops == ["hflip", "vflip"] and alyafi.train.metric.name == "fid"
    assert (alyafi.model.latent_dim, alyafi.model.generator.base_filters, alyafi.train.batch_size) == (200, 45, 64)
    assert alyafi.model.generator.kernel_size == 4 and alyafi.model.discriminator.kernel_size == 6
    assert alyafi.train.generator_optimizer.beta_1 == alyafi.train.discriminator_optimizer.beta_1 == 0.0
    assert alyafi.prepare.processed_only and alyafi.prepare.manufacturers == ["hologic"]
    frid = load_config(EXPERIMENTS / "fridadar2018_dcgan_mass.yaml")
    assert (frid.model.image_size, frid.model.latent_dim, frid.model.latent_distribution) == (64, 100, "uniform")
    assert (frid.train.batch_size, frid.train.epochs, frid.train.generator_optimizer.learning_rate) == (64, 70, 2e-4)
    assert frid.model.generator.kernel_size == frid.model.discriminator.kernel_size == 5
    acgan = load_config(EXPERIMENTS / "fridadar2018_acgan.yaml")
    assert (acgan.train.epochs, acgan.train.discriminator_optimizer.learning_rate) == (50, 1e-4)
    assert (acgan.model.discriminator.kernel_size, acgan.model.discriminator.strides,
            acgan.model.discriminator.dropout) == (3, "odd", 0.5)


def test_missing_data_is_a_clear_error(tmp_path):
    from mammogan_tf.errors import InputError
    from mammogan_tf.training.commands import ensure_backbone, ensure_training_data

    config = validate_config({"train": {"data": {"manifest": str(tmp_path / "nothing")}}})
    with pytest.raises(InputError, match="no prepared data here; run `mammogan prepare"):
        ensure_training_data(config)
    config = validate_config({"train": {"metric": {"backbone": f"classifier:{tmp_path / 'cnn.keras'}"}}})
    with pytest.raises(InputError, match="cnn.keras: metric backbone not found; make it with `mammogan features fit`"):
        ensure_backbone(config, tmp_path / "manifest.json")


# ------------------------------------------------------------------------------ training runs

def test_train_command_writes_every_artefact(cli_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    from mammogan_tf.manifest import read_manifest, sha256_file
    from mammogan_tf.training.run_log import read_metrics

    code, run, _ = cli_run
    assert code == 0
    assert sorted(p.name for p in (run / "checkpoints").glob("*.index")) == ["ckpt-3.index", "ckpt-6.index"]
    best = json.loads((run / "best" / "best.json").read_text())
    assert best["metric"] == "fid" and best["step"] in (3, 6) and best["value"] >= 0
    assert (run / "best" / f"ckpt-{best['step']}.index").is_file()
    for png in ("samples/step-0000003.png", "samples/step-0000006.png", "metric_curve.png"):
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    train_rows = read_metrics(run / "metrics.jsonl", "train")
    assert [r["step"] for r in train_rows] == [2, 4, 6]
    assert all(np.isfinite(r["d_loss"]) and np.isfinite(r["g_loss"]) and 0 <= r["augment_p"] <= 1
               and 0.7 <= r["real_label"] <= 1 and r["images_per_second"] > 0 for r in train_rows)
    assert [r["lr_generator"] for r in train_rows] == pytest.approx([5e-3, 2.5e-3, 2.5e-3])  # epochs 0, 1, 1
    fid = [r["fid"] for r in read_metrics(run / "metrics.jsonl", "metric")]
    assert len(fid) == 2 and min(fid) == pytest.approx(best["value"])
    assert [r["fid_images"] for r in read_metrics(run / "metrics.jsonl", "metric")] == [16, 16]  # every sample scored
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"tensors": 0}).Reload()
    tags = set(events.Tags()["tensors"])  # TF2 summaries are stored as tensors
    assert {"train/d_loss", "train/g_loss", "train/d_real", "train/d_fake", "train/lr_discriminator", "train/augment_p",
            "train/images_per_second", "metric/fid", "samples"} <= tags
    d_loss = [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in events.Tensors("train/d_loss")]
    assert d_loss == [(r["step"], pytest.approx(r["d_loss"])) for r in train_rows]
    image = events.Tensors("samples")[-1]
    assert image.step == 6 and tensor_util.make_ndarray(image.tensor_proto)[2][:4] == b"\x89PNG"
    manifest = read_manifest(run, stage="train")
    assert manifest["best"]["step"] == best["step"] and manifest["class_names"] == [
        "normal", "mass", "calcification"]
    assert "checkpoints/ckpt-6.index" in manifest["files"] and "config.yaml" in manifest["files"]
    for name, digest in manifest["files"].items():
        assert sha256_file(run / name) == digest


def _variables(prefix) -> dict:
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(prefix))
    skip = ("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter", "state/best_value")
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if not name.startswith(skip)}


def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(cli_run, manifest, tmp_path):
    from mammogan_tf.training.run import train

    _, uninterrupted, experiment = cli_run
    run = tmp_path / "resumed"
    half = validate_config({**experiment, "train": {**experiment["train"], "steps": 3, "metric": {"name": "none"}}})
    train(half, run, progress=False)
    with pytest.raises(ConfigError, match="already holds a run; pass --resume"):
        train(half, run, progress=False)
    full = validate_config({**experiment, "train": {**experiment["train"], "metric": {"name": "none"}}})
    summary = train(full, run, resume=True, progress=False)
    assert summary["steps"] == 6 and Path(summary["last_checkpoint"]).name == "ckpt-6"
    expected, got = _variables(uninterrupted / "checkpoints" / "ckpt-6"), _variables(run / "checkpoints" / "ckpt-6")
    assert expected.keys() == got.keys() and len(expected) > 40
    assert any(k.startswith("state/ema.Sgenerator.S") for k in expected)
    assert "state/augment.Sp/.ATTRIBUTES/VARIABLE_VALUE" in expected
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=0, atol=1e-6, err_msg=name)
    assert [r["step"] for r in _train_rows(run)] == [1, 2, 3, 4, 5, 6]  # no duplicated steps after resume


def _train_rows(run):
    from mammogan_tf.training.run_log import read_metrics

    return read_metrics(run / "metrics.jsonl", "train")


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(manifest, tmp_path):
    import tensorflow as tf

    from mammogan_tf.training.data import TrainingData
    from mammogan_tf.training.families import make_family
    from mammogan_tf.training.loop import Trainer
    from mammogan_tf.training.run import train

    class PoisonedFromEpoch1(TrainingData):
        """Real images become NaN from epoch 1 on, i.e. from step 4."""

        def epoch_batches(self, epoch, records, batch, batches):
            data = super().epoch_batches(epoch, records, batch, batches)
            poison = tf.where(epoch >= 1, np.float32(np.nan), np.float32(1.0))
            return data.map(lambda b: {"real": {**b["real"], "image": b["real"]["image"] * poison}})

    config = validate_config(tiny_experiment(manifest, 9, checkpoint_every=2, log_every=5, sample_every=100))
    family = make_family(config.model, config.train)
    data = PoisonedFromEpoch1(manifest, "train", family.streams(), BATCH, seed=7)
    with pytest.raises(TrainingError, match=r"non-finite loss at step 4\b.*last good checkpoint is .*ckpt-2"):
        train(config, tmp_path / "run", data=data, progress=False)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("*.index")) == ["ckpt-2.index"]
    assert not (tmp_path / "run" / "manifest.json").exists()
    trainer = Trainer(family, config.train)
    trainer.state.restore(tmp_path / "run" / "checkpoints" / "ckpt-2")
    assert int(trainer.step.numpy()) == 2
    networks = trainer.networks
    assert all(np.all(np.isfinite(v.numpy())) for v in networks["generator"].variables + networks["discriminator"].variables)
    assert np.all(np.isfinite(trainer.generate(family.fixed_inputs(networks, 4, 0, data))))
