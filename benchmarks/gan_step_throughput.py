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
Also reports achieved TFLOP/s, MFU (over ``PEAK_TFLOPS`` of the device, FP32 or 16-bit tensor
cores under mixed precision; the dev CPU's 0.1565 on CPU) and peak memory (device, or the
process' max RSS on CPU) and the process' CPU seconds per step (all threads; on a shared machine
less sensitive to other load than the wall time). ``measure()`` is the same as a function (``gpu_suite.py`` uses it).
Prints one JSON object on the last line.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.presets import PRESETS, load_preset  # noqa: E402

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


# Dense peak TFLOP/s (FP32 without tensor cores, 16-bit with) by device name, for MFU.
PEAK_TFLOPS = {"H200": (67.0, 989.0), "H100": (67.0, 989.0), "A100": (19.5, 312.0), "L40S": (91.6, 362.0),
               "L4": (30.3, 121.0), "A10": (31.2, 125.0), "V100": (15.7, 125.0), "T4": (8.1, 65.0)}
CPU_PEAK_TFLOPS = 0.1565  # 2 cores x 2.445 GHz x 32 FP32 FLOP/cycle (AVX-512 FMA) on the dev machine


def _device() -> tuple[str, list]:
    """(description, GPU devices)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"{len(gpus)} x {details.get('device_name', 'GPU')}", gpus
    return f"CPU ({platform.processor() or platform.machine()})", []


def peak_tflops(device: str, gpus: list, mixed: bool) -> float:
    """Peak TFLOP/s of all devices together (0 when the GPU model is unknown)."""
    if not gpus:
        return CPU_PEAK_TFLOPS
    for name, (fp32, half) in PEAK_TFLOPS.items():
        if name in device:
            return len(gpus) * (half if mixed else fp32)
    return 0.0


def _peak_memory_mb(gpus: list) -> float:
    """Peak device memory over all GPUs since the last reset; on CPU the process' max RSS."""
    import tensorflow as tf

    if gpus:
        return sum(tf.config.experimental.get_memory_info(f"GPU:{i}")["peak"] for i in range(len(gpus))) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(preset, batch: int = 64, steps: int = 20, warmup: int = 3, strategy: str = "default",
            mixed_precision: str | None = None, jit: bool = False, overrides: list[str] | None = None) -> dict:
    """Time ``steps`` full training steps of ``preset`` (name or YAML path); the result dict."""
    import tensorflow as tf

    from mammogan_tf.models.registry import flops_per_image
    from mammogan_tf.training.data import RandomBatches
    from mammogan_tf.training.families import make_family
    from mammogan_tf.training.loop import Trainer

    settings = [f"train.strategy={strategy}", f"train.jit_compile={str(jit).lower()}", *(overrides or [])]
    if mixed_precision:
        settings.append(f"train.mixed_precision={mixed_precision}")
    config = load_preset(preset, batch, settings)
    device, gpus = _device()
    for i in range(len(gpus)):
        tf.config.experimental.reset_memory_stats(f"GPU:{i}")
    family = make_family(config.model, config.train)
    trainer = Trainer(family, config.train)
    train = config.train
    data = RandomBatches(family.streams(), config.model.image_size, batch, getattr(config.model, "num_classes", 0))
    iterator = trainer.iterator(data, 0, 10 ** 6)
    trainer.set_schedules(0, 0)

    start = time.perf_counter()
    for step in range(warmup):
        stats = trainer.train_step(iterator, step)
    float(stats["d_loss"])
    warmup_s = time.perf_counter() - start
    start, cpu_start = time.perf_counter(), time.process_time()
    for step in range(warmup, warmup + steps):
        stats = trainer.train_step(iterator, step)
    float(stats["d_loss"])  # wait for the last step
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start

    networks = trainer.networks
    side = config.model.image_size
    if config.model.family == "contextual":
        family.current_stage = family.stage(warmup + steps - 1)
        g_flops, d_flops = contextual_forward_flops(family, networks)
        per_image = contextual_step_flops(g_flops, d_flops, train.d_steps, train.g_steps)
        side = side // (2 if family.current_stage == 0 else 1)
    else:
        g_flops = flops_per_image(networks["generator"])
        d_flops = flops_per_image(networks["discriminator"])
        per_image = step_flops(g_flops, d_flops, train.d_steps, train.g_steps)
    steps_per_s = steps / seconds
    flops_per_s = per_image * batch * steps_per_s
    peak = peak_tflops(device, gpus, bool(mixed_precision))
    return {
        "preset": str(preset), "image_size": side, "family": config.model.family,
        "batch": batch, "steps": steps, "strategy": strategy, "replicas": trainer.replicas, "device": device,
        "mixed_precision": mixed_precision, "jit_compile": jit, "seconds": round(seconds, 3),
        "steps_per_second": round(steps_per_s, 3), "cpu_seconds_per_step": round(cpu_seconds / steps, 3),
        "images_per_second": float(f"{steps_per_s * batch * train.d_steps:.4g}"),
        "generator_gflop_per_image": round(g_flops / 1e9, 4), "discriminator_gflop_per_image": round(d_flops / 1e9, 4),
        "step_gflop_per_image": round(per_image / 1e9, 4),
        "achieved_gflop_per_second": round(flops_per_s / 1e9, 2),
        "achieved_tflop_per_second": float(f"{flops_per_s / 1e12:.4g}"),
        "mfu": float(f"{flops_per_s / 1e12 / peak:.4g}") if peak else None, "peak_tflops": peak,
        "peak_memory_mb": round(_peak_memory_mb(gpus), 1), "warmup_seconds": round(warmup_s, 2),
        "params": {name: int(sum(v.numpy().size for v in model.trainable_variables))
                   for name, model in networks.items()},
        "final_d_loss": round(float(stats["d_loss"]), 4), "final_g_loss": round(float(stats["g_loss"]), 4),
    }


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
    parser.add_argument("--intra-op", type=int, default=0, help="TF intra-op threads (0: TF default)")
    parser.add_argument("--inter-op", type=int, default=0, help="TF inter-op threads (0: TF default)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = parser.parse_args()
    if args.intra_op or args.inter_op:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op)
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op)
    result = measure(args.config or args.preset, args.batch, args.steps, args.warmup, args.strategy,
                     args.mixed_precision, args.jit, args.set)
    result["threads"] = [args.intra_op, args.inter_op]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
