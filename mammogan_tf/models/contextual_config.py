"""``model:`` section of a contextual-GAN experiment (Wu et al., MIDL 2020), and its builder.

Defaults are the paper's scale. What the paper gives: 256 px patches, encoder from 16 filters
doubling per level, self-attention at 32x32, a 4x4x2048 centre compressed to a 1x1x4 embedding,
a discriminator with 8x the filters, a 10 px border crop, the four-way semi-supervised loss with
benign and normal terms weighted 0.2, the perturbation gradient penalty (lambda 10, k 1),
progressive growing 128 -> 256 with a 3000-iteration fade. What it leaves open (documented
choices): the filter caps (G 512, reached at the 4x4 level anyway; D 4096 = 8 x 512, i.e. no
cap), spectral norm in both networks (as in SAGAN), how the centre reaches 2048 channels (one
3x3 conv at 4x4), the expansion of the embedding (nearest-neighbour, 1x1 -> 4x4), the steps
trained at 128 before the fade, and the perturbation scale (``delta = scale * U(0, 1)`` per
pixel, scale 1 as the paper writes it).

Modes: ``add`` (G reads normal patches, D's real class is the lesion stream) and ``remove`` (G
reads lesion patches, D's real class is normal tissue; the 3rd and 4th classes are benign and
malignant lesions).
"""
from __future__ import annotations

import math
from typing import Literal, Optional

from pydantic import Field, model_validator

from mammogan_tf.sections import Section



# The level rules of the networks (no TensorFlow: benchmarks/peers read them too).
def num_levels(image_size: int, center_resolution: int) -> int:
    """Number of stride-2 levels from ``image_size`` down to ``center_resolution`` (both powers of 2)."""
    return int(round(math.log2(image_size // center_resolution)))


def level_widths(levels: int, base_filters: int, max_filters: int) -> list[int]:
    """Channels of levels 1..levels: ``min(base_filters * 2**(i-1), max_filters)``."""
    return [min(base_filters * 2 ** i, max_filters) for i in range(levels)]


def attention_level(image_size: int, attention_resolution: int | None) -> int:
    """Level whose side is ``attention_resolution`` (0: no attention)."""
    return 0 if not attention_resolution else int(round(math.log2(image_size // attention_resolution)))


class ContextualGeneratorConfig(Section):
    """Widths of the U-Net generator."""

    base_filters: int = Field(16, ge=1, description="channels of level 1 (S/2), doubling per level")
    max_filters: int = Field(512, ge=1, description="cap on the encoder/decoder channels")
    center_filters: int = Field(2048, ge=1, description="channels of the centre (paper 4x4x2048)")
    embedding_dim: int = Field(4, ge=1, description="the 1x1 embedding the centre is compressed to")
    spectral_norm: bool = True
    negative_slope: float = Field(0.2, ge=0, description="LeakyReLU slope of the encoder")
    clip_gradient: Literal["recover", "zero"] = Field(
        "recover", description="gradient of the [-1, 1] clips of the lesion and the combined image: recover = the "
                               "gradients that bring a saturated value back into range; zero = none (tf.clip_by_value)")


class ContextualDiscriminatorConfig(Section):
    """Widths of the four-way discriminator (the encoder with max-pooling)."""

    base_filters: int = Field(128, ge=1, description="channels of level 1: 8x the generator's 16")
    max_filters: int = Field(4096, ge=1, description="cap (4096 = 8 x 512: no cap at 256 px)")
    spectral_norm: bool = True
    negative_slope: float = Field(0.2, ge=0)


class ProgressiveConfig(Section):
    """One progressive doubling S/2 -> S: ``stage_steps`` steps at S/2, then the S layers fade
    in linearly over ``fade_steps`` (the ``fade_alpha`` schedule 0 -> 1), then S."""

    enabled: bool = True
    stage_steps: int = Field(20000, ge=0, description="steps trained at S/2 before the fade")
    fade_steps: int = Field(3000, ge=1, description="paper: 3000 iterations")


class ContextualLossConfig(Section):
    """The four-way discriminator loss and the perturbation gradient penalty."""

    aux_weights: tuple[float, float] = Field(
        (0.2, 0.2), description="weights of the 3rd and 4th classes (add: benign, normal; remove: benign, lesion)")
    penalty_weight: float = Field(10.0, ge=0, description="lambda of the perturbation penalty")
    penalty_k: float = Field(1.0, ge=0, description="target gradient norm k")
    penalty_scale: float = Field(1.0, gt=0, description="delta = scale * U(0, 1) per pixel")


class ContextualModelConfig(Section):
    """Wu et al.'s contextual U-Net GAN (``family: contextual``)."""

    family: Literal["contextual"] = "contextual"
    mode: Literal["add", "remove"] = Field("add", description="add a lesion to normal tissue, or remove one")
    lesion_type: str = Field("mass", description="lesion stream: mass or calcification")
    lesion_pathologies: list[str] = Field(["malignant"], description="pathologies of the lesion stream")
    benign_pathologies: list[str] = Field(
        ["benign", "benign_without_callback"],
        description="pathologies of the benign stream (same lesion type); [] = no benign stream: D's benign "
                    "class gets no examples and its loss term is dropped (e.g. when every lesion is the real class)")
    image_size: int = Field(256, ge=16, description="patch side S, a power of two")
    center_resolution: int = Field(4, ge=1, description="side of the centre (paper 4)")
    attention_resolution: Optional[int] = Field(
        32, description="side where self-attention sits (paper 32); strictly between centre and S; null: none")
    border_crop: int = Field(10, ge=0, description="px of the lesion border zeroed (paper 10)")
    lesion_window: Literal["square", "disc"] = Field(
        "square", description="where the lesion channel may be non-zero: square = inside the border crop (paper); "
                              "disc = a soft-edged disc of radius S/2 - border_crop (round lesions; not in the paper)")
    init_std: float = Field(0.02, gt=0)
    generator: ContextualGeneratorConfig = Field(default_factory=ContextualGeneratorConfig)
    discriminator: ContextualDiscriminatorConfig = Field(default_factory=ContextualDiscriminatorConfig)
    progressive: ProgressiveConfig = Field(default_factory=ProgressiveConfig)
    loss: ContextualLossConfig = Field(default_factory=ContextualLossConfig)

    @model_validator(mode="after")
    def _consistent(self):
        size, centre, attention = self.image_size, self.center_resolution, self.attention_resolution
        for name, value in (("image_size", size), ("center_resolution", centre)):
            if value & (value - 1):
                raise ValueError(f"{name} {value} must be a power of two")
        if centre >= size:
            raise ValueError(f"center_resolution {centre} must be smaller than image_size {size}")
        if attention is not None and (attention & (attention - 1) or not centre < attention < size):
            raise ValueError(f"attention_resolution {attention} must be a power of two strictly between "
                             f"center_resolution {centre} and image_size {size}")
        overlap = sorted(set(self.lesion_pathologies) & set(self.benign_pathologies))
        if overlap:
            raise ValueError(f"benign_pathologies repeats {overlap} of lesion_pathologies: a patch cannot be "
                             "both the real and the benign class")
        if 2 * self.border_crop >= size:  # (the S/2 stage crops border_crop // 2: an interior there too)
            raise ValueError(f"border_crop {self.border_crop} leaves no interior at {size} px")
        if self.progressive.enabled and math.log2(size // centre) < 2:
            raise ValueError("progressive growing needs at least two levels (image_size >= 4 * center_resolution)")
        return self


def build_contextual(config: ContextualModelConfig) -> dict:
    """``{"generator": ContextualGenerator, "discriminator": ContextualDiscriminator}``, both built
    (every layer of every fade path exists, called on a zero batch)."""
    from mammogan_tf.models.contextual import ContextualDiscriminator, ContextualGenerator, dummy_images

    gen, disc, progressive = config.generator, config.discriminator, config.progressive.enabled
    generator = ContextualGenerator(
        image_size=config.image_size, base_filters=gen.base_filters, max_filters=gen.max_filters,
        center_resolution=config.center_resolution, center_filters=gen.center_filters,
        embedding_dim=gen.embedding_dim, attention_resolution=config.attention_resolution,
        border_crop=config.border_crop, lesion_window=config.lesion_window, progressive=progressive,
        spectral_norm=gen.spectral_norm, clip_gradient=gen.clip_gradient,
        negative_slope=gen.negative_slope, init_std=config.init_std, name="generator")
    discriminator = ContextualDiscriminator(
        image_size=config.image_size, base_filters=disc.base_filters, max_filters=disc.max_filters,
        center_resolution=config.center_resolution, attention_resolution=config.attention_resolution,
        progressive=progressive, spectral_norm=disc.spectral_norm, negative_slope=disc.negative_slope,
        init_std=config.init_std, name="discriminator")
    images = dummy_images(config.image_size)
    generator(images, noise=images[:, 0, 0, :1].repeat(generator.noise_dim, axis=1), training=False)
    discriminator(images, training=False)
    return {"generator": generator, "discriminator": discriminator}
