"""Config sections of a detector experiment (TensorFlow-free): ``train`` (DetectionTrainConfig),
``data`` (DetectionDataConfig) and the whole YAML (DetectionExperimentConfig)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from mammogan_tf.config import PrepareConfig
from mammogan_tf.models.detector_config import DetectorConfig
from mammogan_tf.sections import Section


class DetectionTrainConfig(Section):
    """The ``train:`` section of a detector experiment."""

    epochs: int = Field(50, ge=1)
    batch_size: int = Field(16, ge=1, description="global batch")
    learning_rate: float = Field(1e-3, gt=0)
    box_loss: Literal["giou", "ciou"] = "giou"
    box_weight: float = Field(1.0, ge=0)
    obj_weight: float = Field(1.0, ge=0)
    class_weight: float = Field(1.0, ge=0)
    ignore_iou: float = Field(0.5, gt=0, le=1, description="negatives overlapping a lesion more are ignored")
    extra_anchor_iou: float | None = Field(None, gt=0, le=1, description="also assign anchors this similar")
    flip: bool = Field(True, description="random horizontal and vertical flips of training images")
    max_boxes: int = Field(32, ge=1, description="boxes per image kept for the ignore test")
    select_fps: float = Field(1.0, gt=0, description="best checkpoint: sensitivity at this many FPs/image")
    select_iou: float = Field(0.5, gt=0, le=1)
    score_threshold: float = Field(0.001, ge=0, le=1, description="detection threshold (Han: 0.1 %)")
    nms_iou: float = Field(0.45, gt=0, le=1)
    max_detections: int = Field(100, ge=1)
    strategy: str = Field("default", description="as train.strategy of the GAN runs")
    seed: int = 0


class DetectionDataConfig(Section):
    """Which prepared whole-image shards the detector reads."""

    manifest: str = Field(..., description="a `mammogan prepare` output with patches.mode: whole")
    synthetic: list[str] = Field(default_factory=list, description="extra training shards (whole images with boxes)")
    val_split: str = "val"
    test_split: str = "test"


class DetectionExperimentConfig(Section):
    """A detector experiment YAML: ``prepare`` (mode whole), ``model`` (DetectorConfig),
    ``train`` (DetectionTrainConfig) and ``data``."""

    name: str = "detector"
    output_dir: str = "runs"
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    model: DetectorConfig = Field(default_factory=DetectorConfig)
    train: DetectionTrainConfig = Field(default_factory=DetectionTrainConfig)
    data: DetectionDataConfig
