"""How the global batch, the learning rate and the input sharding scale with workers (JSON lines).

    python benchmarks/multi_worker.py --preset fridadar64 [--workers 1,2,4,8] [--replicas-per-worker 1]
        [--manifest runs/data/fridadar64]

The training loop's rules (``training.loop``, ``training.data``), which this script applies to a
preset, one JSON object per cluster size and policy:

- ``strong`` (what the loop does): ``train.batch_size`` is the GLOBAL batch. With W workers of R
  replicas each, every replica gets ``B / (W R)`` images (B must divide evenly); gradients are
  averaged over the global batch (``compute_average_loss`` semantics) and all-reduced, so the
  step, the learning rate, the steps per epoch and the random draws are those of one device
  (draws are made for the global batch and sliced per replica). Same results, more devices.
- ``weak`` (a user's choice, set explicitly with ``--set``): keep the per-replica batch at the
  preset's B, so the global batch becomes ``B W R`` and an epoch has ``1 / (W R)`` as many steps.
  That is a different experiment; the learning rate is NOT rescaled by the loop. The usual
  starting points are given: linear scaling (Goyal et al. 2017, SGD) and square-root scaling
  (often better for Adam, which every preset uses); GAN papers mostly keep the rate and the batch.
- Input sharding: one input pipeline per worker (``distribute_datasets_from_function``); each
  reads only its own shard files (``files_per_worker``) when there are at least W files, else
  every pipeline reads all files and keeps every W-th record (``record sharding``).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.presets import PRESETS, load_preset  # noqa: E402


def shard_files(manifest: Path | None, split: str) -> int | None:
    """Number of shard files of ``split`` in a prepare manifest (None without one)."""
    if manifest is None:
        return None
    from mammogan_tf.manifest import manifest_path, read_manifest

    return len(read_manifest(manifest_path(manifest)).get("splits", {}).get(split, []))


def plan(batch: int, lr_g: float, lr_d: float, examples: int | None, files: int | None, workers: int,
         replicas_per_worker: int, policy: str, batches_per_step: int = 1) -> dict:
    """One cluster size under one policy (see the module doc)."""
    replicas = workers * replicas_per_worker
    global_batch = batch if policy == "strong" else batch * replicas
    factor = {"strong": 1.0, "linear": float(replicas), "sqrt": math.sqrt(replicas)}
    row = {"policy": policy, "workers": workers, "replicas": replicas, "global_batch": global_batch,
           "per_replica_batch": global_batch / replicas, "valid": global_batch % replicas == 0,
           "input_pipelines": workers, "per_pipeline_batch": global_batch // workers}
    if policy == "strong":
        row["learning_rate"] = {"generator": lr_g, "discriminator": lr_d}
    else:
        row["learning_rate"] = {name: {"generator": float(f"{lr_g * f:.4g}"), "discriminator": float(f"{lr_d * f:.4g}")}
                                for name, f in factor.items() if name != "strong"}
    if examples:
        from mammogan_tf.training.schedules import steps_per_epoch

        row["steps_per_epoch"] = steps_per_epoch(examples, global_batch, batches_per_step)
    if files is not None:
        row["input_sharding"] = "files" if files >= workers else "records"
        row["files_per_worker"] = [len(range(w, files, workers)) for w in range(workers)] if files >= workers else None
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="fridadar64")
    parser.add_argument("--workers", default="1,2,4,8", help="comma-separated cluster sizes")
    parser.add_argument("--replicas-per-worker", type=int, default=1, help="GPUs (or CPU devices) per worker")
    parser.add_argument("--manifest", type=Path, help="prepared data: count its shard files and examples")
    parser.add_argument("--examples", type=int, help="training examples (default: from --manifest)")
    args = parser.parse_args(argv)
    config = load_preset(args.preset, batch=64)
    train = config.train
    batch = train.batch_size
    files = shard_files(args.manifest, train.data.split)
    examples = args.examples
    if examples is None and args.manifest is not None:
        from mammogan_tf.manifest import manifest_path, read_manifest

        counts = read_manifest(manifest_path(args.manifest)).get("counts", {}).get(train.data.split, {})
        examples = sum(counts.values()) or None
    for workers in (int(w) for w in args.workers.split(",")):
        for policy in ("strong", "weak"):
            row = plan(batch, train.generator_optimizer.learning_rate, train.discriminator_optimizer.learning_rate,
                       examples, files, workers, args.replicas_per_worker, policy, train.d_steps)
            print(json.dumps({"preset": args.preset, **row}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
