"""Building blocks shared by the GAN families (DCGAN, ACGAN, and later Wu's contextual GAN).

Everything here is written once and reused: the DCGAN initialiser, a switchable 2x upsampling
layer, the generator's latent projection, and the ``conv -> [BN] -> activation -> [dropout]``
block that both generators and discriminators stack.

Shapes are channels-last: images ``(B, H, W, C)``.
"""
from __future__ import annotations

import keras
from keras import ops

PACKAGE = "mammogan_tf"
"""Package name under which every layer and model here is registered for ``.keras`` files."""

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
"""Batch-norm settings of the reference DCGAN code (PyTorch momentum 0.1 == Keras 0.9)."""

UPSAMPLE_METHODS = ("transpose", "depth_to_space", "nearest")
ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu", "swish", "tanh", "sigmoid", "linear")

register = keras.saving.register_keras_serializable(package=PACKAGE)


def dcgan_initializer(std: float = 0.02, mean: float = 0.0) -> keras.initializers.Initializer:
    """Radford et al.'s weight initialiser: N(mean, std), std 0.02 (BN gammas use mean 1)."""
    return keras.initializers.RandomNormal(mean=mean, stddev=std)


def activation_layer(name: str | None, negative_slope: float = 0.2, **kwargs) -> keras.layers.Layer:
    """A Keras activation layer by name (one of ``ACTIVATIONS``; None = linear).

    ``negative_slope`` is the LeakyReLU slope for x < 0 (0.2 in DCGAN discriminators).
    """
    name = name or "linear"
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r}: expected one of {', '.join(ACTIVATIONS)}")
    if name == "leaky_relu":
        return keras.layers.LeakyReLU(negative_slope=negative_slope, **kwargs)
    return keras.layers.Activation(name, **kwargs)


def conv_layer(filters: int, kernel_size: int, strides: int = 1, *, transpose: bool = False,
               padding: str = "same", use_bias: bool = True, init_std: float = 0.02,
               spectral_norm: bool = False, **kwargs) -> keras.layers.Layer:
    """A ``Conv2D`` (or ``Conv2DTranspose``) with the DCGAN initialiser, optionally wrapped
    in ``keras.layers.SpectralNormalization``."""
    cls = keras.layers.Conv2DTranspose if transpose else keras.layers.Conv2D
    layer = cls(filters, kernel_size, strides=strides, padding=padding, use_bias=use_bias,
                kernel_initializer=dcgan_initializer(init_std), **kwargs)
    if not spectral_norm:
        return layer
    return keras.layers.SpectralNormalization(layer, dtype=kwargs.get("dtype"))


def dense_layer(units: int, *, use_bias: bool = True, init_std: float = 0.02,
                spectral_norm: bool = False, **kwargs) -> keras.layers.Layer:
    """A ``Dense`` layer with the DCGAN initialiser, optionally spectrally normalised."""
    layer = keras.layers.Dense(units, use_bias=use_bias, kernel_initializer=dcgan_initializer(init_std),
                               **kwargs)
    if not spectral_norm:
        return layer
    return keras.layers.SpectralNormalization(layer, dtype=kwargs.get("dtype"))


@register
class Upsample2D(keras.layers.Layer):
    """2x spatial upsampling with a learned convolution; the implementation is an argument.

    ``(B, H, W, C_in) -> (B, 2H, 2W, filters)`` for every method:

    - ``"transpose"``: ``Conv2DTranspose(filters, kernel_size, strides=2, padding="same")``
      (the DCGAN "fractionally-strided convolution").
    - ``"depth_to_space"``: sub-pixel convolution, ``Conv2D(4 * filters, kernel_size)`` at the
      input resolution followed by ``depth_to_space(2)``. With ``kernel_size = ceil(k / 2)``
      it spans the same input pixels, and costs the same FLOPs, as a transposed conv of
      kernel ``k``, but runs as a plain convolution. On CPU what costs most is an even kernel
      (slow backward pass): ``benchmarks/upsample_layers.py`` measured transpose k=4 at
      ~14 GFLOP/s, depth_to_space k=2 1.4x faster, odd kernels (transpose 3 or 5,
      depth_to_space 3) at ~37-39 GFLOP/s.
    - ``"nearest"``: ``UpSampling2D(2, "nearest")`` then ``Conv2D(filters, kernel_size)`` at the
      output resolution (no checkerboard artefacts; 4x the FLOPs of the others).
    """

    def __init__(self, filters: int, kernel_size: int = 4, method: str = "transpose",
                 use_bias: bool = True, init_std: float = 0.02, spectral_norm: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        if method not in UPSAMPLE_METHODS:
            raise ValueError(f"upsample method {method!r}: expected one of {', '.join(UPSAMPLE_METHODS)}")
        self.filters = filters
        self.kernel_size = kernel_size
        self.method = method
        self.use_bias = use_bias
        self.init_std = init_std
        self.spectral_norm = spectral_norm
        conv_filters = 4 * filters if method == "depth_to_space" else filters
        self.resize = keras.layers.UpSampling2D(2, interpolation="nearest") if method == "nearest" else None
        self.conv = conv_layer(conv_filters, kernel_size, strides=2 if method == "transpose" else 1,
                               transpose=method == "transpose", use_bias=use_bias,
                               init_std=init_std, spectral_norm=spectral_norm)

    def call(self, inputs, training=None):
        x = self.resize(inputs) if self.resize is not None else inputs
        x = self.conv(x, training=training)
        return ops.depth_to_space(x, 2) if self.method == "depth_to_space" else x

    def compute_output_shape(self, input_shape):
        batch, height, width = input_shape[:3]
        double = (lambda n: None if n is None else 2 * n)
        return (batch, double(height), double(width), self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "method": self.method, "use_bias": self.use_bias, "init_std": self.init_std,
                "spectral_norm": self.spectral_norm}


@register
class NormAct(keras.layers.Layer):
    """``[BatchNorm] -> activation -> [Dropout]``; shape preserving.

    BatchNorm uses the DCGAN settings (momentum 0.9, epsilon 1e-5, gamma ~ N(1, init_std)).
    """

    def __init__(self, batch_norm: bool = True, activation: str | None = "relu",
                 negative_slope: float = 0.2, dropout: float = 0.0, init_std: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        self.batch_norm = batch_norm
        self.activation = activation
        self.negative_slope = negative_slope
        self.dropout = dropout
        self.init_std = init_std
        self.norm = (keras.layers.BatchNormalization(
            momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
            gamma_initializer=dcgan_initializer(init_std, mean=1.0)) if batch_norm else None)
        self.act = activation_layer(activation, negative_slope)
        self.drop = keras.layers.Dropout(dropout) if dropout > 0 else None

    def call(self, inputs, training=None):
        x = self.norm(inputs, training=training) if self.norm is not None else inputs
        x = self.act(x)
        return self.drop(x, training=training) if self.drop is not None else x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "batch_norm": self.batch_norm, "activation": self.activation,
                "negative_slope": self.negative_slope, "dropout": self.dropout,
                "init_std": self.init_std}


@register
class ConvBlock(keras.layers.Layer):
    """``conv -> [BatchNorm] -> activation -> [Dropout]``, the unit every DCGAN-like net stacks.

    ``upsample=None``: a ``Conv2D`` with ``strides`` (``(B, H, W, C) -> (B, H/s, W/s, filters)``,
    "same" padding). ``upsample`` one of ``UPSAMPLE_METHODS``: an ``Upsample2D``
    (``-> (B, 2H, 2W, filters)``; ``strides`` must be 1). The conv has no bias when batch norm
    follows (the BN offset replaces it).
    """

    def __init__(self, filters: int, kernel_size: int = 5, strides: int = 1, upsample: str | None = None,
                 batch_norm: bool = True, activation: str | None = "relu", negative_slope: float = 0.2,
                 dropout: float = 0.0, spectral_norm: bool = False, init_std: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        if upsample is not None and strides != 1:
            raise ValueError("ConvBlock: strides must be 1 when upsample is set")
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.upsample = upsample
        self.batch_norm = batch_norm
        self.activation = activation
        self.negative_slope = negative_slope
        self.dropout = dropout
        self.spectral_norm = spectral_norm
        self.init_std = init_std
        if upsample is None:
            self.conv = conv_layer(filters, kernel_size, strides, use_bias=not batch_norm,
                                   init_std=init_std, spectral_norm=spectral_norm)
        else:
            self.conv = Upsample2D(filters, kernel_size, upsample, use_bias=not batch_norm,
                                   init_std=init_std, spectral_norm=spectral_norm)
        self.post = NormAct(batch_norm, activation, negative_slope, dropout, init_std)

    def call(self, inputs, training=None):
        return self.post(self.conv(inputs, training=training), training=training)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "upsample": self.upsample, "batch_norm": self.batch_norm,
                "activation": self.activation, "negative_slope": self.negative_slope,
                "dropout": self.dropout, "spectral_norm": self.spectral_norm, "init_std": self.init_std}


@register
class Projection(keras.layers.Layer):
    """Latent vector -> 4x4 feature map, the first layer of a DCGAN generator.

    ``(B, L) -> (B, 4, 4, filters)``. ``method="dense"``: ``Dense(16 * filters)`` + reshape
    (Radford / Frid-Adar). ``method="conv_transpose"``: z as a 1x1 map through a 4x4 "valid"
    ``Conv2DTranspose`` (the PyTorch DCGAN code Alyafi used). Both are the same linear map with
    the same parameter count; the choice only mirrors the reference implementation.
    """

    METHODS = ("dense", "conv_transpose")

    def __init__(self, filters: int, method: str = "dense", use_bias: bool = True,
                 init_std: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        if method not in self.METHODS:
            raise ValueError(f"projection {method!r}: expected one of {', '.join(self.METHODS)}")
        self.filters = filters
        self.method = method
        self.use_bias = use_bias
        self.init_std = init_std
        if method == "dense":
            self.linear = dense_layer(16 * filters, use_bias=use_bias, init_std=init_std)
            self.reshape = keras.layers.Reshape((4, 4, filters))
        else:
            self.reshape = keras.layers.Reshape((1, 1, -1))
            self.linear = conv_layer(filters, 4, padding="valid", transpose=True, use_bias=use_bias,
                                     init_std=init_std)

    def call(self, inputs):
        if self.method == "dense":
            return self.reshape(self.linear(inputs))
        return self.linear(self.reshape(inputs))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 4, 4, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "method": self.method,
                "use_bias": self.use_bias, "init_std": self.init_std}
