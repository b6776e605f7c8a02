"""The ``prepare`` section of an experiment YAML: images + annotations -> patient-split patch shards.

Kept in the data stage (``mammogan_tf.config`` assembles the sections); ``PrepareConfig`` is also
re-exported from ``mammogan_tf.config``.
"""
from __future__ import annotations

import re
from typing import Literal, Optional

from pydantic import Field, field_validator

from mammogan_tf.sections import Section


class NormalizationConfig(Section):
    """Histogram normalisation applied to whole images before patch extraction."""

    method: Literal["none", "equalize", "clahe", "percentile"] = "equalize"
    clahe_clip_limit: float = Field(2.0, gt=0)
    clahe_tile_grid: int = Field(8, ge=1)
    percentiles: tuple[float, float] = (1.0, 99.0)


class MaskConfig(Section):
    """Breast mask: Alyafi's non-zero threshold or Otsu, keeping the largest component."""

    method: Literal["nonzero", "otsu"] = "nonzero"
    threshold: float = Field(0.05, ge=0, lt=1, description="nonzero: pixels above this (of [0, 1]) are breast")
    largest_component: bool = True
    fill_holes: bool = True


class PatchConfig(Section):
    """Patch sampling. ``mode: lesion`` = Alyafi/Frid-Adar lesion-centred patches plus normal
    tissue; ``mode: contextual`` = Wu's 256 px patches with >= 90 % breast tissue."""

    mode: Literal["lesion", "contextual", "whole"] = "lesion"
    size: int = Field(128, ge=8, description="patch side in image pixels before resizing")
    output_size: Optional[int] = Field(None, ge=8, description="resize patches to this side (e.g. 64)")
    lesion_types: list[str] = ["mass", "calcification", "architectural_distortion", "asymmetry", "other"]
    too_large: Literal["resize", "skip"] = "resize"
    lesion_margin: float = Field(1.2, ge=1.0, description="crop side >= margin * lesion box side when resizing")
    patches_per_lesion: int = Field(1, ge=1)
    normal_per_image: int = Field(4, ge=0)
    normal_min_breast_fraction: float = Field(0.9, ge=0, le=1)
    min_breast_fraction: float = Field(0.9, ge=0, le=1, description="contextual patches")
    max_offset: int = Field(128, ge=0, description="contextual: lesion pixel offset from the patch centre")
    contextual_per_lesion: int = Field(1, ge=1)
    contextual_normal_per_image: int = Field(2, ge=0)
    flip: bool = True
    rot90: bool = True
    scale_range: tuple[float, float] = (0.8, 1.2)
    max_tries: int = Field(200, ge=1)
    multi_label: Literal["selected", "each"] = Field(
        "selected", description="a finding with several labels (VinDr): 'selected' = a lesion patch only when "
        "exactly one of its labels is in lesion_types (several: rejected); 'each' = one patch per selected label")


class SplitConfig(Section):
    """Patient-level splits, stratified by class."""

    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    k_folds: Optional[int] = Field(None, ge=2)
    allow_image_level: bool = Field(
        False, description="images without patient identity (INbreast without its DICOM files) are split one "
        "by one instead of refused; the manifest records split_level: image")

    @field_validator("fractions")
    @classmethod
    def _sum_to_one(cls, value):
        if abs(sum(value) - 1.0) > 1e-6 or min(value) < 0:
            raise ValueError("train/val/test fractions must be >= 0 and sum to 1")
        return value


class PrepareConfig(Section):
    """``mammogan prepare``: images + annotations -> patient-split patch shards."""

    images: Optional[str] = None
    annotations: Optional[str] = None
    format: Optional[Literal["mias", "cbis-ddsm", "vindr", "inbreast", "optimam", "table"]] = Field(
        None, description="annotation format, any case (CBIS-DDSM, cbis_ddsm); None = detected")
    column_map: dict[str, str] = Field(default_factory=dict, description="optimam: our column -> theirs")
    manufacturers: list[str] = Field(default_factory=list, description="keep only images of these "
                                     "manufacturers (case-insensitive substring; empty = all)")
    processed_only: bool = Field(False, description="keep only processed (FOR PRESENTATION) images")
    seed: int = 0
    workers: int = Field(1, ge=0, description="0 = one per CPU core")
    runner: Literal["local", "beam"] = Field(
        "local", description="local = a process pool; beam = an Apache Beam pipeline (DirectRunner with "
        "`workers` processes unless beam_options name another runner); same shards either way")
    beam_options: list[str] = Field(
        default_factory=list, description="runner: beam: Beam pipeline options as KEY=VALUE (or KEY for a "
        "flag), e.g. runner=FlinkRunner; passed to PipelineOptions as --KEY=VALUE")
    images_per_shard: int = Field(64, ge=1)
    normalization: NormalizationConfig = Field(default_factory=NormalizationConfig)
    mask: MaskConfig = Field(default_factory=MaskConfig)
    patches: PatchConfig = Field(default_factory=PatchConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)

    @field_validator("beam_options")
    @classmethod
    def _key_value(cls, value):
        for option in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(=.*)?", option.removeprefix("--")):
                raise ValueError(f"{option!r}: expected KEY=VALUE (a Beam pipeline option such as runner=FlinkRunner)")
        return [option.removeprefix("--") for option in value]

    @field_validator("format", mode="before")
    @classmethod
    def _format_any_case(cls, value):
        return value.strip().lower().replace("_", "-") if isinstance(value, str) else value
