"""GAN training-step throughput: images/s of full steps (D and G updates) and achieved GFLOP/s.

    python benchmarks/gan_step_throughput.py --preset fridadar64 --batch 64 --steps 20 \
        [--strategy default|mirrored] [--mixed-precision float16|bfloat16] [--jit]

Presets are the ``model:`` sections of the paper experiments (``--preset`` names below, or
``--config`` any experiment YAML). Data are random images already in memory, so the number is
the speed of the training step itself: one step = ``d_steps`` D updates (each on B real and B
generated images) + ``g_steps`` G updates, exactly ``training.loop.Trainer.train_step``.

FLOPs are counted from the models (``models.registry.flops_per_image``: convolutions, transposed
convolutions and dense layers, 2 per multiply-add) with the usual backward = 2 x forward:
  D update, per image:  G forward (1 G) + D forward and backward on the real and the fake image (2 x 3 D)
  G update, per image:  G forward and backward (3 G) + D forward and input-gradient backward (2 D)
  step = d_steps * (G + 6 D) + g_steps * (3 G + 2 D) per image of the global batch.
"images_per_second" counts the B real images of each D update (B * d_steps per step).

Contextual GAN (Wu et al.; ``--preset contextual128`` = ``contextual_mass.yaml`` in its S/2 stage,
128 px; ``contextual256`` = the same networks at 256 px with the 128 layers switched off, i.e. the
stage after the fade): G and D forward FLOPs at the stage's side are counted by TensorFlow's
profiler on the traced forward graph (every float op, so attention and resizing are included),
and a step is
  D update: G forward + D forward and backward on the four batches (lesion, fake, benign,
            normal: 4 x 3 D) + the perturbation penalty (D forward, input gradient, and its
            weight gradient: about 6 D, an estimate)
  G update: G forward and backward (3 G) + D forward and input-gradient backward (2 D)
  step = d_steps * (G + 18 D) + g_steps * (3 G + 2 D) per image of the batch.
Peak memory: ``tf.config.experimental.get_memory_info`` of GPU:0 when there is a GPU, else the
process's peak resident set size (``resource.getrusage``, the whole process: Python, TensorFlow,
the graphs and the data).
Prints progress lines, then one JSON object on the last line.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
PRESETS = {
    "fridadar64": "fridadar2018_dcgan_mass.yaml",
    "fridadar64_acgan": "fridadar2018_acgan.yaml",
    "alyafi128": "alyafi2019_dcgan_mass.yaml",
    "mias64": "mias_dcgan_mass.yaml",
    "quickstart": "quickstart.yaml",
    "contextual128": "contextual_mass.yaml",
    "contextual256": "contextual_mass.yaml",
}
PRESET_OVERRIDES = {
    "contextual128": ["model.progressive.enabled=true"],  # step 0 lies in the S/2 (128 px) stage
    "contextual256": ["model.progressive.enabled=false"],  # the 256 px layers only (after the fade)
}


def step_flops(g_forward: int, d_forward: int, d_steps: int = 1, g_steps: int = 1) -> int:
    """FLOPs of one training step per image of the global batch (see the module doc)."""
    return d_steps * (g_forward + 6 * d_forward) + g_steps * (3 * g_forward + 2 * d_forward)


def contextual_step_flops(g_forward: int, d_forward: int, d_steps: int = 1, g_steps: int = 1) -> int:
    """FLOPs of one contextual-GAN step per image of the batch (see the module doc)."""
    return d_steps * (g_forward + 18 * d_forward) + g_steps * (3 * g_forward + 2 * d_forward)


def graph_flops(function, spec) -> int:
    """Float ops of one call of ``function`` on ``spec`` (a ``tf.TensorSpec``), by TF's profiler."""
    import tensorflow as tf
    from tensorflow.python.profiler import model_analyzer, option_builder

    graph = tf.function(function).get_concrete_function(spec).graph
    options = option_builder.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return int(model_analyzer.profile(graph, options=options).total_float_ops)


def contextual_forward_flops(family, networks) -> tuple[int, int]:
    """(G, D) forward FLOPs per image at the side of the family's current stage."""
    import tensorflow as tf

    size = family.model_config.image_size
    side = size // 2 if family.current_stage == 0 else size
    alpha = {0: 0.0, 1: 0.5, 2: None}[family.current_stage]
    generator, discriminator = networks["generator"], networks["discriminator"]
    spec = tf.TensorSpec((1, side, side, 1), tf.float32)
    g = graph_flops(lambda x: generator(x, noise=tf.zeros((1, generator.noise_dim)), alpha=alpha,
                                        training=False), spec)
    d = graph_flops(lambda x: discriminator(x, alpha=alpha, training=False), spec)
    return g, d


def peak_memory() -> dict:
    """``{"peak_memory_mb", "peak_memory_source"}``: GPU:0 peak when there is a GPU, else max RSS."""
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        peak = tf.config.experimental.get_memory_info("GPU:0")["peak"]
        return {"peak_memory_mb": round(peak / 2 ** 20, 1), "peak_memory_source": "get_memory_info GPU:0 peak"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    rss = rss if sys.platform == "darwin" else rss * 1024
    return {"peak_memory_mb": round(rss / 2 ** 20, 1), "peak_memory_source": "getrusage maxrss (process)"}


def _device() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"{len(gpus)} x {details.get('device_name', 'GPU')}"
    return f"CPU ({platform.processor() or platform.machine()})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="fridadar64")
    parser.add_argument("--config", type=Path, help="experiment YAML instead of a preset")
    parser.add_argument("--batch", type=int, default=64, help="global batch size")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (after --warmup)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps (tracing, autotuning)")
    parser.add_argument("--strategy", default="default", choices=("default", "mirrored", "multi_worker"))
    parser.add_argument("--mixed-precision", choices=("float16", "bfloat16"))
    parser.add_argument("--jit", action="store_true", help="XLA-compile the replica computations")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, repeatable (e.g. model.generator.base_filters=8)")
    args = parser.parse_args()

    from mammogan_tf.config import load_config
    from mammogan_tf.models.registry import flops_per_image
    from mammogan_tf.training.data import RandomBatches
    from mammogan_tf.training.families import make_family
    from mammogan_tf.training.loop import Trainer

    path = args.config or EXPERIMENTS / PRESETS[args.preset]
    overrides = [f"train.batch_size={args.batch}", f"train.strategy={args.strategy}",
                 f"train.jit_compile={str(args.jit).lower()}", "train.metric.name=none"]
    if args.mixed_precision:
        overrides.append(f"train.mixed_precision={args.mixed_precision}")
    if args.config is None:
        overrides += PRESET_OVERRIDES.get(args.preset, [])
    overrides += args.overrides
    config = load_config(path, overrides)
    family = make_family(config.model, config.train)
    trainer = Trainer(family, config.train)
    train = config.train
    data = RandomBatches(family.streams(), config.model.image_size, args.batch,
                         getattr(config.model, "num_classes", 0))
    iterator = trainer.iterator(data, 0, 10 ** 6)
    trainer.set_schedules(0, 0)

    start = time.perf_counter()
    for step in range(args.warmup):
        stats = trainer.train_step(iterator, step)
    float(stats["d_loss"])
    warmup_s = time.perf_counter() - start
    print(f"warm-up: {args.warmup} steps in {warmup_s:.1f} s (tracing included)", flush=True)
    start = time.perf_counter()
    for step in range(args.warmup, args.warmup + args.steps):
        stats = trainer.train_step(iterator, step)
    float(stats["d_loss"])  # wait for the last step
    seconds = time.perf_counter() - start

    if config.model.family == "contextual":
        family.current_stage = family.stage(args.warmup + args.steps - 1)
        g_flops, d_flops = contextual_forward_flops(family, trainer.networks)
        per_image = contextual_step_flops(g_flops, d_flops, train.d_steps, train.g_steps)
        side = config.model.image_size // (2 if family.current_stage == 0 else 1)
    else:
        g_flops = flops_per_image(trainer.networks["generator"])
        d_flops = flops_per_image(trainer.networks["discriminator"])
        per_image = step_flops(g_flops, d_flops, train.d_steps, train.g_steps)
        side = config.model.image_size
    steps_per_s = args.steps / seconds
    result = {
        "preset": args.preset if args.config is None else str(args.config), "image_size": side,
        "family": config.model.family, "batch": args.batch, "steps": args.steps, "strategy": args.strategy,
        "replicas": trainer.replicas, "device": _device(), "mixed_precision": args.mixed_precision,
        "jit_compile": args.jit, "seconds": round(seconds, 3), "steps_per_second": round(steps_per_s, 3),
        "images_per_second": round(steps_per_s * args.batch * train.d_steps, 2),
        "generator_gflop_per_image": round(g_flops / 1e9, 4), "discriminator_gflop_per_image": round(d_flops / 1e9, 4),
        "step_gflop_per_image": round(per_image / 1e9, 4),
        "achieved_gflop_per_second": round(per_image * args.batch * steps_per_s / 1e9, 2),
        "warmup_seconds": round(warmup_s, 2), **peak_memory(),
        "final_d_loss": round(float(stats["d_loss"]), 4), "final_g_loss": round(float(stats["g_loss"]), 4),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
