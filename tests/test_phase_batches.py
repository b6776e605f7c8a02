"""Per-phase batch sizes (``training.batches``, ``model.batch_sizes`` of the cPGGAN): the step ->
(images seen, batch, epoch, fade alpha) mapping at the boundaries, the config errors, and a tiny
cPGGAN run whose batch changes between phases, resumed in the middle of a fade-in."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mammogan_tf.config import validate_config
from mammogan_tf.errors import ConfigError
from mammogan_tf.models.pggan_config import CPGGANModelConfig
from mammogan_tf.training.batches import BatchSchedule, DataPlan
from mammogan_tf.training.config import TrainConfig, ValueSchedule
from mammogan_tf.training.families.cpggan import CPGGANFamily, level_from_progress
from mammogan_tf.training.schedules import scheduled_value

# 4 -> 16 px: phases 4 | fade 8, 8 | fade 16, 16 of 10 images; batches 4, 4, 4 | 3, 3
FAMILY_CONFIG = CPGGANModelConfig(image_size=16, start_resolution=4, latent_dim=8, base_filters=4, max_filters=8,
                                  mbstd_group=1, images_per_phase=10, batch_sizes={4: 4, 8: 4, 16: 3})


def _family(model=FAMILY_CONFIG, **train):
    return CPGGANFamily(model, TrainConfig(**train))


def test_step_to_images_batch_and_alpha_at_the_boundaries():
    family = _family()
    batches = family.batch_schedule()
    # phase 0: ceil(10/4) = 3 steps (12 images); phase 1: ceil(8/4) = 2 (20); phase 2: ceil(10/4) = 3 (32);
    # phase 3 at batch 3: ceil(8/3) = 3 steps (41 images); phase 4 lasts to the end
    assert [(s.start_step, s.end_step, s.batch_size, s.start_images) for s in batches.segments] == [
        (0, 8, 4, 0), (8, None, 3, 32)]
    assert batches.segments[1].field == "model.batch_sizes[16]"
    assert [batches.batch_size(s) for s in (0, 7, 8, 20)] == [4, 4, 3, 3]
    assert [batches.images(s) for s in (0, 3, 5, 7, 8, 10, 11)] == [0, 12, 20, 28, 32, 38, 41]
    assert batches.step_at_images(32) == 8 and batches.step_at_images(50) == 14 and batches.step_at_images(29) == 8
    schedule = ValueSchedule.model_validate(family.schedules()["progress"])
    progress = [scheduled_value(schedule, s, batches.images(s)) for s in (3, 7, 8, 10, 11, 14, 40)]
    np.testing.assert_allclose(progress, [1.2, 2.8, 3.2, 3.8, 4.1, 5.0, 5.0])
    # the fade-in of 16 px: alpha = level - 1 = progress - 3 while 3 <= progress < 4
    levels = [float(level_from_progress(p, 2)) for p in progress]
    np.testing.assert_allclose(levels, [0.2, 1.0, 1.2, 1.8, 2.0, 2.0, 2.0], atol=1e-6)
    assert [family.stage(s) for s in (0, 3, 7, 8, 11)] == [0, 1, 1, 2, 2]
    # epochs: 24 examples, one batch per step; segment 0 has 6 steps per epoch, segment 1 (batch 3) 8,
    # and starts a new epoch (2) after the two of segment 0 (the second used for 2 steps only)
    plan = DataPlan(batches, 24, 1)
    assert [plan.position(s) for s in (0, 5, 6, 7, 8, 15, 16, 17)] == [
        (0, 0, 6), (0, 5, 6), (1, 0, 6), (1, 1, 6), (2, 0, 8), (2, 7, 8), (3, 0, 8), (3, 1, 8)]
    assert [plan.total_steps(None, e) for e in (1, 2, 3)] == [6, 8, 16]
    assert plan.total_steps(None, None, 50) == 14 and plan.total_steps(9, 1, 50) == 9
    # a fixed batch: one segment; the steps schedule is linear in steps, the images one in images
    fixed = BatchSchedule.fixed(6)
    assert fixed.images(7) == 42 and DataPlan(fixed, 24, 2).position(7) == (3, 1, 2)
    per_step = ValueSchedule(kind="linear", start_step=0, end_step=10)
    assert scheduled_value(per_step, 5, 1000) == 0.5


def test_batch_sizes_errors_name_the_field():
    model = {"family": "cpggan", "image_size": 32, "start_resolution": 8}
    with pytest.raises(ConfigError, match=r"model.batch_sizes: .*no batch size for resolution 16 .*\[8, 16, 32\]"):
        validate_config({"model": {**model, "batch_sizes": {8: 16, 32: 8}}})
    with pytest.raises(ConfigError, match=r"model.batch_sizes: .*64 is not a resolution"):
        validate_config({"model": {**model, "batch_sizes": {8: 16, 16: 16, 32: 8, 64: 4}}})
    with pytest.raises(ConfigError, match=r"model.batch_sizes: .*batch size 0 at resolution 32"):
        validate_config({"model": {**model, "batch_sizes": {8: 16, 16: 16, 32: 0}}})
    with pytest.raises(ConfigError, match="train.schedules.progress: give unit: images with model.batch_sizes"):
        _family(schedules={"progress": {"kind": "linear", "end": 5.0, "end_step": 20}}).batch_schedule()
    with pytest.raises(ConfigError, match="give one of steps, epochs and images"):
        validate_config({"train": {"steps": 3, "images": 100}})
    from mammogan_tf.training.loop import Trainer

    config = CPGGANModelConfig(image_size=16, start_resolution=8, latent_dim=8, base_filters=4, max_filters=8,
                               images_per_phase=16, batch_sizes={8: 8, 16: 12})
    two_replicas = SimpleNamespace(num_replicas_in_sync=2)
    with pytest.raises(ConfigError, match=r"model.batch_sizes\[16\]: 6 examples per replica is not a multiple "
                                          r"of model.mbstd_group 4"):
        Trainer(CPGGANFamily(config, TrainConfig()), TrainConfig(strategy="mirrored"), two_replicas)
    odd = config.model_copy(update={"batch_sizes": {8: 8, 16: 5}, "mbstd_group": 1})
    with pytest.raises(ConfigError, match=r"model.batch_sizes\[16\] 5 must be a multiple of the 2 replicas of "
                                          r"strategy mirrored"):
        Trainer(CPGGANFamily(odd, TrainConfig()), TrainConfig(strategy="mirrored"), two_replicas)
    with pytest.raises(ConfigError, match=r"train.batch_size 5 must be a multiple of the 2 replicas"):
        Trainer(CPGGANFamily(odd.model_copy(update={"batch_sizes": None}), TrainConfig(batch_size=5)),
                TrainConfig(batch_size=5, strategy="mirrored"), two_replicas)


# ------------------------------------------------------------------------------ a tiny run
# 8 -> 16 px on 24 patches: phase 0 (8 px) at batch 8 = 2 steps, fade-in of 16 px and 16 px at batch 4:
# 48 images = 2 + 8 steps. Each step reads two batches (D and G): an epoch is 1 step at batch 8 and 3 at
# batch 4; the batch-4 segment starts at epoch 2.

def _experiment(manifest, **train):
    base = {"data": {"manifest": str(manifest)}, "images": 48, "loss": "wasserstein", "seed": 3,
            "generator_optimizer": {"learning_rate": 1e-3, "beta_1": 0.0, "beta_2": 0.99},
            "discriminator_optimizer": {"learning_rate": 1e-3, "beta_1": 0.0, "beta_2": 0.99},
            "augment": {"ops": ["hflip"], "p": 0.5, "adaptive": True, "interval": 1, "speed_images": 1600},
            "metric": {"name": "none"}, "log_every": 1, "sample_every": 100, "checkpoint_every": 100}
    base.update(train)
    return validate_config({"name": "phase_batches", "model": {
        "family": "cpggan", "image_size": 16, "start_resolution": 8, "latent_dim": 8, "base_filters": 4,
        "max_filters": 8, "mbstd_group": 2, "images_per_phase": 16, "batch_sizes": {8: 8, 16: 4}}, "train": base})


class _Recorded:
    """A ``TrainingData`` whose pipelines record (start epoch, skipped batches, batch of its elements)."""

    def __init__(self, manifest):
        from mammogan_tf.training.data import TrainingData

        self.inner = TrainingData(manifest, "train", {"real": _stream()}, 64, seed=3)
        self.built: list[tuple] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def dataset(self, start_epoch, skip, per_epoch, context=None, batch_size=None):
        dataset = self.inner.dataset(start_epoch, skip, per_epoch, context, batch_size=batch_size)
        self.built.append((start_epoch, skip, per_epoch, int(dataset.element_spec["real"]["image"].shape[0])))
        return dataset


def _stream():
    from mammogan_tf.training.families.base import Stream

    return Stream()


def _rows(run):
    from mammogan_tf.training.run_log import read_metrics

    return read_metrics(Path(run) / "metrics.jsonl", "train")


def _weights(prefix) -> dict:
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(prefix))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if not name.startswith(("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter"))}


def test_tiny_cpggan_changes_batch_per_phase_and_resumes_mid_fade_exactly(tiny_shards, tmp_path):
    from mammogan_tf.training.run import train

    manifest = tiny_shards(tmp_path / "data")
    data = _Recorded(manifest)
    summary = train(_experiment(manifest, checkpoint_every=4), tmp_path / "full", data=data, progress=False)
    assert summary["steps"] == 10
    assert data.built == [(0, 0, 2, 8), (2, 0, 6, 4)]  # the batch-4 pipeline starts at epoch 2
    rows = _rows(tmp_path / "full")
    assert [r["step"] for r in rows] == list(range(1, 11))
    assert [r["batch_size"] for r in rows] == [8, 8] + [4] * 8
    assert [r["images_seen"] for r in rows] == [8, 16, 20, 24, 28, 32, 36, 40, 44, 48]
    assert [r["epoch"] for r in rows] == [0, 1, 2, 2, 2, 3, 3, 3, 4, 4]
    # the fade-in of 16 px runs over images 16..32 (steps 2..5 at batch 4): alpha = level - 0
    np.testing.assert_allclose([r["discriminator_level"] for r in rows],
                               [0, 0, 0, 0.25, 0.5, 0.75, 1, 1, 1, 1], atol=1e-6)
    # ADA moves p by batch * 2 batches per step / 1600 images each step: 0.01 at batch 8, 0.005 at 4
    p = [0.5] + [r["augment_p"] for r in rows]
    np.testing.assert_allclose(np.abs(np.diff(p)), [0.01] * 2 + [0.005] * 8, atol=1e-6)

    # a run killed after its checkpoint at step 4 (mid fade-in, batch 4, alpha 0.5); resume drops what it
    # logged after step 4
    import shutil

    import tensorflow as tf

    run = tmp_path / "resumed"
    shutil.copytree(tmp_path / "full", run)
    for path in (run / "checkpoints").glob("ckpt-*"):
        if not path.name.startswith("ckpt-4."):
            path.unlink()
    tf.compat.v1.train.update_checkpoint_state(str(run / "checkpoints"), str(run / "checkpoints" / "ckpt-4"))
    resumed = _Recorded(manifest)
    train(_experiment(manifest), run, data=resumed, resume=True, progress=False)
    assert resumed.built == [(2, 4, 6, 4)]  # step 4 = epoch 2 of the batch-4 pipeline, 2 steps (4 batches) in
    again = _rows(run)
    assert [r["step"] for r in again] == list(range(1, 11))
    for key in ("batch_size", "images_seen", "epoch", "progress", "discriminator_level", "augment_p",
                "discriminator_loss", "generator_loss"):
        np.testing.assert_allclose([r[key] for r in again], [r[key] for r in rows], rtol=1e-5, atol=1e-6,
                                   err_msg=key)
    expected = _weights(tmp_path / "full" / "checkpoints" / "ckpt-10")
    got = _weights(run / "checkpoints" / "ckpt-10")
    assert expected.keys() == got.keys() and len(expected) > 40
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=0, atol=1e-6, err_msg=name)


def test_han2019_preset_holds_karras_batches_and_length_in_images():
    from mammogan_tf.config import load_config

    config = load_config(Path(__file__).resolve().parents[1] / "experiments" / "han2019_cpggan.yaml")
    assert config.model.batch_sizes == {4: 16, 8: 16, 16: 16, 32: 16, 64: 16, 128: 16, 256: 12}
    assert config.train.images == 13 * 800_000 and config.train.steps is None
    batches = CPGGANFamily(config.model, config.train).batch_schedule()
    # 11 phases at 16 (4 px, then the fade-in and stabilisation of 8 to 128 px), the two of 256 px at 12
    assert [(s.start_step, s.batch_size) for s in batches.segments] == [(0, 16), (550_000, 12)]
    assert DataPlan(batches, 1000, 2).total_steps(None, None, config.train.images) == 550_000 + 2 * 66_667
