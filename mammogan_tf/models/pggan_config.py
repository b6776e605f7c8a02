"""The ``model:`` section of ``family: cpggan`` (``models.pggan``); TensorFlow-free."""
from __future__ import annotations

import math
from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from mammogan_tf.sections import Section


class CPGGANModelConfig(Section):
    """The ``model:`` section of ``family: cpggan`` (paper values in experiments/han2019_cpggan.yaml)."""

    family: Literal["cpggan"] = "cpggan"
    image_size: int = Field(256, ge=8, description="final side S, a power of two (up to 512)")
    start_resolution: Literal[4, 8] = 4
    channels: int = Field(1, ge=1)
    latent_dim: int = Field(512, ge=1)
    base_filters: int = Field(16, ge=1, description="channels at the final resolution, doubling per halving")
    max_filters: int = Field(512, ge=1)
    mbstd_group: int = Field(4, ge=1, description="minibatch standard deviation group size")
    negative_slope: float = Field(0.2, ge=0)
    gp_weight: float = Field(10.0, ge=0, description="WGAN-GP lambda")
    drift_weight: float = Field(0.001, ge=0, description="epsilon_drift * D(real)^2")
    images_per_phase: int = Field(800_000, ge=1, description="images per fade-in and per stabilisation")
    batch_sizes: Optional[dict[int, int]] = Field(
        None, description="global batch per resolution, e.g. {4: 16, ..., 128: 16, 256: 12}, used while that "
                          "resolution is faded in and stabilised (Karras et al.); every resolution from "
                          "start_resolution to image_size; null: train.batch_size throughout")

    @field_validator("batch_sizes")
    @classmethod
    def _every_resolution(cls, value, info):
        if value is None or "image_size" not in info.data or "start_resolution" not in info.data:
            return value
        size, start = info.data["image_size"], info.data["start_resolution"]
        wanted = [start * 2 ** k for k in range(int(math.log2(max(size // start, 1))) + 1)]
        missing = [r for r in wanted if r not in value]
        if missing:
            raise ValueError(f"no batch size for resolution {missing[0]} (give one for each of {wanted})")
        unknown = sorted(set(value) - set(wanted))
        if unknown:
            raise ValueError(f"{unknown[0]} is not a resolution of this network ({wanted})")
        small = [r for r in wanted if value[r] < 1]
        if small:
            raise ValueError(f"batch size {value[small[0]]} at resolution {small[0]}: must be >= 1")
        return value

    @model_validator(mode="after")
    def _power_of_two(self):
        if self.image_size & (self.image_size - 1) or self.image_size < self.start_resolution:
            raise ValueError(f"image_size {self.image_size}: a power of two >= start_resolution")
        return self

    @property
    def num_levels(self) -> int:
        """K: the number of resolutions added after the first."""
        return int(math.log2(self.image_size // self.start_resolution))

    @property
    def latent_distribution(self) -> str:
        """Latents are N(0, 1) (recorded in synthesis provenance like the other families')."""
        return "normal"
