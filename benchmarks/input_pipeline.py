"""Input pipeline throughput versus what a training step consumes (JSON on the last line).

    python benchmarks/input_pipeline.py [--manifest PREPARED] [--preset alyafi2019_dcgan_mass]
                                        [--batches 100] [--steps 2]

Measures the images/s that the run's one ``tf.data`` pipeline (``training.data.TrainingData``:
decode, filter, cache, per-epoch shuffle, batch, prefetch) delivers on real shards, decoding every
record from disk (``cache: false``) and from the in-memory cache, and the images/s that full training steps of the
preset consume on the same machine (random batches, so the step is timed alone). Without
``--manifest`` it writes the built-in phantom and prepares it at the preset's patch size into a
temporary folder first.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def _phantom_shards(size: int, folder: Path) -> Path:
    from mammogan_tf.config import validate_config
    from mammogan_tf.data.phantom import write_phantom
    from mammogan_tf.data.prepare import run_prepare

    table = write_phantom(folder / "phantom", n_images=16, seed=0)
    prepare = validate_config({"prepare": {"images": str(folder / "phantom"), "annotations": str(table),
                                           "format": "table", "workers": 0,
                                           "patches": {"size": size, "patches_per_lesion": 8,
                                                       "normal_per_image": 8}}}).prepare
    run_prepare(prepare, folder / "shards", progress=False)
    return folder / "shards" / "manifest.json"


def _pipeline_rate(data, batches: int, batches_per_epoch: int) -> float:
    """Images/s over ``batches`` batches, after one untimed batch (start-up, autotuning)."""
    iterator = iter(data.dataset(0, 0, batches_per_epoch))
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * data.batch_size / (time.perf_counter() - start)


def _step_rate(config, steps: int) -> float:
    from mammogan_tf.training.data import RandomBatches
    from mammogan_tf.training.families import make_family
    from mammogan_tf.training.loop import Trainer

    family = make_family(config.model, config.train)
    trainer = Trainer(family, config.train)
    data = RandomBatches(family.streams(), config.model.image_size, config.train.batch_size)
    iterator = trainer.iterator(data, 0, 10 ** 6)
    trainer.set_schedules(0, 0)
    float(trainer.train_step(iterator, 0)["d_loss"])  # tracing
    start = time.perf_counter()
    for step in range(1, steps + 1):
        stats = trainer.train_step(iterator, step)
    float(stats["d_loss"])
    return steps * config.train.batch_size * trainer.batches_per_step / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, help="prepared shards (default: phantom at the preset's size)")
    parser.add_argument("--preset", default="alyafi2019_dcgan_mass", help="experiments/<preset>.yaml")
    parser.add_argument("--batches", type=int, default=100, help="batches timed per pipeline pass")
    parser.add_argument("--steps", type=int, default=2, help="timed training steps (after one traced step)")
    args = parser.parse_args()

    from mammogan_tf.config import load_config
    from mammogan_tf.training.data import TrainingData
    from mammogan_tf.training.families import make_family

    config = load_config(EXPERIMENTS / f"{args.preset}.yaml", ["train.metric.name=none"])
    with tempfile.TemporaryDirectory() as tmp:
        manifest = args.manifest or _phantom_shards(config.model.image_size, Path(tmp))
        family = make_family(config.model, config.train)
        streams = {name: type(s)() for name, s in family.streams().items()}  # every class: the most records
        rates = {}
        for cache in (False, True):  # decoding every record from disk each time, or once
            data = TrainingData(manifest, "train", streams, config.train.batch_size, seed=0, cache=cache)
            rates[cache] = _pipeline_rate(data, args.batches, max(1, data.num_examples // data.batch_size))
        first, cached = rates[False], rates[True]
        consumed = _step_rate(config, args.steps)
        result = {"preset": args.preset, "image_size": config.model.image_size, "batch": config.train.batch_size,
                  "records": data.num_examples, "pipeline_decoding_images_per_second": round(first, 1),
                  "pipeline_cached_images_per_second": round(cached, 1),
                  "training_step_images_per_second": round(consumed, 2),
                  "ratio_decoding": round(first / consumed, 1), "ratio_cached": round(cached / consumed, 1),
                  "cpu_count": os.cpu_count()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
