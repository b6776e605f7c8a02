"""Classifiers: architectures, `.keras` round trips, offline weights, the training loop and its resume."""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from pydantic import ValidationError

from classifier_helpers import tiny_config, write_real, write_synthetic
from mammogan_tf.errors import ConfigError, MissingDependencyError
from mammogan_tf.evaluation.classification import roc_auc
from mammogan_tf.models.classifiers import (CLASSIFIERS, RESNET50_WEIGHTS_FILE, ClassifierModelConfig,
                                            build_classifier, positive_scores)
from mammogan_tf.training.classifier import ClassifierExperimentConfig, train_classifier


@pytest.mark.parametrize("architecture,num_classes,dim", [("small_cnn", 1, 8), ("fridadar_cnn", 3, 6),
                                                           ("resnet50", 2, 2048)])
def test_keras_round_trip(tmp_path, architecture, num_classes, dim):
    config = ClassifierModelConfig(architecture=architecture, image_size=32, num_classes=num_classes,
                                   filters=(4, 6, 8) if architecture == "small_cnn" else (4, 5, 6),
                                   dense_units=(12, 6))
    model = build_classifier(config, seed=3)
    images = np.random.default_rng(0).uniform(-1, 1, (3, 24, 24, 1)).astype(np.float32)  # resized to 32
    logits = np.asarray(model(images))
    assert logits.shape == (3, num_classes)
    assert np.asarray(model.features(images)).shape == (3, dim)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(np.asarray(loaded(images)), logits)
    assert loaded.get_config()["architecture"] == architecture
    assert set(CLASSIFIERS) == {"small_cnn", "fridadar_cnn", "resnet50"}


def test_fridadar_layout_and_config_errors():
    model = build_classifier(ClassifierModelConfig(architecture="fridadar_cnn", image_size=64, num_classes=3))
    kinds = [type(layer).__name__ for layer in model.blocks]
    assert kinds == ["Conv2D", "MaxPooling2D"] * 3 + ["Flatten"] + ["Dense", "Dropout"] * 2
    assert model.blocks[-1].rate == 0.5
    with pytest.raises(ValidationError, match="three filters"):
        ClassifierModelConfig(architecture="fridadar_cnn", filters=(8, 16))
    with pytest.raises(ValidationError, match="only resnet50"):
        ClassifierModelConfig(architecture="small_cnn", weights="imagenet")


def test_imagenet_weights_offline_error_names_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    config = ClassifierModelConfig(architecture="resnet50", image_size=32, weights="imagenet")
    with pytest.raises(MissingDependencyError) as error:
        build_classifier(config)
    assert str(tmp_path / "models" / RESNET50_WEIGHTS_FILE) in str(error.value)


def test_positive_scores_binary_and_softmax():
    np.testing.assert_allclose(positive_scores(np.array([[0.0], [2.0]])), [0.5, 1 / (1 + np.exp(-2))], rtol=1e-6)
    np.testing.assert_allclose(positive_scores(np.array([[0.0, 0.0], [0.0, np.log(3.0)]])), [0.5, 0.75], rtol=1e-6)


def test_head_must_fit_the_task():
    with pytest.raises(ValidationError, match="num_classes 3"):
        ClassifierExperimentConfig(model={"num_classes": 3})


def test_training_resume_is_exact_and_logs_the_realised_share(tmp_path):
    real = write_real(tmp_path / "real")
    syn = write_synthetic(tmp_path / "syn")
    mixing = {"synthetic": [str(syn)], "share": {"kind": "step", "initial": 0.5, "rate": 0.5, "every_samples": 32}}
    whole = train_classifier(tiny_config(real, mixing=mixing, samples=64), tmp_path / "a", progress=False)
    train_classifier(tiny_config(real, mixing=mixing, samples=32), tmp_path / "b", progress=False)
    with pytest.raises(ConfigError, match="--resume"):
        train_classifier(tiny_config(real, mixing=mixing, samples=64), tmp_path / "b", progress=False)
    resumed = train_classifier(tiny_config(real, mixing=mixing, samples=64), tmp_path / "b", resume=True,
                               progress=False)
    a, b = (tf.train.load_checkpoint(str(tmp_path / r / "checkpoints")) for r in "ab")
    names = [n for n in a.get_variable_to_shape_map() if "model" in n or "optimizer" in n]
    assert len(names) > 10
    for name in names:
        np.testing.assert_array_equal(a.get_tensor(name), b.get_tensor(name), err_msg=name)
    assert resumed["test"]["auc"] == whole["test"]["auc"]
    rows_a = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert rows_a == rows_b  # same windows, same losses, same realised share, across the resume
    mix = [r for r in rows_a if r["kind"] == "mix"]
    assert [r["step"] for r in mix] == [32, 64]  # samples seen
    assert [r["scheduled_share"] for r in mix] == pytest.approx([0.25, 0.125])
    assert all(0 <= r["realised_share"] <= 1 for r in mix)
    assert [r["kind"] for r in rows_a] == ["train", "mix", "val"] * 2
    tags = {v.tag for f in (tmp_path / "a" / "tensorboard").iterdir()
            for event in tf.compat.v1.train.summary_iterator(str(f)) for v in event.summary.value}
    assert {"train/loss", "mix/realised_share", "mix/scheduled_share", "val/auc"} <= tags
    # the saved test scores are those the report's AUC was computed from
    scores = np.load(tmp_path / "a" / "scores" / "test.npz")
    assert roc_auc(scores["labels"], scores["scores"]) == pytest.approx(whole["test"]["auc"])
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["stage"] == "classifier" and len(manifest["inputs"]) == 2
    assert set(manifest["patients"]) == {"train", "val", "test"}


def test_classic_and_flip_augmentation_maps():
    from mammogan_tf.training.classifier_augment import augment_dataset

    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (16, 16, 1)).astype(np.float32)
    element = {"image": image, "bbox": np.float32([4, 4, 12, 12]), "label": np.int32(1)}
    dataset = tf.data.Dataset.from_tensors(element).repeat(6)
    flips = list(augment_dataset(dataset.take(1), "flips").as_numpy_iterator())
    assert len(flips) == 3
    np.testing.assert_array_equal(flips[1]["image"], image[:, ::-1])
    np.testing.assert_array_equal(flips[2]["image"], image[::-1])
    first = [e["image"] for e in augment_dataset(dataset, "classic", seed=3).as_numpy_iterator()]
    again = [e["image"] for e in augment_dataset(dataset, "classic", seed=3).as_numpy_iterator()]
    np.testing.assert_array_equal(np.stack(first), np.stack(again))  # seeded by (seed, index)
    assert all(x.shape == (16, 16, 1) and x.min() >= -1 and x.max() <= 1 for x in first)
    assert len({x.tobytes() for x in first}) == 6  # each element a different draw
    assert not any(np.array_equal(x, image) for x in first)  # every draw is rotated
