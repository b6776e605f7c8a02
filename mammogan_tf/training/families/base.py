"""What a model family gives the training loop, and what the loop gives a family.

The loop (``training.loop``) owns the strategy, the long-lived input pipeline, the phase cadence,
schedule variables, checkpoints, metrics and logging. It knows no architecture: everything
model-specific sits behind ``Family``:

- ``streams()``: named streams of real patches the family needs, e.g. ``{"real": Stream()}`` or
  Wu et al.'s ``{"lesion": Stream(("mass",), ("malignant",)), "benign": ..., "normal": ...}``. The
  first stream is the primary one: an epoch is one pass over it; the others cycle within it.
  A batch is ``{stream: {"image": (b, S, S, 1) float32 in [-1, 1], "label": (b,) int32 class index
  into ``Stream.classes`` (or the manifest's classes), "box": (b, 4) float32 (x0, y0, x1, y1) in
  patch pixels, -1 when none, "mask": (b, S, S, 1) float32 in {0, 1} (zeros when none)}}``, b
  being the per-replica batch; whole-image shards add ``"boxes": (b, 16, 4)``, every box of the
  image (rows of -1 after the last).
- ``build_networks()``: the built Keras networks by name (``"generator"``, ``"discriminator"``...).
  ``sampler`` names the one that makes images (the loop keeps an EMA copy when asked).
- ``phases()``: the updates of one training step in order (``Phase``): which network, how many
  times, whether each update reads a fresh batch, every how many steps (lazy regularisation),
  and the loss callable ``loss(networks, batch, ctx) -> (terms, stats)``. ``terms`` are named
  per-example losses (b,) already multiplied by their weights; the loop sums their global means
  into the phase loss and logs each as ``<phase>/<term>``; ``stats`` are per-example values that
  are only logged (``<phase>/<stat>``; the stat ``real_sign`` feeds ADA).
- ``schedules()``: schedule names the family reads from ``ctx.schedules`` with their default
  ``ScheduleConfig`` (overridable in ``train.schedules``), e.g. a fade-in alpha.
- ``fixed_inputs(networks, count, seed, data)`` and ``generate(sampler, inputs)``: what the sample
  grid and the in-training metric feed the sampler, and how images come out.
- ``batch_schedule()``: the global batch of every step (``training.batches.BatchSchedule``;
  default: ``train.batch_size`` throughout); a progressive family gives one per phase, in
  images, and ``check_batch`` refuses a per-replica batch its networks cannot take.
- ``stage(step)``: a hashable progressive stage (default 0). The loop traces one step function per
  stage and sets ``family.current_stage`` before tracing, so a network built at full size can
  route through the layers of its stage; every variable exists from the start, so optimizers,
  checkpoints by name and EMA need nothing special at a stage switch.

Adding a family is one module in ``training/families/`` plus one line in ``FAMILIES``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar, Mapping

import numpy as np
import tensorflow as tf

from mammogan_tf.training.batches import BatchSchedule

Tensors = Mapping[str, tf.Tensor]
LossFn = Callable[[Mapping[str, object], "Mapping[str, Tensors] | None", "StepContext"],
                  "tuple[dict[str, tf.Tensor], dict[str, tf.Tensor]]"]


@dataclass(frozen=True)
class Stream:
    """A named selection of real patches from the training manifest.

    ``lesion_types`` / ``pathologies``: keep only these (None = all); ``classes``: label order of
    this stream (``label`` = index into it; default the manifest's classes, or ``lesion_types``).
    """

    lesion_types: tuple[str, ...] | None = None
    pathologies: tuple[str, ...] | None = None
    classes: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Phase:
    """One kind of update within a training step.

    ``network``: key of ``build_networks()`` whose trainable variables this phase updates (with
    its own optimizer, ``train.optimizers[optimizer or network]``); ``repeats``: updates per step
    (``d_steps``); ``uses_data``: each update reads a fresh batch of every stream; ``every``: run
    only on steps where ``step % every == 0`` (lazy regularisation; the loss should scale its
    terms by ``every`` itself).
    """

    name: str
    network: str
    loss: LossFn
    repeats: int = 1
    uses_data: bool = True
    every: int = 1
    optimizer: str | None = None


@dataclass
class StepContext:
    """What a loss callable gets besides the networks and the batch (per replica).

    ``seed``: (2,) int64 stateless seed of this update, the same on every replica (use
    ``draw_seeds`` for global draws sliced with ``local``, ``replica_seed`` for per-replica ones);
    ``schedules``: name -> scalar float32 ``tf.Variable`` (``real_label``, ``lr_<network>``, the
    family's own); ``global_batch_size``: the global batch of every stream at this step; ``augment``:
    ``(images, seed) -> images``, the discriminator augmentation (identity when off).
    """

    seed: tf.Tensor
    schedules: Mapping[str, tf.Variable]
    global_batch_size: int
    augment: Callable = field(default=lambda images, seed: images)

    def split(self, count: int) -> list[tf.Tensor]:
        """``count`` independent (2,) seeds derived from ``seed``."""
        return list(tf.unstack(tf.random.experimental.stateless_split(self.seed, count)))

    def local(self, values: tf.Tensor) -> tf.Tensor:
        """This replica's slice of a tensor drawn for the whole global batch (first axis)."""
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return values
        size = self.global_batch_size // context.num_replicas_in_sync
        start = context.replica_id_in_sync_group * size
        return values[start:start + size]

    @staticmethod
    def replica_seed(seed: tf.Tensor) -> tf.Tensor:
        """A seed that differs per replica (for per-example noise that need not match R=1)."""
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return seed
        return tf.random.experimental.stateless_fold_in(seed, context.replica_id_in_sync_group)


class Family:
    """Base class of a model family; see the module docstring for the contract.

    ``model_config``: the experiment's ``model`` section (the family's own config class);
    ``train_config``: ``TrainConfig``. Subclasses set ``name`` and implement the methods below.
    """

    name: ClassVar[str] = ""
    sampler: ClassVar[str] = "generator"

    def __init__(self, model_config, train_config):
        self.model_config = model_config
        self.train_config = train_config
        self.current_stage = 0

    def stage(self, step: int):
        """Progressive stage of training step ``step`` (hashable; default: one stage, 0)."""
        return 0

    def batch_schedule(self) -> BatchSchedule:
        """Global batch size of every step (default: ``train.batch_size`` for the whole run)."""
        return BatchSchedule.fixed(self.train_config.batch_size)

    def check_batch(self, per_replica: int, field: str) -> None:
        """Raise ``ConfigError`` (naming ``field``) when the networks cannot take batches of
        ``per_replica`` examples per replica (default: any size)."""

    # ------------------------------------------------------------------ data and networks
    def streams(self) -> dict[str, Stream]:
        """Named real-data streams; the first is primary. Default: every training patch
        (``train.data.lesion_types``, labels indexing them)."""
        types = self.train_config.data.lesion_types
        return {"real": Stream(lesion_types=tuple(types) if types else None,
                               classes=tuple(types) if types else None)}

    def build_networks(self) -> dict[str, object]:
        """Built Keras networks by name (called inside ``strategy.scope()``)."""
        raise NotImplementedError

    def phases(self) -> list[Phase]:
        raise NotImplementedError

    def schedules(self) -> dict[str, object]:
        """Extra schedule names -> default ``ScheduleConfig`` this family reads."""
        return {}

    def check_data(self, data) -> None:
        """Raise ``ConfigError`` when the prepared data cannot feed this model (sizes, classes)."""

    # ------------------------------------------------------------------------ sampling
    def fixed_inputs(self, networks, count: int, seed: int, data) -> dict[str, np.ndarray]:
        """Inputs of ``count`` images of the fixed stream ``seed`` (grids, metric); ``data`` is the
        run's ``TrainingData`` (class names and counts, or real patches for conditional inputs)."""
        raise NotImplementedError

    def generate(self, sampler, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """The sampler's output for ``fixed_inputs``-like inputs, inference mode (traced)."""
        raise NotImplementedError

    def present(self, outputs: np.ndarray, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Host-side finishing of ``generate``'s outputs into the images that grids and the metric
        show, ``(N, S, S, 1)`` float32 in [-1, 1], as synthesis would write them (default: as
        generated)."""
        return outputs

    def written(self, outputs: np.ndarray, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The images synthesis would write of ``generate``'s outputs, ``(M, S, S, 1)`` with M <= N:
        what the in-training metric scores (default: every presented image)."""
        return self.present(outputs, inputs)
