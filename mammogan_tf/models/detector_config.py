"""The ``model:`` section of a detector experiment (``family: detector``); TensorFlow-free."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from mammogan_tf.sections import Section

DEFAULT_ANCHORS = (((10, 10), (16, 16), (24, 24)),
                   ((32, 32), (44, 44), (60, 60)),
                   ((80, 80), (112, 112), (160, 160)))
"""Anchors (w, h) in pixels of a 256 px input, one triple per scale (strides 8, 16, 32)."""

class DetectorConfig(Section):
    """The ``model:`` section of a detector experiment (``family: detector``)."""

    family: Literal["detector"] = "detector"
    image_size: int = Field(256, ge=32, description="input side S (a multiple of the largest stride)")
    channels: int = Field(1, ge=1)
    num_classes: int = Field(1, ge=1, description="1 = lesion; more for e.g. mass / calcification")
    class_names: list[str] = Field(default_factory=lambda: ["lesion"])
    backbone: Literal["csp", "mobilenet_v2", "resnet50"] = Field(
        "csp", description="csp: written here; else a keras.applications trunk (grey repeated to RGB)")
    backbone_weights: Optional[str] = Field(
        None, description="keras.applications backbones: a local no-top weights file (.h5); none = random")
    width: int = Field(16, ge=4, description="channels of the stem; doubling per stage")
    max_width: int = Field(256, ge=4)
    depth: int = Field(1, ge=0, description="residual blocks per CSP stage")
    strides: list[int] = Field(default_factory=lambda: [8, 16, 32], description="output scales")
    anchors: list[list[tuple[float, float]]] = Field(
        default_factory=lambda: [list(scale) for scale in DEFAULT_ANCHORS],
        description="per output scale, anchors (w, h) in input pixels")

    @model_validator(mode="after")
    def _consistent(self):
        if len(self.anchors) != len(self.strides):
            raise ValueError(f"anchors: {len(self.anchors)} scales but {len(self.strides)} strides")
        if len({len(a) for a in self.anchors}) != 1:
            raise ValueError("anchors: every scale needs the same number of anchors")
        if any(s & (s - 1) or s < 2 for s in self.strides) or sorted(set(self.strides)) != self.strides:
            raise ValueError(f"strides {self.strides}: increasing powers of two, e.g. [8, 16, 32]")
        if self.image_size % self.strides[-1]:
            raise ValueError(f"image_size {self.image_size} is not a multiple of stride {self.strides[-1]}")
        if self.backbone_weights == "imagenet":
            raise ValueError("backbone_weights: no downloads at run time; give the path of a local "
                             "no-top weights file (e.g. from keras.applications on a connected machine)")
        if self.backbone != "csp" and (self.strides[0] < 4 or self.strides[-1] > 32):
            raise ValueError(f"strides {self.strides}: keras.applications backbones give strides 4 to 32")
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"class_names has {len(self.class_names)} names for {self.num_classes} classes")
        return self
