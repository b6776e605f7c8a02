"""PyTorch (eager) reference of our contextual GAN presets (Wu et al., MIDL 2020): same networks, same step.

    python benchmarks/peers/torch_contextual.py --preset contextual128 --batch 4 --steps 2 --warmup 1 \
        [--check-params] [--set model.discriminator.base_filters=8 ...]
    python benchmarks/compare_torch.py --preset contextual128 --batch 4 --runs 3 --steps 2 --warmup 1

Paper scale is heavy on a CPU: the discriminator (128 -> 4096 filters, a 3x3 conv of about
9.7 GFLOP per image at every level) costs ~48 GFLOP per image forward and a step ~22 of those
(~1.1 TFLOP per image), so batch 4 with 1 warmup and 2 timed steps takes 2-7 minutes per run and
side on the shared 2-core dev machine (contextual256: --batch 2 --steps 1).

Built from the ``model:`` section of the same experiment YAML (``--set`` overrides as in
``gan_step_throughput.py``), layer for layer as ``mammogan_tf.models.contextual`` /
``contextual_blocks`` / ``attention``: the U-Net generator (per level ``concat(x, scalar) ->
3x3 stride-2 conv -> LeakyReLU``, a random scalar U[-1, 1] per block and example, SAGAN
self-attention at ``attention_resolution``, the centre 3x3 conv -> flatten -> dense to
``embedding_dim`` -> nearest expansion, decoder ``concat(x, skip, scalar) -> nearest 2x ->
(3x3 conv -> ReLU) x 2`` with attention, a 1x1 conv to the lesion, border crop, clips) and the
discriminator (the encoder with ``3x3 conv -> LeakyReLU -> 2x2 max-pool`` levels, attention,
flatten, dense to 4 logits). Every progressive layer exists (the 1x1 "from image" / "to
lesion" S/2 layers with ``progressive.enabled``, the S layers always), so the trainable
parameter counts equal ours; ``--check-params`` asserts that against our TF build, run in a
subprocess (TensorFlow and torch must not share a process). Spectral norm on every conv and
dense layer: ``torch.nn.utils.parametrizations.spectral_norm`` (one power iteration per
training-mode forward, as Keras' ``SpectralNormalization``).

Stage: the one the preset times in ``gan_step_throughput.py`` (``presets.PRESET_OVERRIDES``):
``contextual128`` = progressive growing on, step < ``stage_steps``: every batch is 2x2
average-pooled to S/2 = 128 px and both networks run their S/2 path; ``contextual256`` =
progressive off: the 256 px layers only. (During the fade both paths run, blended by alpha.)

One step, as ``training.families.contextual`` under ``Trainer.train_step``: ``d_steps`` D updates,
each: G forward on the source (normal) batch, D on four batches (lesion = real, fake, benign,
normal), softmax cross-entropy against classes 0..3 with the benign and normal terms weighted
``loss.aux_weights``, plus ``lambda * mean((||grad_x D(x + delta)|| - k)^2)`` with ``delta =
scale * U(0, 1)`` per pixel on the real batch and D the log-odds ``logit_real - logit_fake``
(a double backward), Adam update of D; then ``g_steps`` G updates: G forward on a source batch,
D on the combined image, ``-log softmax(D)_real``, Adam update of G (no D weight gradients).
Data are random images in memory; ``images_per_second`` counts B * d_steps per step, as ours.

Differences from ours that remain (cost-neutral or nearly): the stride-2 3x3 convs pad 1 on
each side (TF "same" pads 0 before, 1 after: same shape and FLOPs); channels-first layout;
PyTorch's spectral norm divides by sigma inside autograd (its backward goes through sigma),
while Keras overwrites the kernel with ``kernel / sigma`` and differentiates the kernel alone.
Needs the optional dependency ``torch`` (``pip install .[bench]``). Prints one JSON object on
the last line.
"""
from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.peers.torch_dcgan import count, time_steps  # noqa: E402
from benchmarks.presets import PRESETS, load_preset  # noqa: E402
from mammogan_tf.models.contextual_config import attention_level, level_widths, num_levels  # noqa: E402

REAL, FAKE, BENIGN, NORMAL = range(4)
ROLES = {"add": {"source": "normal", "real": "lesion", "benign": "benign", "negative": "normal"},
         "remove": {"source": "lesion", "real": "normal", "benign": "benign", "negative": "lesion"}}


def _normed(layer: nn.Module, std: float, sn: bool) -> nn.Module:
    """N(0, std) weight, zero bias (Keras' DCGAN initialiser), optionally spectrally normalised."""
    nn.init.normal_(layer.weight, 0.0, std)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return spectral_norm(layer) if sn else layer


def conv(c_in: int, c_out: int, kernel: int, stride: int = 1, bias: bool = True, *, std: float, sn: bool):
    """``kernel`` x ``kernel`` conv, "same" size (stride 2: H -> H/2)."""
    return _normed(nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=bias), std, sn)


def with_scalar(x, scalar):
    """``(B, C, H, W)``, ``(B,)`` -> ``(B, C + 1, H, W)``: the scalar broadcast as a channel."""
    return torch.cat([x, scalar.view(-1, 1, 1, 1).expand(-1, 1, x.shape[2], x.shape[3])], 1)


def upsample2(x):
    return F.interpolate(x, scale_factor=2, mode="nearest")


def fade(low, high, mode: str, alpha):
    if mode in ("low", "half"):
        return low
    return high if mode == "high" else low + alpha * (high - low)


def resolve_fade(size: int, image_size: int, progressive: bool, alpha) -> str:
    """The fade mode of ``contextual_blocks.resolve_fade`` (alpha None: high; a tensor: blend)."""
    if progressive and size == image_size // 2:
        return "half"
    if size != image_size:
        raise ValueError(f"contextual peer: input side {size}, expected {image_size}")
    return "high" if not progressive or alpha is None else "blend"


@functools.lru_cache(maxsize=None)
def border_mask(size: int, border: int):
    """``(1, 1, size, size)``: 0 on a ``border``-px frame, 1 inside."""
    mask = torch.zeros(1, 1, size, size)
    mask[..., border:size - border, border:size - border] = 1.0
    return mask


class SelfAttention(nn.Module):
    """SAGAN block as ``models.attention.SelfAttention``: 1x1 convs C -> C/8 (q, k), C -> C/2 (v),
    C/2 -> C (out), no biases, ``x + gamma * out(softmax(q^T k) v)``, gamma from 0."""

    def __init__(self, channels: int, std: float, sn: bool):
        super().__init__()
        keys, values = max(1, channels // 8), max(1, channels // 2)
        self.query, self.key = (conv(channels, keys, 1, bias=False, std=std, sn=sn) for _ in range(2))
        self.value = conv(channels, values, 1, bias=False, std=std, sn=sn)
        self.out = conv(values, channels, 1, bias=False, std=std, sn=sn)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        batch, _, height, width = x.shape
        queries, keys, values = (f(x).flatten(2) for f in (self.query, self.key, self.value))  # (B, c, N)
        attention = torch.softmax(queries.transpose(1, 2) @ keys, dim=-1)  # (B, N, N)
        attended = (values @ attention.transpose(1, 2)).view(batch, -1, height, width)
        return x + self.gamma * self.out(attended)


class EncoderBlock(nn.Module):
    """``[concat scalar] -> 3x3 conv (stride 2, or stride 1 + 2x2 max-pool) -> LeakyReLU``."""

    def __init__(self, c_in: int, c_out: int, maxpool: bool, slope: float, std: float, sn: bool):
        super().__init__()
        self.conv = conv(c_in, c_out, 3, 1 if maxpool else 2, std=std, sn=sn)
        self.slope, self.maxpool = slope, maxpool

    def forward(self, x, scalar=None):
        x = F.leaky_relu(self.conv(x if scalar is None else with_scalar(x, scalar)), self.slope)
        return F.max_pool2d(x, 2) if self.maxpool else x


class Encoder(nn.Module):
    """``contextual_blocks.ContextualEncoder``: image -> features of levels 1..n (channels first)."""

    def __init__(self, widths: list[int], maxpool: bool, scalars: bool, attention: int, progressive: bool,
                 slope: float, std: float, sn: bool):
        super().__init__()
        extra, channels = int(scalars), [1] + list(widths)
        self.blocks = nn.ModuleList(EncoderBlock(channels[i] + extra, channels[i + 1], maxpool, slope, std, sn)
                                    for i in range(len(widths)))
        self.from_image = conv(1, widths[0], 1, std=std, sn=sn) if progressive else None
        self.attention = SelfAttention(widths[attention - 1], std, sn) if attention else None
        self.attention_level, self.scalars, self.slope = attention, scalars, slope

    def forward(self, images, scalars=None, mode: str = "high", alpha=None):
        def scalar(i):
            return scalars[:, i] if self.scalars else None

        high = self.blocks[0](images, scalar(0)) if mode in ("high", "blend") else None
        low = None
        if mode != "high":
            small = images if mode == "half" else F.avg_pool2d(images, 2)
            low = F.leaky_relu(self.from_image(small), self.slope)
        x = fade(low, high, mode, alpha)
        features = [x]
        for level in range(2, len(self.blocks) + 1):
            if level - 1 == self.attention_level:
                features[-1] = x = self.attention(x)
            x = self.blocks[level - 1](x, scalar(level - 1))
            features.append(x)
        if len(self.blocks) == self.attention_level:
            features[-1] = self.attention(x)
        return features


class DecoderBlock(nn.Module):
    """``concat(x, skip, scalar) -> nearest 2x -> (3x3 conv -> ReLU) x 2``."""

    def __init__(self, c_in: int, c_out: int, std: float, sn: bool):
        super().__init__()
        self.conv1 = conv(c_in, c_out, 3, std=std, sn=sn)
        self.conv2 = conv(c_out, c_out, 3, std=std, sn=sn)

    def forward(self, x, skip, scalar):
        x = upsample2(with_scalar(torch.cat([x, skip], 1), scalar))
        return F.relu(self.conv2(F.relu(self.conv1(x))))


class Generator(nn.Module):
    """Context ``(B, 1, s, s)`` + scalars ``(B, 2n)`` -> ``(B, 3, s, s)`` [lesion, input, combined]."""

    def __init__(self, model):
        super().__init__()
        gen, std, progressive = model.generator, model.init_std, model.progressive.enabled
        sn, centre = gen.spectral_norm, model.center_resolution
        n = num_levels(model.image_size, centre)
        widths = level_widths(n, gen.base_filters, gen.max_filters)
        self.levels, self.noise_dim, self.image_size, self.progressive = n, 2 * n, model.image_size, progressive
        self.attention_level = attention_level(model.image_size, model.attention_resolution)
        self.slope = gen.negative_slope
        self.embedding_dim, self.centre, self.border_crop = gen.embedding_dim, centre, model.border_crop
        self.encoder = Encoder(widths, False, True, self.attention_level, progressive, gen.negative_slope, std, sn)
        self.center = conv(widths[-1], gen.center_filters, 3, std=std, sn=sn)
        self.compress = _normed(nn.Linear(centre * centre * gen.center_filters, gen.embedding_dim), std, sn)
        inputs = [2 * widths[i] + 1 for i in range(n - 1)] + [gen.embedding_dim + widths[-1] + 1]
        self.decoder = nn.ModuleList(DecoderBlock(inputs[i], widths[max(i - 1, 0)], std, sn) for i in range(n))
        self.decoder_attention = (SelfAttention(widths[self.attention_level - 1], std, sn)
                                  if self.attention_level else None)
        self.to_lesion = conv(widths[0], 1, 1, std=std, sn=sn)
        self.to_lesion_low = conv(widths[0], 1, 1, std=std, sn=sn) if progressive else None

    def forward(self, inputs, noise, alpha=None):
        images, n = inputs.clamp(-1.0, 1.0), self.levels
        side = images.shape[-1]
        mode = resolve_fade(side, self.image_size, self.progressive, alpha)
        features = self.encoder(images, noise[:, :n], mode, alpha)
        x = F.leaky_relu(self.center(features[-1]), self.slope)
        embedding = self.compress(x.flatten(1)).view(-1, self.embedding_dim, 1, 1)
        x = F.interpolate(embedding, scale_factor=self.centre, mode="nearest")
        for i in range(n - 1, 0, -1):
            x = self.decoder[i](x, features[i], noise[:, n + i])
            if i == self.attention_level:
                x = self.decoder_attention(x)
        low = high = None
        if mode != "high":
            low = self.to_lesion_low(x)
            low = low if mode == "half" else upsample2(low)
        if mode in ("high", "blend"):
            high = self.to_lesion(self.decoder[0](x, features[0], noise[:, n]))
        lesion = fade(low, high, mode, alpha) * border_mask(side, self.border_crop * side // self.image_size)
        lesion = lesion.clamp(-1.0, 1.0)
        return torch.cat([lesion, images, (images + lesion).clamp(-1.0, 1.0)], 1)


class Discriminator(nn.Module):
    """``(B, 1, s, s)`` -> ``(B, 4)`` logits of [real, fake, benign, normal]."""

    def __init__(self, model):
        super().__init__()
        disc, std = model.discriminator, model.init_std
        n = num_levels(model.image_size, model.center_resolution)
        widths = level_widths(n, disc.base_filters, disc.max_filters)
        level = attention_level(model.image_size, model.attention_resolution)
        self.image_size, self.progressive = model.image_size, model.progressive.enabled
        self.encoder = Encoder(widths, True, False, level, self.progressive, disc.negative_slope, std,
                               disc.spectral_norm)
        features = model.center_resolution ** 2 * widths[-1]
        self.head = _normed(nn.Linear(features, 4), std, disc.spectral_norm)

    def forward(self, images, alpha=None):
        mode = resolve_fade(images.shape[-1], self.image_size, self.progressive, alpha)
        return self.head(self.encoder(images, None, mode, alpha)[-1].flatten(1))


def stage(model, step: int) -> int:
    """0: S/2 stage, 1: fade, 2: full size (``ContextualFamily.stage``)."""
    progressive = model.progressive
    if not progressive.enabled:
        return 2
    return 0 if step < progressive.stage_steps else 1 if step < progressive.stage_steps + progressive.fade_steps else 2


def _adam(params, settings):
    return torch.optim.Adam(params, lr=settings.learning_rate, betas=(settings.beta_1, settings.beta_2),
                            eps=settings.epsilon)


def make_step(config, generator: Generator, discriminator: Discriminator, step_stage: int, alpha: float = 1.0):
    """``step(batch) -> (d_loss, g_loss)``: ``d_steps`` D then ``g_steps`` G updates at ``step_stage``;
    ``batch``: ``{stream: (B, 1, S, S)}`` (the same batch is reused by every update, as
    ``RandomBatches`` does for ours)."""
    model, train = config.model, config.train
    loss, roles = model.loss, ROLES[model.mode]
    d_opt = _adam(discriminator.parameters(), train.discriminator_optimizer)
    g_opt = _adam(generator.parameters(), train.generator_optimizer)
    weights = (1.0, 1.0, *loss.aux_weights)
    fade_alpha = torch.tensor(alpha) if step_stage == 1 else None

    def images(batch, role):
        x = batch[roles[role]]
        return F.avg_pool2d(x, 2) if step_stage == 0 else x

    def fake(batch):
        source = images(batch, "source")
        noise = torch.rand(source.shape[0], generator.noise_dim) * 2 - 1
        return generator(source, noise, fade_alpha)

    def d_update(batch):
        with torch.no_grad():
            fakes = fake(batch)[:, 2:3]
        inputs = [images(batch, "real"), fakes, images(batch, "benign"), images(batch, "negative")]
        total = sum(w * F.cross_entropy(discriminator(x, fade_alpha), torch.full((x.shape[0],), label))
                    for label, (w, x) in enumerate(zip(weights, inputs)))
        if loss.penalty_weight:
            perturbed = (inputs[0] + loss.penalty_scale * torch.rand_like(inputs[0])).requires_grad_(True)
            logits = discriminator(perturbed, fade_alpha)
            (grad,) = torch.autograd.grad((logits[:, REAL] - logits[:, FAKE]).sum(), perturbed, create_graph=True)
            norm = torch.sqrt(grad.square().flatten(1).sum(1) + 1e-12)
            total = total + loss.penalty_weight * (norm - loss.penalty_k).square().mean()
        d_opt.zero_grad(set_to_none=True)
        total.backward()
        d_opt.step()
        return total.detach()

    def g_update(batch):
        discriminator.requires_grad_(False)  # as ours: no D weight gradients in the G update
        logits = discriminator(fake(batch)[:, 2:3], fade_alpha)
        total = F.cross_entropy(logits, torch.full((logits.shape[0],), REAL))
        g_opt.zero_grad(set_to_none=True)
        total.backward()
        g_opt.step()
        discriminator.requires_grad_(True)
        return total.detach()

    def step(batch):
        d_losses = [d_update(batch) for _ in range(train.d_steps)]
        g_losses = [g_update(batch) for _ in range(train.g_steps)]
        return sum(d_losses) / len(d_losses), sum(g_losses) / len(g_losses)

    return step


def our_counts(preset: str, overrides: list[str]) -> dict:
    """Trainable parameter counts of our TF networks, from a subprocess (no TF in this process)."""
    code = ("import json; from benchmarks.presets import load_preset; "
            "from mammogan_tf.models.registry import build_networks; "
            f"nets = build_networks(load_preset({preset!r}, 2, {overrides!r}).model); "
            "print(json.dumps({k: int(sum(v.numpy().size for v in m.trainable_variables)) for k, m in nets.items()}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"our parameter count failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(p for p in PRESETS if p.startswith("contextual")),
                        default="contextual128")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--check-params", action="store_true",
                        help="build our TF models too (subprocess) and assert equal trainable parameter counts")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_preset(args.preset, args.batch, args.set)
    assert "tensorflow" not in sys.modules, "TensorFlow was imported into the torch peer"
    model = config.model
    torch.manual_seed(0)
    generator, discriminator = Generator(model), Discriminator(model)
    counts = {"generator": count(generator), "discriminator": count(discriminator)}
    if args.check_params:
        ours = our_counts(args.preset, args.set)
        if ours != counts:
            raise SystemExit(f"parameter counts differ: tf {ours} vs torch {counts}")
    last = args.warmup + args.steps - 1
    step_stage = stage(model, last)
    progressive = model.progressive
    alpha = min(max((last - progressive.stage_steps) / progressive.fade_steps, 0.0), 1.0)
    step = make_step(config, generator, discriminator, step_stage, alpha)
    size = model.image_size
    batch = {name: torch.rand(args.batch, 1, size, size) * 2 - 1 for name in ("lesion", "benign", "normal")}
    seconds, (d_loss, g_loss) = time_steps(step, batch, args.warmup, args.steps)
    images = args.batch * args.steps * config.train.d_steps
    print(json.dumps({"impl": "torch_eager", "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "preset": args.preset, "stage": step_stage, "image_size": size // 2 if step_stage == 0 else size,
                      "batch": args.batch, "steps": args.steps, "seconds": round(seconds, 3),
                      "images_per_second": float(f"{images / seconds:.4g}"), "params": counts,
                      "params_checked": args.check_params, "final_d_loss": round(float(d_loss), 4),
                      "final_g_loss": round(float(g_loss), 4)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
