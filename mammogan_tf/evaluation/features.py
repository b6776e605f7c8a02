"""Feature backbones for FID/KID, precision-recall, t-SNE and the memorisation check.

``load_backbone(spec)`` returns a :class:`Backbone`, a callable ``images (B, H, W, 1) float32 in
[-1, 1] -> (B, D) float32`` (a NumPy array). Specs:

* ``inception_v3`` / ``inception_v3:WEIGHTS.h5`` / ``inception_v3:random``: Keras InceptionV3
  without its top, global average pooled: D = 2048. ImageNet weights come from the Keras cache
  (``$KERAS_HOME/models`` or ``~/.keras/models``, file ``inception_v3_weights_tf_dim_ordering_tf_
  kernels_notop.h5``) or from the given file, never from the network; ``random`` = untrained
  (seeded) weights, for benchmarks only.
* ``classifier:PATH[:LAYER]``: a trained Keras classifier (``.keras``); features are the output
  of ``LAYER`` (default: the layer named ``features``, else the second-to-last layer),
  global average pooled when spatial. A subclassed model (its class registered with Keras and
  imported) is read through its ``features(images, training)`` method and ``image_size``
  attribute instead. ``mammogan features fit`` (``training.backbone_fit``) makes one from prepared shards.
* ``keras:PATH[:LAYER]``: any ``.keras`` image encoder (a user's RadImageNet or
  mammography-pretrained network converted to Keras), read as ``classifier:`` is.
* ``savedmodel:PATH[:SIGNATURE]``: a TensorFlow SavedModel folder; the signature (default
  ``serving_default``) must take one image tensor ``(B, S, S, 1 or 3)``; its output named
  ``features`` (else its only or first output, by name) is the feature, pooled when spatial.
* a bare path: a ``.keras`` file is ``keras:PATH``, a folder holding ``saved_model.pb`` is
  ``savedmodel:PATH``.
* ``random``: the :func:`build_feature_cnn` network, untrained, fixed seed; for tests only.

Every file backbone is identified in reports and cache keys by ``weights_sha256``: the sha256
of its weights (each variable's name, shape, dtype and bytes, in order), which is unchanged when
the same weights are saved again, and by ``file_sha256`` (the ``.keras`` file, or the
SavedModel's ``variables/`` files).

Preprocessing (stated because it changes the numbers): grey images are resized to the
backbone's input side with ``tf.image.resize(method="bicubic", antialias=True)`` in float32,
which equals PIL's ``Image.resize(..., BICUBIC)`` on float images (to ~1e-5; clean-fid's
recommended filter) and is antialiased when shrinking; no 8-bit quantisation; values stay in
[-1, 1] (InceptionV3's own input range), and the grey channel is replicated to 3 channels
when the network expects colour.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm.auto import tqdm

from mammogan_tf.errors import InputError, MissingDependencyError
from mammogan_tf.evaluation.encoder_files import bare_path_spec, saved_model_encoder, weights_sha256
from mammogan_tf.evaluation.frechet import RunningStatistics

RESIZE_METHOD = "bicubic, antialiased (tf.image.resize; = PIL BICUBIC on float32), no quantisation"
INCEPTION_SIZE = 299
INCEPTION_WEIGHTS_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
RANDOM_INPUT_SIZE = 64
FEATURE_LAYER = "features"


def keras_models_dir() -> Path:
    """Where Keras keeps downloaded weights: ``$KERAS_HOME/models`` or ``~/.keras/models``."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


class Backbone:
    """A feature extractor: ``images (B, H, W, 1) float32 in [-1, 1] -> (B, D) float32``.

    Attributes: ``spec`` (what was asked for), ``dim`` (D), ``input_size`` (side images are
    resized to), ``channels`` (1 or 3), ``identity`` (a dict naming the network and its weights
    file sha256; cache keys use it), ``resize_method``.
    """

    def __init__(self, model, spec: str, input_size: int | None, channels: int, identity: dict):
        import tensorflow as tf

        self.model, self.spec = model, spec  # model: a Keras model or any f(images, training=False)
        self.input_size, self.channels = input_size, channels
        self.resize_method = RESIZE_METHOD
        self.identity = {**identity, "input_size": input_size, "resize": RESIZE_METHOD}
        self._forward = tf.function(self._features, reduce_retracing=True)
        shape = getattr(model, "output_shape", None)
        self.dim = int(shape[-1]) if shape else int(self(np.zeros((1, input_size or 32, input_size or 32, 1),
                                                                  np.float32)).shape[-1])

    def _features(self, images):
        import tensorflow as tf

        if self.channels == 3:
            images = tf.tile(images, [1, 1, 1, 3])
        features = self.model(images, training=False)
        if len(features.shape) == 4:
            features = tf.reduce_mean(features, axis=(1, 2))
        return features

    def preprocess(self, images):
        """(B, H, W, 1) in [-1, 1] -> (B, S, S, 1) float32 tensor at the backbone's input side."""
        import tensorflow as tf

        images = tf.convert_to_tensor(images, dtype=tf.float32)
        if images.shape.rank != 4 or images.shape[-1] != 1:
            raise InputError(f"backbone {self.spec}: images must be (B, H, W, 1), got {tuple(images.shape)}")
        if self.input_size is not None and tuple(images.shape[1:3]) != (self.input_size,) * 2:
            images = tf.image.resize(images, (self.input_size, self.input_size), method="bicubic",
                                     antialias=True)
        return images

    def __call__(self, images) -> np.ndarray:
        return np.asarray(self._forward(self.preprocess(images)), dtype=np.float32)

    def describe(self) -> dict:
        """JSON-able description for reports."""
        return {"spec": self.spec, "dim": self.dim, "input_size": self.input_size,
                "channels": self.channels, "resize_method": self.resize_method, "identity": self.identity}


# ------------------------------------------------------------------------------ builders

def build_feature_cnn(input_size: int, n_classes: int | None = None, filters=(16, 32, 64), seed: int = 0,
                      dropout: float = 0.2):
    """A small functional CNN: ``(S, S, 1)`` in [-1, 1] -> pooled ``features`` (D = filters[-1])
    and, with ``n_classes``, class logits ``(C,)``. Random flips are active in training only."""
    import keras

    inputs = keras.Input((input_size, input_size, 1), name="image")
    x = keras.layers.RandomFlip("horizontal_and_vertical", seed=seed, name="flip")(inputs)
    for i, width in enumerate(filters):
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"conv{i}",
                                kernel_initializer=keras.initializers.GlorotUniform(seed + i))(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)
    features = keras.layers.GlobalAveragePooling2D(name=FEATURE_LAYER)(x)
    if not n_classes:
        return keras.Model(inputs, features, name="feature_cnn")
    x = keras.layers.Dropout(dropout, seed=seed, name="dropout")(features)
    logits = keras.layers.Dense(n_classes, name="logits",
                                kernel_initializer=keras.initializers.GlorotUniform(seed + 100))(x)
    return keras.Model(inputs, logits, name="feature_cnn")


def _inception(weights_arg: str | None) -> Backbone:
    import keras

    from mammogan_tf.manifest import sha256_file

    if weights_arg == "random":
        keras.utils.set_random_seed(0)
        weights, digest = None, "random-seed-0"
    else:
        weights = Path(weights_arg) if weights_arg else keras_models_dir() / INCEPTION_WEIGHTS_FILE
        if not weights.is_file():
            if weights_arg:
                raise InputError(f"{weights}: InceptionV3 weights file not found")
            raise MissingDependencyError(
                f"InceptionV3 ImageNet weights not found at {weights} (no download offline): copy "
                f"{INCEPTION_WEIGHTS_FILE} there, or pass --backbone inception_v3:/path/to/weights.h5")
        digest = sha256_file(weights)
    model = keras.applications.InceptionV3(include_top=False, weights=str(weights) if weights else None,
                                           input_shape=(INCEPTION_SIZE, INCEPTION_SIZE, 3), pooling="avg")
    return Backbone(model, "inception_v3" + (f":{weights_arg}" if weights_arg else ""), INCEPTION_SIZE, 3,
                    {"network": "inception_v3", "weights_sha256": digest})


def _split_classifier_spec(rest: str) -> tuple[Path, str | None]:
    if Path(rest).is_file() or ":" not in rest:
        return Path(rest), None
    path, layer = rest.rsplit(":", 1)
    return Path(path), layer or None


def _classifier(rest: str, kind: str = "classifier") -> Backbone:
    import keras

    from mammogan_tf.manifest import sha256_file

    path, layer_name = _split_classifier_spec(rest)
    if not path.is_file():
        raise InputError(f"{path}: {kind} model not found (backbone {kind}:PATH[:LAYER])")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001 - Keras raises many kinds; the user needs one line
        raise InputError(f"{path}: not a loadable Keras model ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''})") from None
    digest = sha256_file(path)
    weights = weights_sha256(model.weights)
    if not hasattr(model, "inputs"):  # a subclassed model: no graph to cut at a layer
        return _subclassed_classifier(model, path, f"{kind}:{rest}", layer_name, digest, weights)
    names = [layer.name for layer in model.layers]
    if layer_name is None:
        layer_name = FEATURE_LAYER if FEATURE_LAYER in names else (names[-2] if len(names) > 1 else None)
    if layer_name not in names:
        raise InputError(f"{path}: no layer '{layer_name}' (layers: {', '.join(names)})")
    output = model.get_layer(layer_name).output
    if len(output.shape) == 4:
        output = keras.layers.GlobalAveragePooling2D()(output)
    extractor = keras.Model(model.inputs[0] if len(model.inputs) == 1 else model.inputs, output)
    shape = model.input_shape
    if len(shape) != 4 or shape[1] != shape[2] or shape[-1] not in (1, 3):
        raise InputError(f"{path}: input shape {shape} is not a square grey or RGB image")
    return Backbone(extractor, f"{kind}:{rest}", shape[1], shape[-1],
                    {"network": kind, "layer": layer_name, "weights_sha256": weights, "file_sha256": digest})


def _subclassed_classifier(model, path: Path, spec: str, layer_name: str | None, digest: str,
                           weights: str) -> Backbone:
    """A subclassed model (the package's own models) exposes ``features(images, training)``;
    its input side is its ``image_size`` attribute (grey input)."""
    features = getattr(model, "features", None)
    if layer_name is not None or not callable(features):
        raise InputError(f"{path}: a subclassed model can only be read through its features(images) method"
                         f"{'' if callable(features) else ', which it lacks'}; save it as a functional "
                         f"Keras model to pick a layer")
    size = getattr(model, "image_size", None)
    return Backbone(lambda images, training=False: features(images, training=training), spec,
                    int(size) if size else None, 1,
                    {"network": f"{spec.split(':')[0]}:{type(model).__name__}", "layer": "features()",
                     "weights_sha256": weights, "file_sha256": digest})


def _random() -> Backbone:
    model = build_feature_cnn(RANDOM_INPUT_SIZE, None, seed=0)
    return Backbone(model, "random", RANDOM_INPUT_SIZE, 1, {"network": "feature_cnn", "weights": "random-seed-0"})


def load_backbone(spec: str) -> Backbone:
    """A :class:`Backbone` from ``inception_v3[:WEIGHTS|:random]``, ``classifier:PATH[:LAYER]``,
    ``keras:PATH[:LAYER]``, ``savedmodel:PATH[:SIGNATURE]``, a bare ``.keras`` file or SavedModel
    folder, or ``random`` (see the module doc). Raises ConfigError for an unknown spec, InputError
    for a missing file, MissingDependencyError for ImageNet weights not in the Keras cache."""
    from mammogan_tf.errors import ConfigError

    spec = bare_path_spec(spec) or spec
    if spec == "inception_v3" or spec.startswith("inception_v3:"):
        return _inception(spec.partition(":")[2] or None)
    for kind in ("classifier", "keras"):
        if spec.startswith(f"{kind}:") and len(spec) > len(kind) + 1:
            return _classifier(spec[len(kind) + 1:], kind)
    if spec.startswith("savedmodel:") and len(spec) > len("savedmodel:"):
        forward, size, channels, identity = saved_model_encoder(spec[len("savedmodel:"):])
        return Backbone(forward, spec, size, channels, identity)
    if spec == "random":
        return _random()
    raise ConfigError(f"--backbone {spec!r}: expected inception_v3[:WEIGHTS.h5], classifier:PATH[:LAYER], "
                      "keras:PATH[:LAYER], savedmodel:PATH[:SIGNATURE], a .keras file, a SavedModel folder "
                      "or random")


# ---------------------------------------------------------------------------- extraction

def _batches(images, batch_size: int) -> Iterable:
    """Image batches (B, H, W, 1) from an array or a tf.data.Dataset of images, (image, label)
    tuples or dicts with an ``image`` key."""
    if isinstance(images, np.ndarray):
        for start in range(0, images.shape[0], batch_size):
            yield images[start:start + batch_size]
        return
    for element in images:
        if isinstance(element, dict):
            element = element["image"]
        elif isinstance(element, (tuple, list)):
            element = element[0]
        yield element


def _total(images, batch_size: int) -> int | None:
    if isinstance(images, np.ndarray):
        return -(-images.shape[0] // batch_size)
    try:
        n = int(images.cardinality())
    except (AttributeError, TypeError):
        return None
    return n if n >= 0 else None


def extract_features(backbone: Backbone, images, batch_size: int = 32, progress: bool = True,
                     desc: str = "features") -> np.ndarray:
    """Features ``(N, D)`` float32 of images ``(N, H, W, 1)`` in [-1, 1] (an array, or a batched
    ``tf.data.Dataset``), in batches of ``batch_size`` with a progress bar."""
    out = [backbone(batch) for batch in tqdm(_batches(images, batch_size), total=_total(images, batch_size),
                                             desc=desc, unit="batch", disable=not progress, leave=False)]
    return np.concatenate(out) if out else np.zeros((0, backbone.dim), np.float32)


def accumulate_statistics(backbone: Backbone, images, batch_size: int = 32, keep: int = 0,
                          progress: bool = True, desc: str = "statistics") -> RunningStatistics:
    """Streaming mean/covariance of the features of ``images`` (array or batched dataset)
    without holding every feature; the first ``keep`` rows are kept for KID."""
    stats = RunningStatistics(backbone.dim, keep=keep)
    for batch in tqdm(_batches(images, batch_size), total=_total(images, batch_size), desc=desc,
                      unit="batch", disable=not progress, leave=False):
        stats.update(backbone(batch))
    return stats


# ------------------------------------------------------------------- mammogan features fit
