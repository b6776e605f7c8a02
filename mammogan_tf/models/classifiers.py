"""Downstream patch classifiers: Wu et al.'s ResNet-50, Frid-Adar et al.'s CNN and a small CPU CNN.

Every classifier is one subclassed ``keras.Model`` (:class:`PatchClassifier`):
``images (B, S, S, 1) float32 in [-1, 1] -> logits``. The head is binary (``num_classes: 1``:
one logit, sigmoid) or multi-class (``num_classes >= 2``: C logits, softmax).
``features(images, training)`` gives the last feature layer (B, D) (t-SNE, ``classifier:``
backbones in ``evaluation.features``).

- ``resnet50``: ``keras.applications.ResNet50`` without its top, global average pooled
  (D = 2048); grey patches are replicated to three channels and mapped to the Caffe-style
  input ImageNet weights expect (0..255, BGR mean subtracted). ``weights``: ``none``,
  ``imagenet`` (read from the Keras cache only, never downloaded) or a path to an ``.h5`` file.
- ``fridadar_cnn``: three (conv, ReLU, 2x2 max-pool) pairs, two dense layers (ReLU, dropout
  0.5 as in the paper), softmax head. The paper gives no filter counts; ``filters`` and
  ``dense_units`` are config values.
- ``small_cnn``: conv-BN-ReLU-pool blocks and global average pooling, for CPU runs and tests.

``build_classifier(config)`` is the registry entry point (``CLASSIFIERS``: name -> builder).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import keras
from pydantic import Field, model_validator

from mammogan_tf.errors import InputError, MissingDependencyError
from mammogan_tf.sections import Section

RESNET50_WEIGHTS_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)
ARCHITECTURES = ("resnet50", "fridadar_cnn", "small_cnn")


class ClassifierModelConfig(Section):
    """The ``model:`` section of a classifier experiment (``family: classifier``)."""

    family: Literal["classifier"] = "classifier"
    architecture: Literal["resnet50", "fridadar_cnn", "small_cnn"] = "small_cnn"
    image_size: int = Field(64, ge=16, description="input side S; patches are resized to it")
    num_classes: int = Field(1, ge=1, description="1 = binary head (one sigmoid logit); >= 2 = softmax over C")
    weights: str = Field("none", description="resnet50: none | imagenet (local Keras cache) | path to .h5")
    filters: tuple[int, ...] = Field((32, 64, 128), description="conv widths (fridadar_cnn: three; small_cnn: any)")
    kernel_size: int = Field(3, ge=1)
    dense_units: tuple[int, ...] = Field((128, 64), description="fridadar_cnn: the two dense layers")
    dropout: float = Field(0.5, ge=0, lt=1)

    @model_validator(mode="after")
    def _consistent(self):
        if self.architecture == "fridadar_cnn" and (len(self.filters) != 3 or len(self.dense_units) != 2):
            raise ValueError("fridadar_cnn needs three filters and two dense_units (three conv + pool pairs, "
                             "two dense layers)")
        if self.architecture != "resnet50" and self.weights != "none":
            raise ValueError(f"weights {self.weights!r}: only resnet50 takes pretrained weights")
        if self.architecture == "resnet50" and self.image_size < 32:
            raise ValueError("resnet50 needs image_size >= 32")
        return self


def keras_models_dir() -> Path:
    """Where Keras keeps downloaded weights: ``$KERAS_HOME/models`` or ``~/.keras/models``."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def resolve_weights(weights: str) -> str | None:
    """``none`` -> None; ``imagenet`` -> the cached notop file (error when absent); a path -> itself."""
    if weights in ("none", "", None):
        return None
    if weights == "imagenet":
        path = keras_models_dir() / RESNET50_WEIGHTS_FILE
        if not path.is_file():
            raise MissingDependencyError(
                f"model.weights imagenet: {path} not found and nothing is downloaded offline; copy "
                f"{RESNET50_WEIGHTS_FILE} there, or set model.weights to the file's path")
        return str(path)
    if not Path(weights).is_file():
        raise InputError(f"model.weights {weights}: file not found (none | imagenet | path to an .h5 file)")
    return str(weights)


def _init(seed: int, offset: int):
    return keras.initializers.GlorotUniform(seed=seed + offset)


@keras.saving.register_keras_serializable(package="mammogan_tf")
class PatchClassifier(keras.Model):
    """A patch classifier: ``images (B, S, S, 1) float32 in [-1, 1] -> logits (B, C)``.

    Arguments are those of :class:`ClassifierModelConfig` plus ``seed`` (weight initialisation).
    The images are resized to ``image_size`` when they differ (bilinear).
    """

    def __init__(self, architecture: str = "small_cnn", image_size: int = 64, num_classes: int = 1,
                 weights: str = "none", filters=(32, 64, 128), kernel_size: int = 3, dense_units=(128, 64),
                 dropout: float = 0.5, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {architecture!r}; expected one of {ARCHITECTURES}")
        self.architecture, self.image_size, self.num_classes = architecture, int(image_size), int(num_classes)
        self.weights_spec, self.filters, self.kernel_size = weights, tuple(filters), int(kernel_size)
        self.dense_units, self.dropout_rate, self.seed = tuple(dense_units), float(dropout), int(seed)
        self.blocks = []
        if architecture == "resnet50":
            self.backbone = keras.applications.ResNet50(
                include_top=False, weights=resolve_weights(weights), pooling="avg",
                input_shape=(self.image_size, self.image_size, 3))
        elif architecture == "fridadar_cnn":
            for i, width in enumerate(self.filters):
                self.blocks.append(keras.layers.Conv2D(width, self.kernel_size, padding="same", activation="relu",
                                                       kernel_initializer=_init(seed, i), name=f"conv{i}"))
                self.blocks.append(keras.layers.MaxPooling2D(2, name=f"pool{i}"))
            self.blocks.append(keras.layers.Flatten(name="flatten"))
            for i, units in enumerate(self.dense_units):
                self.blocks.append(keras.layers.Dense(units, activation="relu", kernel_initializer=_init(seed, 10 + i),
                                                      name=f"dense{i}"))
                self.blocks.append(keras.layers.Dropout(self.dropout_rate, seed=seed + i, name=f"dropout{i}"))
        else:
            for i, width in enumerate(self.filters):
                self.blocks.append(keras.layers.Conv2D(width, self.kernel_size, padding="same", use_bias=False,
                                                       kernel_initializer=_init(seed, i), name=f"conv{i}"))
                self.blocks.append(keras.layers.BatchNormalization(momentum=0.9, name=f"bn{i}"))
                self.blocks.append(keras.layers.ReLU(name=f"relu{i}"))
                self.blocks.append(keras.layers.MaxPooling2D(2, name=f"pool{i}"))
            self.blocks.append(keras.layers.GlobalAveragePooling2D(name="pooled"))
            self.blocks.append(keras.layers.Dropout(self.dropout_rate, seed=seed, name="dropout"))
        self.head = keras.layers.Dense(self.num_classes, kernel_initializer=_init(seed, 100), name="logits")

    def _prepare(self, images):
        images = keras.ops.convert_to_tensor(images, "float32")
        if images.shape[1] != self.image_size or images.shape[2] != self.image_size:
            images = keras.ops.image.resize(images, (self.image_size, self.image_size), interpolation="bilinear")
        if self.architecture != "resnet50":
            return images
        grey = (images + 1.0) * 127.5
        mean = keras.ops.convert_to_tensor(IMAGENET_BGR_MEAN, "float32")
        return keras.ops.concatenate([grey, grey, grey], axis=-1) - mean

    def features(self, images, training: bool = False):
        """Last feature layer ``(B, D)`` float32 (before the head's dropout for small_cnn)."""
        x = self._prepare(images)
        if self.architecture == "resnet50":
            return self.backbone(x, training=training)
        for layer in self.blocks:
            if isinstance(layer, keras.layers.Dropout) and self.architecture == "small_cnn":
                break
            x = layer(x, training=training)
        return x

    def call(self, images, training: bool = False):
        x = self._prepare(images)
        if self.architecture == "resnet50":
            x = self.backbone(x, training=training)
        else:
            for layer in self.blocks:
                x = layer(x, training=training)
        return self.head(x)

    def get_config(self):
        return {**super().get_config(), "architecture": self.architecture, "image_size": self.image_size,
                "num_classes": self.num_classes, "weights": self.weights_spec, "filters": list(self.filters),
                "kernel_size": self.kernel_size, "dense_units": list(self.dense_units),
                "dropout": self.dropout_rate, "seed": self.seed}

    @classmethod
    def from_config(cls, config):
        # The saved weights replace the pretrained ones: never look for the weights file again.
        return cls(**{**config, "weights": "none"})


def _builder(architecture: str):
    def build(config: ClassifierModelConfig, seed: int = 0) -> PatchClassifier:
        model = PatchClassifier(architecture, config.image_size, config.num_classes, config.weights,
                                config.filters, config.kernel_size, config.dense_units, config.dropout, seed,
                                name=architecture)
        model(keras.ops.zeros((1, config.image_size, config.image_size, 1)))
        return model
    return build


CLASSIFIERS = {name: _builder(name) for name in ARCHITECTURES}
"""Registry: architecture name -> ``builder(config, seed) -> built PatchClassifier``."""


def build_classifier(config: ClassifierModelConfig, seed: int = 0) -> PatchClassifier:
    """The built classifier named by ``config.architecture``."""
    return CLASSIFIERS[config.architecture](config, seed)


def positive_scores(logits):
    """Scores ``(B,)`` in [0, 1] of the positive class: sigmoid of a binary head's logit, or
    softmax probability of class 1 for a softmax head."""
    logits = keras.ops.convert_to_tensor(logits)
    if logits.shape[-1] == 1:
        return keras.ops.sigmoid(logits[:, 0])
    return keras.ops.softmax(logits, axis=-1)[:, 1]
