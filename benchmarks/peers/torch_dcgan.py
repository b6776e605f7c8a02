"""PyTorch (eager) reference of our DCGAN presets: the same networks and the same training step.

    python benchmarks/peers/torch_dcgan.py --preset fridadar64 --batch 64 --steps 10

Built from the ``model:`` section of the same experiment YAML as ours, layer for layer
(``mammogan_tf.models.dcgan``): projection (``Linear`` to 4x4, or a 4x4 ``ConvTranspose2d`` of
the 1x1 latent), ``ConvTranspose2d(k, stride 2)`` + BN + activation blocks, a transposed conv to
the image and tanh; the discriminator's stride-2 ``Conv2d`` + [BN] + LeakyReLU [+ dropout] blocks
and a dense logit. Batch norm momentum 0.1 / eps 1e-5 (Keras 0.9 / 1e-5), convs without bias
when BN follows, weights N(0, init_std). ``--check-params`` asserts (in our TF build) that the
trainable parameter counts are equal.

One step, as ``training.loop.Trainer.train_step`` with ``d_steps = g_steps = 1``: sample z, G forward,
D on the B real and the B fake images (two calls, each with its own batch statistics, the
D input flipped at random when the preset augments with hflip/vflip), non-saturating BCE with
the preset's real label, Adam update of D; a fresh z, G forward, D forward, -log D(G(z)), Adam
update of G. Data are random images in memory. Prints one JSON object on the last line.
Needs the optional dependency ``torch`` (``pip install .[bench]``).
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.presets import PRESETS, load_preset  # noqa: E402


# The width and stride rules of mammogan_tf.models.dcgan, restated: TensorFlow must not be
# imported into this process (TensorFlow and torch in one process crash on this machine).
def generator_widths(image_size: int, base: int, cap: int) -> list[int]:
    steps = int(math.log2(image_size // 4))
    return [min(base * 2 ** (steps - 1 - i), cap) for i in range(steps)]


def discriminator_widths(num_layers: int, base: int, cap: int) -> list[int]:
    return [min(base * 2 ** i, cap) for i in range(num_layers)]


def layer_strides(pattern: str, num_layers: int) -> list[int]:
    return [2 if pattern == "all" or i % 2 == 0 else 1 for i in range(num_layers)]


def _same_padding(kernel: int) -> int:
    """Symmetric padding that gives the stride-2 output size of TF's "same" (N -> N/2)."""
    return math.ceil((kernel - 2) / 2)


def _act(name: str, slope: float) -> nn.Module:
    return {"relu": nn.ReLU(), "leaky_relu": nn.LeakyReLU(slope), "elu": nn.ELU(), "gelu": nn.GELU(),
            "swish": nn.SiLU()}[name]


def _up(c_in: int, c_out: int, kernel: int, bias: bool) -> nn.Module:
    """Stride-2 transposed conv, H -> 2H (TF "same")."""
    pad = _same_padding(kernel)
    return nn.ConvTranspose2d(c_in, c_out, kernel, 2, padding=pad, output_padding=2 - kernel + 2 * pad,
                              bias=bias)


def _bn(channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels, momentum=0.1, eps=1e-5)


class Generator(nn.Module):
    """z (B, L) -> images (B, C, S, S) in [-1, 1] (channels first, PyTorch's native layout)."""

    def __init__(self, model):
        super().__init__()
        gen = model.generator
        widths = generator_widths(model.image_size, gen.base_filters, gen.max_filters)
        self.width0, bias = widths[0], not gen.batch_norm
        self.dense = gen.projection == "dense"
        self.project = (nn.Linear(model.latent_dim, 16 * widths[0], bias=bias) if self.dense
                        else nn.ConvTranspose2d(model.latent_dim, widths[0], 4, 1, 0, bias=bias))
        layers = [_bn(widths[0])] if gen.batch_norm else []
        layers.append(_act(gen.activation, gen.negative_slope))
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [_up(c_in, c_out, gen.kernel_size, bias)] + ([_bn(c_out)] if gen.batch_norm else [])
            layers.append(_act(gen.activation, gen.negative_slope))
        layers += [_up(widths[-1], model.channels, gen.kernel_size, True), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z):
        x = self.project(z).view(-1, self.width0, 4, 4) if self.dense else self.project(z[:, :, None, None])
        return self.body(x)


class Discriminator(nn.Module):
    """images (B, C, S, S) -> logits (B, 1)."""

    def __init__(self, model):
        super().__init__()
        disc = model.discriminator
        widths = discriminator_widths(disc.num_layers, disc.base_filters, disc.max_filters)
        kernels = [disc.first_kernel_size or disc.kernel_size] + [disc.kernel_size] * (disc.num_layers - 1)
        layers, c_in, size = [], model.channels, model.image_size
        for i, (width, stride) in enumerate(zip(widths, layer_strides(disc.strides, disc.num_layers))):
            norm = disc.batch_norm and i > 0
            pad = _same_padding(kernels[i]) if stride == 2 else "same"
            layers.append(nn.Conv2d(c_in, width, kernels[i], stride, padding=pad, bias=not norm))
            layers += ([_bn(width)] if norm else []) + [_act(disc.activation, disc.negative_slope)]
            layers += [nn.Dropout(disc.dropout)] if disc.dropout else []
            c_in, size = width, size // stride
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.logit = nn.Linear(c_in * size * size, 1)

    def forward(self, x):
        return self.logit(self.body(x))


def init_weights(module: nn.Module, std: float) -> None:
    """N(0, std) weights, zero biases, BN gammas N(1, std) (DCGAN)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def make_step(config, generator, discriminator):
    """A function ``step(real) -> (d_loss, g_loss)`` doing one D and one G update."""
    train, latent_dim = config.train, config.model.latent_dim
    uniform = config.model.latent_distribution == "uniform"
    flips = [op for op in train.augment.ops if op in ("hflip", "vflip")]
    p = train.augment.p
    real_label = train.real_label if isinstance(train.real_label, float) else max(train.real_label)
    g_opt = torch.optim.Adam(generator.parameters(), lr=train.generator_optimizer.learning_rate,
                             betas=(train.generator_optimizer.beta_1, train.generator_optimizer.beta_2),
                             eps=train.generator_optimizer.epsilon)
    d_opt = torch.optim.Adam(discriminator.parameters(), lr=train.discriminator_optimizer.learning_rate,
                             betas=(train.discriminator_optimizer.beta_1, train.discriminator_optimizer.beta_2),
                             eps=train.discriminator_optimizer.epsilon)
    bce = nn.BCEWithLogitsLoss()

    def latent(batch):
        return torch.rand(batch, latent_dim) * 2 - 1 if uniform else torch.randn(batch, latent_dim)

    def augment(x):
        for op in flips:
            flip = (torch.rand(x.shape[0], 1, 1, 1) < p)
            x = torch.where(flip, torch.flip(x, dims=[3 if op == "hflip" else 2]), x)
        return x

    def step(real):
        batch = real.shape[0]
        with torch.no_grad():
            fake = generator(latent(batch))
        real_logits, fake_logits = discriminator(augment(real)), discriminator(augment(fake))
        d_loss = (bce(real_logits, torch.full_like(real_logits, real_label))
                  + bce(fake_logits, torch.zeros_like(fake_logits)))
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()
        discriminator.requires_grad_(False)  # as ours: no D weight gradients in the G update
        logits = discriminator(augment(generator(latent(batch))))
        g_loss = bce(logits, torch.ones_like(logits))
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        g_opt.step()
        discriminator.requires_grad_(True)
        return d_loss, g_loss

    return step


def time_steps(step, data, warmup: int, steps: int) -> tuple[float, tuple]:
    """``(seconds of `steps` calls of step(data) after `warmup` untimed ones, the last result)``."""
    for _ in range(warmup):
        step(data)
    start = time.perf_counter()
    for _ in range(steps):
        result = step(data)
    return time.perf_counter() - start, result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="fridadar64")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    parser.add_argument("--check-params", action="store_true",
                        help="build our TF models too and assert equal trainable parameter counts")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_preset(args.preset, args.batch)
    model = config.model
    if model.family != "dcgan":
        raise SystemExit(f"torch peer: family {model.family!r} not implemented (dcgan only)")
    torch.manual_seed(0)
    generator, discriminator = Generator(model), Discriminator(model)
    init_weights(generator, model.init_std)
    init_weights(discriminator, model.init_std)
    counts = {"generator": count(generator), "discriminator": count(discriminator)}
    if args.check_params:  # our counts from a separate process (no TensorFlow in this one)
        code = ("import json, sys; from benchmarks.presets import load_preset, trainable_counts; "
                f"print(json.dumps(trainable_counts(load_preset({args.preset!r}, 2).model)))")
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
        ours = json.loads(out.stdout.strip().splitlines()[-1])
        assert ours == counts, f"parameter counts differ: tf {ours} vs torch {counts}"
    step = make_step(config, generator, discriminator)
    real = torch.rand(args.batch, model.channels, model.image_size, model.image_size) * 2 - 1
    seconds, (d_loss, g_loss) = time_steps(step, real, args.warmup, args.steps)
    print(json.dumps({"impl": "torch_eager", "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "preset": args.preset, "batch": args.batch, "steps": args.steps,
                      "seconds": round(seconds, 3), "images_per_second": float(f"{args.batch * args.steps / seconds:.4g}"),
                      "params": counts, "final_d_loss": round(float(d_loss), 4),
                      "final_g_loss": round(float(g_loss), 4)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
