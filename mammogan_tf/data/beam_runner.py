"""``mammogan prepare --runner beam``: the pending units of a prepare run as an Apache Beam pipeline.

Only the execution of units changes: ``prepare.run_prepare`` still plans, resumes, summarises,
writes the manifest and publishes. Each pending unit (one shard, a list of ``ImageJob``) is one
element; a worker runs ``process_image`` on its images in order and ``_finish_unit`` writes the
shard and the unit record exactly as the local runner does, so the shard bytes are identical and a
run killed under one runner resumes under the other.

Default: the DirectRunner with ``workers`` processes. ``prepare.beam_options`` (``--beam-option
KEY=VALUE``) go to ``PipelineOptions`` as ``--KEY=VALUE`` and may name any runner (Flink, Spark,
Dataflow). On a cluster every worker needs this package and must see ``<out>.partial`` at the same
path (a shared file system): the plan is read from there and the shards are written there.
"""
from __future__ import annotations

import contextlib
import io
import pickle
import sys
from pathlib import Path

from mammogan_tf.data.config import PrepareConfig
from mammogan_tf.data.prepare import _finish_unit
from mammogan_tf.data.process import ImageJob, process_image
from mammogan_tf.errors import ConfigError, MissingDependencyError

try:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
except ImportError as error:  # pragma: no cover - depends on the environment
    raise MissingDependencyError(
        f"prepare --runner beam needs Apache Beam ({error}); install it with pip install 'mammogan_tf[beam]' "
        "or use --runner local") from None

PLAN_FILE = "beam_units.pickle"
"""In ``<out>.partial``: the config and the pending units, read once by each Beam worker (the
pipeline itself carries only unit names, so its graph stays small for 100k-image archives)."""


def pipeline_arguments(config: PrepareConfig, workers: int) -> list[str]:
    """Command-line style Beam options: the DirectRunner with ``workers`` processes (in memory for
    one), workers logging warnings only, then ``config.beam_options`` as ``--KEY=VALUE`` (later ones
    win, e.g. ``runner=...``)."""
    mode = "multi_processing" if workers > 1 else "in_memory"
    return ["--runner=DirectRunner", f"--direct_num_workers={workers}", f"--direct_running_mode={mode}",
            "--default_sdk_harness_log_level=WARNING",
            *(f"--{option}" for option in config.beam_options)]


class RunUnit(beam.DoFn):
    """unit name -> (unit name, images): process the unit's images in order, write its shard and record."""

    def __init__(self, staging: str):
        self.staging = staging
        self.config: PrepareConfig | None = None
        self.units: dict[str, list[ImageJob]] = {}

    def setup(self):
        with open(Path(self.staging) / PLAN_FILE, "rb") as handle:
            self.config, self.units = pickle.load(handle)

    def process(self, name: str):
        jobs = self.units[name]
        _finish_unit(Path(self.staging), name, [process_image(job, self.config) for job in jobs])
        yield name, len(jobs)


def pipeline_options(config: PrepareConfig, workers: int) -> PipelineOptions:
    """``pipeline_arguments`` parsed; raises ConfigError (one line) for an option Beam refuses."""
    options = PipelineOptions(pipeline_arguments(config, workers))
    refused = io.StringIO()
    try:
        with contextlib.redirect_stderr(refused):  # argparse prints its usage, then exits
            options.get_all_options()
    except SystemExit:
        reason = refused.getvalue().strip().splitlines()[-1].partition("error: ")[2]
        raise ConfigError(f"prepare.beam_options {config.beam_options}: {reason}") from None
    return options


def run_units_beam(staging: Path, pending: dict[str, list[ImageJob]], config: PrepareConfig,
                   workers: int, progress: bool) -> None:
    """Run ``pending`` units (name -> jobs) as a Beam pipeline writing into ``staging``; returns when
    every unit has its shard and record. Raises ConfigError for Beam options Beam refuses."""
    options = pipeline_options(config, min(workers, len(pending)))
    try:
        pipeline = beam.Pipeline(options=options)
    except ValueError as error:  # e.g. an unknown runner
        raise ConfigError(f"prepare.beam_options {config.beam_options}: {error}") from None
    staging = Path(staging).resolve()
    plan = staging / PLAN_FILE
    with open(plan, "wb") as handle:
        pickle.dump((config, pending), handle, protocol=pickle.HIGHEST_PROTOCOL)
    if progress:
        images = sum(len(jobs) for jobs in pending.values())
        print(f"prepare: {len(pending)} units ({images} images) on Beam's {options.view_as(StandardOptions).runner}",
              file=sys.stderr)
    try:
        with pipeline:
            _ = (pipeline | "units" >> beam.Create(sorted(pending)) | "prepare" >> beam.ParDo(RunUnit(str(staging))))
    finally:
        plan.unlink(missing_ok=True)
