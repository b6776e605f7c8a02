"""Building blocks shared by the GAN families (DCGAN, ACGAN, and later Wu's contextual GAN).

Everything here is written once and reused: the DCGAN initialiser, a switchable 2x upsampling
layer, the generator's latent projection, and the ``conv -> [BN] -> activation -> [dropout]``
block that both generators and discriminators stack. How a layer's convolution is computed (the
exact fast forms in ``models.conv_forms``) is chosen per layer from its shapes, on the same
variables (``Upsample2D.form``, ``ConvBlock.form``).

Shapes are channels-last: images ``(B, H, W, C)``.
"""
from __future__ import annotations

import math

import keras
from keras import ops

from mammogan_tf.models.batch_norm import BatchNorm
from mammogan_tf.models.conv_forms import (conv2d_patch_gradient, conv2d_transpose_gemm,
                                           conv2d_transpose_subpixel)

PACKAGE = "mammogan_tf"
"""Package name under which every layer and model here is registered for ``.keras`` files."""

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
"""Batch-norm settings of the reference DCGAN code (PyTorch momentum 0.1 == Keras 0.9)."""

UPSAMPLE_METHODS = ("transpose", "depth_to_space", "nearest")
SUBPIXEL_MAX_FILTERS = 0
"""``Upsample2D(method="transpose")`` with at most this many output channels is computed in the
exact sub-pixel form (see ``Upsample2D.form``). 0 = off: with it on (16) the image layer's kernel
gradients differed between otherwise identical runs (resume tests), for a 1.1-1.4x gain on one
small layer; turn it on only after that is understood."""
GEMM_MIN_WEIGHTS = 2 ** 23
"""... and one with at least this many kernel weights on a map of at most 4x4 as one matmul."""
PATCH_GRADIENT_MAX_PIXELS = 64
"""A strided ``ConvBlock`` whose output map has at most this many pixels (8x8) computes its
kernel gradient as one matmul over the input patches (see ``ConvBlock.form``)."""
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


def renormalize_spectral(network: keras.Model) -> None:
    """Divide the kernel of every ``SpectralNormalization`` layer of ``network`` by its largest
    singular value (one power iteration from the layer's ``vector_u``, which is updated), as the
    layer itself does on a training call. Keras stores the normalised kernel and uses it as is at
    inference, so a kernel set from outside (e.g. an EMA of normalised kernels, whose norm is
    below 1) must be renormalised before it is used."""
    for layer in network._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.SpectralNormalization):
            vector_u, kernel = layer.normalized_weights()
            layer.vector_u.assign(vector_u)
            layer.kernel.assign(kernel)


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

    def build(self, input_shape):
        if self.method == "transpose" and not self.spectral_norm:
            self.conv.build(input_shape)
        self._input_shape = tuple(input_shape)
        self.built = True

    @property
    def form(self) -> str:
        """How ``"transpose"`` is computed, from the layer's shapes (known once built):
        ``"gemm"`` (``conv2d_transpose_gemm``), ``"subpixel"`` (``conv2d_transpose_subpixel``),
        both on the same kernel variable, or ``"native"`` (Keras ``Conv2DTranspose``); other
        methods: ``"-"``.

        Rule, from ``benchmarks/upsample_layers.py --shapes presets`` on the 2-core AVX-512 CPU
        (forward + backward, batch 64, alternating; the machine was loaded, so ratios only):
        - a large kernel on a small map (input at most 4x4 and at least ``GEMM_MIN_WEIGHTS``
          weights: Frid-Adar's 4x4x1024 -> 8x8x512, 5x5) is one big matmul: 1.45x faster than
          native; on larger maps the col2im sums cost more (0.2-0.7x);
        - few output channels (the image layer, at most ``SUBPIXEL_MAX_FILTERS``): the sub-pixel
          conv, 1.1-1.4x faster; elsewhere its ``ceil(k/2)+`` window costs 1.4-2.3x the
          multiply-adds and it ran at 0.4-0.75x;
        - everything else: native (oneDNN's backprop-input convolution).
        """
        if self.method != "transpose":
            return "-"
        shape = getattr(self, "_input_shape", None)
        if self.spectral_norm or shape is None:
            return "native"
        small_map = (shape[1] or 99) * (shape[2] or 99) <= 16
        if small_map and math.prod(self.conv.kernel.shape) >= GEMM_MIN_WEIGHTS:
            return "gemm"
        return "subpixel" if self.filters <= SUBPIXEL_MAX_FILTERS else "native"

    def call(self, inputs, training=None):
        form = self.form
        if form in ("gemm", "subpixel"):
            compute = conv2d_transpose_gemm if form == "gemm" else conv2d_transpose_subpixel
            y = compute(inputs, ops.cast(self.conv.kernel, inputs.dtype))
            return y if not self.use_bias else y + ops.cast(self.conv.bias, y.dtype)
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

    BatchNorm uses the DCGAN settings (momentum 0.9, epsilon 1e-5, gamma ~ N(1, init_std)); its
    training pass is fused (``models.batch_norm.BatchNorm``).
    """

    def __init__(self, batch_norm: bool = True, activation: str | None = "relu",
                 negative_slope: float = 0.2, dropout: float = 0.0, init_std: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        self.batch_norm = batch_norm
        self.activation = activation
        self.negative_slope = negative_slope
        self.dropout = dropout
        self.init_std = init_std
        self.norm = (BatchNorm(
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
        self.form = "-" if upsample is not None else "native"  # until built

    def build(self, input_shape):
        if self.upsample is None and not self.spectral_norm:
            self.conv.build(input_shape)
        self.form = self.choose_form(input_shape)
        self.built = True

    def choose_form(self, input_shape) -> str:
        """How the conv is computed, fixed when the block is built: ``"patch_gradient"``
        (``conv2d_patch_gradient`` on the same kernel variable: TF's forward and input gradient,
        the kernel gradient as one matmul), ``"native"`` (Keras ``Conv2D``), or ``"-"`` (an
        ``Upsample2D``, which has its own ``form``).

        Rule, from ``benchmarks/conv_forms.py`` on 2 AVX2 cores with oneDNN (batch 64, the
        discriminator layers of alyafi128 and fridadar64): the kernel gradient of a strided conv
        onto at most ``PATCH_GRADIENT_MAX_PIXELS`` output pixels (8x8 and 4x4) runs 1.35-2.5x
        faster as a matmul; from 16x16 up oneDNN's own kernel is as fast or faster. Whole steps:
        alyafi128 6 %, fridadar64 9 % faster. Spectrally normalised convs stay native.
        """
        if self.upsample is not None:
            return "-"
        height, width = input_shape[1], input_shape[2]
        if self.spectral_norm or self.strides == 1 or height is None or width is None:
            return "native"
        out_pixels = -(-height // self.strides) * -(-width // self.strides)
        return "patch_gradient" if out_pixels <= PATCH_GRADIENT_MAX_PIXELS else "native"

    def call(self, inputs, training=None):
        if self.form == "patch_gradient":
            x = conv2d_patch_gradient(inputs, ops.cast(self.conv.kernel, inputs.dtype), self.strides)
            x = x if self.batch_norm else x + ops.cast(self.conv.bias, x.dtype)
        else:
            x = self.conv(inputs, training=training)
        return self.post(x, training=training)

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
    the same parameter count; the choice only mirrors the reference implementation. The
    transposed conv keeps its ``Conv2DTranspose`` kernel ``(4, 4, filters, L)`` but is computed
    as the equivalent matmul.
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
            self.linear = conv_layer(filters, 4, padding="valid", transpose=True, use_bias=use_bias,
                                     init_std=init_std)

    def build(self, input_shape):
        if self.method == "conv_transpose":
            self.linear.build((input_shape[0], 1, 1, input_shape[-1]))
        self.built = True

    def call(self, inputs):
        if self.method == "dense":
            return self.reshape(self.linear(inputs))
        # A transposed conv of a 1x1 map is one matmul: out[b, i, j, o] = sum_c z[b, c] K[i, j, o, c].
        kernel = ops.cast(self.linear.kernel, inputs.dtype)
        x = ops.matmul(inputs, ops.transpose(ops.reshape(kernel, (16 * self.filters, -1))))
        x = ops.reshape(x, (-1, 4, 4, self.filters))
        return x + ops.cast(self.linear.bias, x.dtype) if self.use_bias else x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 4, 4, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "method": self.method,
                "use_bias": self.use_bias, "init_std": self.init_std}
