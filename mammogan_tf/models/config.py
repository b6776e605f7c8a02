"""The ``model:`` section of an experiment YAML: which GAN family and its hyperparameters.

No TensorFlow here; ``mammogan_tf.models.registry.build_gan(config)`` turns a ``ModelConfig``
into Keras models. The papers' settings are presets in ``experiments/*.yaml``.

Widths. Generator: the last hidden layer (resolution S/2) has ``base_filters`` channels and
the count doubles at each coarser resolution up to the 4x4 start, capped by ``max_filters``.
Discriminator: layer i (0-based) has ``min(base_filters * 2**i, max_filters)`` channels.
"""
from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import Discriminator, Field, Tag, model_validator

from mammogan_tf.plugins import load_object
from mammogan_tf.sections import Section

Activation = Literal["relu", "leaky_relu", "elu", "gelu", "swish"]


class GeneratorConfig(Section):
    """DCGAN generator: z -> projection to 4x4 -> (upsample, [BN], activation) x n -> tanh image."""

    base_filters: int = Field(64, ge=1, description="channels of the last hidden layer (S/2)")
    max_filters: int = Field(512, ge=1, description="cap on channels (reached toward 4x4)")
    kernel_size: int = Field(5, ge=1, description="kernel of every upsampling conv")
    projection: Literal["dense", "conv_transpose"] = Field(
        "dense", description="z -> 4x4: Dense + reshape, or a 4x4 valid transposed conv (PyTorch DCGAN)")
    batch_norm: bool = Field(True, description="BN after every hidden layer (never on the output)")
    activation: Activation = "relu"
    negative_slope: float = Field(0.2, ge=0, description="leaky_relu slope")
    upsample: Literal["transpose", "depth_to_space", "nearest"] = Field(
        "transpose", description="2x upsampling: Conv2DTranspose, sub-pixel conv, or nearest + conv")
    class_embedding_dim: Optional[int] = Field(
        None, ge=1, description="acgan: class embedding size (None = latent_dim)")
    class_conditioning: Literal["concat", "multiply"] = Field(
        "concat", description="acgan: concatenate the embedding to z, or multiply z by it")


class DiscriminatorConfig(Section):
    """DCGAN discriminator: (conv, [BN], activation, [dropout]) x num_layers -> flatten -> logit."""

    base_filters: int = Field(64, ge=1, description="channels of the first conv")
    max_filters: int = Field(512, ge=1, description="cap on channels (doubling per layer)")
    kernel_size: int = Field(5, ge=1)
    first_kernel_size: Optional[int] = Field(None, ge=1, description="kernel of the first conv (None = kernel_size)")
    num_layers: int = Field(4, ge=1, description="number of conv layers before the dense head")
    strides: Literal["all", "odd"] = Field(
        "all", description="all: stride 2 on every conv; odd: stride 2 on layers 1, 3, 5... (1-based)")
    batch_norm: bool = Field(True, description="BN on every conv except the first")
    activation: Activation = "leaky_relu"
    negative_slope: float = Field(0.2, ge=0, description="leaky_relu slope")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout after every conv (not the head)")
    spectral_norm: bool = Field(False, description="keras.layers.SpectralNormalization on convs and heads")

    def downsampling_layers(self) -> int:
        """How many convs have stride 2."""
        return self.num_layers if self.strides == "all" else (self.num_layers + 1) // 2


class ModelConfig(Section):
    """A GAN: family, latent space, image geometry, generator and discriminator."""

    family: Literal["dcgan", "acgan"] = "dcgan"
    latent_dim: int = Field(100, ge=1)
    latent_distribution: Literal["normal", "uniform"] = Field(
        "normal", description="z ~ N(0, 1) or U[-1, 1] per component")
    image_size: int = Field(64, ge=16, description="side S of generated patches, a power of two >= 16")
    channels: int = Field(1, ge=1)
    num_classes: int = Field(0, ge=0, description="acgan: number of classes (>= 2); ignored by dcgan")
    init_std: float = Field(0.02, gt=0, description="weights ~ N(0, init_std), BN gammas ~ N(1, init_std)")
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = Field(default_factory=DiscriminatorConfig)

    @model_validator(mode="after")
    def _consistent(self):
        size = self.image_size
        if size & (size - 1):
            raise ValueError(f"image_size {size} must be a power of two (16, 32, 64, 128, 256 ...)")
        if self.family == "acgan" and self.num_classes < 2:
            raise ValueError("family acgan needs num_classes >= 2")
        gen = self.generator
        if (self.family == "acgan" and gen.class_conditioning == "multiply"
                and gen.class_embedding_dim not in (None, self.latent_dim)):
            raise ValueError("generator.class_embedding_dim must equal latent_dim (or be null) "
                             "when class_conditioning is multiply")
        if 2 ** self.discriminator.downsampling_layers() > size:
            raise ValueError(f"discriminator: {self.discriminator.downsampling_layers()} stride-2 layers "
                             f"shrink a {size} px image below 1 px; lower discriminator.num_layers")
        return self


MODEL_CONFIGS = {
    "dcgan": "mammogan_tf.models.config:ModelConfig",
    "acgan": "mammogan_tf.models.config:ModelConfig",
    "contextual": "mammogan_tf.models.contextual_config:ContextualModelConfig",
    "cpggan": "mammogan_tf.models.pggan_config:CPGGANModelConfig",
}
"""``model.family`` -> its config class (``module:Class``), a ``Section`` with a ``family`` field."""


def model_config_class(family: str):
    """The config class of ``family`` (a ``ValueError`` for an unknown one)."""
    if family not in MODEL_CONFIGS:
        raise ValueError(f"unknown family {family!r}; choose one of {', '.join(MODEL_CONFIGS)}")
    return load_object(MODEL_CONFIGS[family])


def _family_of(value) -> str:
    family = value.get("family", "dcgan") if isinstance(value, dict) else getattr(value, "family", "dcgan")
    return MODEL_CONFIGS[family].split(":")[1] if family in MODEL_CONFIGS else family


def model_section_type():
    """The ``model:`` field type: the config class that ``family`` names (a tagged union)."""
    classes = {spec.split(":")[1]: model_config_class(family) for family, spec in MODEL_CONFIGS.items()}
    members = tuple(Annotated[cls, Tag(tag)] for tag, cls in classes.items())
    return Annotated[Union[members], Discriminator(_family_of)]
