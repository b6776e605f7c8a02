"""The batch size of every training step, and where each step's data comes from.

A run's batch size may change between phases (Karras et al. 2018's progressive GAN uses smaller
minibatches at higher resolutions). ``BatchSchedule`` is a list of *segments*: from step
``start_step`` on, every step reads global batches of ``batch_size`` examples, until the next
segment starts. A fixed ``train.batch_size`` is one open-ended segment. A family gives its
phases as spans of *images* (``BatchSchedule.from_images``); the steps are derived from them up
front, so ``step -> (batch size, images seen)`` is a pure function and a resumed run is exact.

*Images seen* before step ``s`` is the sum of the batch sizes of steps ``0 .. s - 1`` (the
examples one update sees; a step that reads ``d_steps`` batches still counts one batch). Value
schedules with ``unit: images`` (``training.config.ValueSchedule``) run on this count, so a
fade-in lasts the same number of images whatever the batch.

``DataPlan`` adds the data: segment ``k`` batches ``b_k`` examples, an epoch of it is
``steps_per_epoch(N, b_k, batches_per_step)`` steps; the first segment starts at epoch 0 and each
next segment starts a fresh epoch (the rest of the epoch in progress at a batch change is not
used), so ``step -> (epoch, step within the epoch)`` is pure as well. With one segment this is
``divmod(step, steps_per_epoch)``, as it always was.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Sequence

from mammogan_tf.errors import ConfigError
from mammogan_tf.training.schedules import steps_per_epoch


@dataclass(frozen=True)
class Segment:
    """Steps ``[start_step, end_step)`` (``end_step`` None: to the end of the run) read global
    batches of ``batch_size``; ``start_images``: images seen before ``start_step``; ``field``:
    the config field that sets this batch size (named in errors)."""

    start_step: int
    end_step: int | None
    batch_size: int
    start_images: int
    field: str


class BatchSchedule:
    """Segments of constant batch size, in step order (see the module docstring)."""

    def __init__(self, segments: Sequence[Segment]):
        if not segments or segments[0].start_step != 0 or segments[-1].end_step is not None:
            raise ValueError("a batch schedule starts at step 0 and its last segment is open-ended")
        self.segments = list(segments)
        self._starts = [segment.start_step for segment in self.segments]

    @classmethod
    def fixed(cls, batch_size: int, field: str = "train.batch_size") -> "BatchSchedule":
        """One batch size for the whole run."""
        return cls([Segment(0, None, int(batch_size), 0, field)])

    @classmethod
    def from_images(cls, spans: Sequence[tuple[int | None, int, str]]) -> "BatchSchedule":
        """Segments from phases ``(images, batch_size, field)`` in order, the last one's images
        ignored (it lasts to the end of the run). A phase lasts ``ceil(remaining / batch)`` steps,
        ``remaining`` being what is left to reach its cumulative image count, so every step of a
        phase starts with its images seen inside the phase's span. Neighbouring phases with the
        same batch size form one segment."""
        segments: list[Segment] = []
        step = images = target = 0
        for index, (span, batch, field) in enumerate(spans):
            batch = int(batch)
            if batch < 1:
                raise ConfigError(f"{field}: a batch size must be >= 1, not {batch}")
            if segments and segments[-1].batch_size == batch:
                previous = segments.pop()
                start_step, start_images, field = previous.start_step, previous.start_images, previous.field
            else:
                start_step, start_images = step, images
            if index == len(spans) - 1:
                segments.append(Segment(start_step, None, batch, start_images, field))
                break
            target += int(span)
            steps = max(0, math.ceil((target - images) / batch))
            step, images = step + steps, images + steps * batch
            segments.append(Segment(start_step, step, batch, start_images, field))
        return cls([s for s in segments if s.end_step is None or s.end_step > s.start_step])

    def index(self, step: int) -> int:
        """Index of the segment that holds ``step``."""
        return bisect.bisect_right(self._starts, int(step)) - 1

    def segment(self, step: int) -> Segment:
        return self.segments[self.index(step)]

    def batch_size(self, step: int) -> int:
        """Global batch of step ``step``."""
        return self.segment(step).batch_size

    def images(self, step: int) -> int:
        """Images seen before step ``step`` (module docstring)."""
        segment = self.segment(step)
        return segment.start_images + (int(step) - segment.start_step) * segment.batch_size

    def step_at_images(self, images: int) -> int:
        """The first step that starts with at least ``images`` images seen."""
        for segment in self.segments:
            end_images = None if segment.end_step is None else self.images(segment.end_step)
            if end_images is None or images <= end_images:
                return segment.start_step + max(0, math.ceil((images - segment.start_images) / segment.batch_size))
        raise AssertionError("unreachable: the last segment is open-ended")


class DataPlan:
    """``BatchSchedule`` plus the data: the epoch and position of every step (module docstring).

    ``num_examples``: examples of the primary stream; ``batches_per_step``: batches one step
    reads; ``per_epoch``: steps per epoch for every segment (default: one pass over the data).
    """

    def __init__(self, batches: BatchSchedule, num_examples: int, batches_per_step: int,
                 per_epoch: int | None = None):
        self.batches = batches
        self.per_epoch = [per_epoch or steps_per_epoch(num_examples, s.batch_size, batches_per_step)
                          for s in batches.segments]
        self.first_epoch = [0]
        for segment, length in zip(batches.segments[:-1], self.per_epoch):
            self.first_epoch.append(self.first_epoch[-1] + math.ceil((segment.end_step - segment.start_step) / length))

    def position(self, step: int) -> tuple[int, int, int]:
        """``(epoch, step within the epoch, steps per epoch)`` of step ``step``."""
        index = self.batches.index(step)
        length = self.per_epoch[index]
        epochs, offset = divmod(int(step) - self.batches.segments[index].start_step, length)
        return self.first_epoch[index] + epochs, offset, length

    def epoch(self, step: int) -> int:
        return self.position(step)[0]

    def total_steps(self, steps: int | None, epochs: int | None, images: int | None = None) -> int:
        """Length of a run: ``steps``; else the first step of epoch ``epochs``; else the first
        step with ``images`` images seen."""
        if steps is not None:
            return int(steps)
        if images is not None:
            return self.batches.step_at_images(int(images))
        if epochs is None:
            raise ConfigError("train.steps, train.epochs or train.images must be given")
        for index, segment in enumerate(self.batches.segments):
            if segment.end_step is None or epochs < self.first_epoch[index + 1]:
                end = segment.start_step + (int(epochs) - self.first_epoch[index]) * self.per_epoch[index]
                return end if segment.end_step is None else min(end, segment.end_step)
        raise AssertionError("unreachable: the last segment is open-ended")
