"""The training engine: no family inside the loop, one input pipeline per run, checkpoints by
name, interruption and the resume guard, and a GAN that learns (and fails when it should)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

from conftest import BATCH, REPO_ROOT, tiny_experiment
from mammogan_tf.config import validate_config
from mammogan_tf.errors import InputError
from mammogan_tf.models.weights import NamedState, optimizer_paths, variable_paths
from mammogan_tf.training.families.dcgan import DCGANFamily


def test_the_loop_names_no_family():
    from mammogan_tf.training import loop, run
    from mammogan_tf.training.families import FAMILIES, family_class

    for module in (loop, run):
        source = Path(module.__file__).read_text().lower()
        for word in [*FAMILIES, "num_classes"]:
            assert word not in source, (module.__name__, word)
    assert family_class("dcgan").__module__ == "mammogan_tf.training.families.dcgan"
    assert family_class("acgan").__module__ == "mammogan_tf.training.families.acgan"


class Grower(keras.Model):
    """A network that gains a hidden layer in its second stage."""

    def __init__(self, stages: int = 1, width: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.blocks = [keras.layers.Dense(width, activation="relu") for _ in range(stages)]
        self.head = keras.layers.Dense(1)

    def call(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def _state(model, optimizer):
    names = variable_paths(model)
    return NamedState({**{f"net/{k}": v for k, v in names.items()},
                       **{f"opt/{k}": v for k, v in optimizer_paths(optimizer, names).items()}})


def _built(stages: int, width: int = 4):
    model = Grower(stages, width)
    model(np.ones((2, 4), np.float32))
    optimizer = keras.optimizers.Adam(0.1)
    optimizer.build(model.trainable_variables)
    return model, optimizer


def test_a_grown_network_restores_the_old_layers_by_name(tmp_path):
    phase1, opt1 = _built(1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(phase1(np.ones((2, 4), np.float32)) ** 2)
    opt1.apply_gradients(zip(tape.gradient(loss, phase1.trainable_variables), phase1.trainable_variables))
    prefix = _state(phase1, opt1).checkpoint.write(str(tmp_path / "phase1"))

    phase2, opt2 = _built(2)
    fresh = phase2.blocks[1].kernel.numpy().copy()
    state = _state(phase2, opt2)
    with pytest.raises(InputError, match="not in the checkpoint: net/blocks/1/bias"):
        state.restore(prefix)  # strict: a resume must match exactly
    report = state.restore(prefix, partial=True)
    assert {"net/blocks/1/kernel", "net/blocks/1/bias"} <= set(report["new"]) and not report["unused"]
    np.testing.assert_array_equal(phase2.blocks[0].kernel.numpy(), phase1.blocks[0].kernel.numpy())
    np.testing.assert_array_equal(phase2.head.kernel.numpy(), phase1.head.kernel.numpy())
    np.testing.assert_array_equal(phase2.blocks[1].kernel.numpy(), fresh)  # the new layer keeps its init
    old, new = optimizer_paths(opt1, variable_paths(phase1)), optimizer_paths(opt2, variable_paths(phase2))
    np.testing.assert_array_equal(new["blocks/0/kernel/momentums"].numpy(), old["blocks/0/kernel/momentums"].numpy())
    assert np.any(old["blocks/0/kernel/momentums"].numpy() != 0)
    wide, opt3 = _built(1, width=5)
    with pytest.raises(InputError, match=r"shapes differ from the model: net/blocks/0/kernel \[4, 4\] != \[4, 5\]"):
        _state(wide, opt3).restore(prefix, partial=True)


def test_variable_paths_do_not_depend_on_what_was_built_before():
    from mammogan_tf.models.config import ModelConfig
    from mammogan_tf.models.registry import build_gan

    config = ModelConfig(image_size=16, latent_dim=4, generator={"base_filters": 4, "max_filters": 8},
                         discriminator={"base_filters": 4, "max_filters": 8, "num_layers": 2, "dropout": 0.2})
    first = [variable_paths(m) for m in build_gan(config)]
    second = [variable_paths(m) for m in build_gan(config)]  # Keras' own paths now end in _1, _2 ...
    assert [list(p) for p in first] == [list(p) for p in second]
    assert "blocks/0/conv/kernel" in first[1] and len(first[1]) == len(build_gan(config)[1].variables)


def _counting_data(manifest, cache: bool):
    from mammogan_tf.training.data import TrainingData

    class Counting(TrainingData):
        """Counts records decoded from disk (before the cache)."""

        def records(self, stream, input_context=None):
            return super().records(stream, input_context).map(
                lambda ex: (self.reads.assign_add(1), ex)[1])

    family = DCGANFamily(validate_config(tiny_experiment(manifest, 1)).model,
                         validate_config(tiny_experiment(manifest, 1)).train)
    data = Counting(manifest, "train", family.streams(), BATCH, seed=7, cache=cache)
    data.reads = tf.Variable(0, dtype=tf.int64)
    return data


@pytest.mark.parametrize("cache", [True, False])
def test_one_pipeline_per_run_and_the_cache_reads_each_record_once(tiny_shards, tmp_path, cache):
    from mammogan_tf.training.run import train

    manifest = tiny_shards(tmp_path / "data")
    data = _counting_data(manifest, cache)
    config = validate_config(tiny_experiment(manifest, 10, sample_every=100, checkpoint_every=100))
    train(config, tmp_path / "run", data=data, progress=False)  # 10 steps = 3.3 epochs of 24 patches
    assert data.builds == 1
    reads = int(data.reads.numpy())
    if cache:
        assert reads == 24
    else:
        assert reads >= 3 * 24


def test_each_worker_reads_only_its_own_files(tiny_shards, tmp_path):
    from mammogan_tf.data.shards import make_dataset, split_files
    from mammogan_tf.manifest import read_manifest

    manifest = tiny_shards(tmp_path)  # 24 patches in files of 10, 10, 4
    files = split_files(read_manifest(manifest), "train")
    per_file = [{ex["image_id"].numpy() for ex in tf.data.TFRecordDataset(f).map(
        lambda r: tf.io.parse_single_example(r, {"image_id": tf.io.FixedLenFeature([], tf.string)}))}
        for f in files]
    seen = []
    for worker in (0, 1):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=worker, num_replicas_in_sync=2)
        dataset = make_dataset(manifest, "train", None, shuffle=False, as_dict=True, input_context=context)
        seen.append({ex["image_id"].numpy() for ex in dataset})
    assert len(files) == 3
    assert seen[0] == per_file[0] | per_file[2] and seen[1] == per_file[1]


def _cli_experiment(tmp_path, manifest, steps: int, **train) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_experiment(manifest, steps, **train)))
    return path


def test_resume_refuses_a_changed_batch_size_and_names_it(tiny_shards, tmp_path, capsys):
    from mammogan_tf.cli import main

    experiment = _cli_experiment(tmp_path, tiny_shards(tmp_path / "data"), 2)
    run = str(tmp_path / "run")
    assert main(["train", str(experiment), "--out", run, "--quiet"]) == 0
    capsys.readouterr()
    code = main(["train", str(experiment), "--out", run, "--quiet", "--resume", "--set", "train.batch_size=4",
                 "--set", "train.steps=4"])
    error = capsys.readouterr().err
    assert code == 2 and "train.batch_size is 8 in the run being resumed" in error and len(error.splitlines()) == 1
    assert main(["train", str(experiment), "--out", run, "--quiet", "--resume", "--set", "train.steps=3"]) == 0


def _checkpoint_values(prefix) -> dict:
    reader = tf.train.load_checkpoint(str(prefix))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name.startswith("state/") and "best_value" not in name}


@pytest.mark.slow
def test_sigint_saves_the_current_step_and_resume_matches_an_uninterrupted_run(tiny_shards, tmp_path):
    from mammogan_tf.training.run import train

    manifest = tiny_shards(tmp_path / "data")
    experiment = _cli_experiment(tmp_path, manifest, 5000, checkpoint_every=10000, sample_every=10000)
    run = tmp_path / "interrupted"
    process = subprocess.Popen([sys.executable, "-m", "mammogan_tf", "train", str(experiment), "--out", str(run),
                                "--quiet"], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").exists() else []
        if lines and json.loads(lines[-1])["step"] >= 3:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, error = process.communicate(timeout=120)
    assert process.returncode == 130, error
    assert "SIGINT at step" in error and "saved" in error and "--resume" in error
    step = int(tf.train.latest_checkpoint(str(run / "checkpoints")).rsplit("-", 1)[1])
    assert 3 <= step < 5000 and f"at step {step} of 5000" in error
    raw = tiny_experiment(manifest, step + 2, checkpoint_every=10000, sample_every=10000)
    train(validate_config(raw), run, resume=True, progress=False)
    train(validate_config(raw), tmp_path / "straight", progress=False)
    got = _checkpoint_values(run / "checkpoints" / f"ckpt-{step + 2}")
    expected = _checkpoint_values(tmp_path / "straight" / "checkpoints" / f"ckpt-{step + 2}")
    assert got.keys() == expected.keys() and len(got) > 40
    # The first part ran in another process: CPU float reductions there may differ in the last bits
    # (seen up to 1e-4 in Adam moments), so floats get a tolerance that a wrong batch, seed or
    # schedule would still break; integer state (step, counters) must be equal.
    for name, value in expected.items():
        if np.issubdtype(np.asarray(value).dtype, np.integer):
            np.testing.assert_array_equal(got[name], value, err_msg=name)
        else:
            np.testing.assert_allclose(got[name], value, rtol=1e-2, atol=1e-3, err_msg=name)


class SwappedLabels(DCGANFamily):
    """A deliberately broken DCGAN: the discriminator calls generated images real."""

    def discriminator_loss(self, networks, batch, ctx):
        fake, _ = self.fake(networks, ctx, ctx.split(2)[0])
        discriminator = networks["discriminator"]
        terms = {"adversarial": self.adversarial.discriminator(discriminator(fake, training=True),
                                                               discriminator(batch["real"]["image"], training=True))}
        return terms, {}


def _generated_mean(run) -> float:
    from mammogan_tf.synthesis.sampling import generate_batches, load_generator

    loaded = load_generator(run, "last")
    return float(np.mean(np.concatenate([images for _, images, _ in generate_batches(loaded, 64, seed=1)])))


@pytest.mark.parametrize("swapped", [False, True])
def test_the_generator_moves_toward_the_data_and_not_with_swapped_labels(tiny_shards, tmp_path, monkeypatch, swapped):
    from mammogan_tf.training import families
    from mammogan_tf.training.run import train

    if swapped:
        monkeypatch.setitem(families.FAMILIES, "dcgan", "test_engine:SwappedLabels")
    manifest = tiny_shards(tmp_path / "data", value=0.9)  # every real pixel is 0.8 in [-1, 1]
    raw = tiny_experiment(manifest, 120, gradient_penalty_weight=0.0, ema={"enabled": False}, augment={"ops": []},
                          real_label=1.0, generator_optimizer={"learning_rate": 2e-3},
                          discriminator_optimizer={"learning_rate": 2e-3}, checkpoint_every=1000,
                          sample_every=1000, log_every=20)
    train(validate_config(raw), tmp_path / "run", progress=False)
    mean = _generated_mean(tmp_path / "run")
    if swapped:
        assert abs(mean - 0.8) > 0.6, mean
    else:
        assert abs(mean - 0.8) < 0.25, mean


def test_sync_batch_norm_makes_every_batch_norm_layer_synchronised(tiny_shards, tmp_path):
    from mammogan_tf.training.families import make_family
    from mammogan_tf.training.loop import Trainer

    manifest = tiny_shards(tmp_path)
    for flag in (False, True):
        config = validate_config(tiny_experiment(manifest, 1, sync_batch_norm=flag))
        trainer = Trainer(make_family(config.model, config.train), config.train)
        layers = [layer for net in trainer.networks.values()
                  for layer in net._flatten_layers(include_self=False, recursive=True)
                  if isinstance(layer, keras.layers.BatchNormalization)]
        assert layers and all(layer.synchronized == flag for layer in layers)


def test_frd_can_keep_best_during_training(tiny_shards, tmp_path):
    """The in-training metric can be the Frechet Radiomics Distance (no backbone needed)."""
    from mammogan_tf.training.run import train
    from mammogan_tf.training.run_log import read_metrics

    manifest = tiny_shards(tmp_path / "data")
    raw = tiny_experiment(manifest, 4, metric={"name": "frd", "every": 2, "n_samples": 12, "batch_size": 8},
                          sample_every=100, checkpoint_every=100)
    summary = train(validate_config(raw), tmp_path / "run", progress=False)
    values = [r["frd"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl", "metric")]
    assert len(values) == 2 and all(np.isfinite(v) and v > 0 for v in values)
    assert summary["best"]["metric"] == "frd" and summary["best"]["value"] == pytest.approx(min(values))


def test_a_checkpoint_of_the_old_positional_format_is_refused_with_a_message(tmp_path):
    old, _ = _built(1)
    prefix = tf.train.Checkpoint(generator=list(old.variables)).write(str(tmp_path / "ckpt-3"))
    model, optimizer = _built(1)
    with pytest.raises(InputError, match="not a name-keyed checkpoint"):
        _state(model, optimizer).restore(prefix)
