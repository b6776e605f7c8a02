"""Contextual synthesis (Wu et al.): real source patches -> the generator -> post-processed patches.

Sources (``read_sources``): the patches of one split of a ``mammogan prepare`` (or study subset) manifest (mode
``add``: its ``normal`` patches; ``remove``: its patches of the run's ``lesion_type``), in the
manifest's shard order, or the ``*.png`` files of a folder (sorted by name; grey, 8 or 16 bit,
already ``image_size`` square). Source ``i`` is the ``i``-th of that order; its patch id is
``<shard file>#<record index in the shard>`` (or the PNG file name).

Image ``i`` (``contextual_noise``): the generator's random scalars are drawn from
``numpy.random.default_rng([seed, i])`` (``noise_dim`` values uniform in [-1, 1]), so it
depends only on (checkpoint, seed, source i), never on the batching. The generator runs in
inference mode at full size (fade weight 1); its lesion channel is post-processed
(``postprocess.postprocess``: threshold 0.1 [removal: < -0.1], largest component, discarded
below 10 % of the patch, dilated 5 px, smoothed 10 px) and added to the source patch. A
discarded source (nothing left of the lesion) writes no patch: it is counted and listed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from mammogan_tf import __version__
from mammogan_tf.errors import ConfigError, InputError
from mammogan_tf.models.postprocess import (DILATE_PX, MIN_AREA_FRACTION, SMOOTH_PX, THRESHOLD, PostProcessed,
                                               mask_box, postprocess)


@dataclass
class Source:
    """One real source patch: ``pixels`` (S, S) float32 in [-1, 1] and where it came from
    (``origin`` (x0, y0, x1, y1) of the crop in image pixels, ``orientation`` (flip, k) that
    prepare applied to the crop; None when unknown)."""

    index: int
    pixels: np.ndarray
    patch_id: str
    image_id: str
    patient_id: str
    split: str | None
    origin: tuple[int, int, int, int] | None = None
    lesion_type: str = "normal"
    extra: dict = field(default_factory=dict)
    orientation: tuple[bool, int] | None = None


@dataclass
class SourceSet:
    """Where the sources come from: ``kind`` "prepare" (with its ``manifest``) or "png"."""

    kind: str
    path: Path
    split: str | None
    manifest: dict | None = None


def source_lesion_type(model_config) -> str:
    """Lesion type of the source patches: ``normal`` (add) or the run's lesion type (remove)."""
    return "normal" if model_config.mode == "add" else model_config.lesion_type


def output_lesion_type(model_config) -> str:
    """Lesion type of the outputs: the run's lesion type (add) or ``normal`` (remove)."""
    return model_config.lesion_type if model_config.mode == "add" else "normal"


def output_pathology(model_config) -> str:
    """Pathology of an output: the run's lesion pathology (add, when it names one), else unknown."""
    if model_config.mode == "add" and len(model_config.lesion_pathologies) == 1:
        return model_config.lesion_pathologies[0]
    return "unknown"


def open_sources(path: str | os.PathLike, split: str) -> SourceSet:
    """A prepare output folder (or its ``manifest.json``), or a folder of PNG patches."""
    from mammogan_tf.manifest import manifest_path, read_manifest

    path = Path(path)
    manifest_file = manifest_path(path)
    if manifest_file.is_file():
        manifest = read_manifest(manifest_file)
        if manifest.get("stage") not in ("prepare", "subset"):
            raise InputError(f"{manifest_file}: --from needs a `mammogan prepare` output or a study's "
                             f"subset (stage {manifest.get('stage')!r}), or a folder of PNG patches")
        if split not in manifest.get("splits", {}):
            raise InputError(f"{manifest_file}: no split '{split}' (has: {', '.join(sorted(manifest.get('splits', {})))});"
                             " choose one with --split")
        return SourceSet("prepare", manifest_file.parent, split, manifest)
    if path.is_dir() and any(path.glob("*.png")):
        return SourceSet("png", path, None)
    raise InputError(f"--from {path}: neither a prepare output (no manifest.json) nor a folder of *.png patches")


def read_sources(sources: SourceSet, lesion_type: str, size: int, n: int | None = None) -> Iterator[Source]:
    """Source patches in order (at most ``n``), each ``size`` x ``size``."""
    if sources.kind == "png":
        yield from _png_sources(sources.path, size, n)
    else:
        yield from _shard_sources(sources, lesion_type, size, n)


def _png_sources(folder: Path, size: int, n: int | None) -> Iterator[Source]:
    from mammogan_tf.data.images import read_image

    for index, path in enumerate(sorted(folder.glob("*.png"))[:n]):
        pixels, _ = read_image(path, allow_constant=True)
        if pixels.shape != (size, size):
            raise InputError(f"{path}: {pixels.shape[1]}x{pixels.shape[0]} px; the generator needs {size}x{size}")
        yield Source(index, pixels * 2.0 - 1.0, patch_id=path.name, image_id=path.stem, patient_id="unknown",
                     split=None)


def _shard_sources(sources: SourceSet, lesion_type: str, size: int, n: int | None) -> Iterator[Source]:
    import tensorflow as tf

    from mammogan_tf.data.shards import parse_example, split_files

    manifest, index = sources.manifest, 0
    if manifest.get("patch_size") not in (None, size):
        raise ConfigError(f"{sources.path}: {manifest['patch_size']} px patches; the generator needs {size} px "
                          f"(prepare contextual patches with patches.output_size {size})")
    for file in split_files(manifest, sources.split):
        for position, record in enumerate(tf.data.TFRecordDataset(file)):
            if n is not None and index >= n:
                return
            example = parse_example(record)
            if example["lesion_type"].numpy().decode() != lesion_type:
                continue
            origin = tuple(int(v) for v in example["origin"].numpy())
            flip, k = (int(v) for v in example["orientation"].numpy())
            yield Source(index, example["image"].numpy()[..., 0], patch_id=f"{Path(file).name}#{position}",
                         image_id=example["image_id"].numpy().decode(),
                         patient_id=example["patient_id"].numpy().decode(), split=sources.split,
                         origin=None if origin[0] == origin[2] == -1 else origin, lesion_type=lesion_type,
                         orientation=None if flip < 0 else (bool(flip), k),
                         extra={"pathology": example["pathology"].numpy().decode(),
                                "kind": example["kind"].numpy().decode()})
            index += 1


def contextual_noise(noise_dim: int, seed: int, index: int) -> np.ndarray:
    """The generator's random scalars of image ``index``: ``(noise_dim,)`` float32 in [-1, 1]."""
    return np.random.default_rng([int(seed), int(index)]).uniform(-1.0, 1.0, noise_dim).astype(np.float32)


def generate_contextual(generator, sources: list[Source], seed: int,
                        removal: bool) -> tuple[np.ndarray, list[PostProcessed]]:
    """A batch of sources through the generator: its raw outputs ``(B, S, S, 3)`` [lesion, input,
    combined] in [-1, 1], and their post-processing, one ``PostProcessed`` per source."""
    import tensorflow as tf

    images = tf.constant(np.stack([s.pixels for s in sources])[..., None].astype(np.float32))
    noise = tf.constant(np.stack([contextual_noise(generator.noise_dim, seed, s.index) for s in sources]))
    outputs = np.asarray(generator(images, noise=noise, alpha=None, training=False))
    return outputs, [postprocess(out[..., 0], source.pixels, removal=removal) for out, source in zip(outputs, sources)]


PREVIEW_ROWS = 16
"""Sources shown by ``--preview`` (the first ones read)."""


class Preview:
    """The ``--preview`` contact sheet: one row per source (the first ``PREVIEW_ROWS``) of four
    128 px tiles: the source patch, the raw lesion channel (mid-grey = 0, white = +1, black = -1),
    the raw combined patch (input + lesion) and what synthesis writes (the post-processed patch;
    captioned "discarded" when post-processing left no lesion and nothing was written)."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path is not None else None
        self.tiles: list[np.ndarray] = []
        self.captions: list[str] = []

    def add(self, source: Source, output: np.ndarray, result: PostProcessed) -> None:
        """``output`` (S, S, 3) [lesion, input, combined] in [-1, 1] of ``source``."""
        if self.path is None or len(self.tiles) >= 4 * PREVIEW_ROWS:
            return
        for plane, caption in ((source.pixels, f"source {source.index}"), (output[..., 0], "lesion channel"),
                               (output[..., 2], "input + lesion"),
                               (result.image, "written" if result.kept else "discarded")):
            self.tiles.append(np.rint(np.clip((plane + 1.0) / 2.0, 0.0, 1.0) * 255).astype(np.uint8))
            self.captions.append(caption)

    def write(self) -> Path | None:
        """Write the sheet (atomically: a temporary file renamed into place)."""
        if self.path is None:
            return None
        from mammogan_tf.evaluation.vtt import contact_sheet_png

        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".partial")
        temporary.write_bytes(contact_sheet_png(self.tiles, self.captions, ncols=4))
        os.replace(temporary, self.path)
        return self.path


def batches(items: Iterator, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def contextual_provenance(loaded, seed: int, source: Source, lesion_type: str, result: PostProcessed) -> dict:
    """Provenance of the synthetic patch made from ``source``: the generator, the seed and the
    source index (``contextual_noise(seed, index)`` regenerates its scalars), the source patch,
    image, patient, origin and split (downstream splits must keep it with that patient), and
    the box of the post-processed lesion in patch pixels."""
    model = loaded.model_config
    box = mask_box(result.mask)
    return {"synthetic": True, "package": "mammogan_tf", "package_version": __version__,
            "run": str(loaded.run_dir.resolve()), "checkpoint": Path(loaded.checkpoint).name,
            "checkpoint_step": loaded.step, "generator_sha256": loaded.sha256, "generator": loaded.sampler,
            "model_family": model.family, "mode": model.mode, "seed": int(seed), "latent_index": int(source.index),
            "source_index": int(source.index), "class": lesion_type, "class_index": None,
            "source_patch_id": source.patch_id, "source_image_id": source.image_id,
            "source_patient_id": source.patient_id, "source_split": source.split,
            "source_origin": list(source.origin) if source.origin else None,
            "postprocess": {"threshold": THRESHOLD, "removal": model.mode == "remove",
                            "min_area_fraction": MIN_AREA_FRACTION, "dilate_px": DILATE_PX, "smooth_px": SMOOTH_PX},
            "lesion_box": list(box) if box else None}
