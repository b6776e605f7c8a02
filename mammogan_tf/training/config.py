"""``train:`` section of an experiment YAML: everything the GAN loop needs besides the model.

Numbers that papers give live in ``experiments/*.yaml``; the defaults here are the common
DCGAN settings (Radford et al.: Adam 2e-4, beta_1 0.5) and every optional technique off.

"""
from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from mammogan_tf.sections import Section

LossKind = Literal["minimax", "non_saturating", "least_squares", "wasserstein", "hinge"]


class TrainDataConfig(Section):
    """Where the real patches come from (a ``prepare`` output folder or its manifest.json)."""

    manifest: Optional[str] = Field(None, description="prepare output folder or its manifest.json")
    split: str = "train"
    lesion_types: Optional[list[str]] = Field(
        None, description="keep only these classes; for a conditional GAN class c = lesion_types[c]")
    cache: bool = Field(True, description="keep decoded patches in memory within an epoch")
    prepare_phantom_if_missing: bool = Field(
        False, description="write the built-in phantom and run `prepare` (the experiment's prepare "
                           "section) into `manifest` when it does not exist (quickstart)")
    phantom_images: int = Field(16, ge=1)


class ScheduleConfig(Section):
    """Learning-rate schedule by epochs: ``step`` multiplies by ``rate`` every ``every_epochs``."""

    kind: Literal["constant", "step"] = "constant"
    rate: float = Field(0.99, gt=0)
    every_epochs: int = Field(1, ge=1)


class ValueSchedule(Section):
    """A named scalar schedule by training step or by images seen (``train.schedules``; see
    ``schedules.scheduled_value``): a fade-in alpha, a synthetic share, a penalty weight."""

    kind: Literal["constant", "linear", "step", "exponential"] = "constant"
    unit: Literal["steps", "images"] = Field(
        "steps", description="what start_step, end_step and every_steps count: training steps, or images "
                             "seen (the sum of the steps' batch sizes, training.batches)")
    start: float = 0.0
    end: float = 1.0
    start_step: int = Field(0, ge=0)
    end_step: int = Field(1, ge=1)
    rate: float = Field(1.0, gt=0)
    every_steps: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _ordered(self):
        if self.kind == "linear" and self.end_step <= self.start_step:
            raise ValueError("linear schedule: end_step must be after start_step")
        return self


class OptimizerConfig(Section):
    """Adam for one network."""

    learning_rate: float = Field(2e-4, gt=0)
    beta_1: float = Field(0.5, ge=0, lt=1)
    beta_2: float = Field(0.999, ge=0, lt=1)
    epsilon: float = Field(1e-8, gt=0)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)


class EMAConfig(Section):
    """Exponential moving average of the generator weights (sampled, evaluated, synthesised)."""

    enabled: bool = False
    decay: float = Field(0.999, ge=0, lt=1)
    start_step: int = Field(0, ge=0, description="copy the weights until this step")


class AugmentConfig(Section):
    """Augmentation of everything the discriminator sees, real and generated alike
    (``training.augment.DiscriminatorAugment``; Alyafi: flips; DiffAugment/ADA: the rest)."""

    ops: list[Literal["hflip", "vflip", "translation", "cutout", "brightness", "contrast", "transpose"]] = Field(
        default_factory=list)
    p: float = Field(0.0, ge=0, le=1, description="probability of each op per image (initial p when adaptive)")
    adaptive: bool = Field(False, description="ADA: move p so that r_t = E[sign(D(real))] -> target")
    target: float = Field(0.6, gt=0, lt=1)
    interval: int = Field(4, ge=1, description="steps between two p updates")
    speed_images: int = Field(500_000, ge=1, description="images over which p can move by 1")
    translation_ratio: float = Field(0.125, ge=0, le=0.5)
    padding: Literal["reflect", "zeros"] = "reflect"
    cutout_ratio: float = Field(0.5, gt=0, le=1)
    brightness: float = Field(0.2, ge=0)
    contrast: float = Field(0.5, ge=0, lt=1)


class MetricConfig(Section):
    """The metric that keeps ``best/`` (Alyafi's FID-guided saving)."""

    name: Literal["fid", "kid", "frd", "none"] = Field(
        "fid", description="fid / kid in the backbone's feature space; frd: radiomic features, no backbone")
    backbone: str = Field("inception_v3", description="inception_v3[:WEIGHTS] | classifier:PATH[:LAYER] | random")
    fit_backbone_if_missing: bool = Field(
        False, description="classifier:PATH absent -> fit it on the training data first (quickstart)")
    every: int = Field(1000, ge=1, description="steps")
    n_samples: int = Field(1000, ge=2)
    split: str = Field("train", description="real patches the samples are compared with")
    batch_size: int = Field(64, ge=1)
    seed: int = 12345


class TrainConfig(Section):
    """The adversarial training loop (``mammogan-train``)."""

    data: TrainDataConfig = Field(default_factory=TrainDataConfig)
    steps: Optional[int] = Field(None, ge=1, description="training steps (one step = d_steps D updates "
                                                         "+ g_steps G updates); or give epochs")
    epochs: Optional[int] = Field(None, ge=1)
    images: Optional[int] = Field(None, ge=1, description="or the length in images seen (Karras et al.'s kimg "
                                                          "x 1000; the steps follow from the batch sizes)")
    batch_size: int = Field(64, ge=1, description="global batch (over all replicas); a family with "
                                                  "per-phase batch sizes (model.batch_sizes) reads those instead")
    loss: LossKind = "minimax"
    class_loss_weight: float = Field(1.0, ge=0, description="conditional GAN: weight of the class loss")
    generator_optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    discriminator_optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    real_label: Union[float, tuple[float, float]] = Field(
        1.0, description="target of real images: fixed, or [low, high] drawn once per epoch")
    d_steps: int = Field(1, ge=1, description="D updates per step (each on a fresh real batch)")
    g_steps: int = Field(1, ge=1, description="G updates per step")
    gradient_penalty_weight: float = Field(0.0, ge=0, description="WGAN-GP lambda (uniform interpolation)")
    r1_weight: float = Field(0.0, ge=0, description="R1 gamma (the penalty is gamma/2 * |grad D(real)|^2)")
    schedules: dict[str, ValueSchedule] = Field(
        default_factory=dict, description="named schedules a family reads (defaults come from the family)")
    ema: EMAConfig = Field(default_factory=EMAConfig)
    sync_batch_norm: bool = Field(False, description="batch-norm statistics over all replicas (synchronised BN)")
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    mixed_precision: Optional[Literal["float16", "bfloat16"]] = Field(
        None, description="null (float32), float16 (loss-scaled) or bfloat16 compute")
    jit_compile: bool = False
    strategy: Literal["default", "mirrored", "multi_worker"] = "default"
    deterministic: bool = Field(False, description="tf.config.experimental.enable_op_determinism()")
    checkpoint_every: int = Field(500, ge=1, description="steps")
    keep: int = Field(3, ge=1, description="checkpoints kept besides best/")
    metric: MetricConfig = Field(default_factory=MetricConfig)
    log_every: int = Field(10, ge=1, description="steps between scalar logs (and non-finite checks)")
    sample_every: int = Field(500, ge=1, description="steps between sample grids")
    grid_size: int = Field(8, ge=1, description="sample grid is grid_size x grid_size")
    seed: int = 0

    @field_validator("real_label")
    @classmethod
    def _label_range(cls, value):
        low, high = (value, value) if isinstance(value, (int, float)) else value
        if not 0 < low <= high <= 1:
            raise ValueError("real_label must be in (0, 1], or [low, high] with 0 < low <= high <= 1")
        return value

    @model_validator(mode="after")
    def _steps_or_epochs(self):
        if sum(value is not None for value in (self.steps, self.epochs, self.images)) > 1:
            raise ValueError("give one of steps, epochs and images, not several (set the others to null)")
        if self.real_label != 1.0 and self.loss in ("wasserstein", "hinge"):
            raise ValueError(f"real_label: label smoothing has no meaning for the {self.loss} loss; set 1.0")
        return self
