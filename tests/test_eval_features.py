"""Feature backbones: the stated resize, batching, streaming, offline InceptionV3, classifiers."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from mammogan_tf.errors import ConfigError, InputError, MissingDependencyError  # noqa: E402
from mammogan_tf.evaluation.features import (INCEPTION_WEIGHTS_FILE, accumulate_statistics,  # noqa: E402
                                             build_feature_cnn, extract_features, load_backbone)
from mammogan_tf.evaluation.frechet import activation_statistics  # noqa: E402
from mammogan_tf.evaluation.inputs import resize_images  # noqa: E402


@pytest.fixture(scope="module")
def random_backbone():
    return load_backbone("random")


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(-1, 1, (10, 24, 24, 1)).astype(np.float32)


@pytest.mark.parametrize("size_in", [24, 128, 300])
def test_resize_is_pil_bicubic_on_float(random_backbone, size_in):
    x = np.random.default_rng(size_in).uniform(-1, 1, (2, size_in, size_in, 1)).astype(np.float32)
    ours = random_backbone.preprocess(x).numpy()
    pil = np.stack([np.asarray(Image.fromarray(im[..., 0], mode="F").resize((64, 64), Image.BICUBIC))
                    for im in x])[..., None]
    np.testing.assert_allclose(ours, pil, atol=1e-4)
    np.testing.assert_allclose(resize_images(x, 64), pil, atol=0)  # the numpy-side helper is PIL itself
    constant = np.full((1, size_in, size_in, 1), 0.25, np.float32)
    np.testing.assert_allclose(random_backbone.preprocess(constant).numpy(), 0.25, atol=1e-6)


def test_random_backbone_is_deterministic_and_batch_independent(random_backbone, images):
    feats = random_backbone(images)
    assert feats.shape == (10, 64) and feats.dtype == np.float32 and random_backbone.dim == 64
    np.testing.assert_allclose(load_backbone("random")(images), feats, rtol=1e-6)
    one_by_one = np.concatenate([random_backbone(images[i:i + 1]) for i in range(10)])
    np.testing.assert_allclose(one_by_one, feats, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(extract_features(random_backbone, images, batch_size=3, progress=False), feats,
                               rtol=1e-5, atol=1e-7)
    dataset = tf.data.Dataset.from_tensor_slices((images, np.zeros(10))).batch(4)
    np.testing.assert_allclose(extract_features(random_backbone, dataset, progress=False), feats, rtol=1e-5,
                               atol=1e-7)
    stats = accumulate_statistics(random_backbone, dataset.map(lambda x, y: {"image": x}), keep=5, progress=False)
    mu, sigma = activation_statistics(feats)
    np.testing.assert_allclose(stats.mean, mu, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(stats.covariance(), sigma, rtol=1e-4, atol=1e-9)
    assert stats.kept.shape == (5, 64)


def test_inception_offline_error_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(MissingDependencyError) as error:
        load_backbone("inception_v3")
    message = str(error.value)
    assert "\n" not in message and str(tmp_path / "models" / INCEPTION_WEIGHTS_FILE) in message
    assert "inception_v3:/path/to/weights.h5" in message
    with pytest.raises(InputError, match="not found"):
        load_backbone(f"inception_v3:{tmp_path / 'missing.h5'}")
    with pytest.raises(ConfigError, match="expected inception_v3"):
        load_backbone("vgg")


def test_inception_random_weights_gives_2048_features():
    backbone = load_backbone("inception_v3:random")
    assert backbone.input_size == 299 and backbone.channels == 3
    feats = backbone(np.zeros((2, 32, 32, 1), np.float32))
    assert feats.shape == (2, 2048) and np.all(np.isfinite(feats))


def test_classifier_backbone_layers(tmp_path, images):
    model = build_feature_cnn(24, n_classes=3, filters=(4, 8), seed=1)
    path = tmp_path / "clf.keras"
    model.save(path)
    default = load_backbone(f"classifier:{path}")
    assert default.dim == 8 and default.identity["layer"] == "features" and default.input_size == 24
    inner = keras.Model(model.inputs[0], model.get_layer("features").output)
    np.testing.assert_allclose(default(images), inner(images, training=False).numpy(), rtol=1e-5, atol=1e-7)
    spatial = load_backbone(f"classifier:{path}:relu0")  # a conv layer: global average pooled
    assert spatial.dim == 4 and spatial(images).shape == (10, 4)
    with pytest.raises(InputError, match="no layer 'nope'"):
        load_backbone(f"classifier:{path}:nope")
    with pytest.raises(InputError, match="not found"):
        load_backbone(f"classifier:{tmp_path / 'none.keras'}")


def test_inception_uses_the_cached_file_and_never_downloads(tmp_path, monkeypatch):
    weights = tmp_path / "models" / INCEPTION_WEIGHTS_FILE
    weights.parent.mkdir()
    weights.write_bytes(b"stand-in weights")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    calls = []

    def fake_inception(**kwargs):
        calls.append(kwargs)
        inputs = keras.Input(kwargs["input_shape"])
        return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))

    monkeypatch.setattr(keras.applications, "InceptionV3", fake_inception)
    backbone = load_backbone("inception_v3")
    assert calls[0]["weights"] == str(weights) and calls[0]["include_top"] is False
    assert calls[0]["input_shape"] == (299, 299, 3) and calls[0]["pooling"] == "avg"
    from mammogan_tf.manifest import sha256_file
    assert backbone.identity["weights_sha256"] == sha256_file(weights)
    feats = backbone(np.full((2, 40, 40, 1), 0.5, np.float32))  # grey replicated to 3 channels
    np.testing.assert_allclose(feats, 0.5, atol=1e-6)


@keras.saving.register_keras_serializable(package="mammogan_tf_tests")
class _Subclassed(keras.Model):
    """A subclassed classifier in the package's style: ``features(images)`` and ``image_size``."""

    def __init__(self, image_size=20, **kwargs):
        super().__init__(**kwargs)
        self.image_size = image_size
        self.conv = keras.layers.Conv2D(5, 3, kernel_initializer=keras.initializers.GlorotUniform(0))
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.head = keras.layers.Dense(2)

    def features(self, images, training=None):
        return self.pool(self.conv(images))

    def call(self, images, training=None):
        return self.head(self.features(images, training))

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size}


def test_subclassed_classifier_is_read_through_its_features_method(tmp_path, images):
    model = _Subclassed()
    model(np.zeros((1, 20, 20, 1), np.float32))
    path = tmp_path / "sub.keras"
    model.save(path)
    backbone = load_backbone(f"classifier:{path}")
    assert backbone.dim == 5 and backbone.input_size == 20 and backbone.identity["layer"] == "features()"
    resized = backbone.preprocess(images)
    np.testing.assert_allclose(backbone(images), model.features(resized).numpy(), rtol=1e-5, atol=1e-7)
    with pytest.raises(InputError, match="functional"):
        load_backbone(f"classifier:{path}:conv")


def _tiny_encoder(seed: int, channels: int = 1):
    """A functional encoder (S=24, C channels) -> 6-d ``features``; weights from ``seed``."""
    inputs = keras.Input((24, 24, channels), name="image")
    x = keras.layers.Conv2D(6, 3, strides=2, name="conv",
                            kernel_initializer=keras.initializers.GlorotUniform(seed))(inputs)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="features")(x))


def test_keras_file_encoder_by_spec_and_bare_path_is_identified_by_its_weights(tmp_path, images):
    from mammogan_tf.evaluation.encoder_files import weights_sha256

    model = _tiny_encoder(3)
    path = tmp_path / "encoder.keras"
    model.save(path)
    by_spec, bare = load_backbone(f"keras:{path}"), load_backbone(str(path))
    expected = model(images, training=False).numpy()
    for backbone in (by_spec, bare):
        np.testing.assert_allclose(backbone(images), expected, rtol=1e-5, atol=1e-7)
        assert backbone.identity["weights_sha256"] == weights_sha256(model.weights)
    assert bare.spec == f"keras:{path}" and bare.describe()["identity"]["network"] == "keras"
    model.save(tmp_path / "again.keras")  # same weights saved again: same identity
    assert load_backbone(str(tmp_path / "again.keras")).identity["weights_sha256"] == by_spec.identity["weights_sha256"]
    _tiny_encoder(4).save(tmp_path / "other.keras")
    assert load_backbone(str(tmp_path / "other.keras")).identity["weights_sha256"] != by_spec.identity["weights_sha256"]
    assert load_backbone(f"keras:{path}:conv").dim == 6  # a spatial layer, pooled


def test_savedmodel_folder_encoder_by_spec_and_bare_path(tmp_path, images):
    model = _tiny_encoder(5, channels=3)
    folder = tmp_path / "encoder_sm"
    model.export(str(folder))  # serving_default: one (B, 24, 24, 3) image input
    expected = model(np.repeat(images, 3, axis=-1), training=False).numpy()
    by_spec = load_backbone(f"savedmodel:{folder}:serving_default")
    bare = load_backbone(str(folder))
    for backbone in (by_spec, bare):
        assert backbone.channels == 3 and backbone.input_size == 24 and backbone.dim == 6
        np.testing.assert_allclose(backbone(images), expected, rtol=1e-5, atol=1e-6)  # grey tiled to RGB
    assert bare.identity["weights_sha256"] == by_spec.identity["weights_sha256"]
    assert len(bare.identity["weights_sha256"]) == 64 and bare.identity["network"] == "savedmodel"
    _tiny_encoder(6, channels=3).export(str(tmp_path / "other_sm"))
    assert load_backbone(str(tmp_path / "other_sm")).identity["weights_sha256"] != bare.identity["weights_sha256"]
    with pytest.raises(InputError, match="no signature 'nope'"):
        load_backbone(f"savedmodel:{folder}:nope")
    with pytest.raises(InputError, match="no saved_model.pb"):
        load_backbone(f"savedmodel:{tmp_path}")
    with pytest.raises(ConfigError, match="savedmodel:PATH"):
        load_backbone(str(tmp_path / "missing.h5"))
