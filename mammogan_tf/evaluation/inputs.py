"""Image sets to evaluate: the shards of a prepare/synthesize manifest, or a folder of images.

``load_image_set(source, ...)`` returns an :class:`ImageSet`: images ``(N, S, S, 1)`` float32 in
[-1, 1] (the package's network convention), one id and one lesion type (None for a folder) per
image, and a digest of the source that cache keys and reports use. Per image it also keeps the
shard ``copy_index`` (0 = a lesion's original patch, always 0 for folders and older shards) and
the lesion type its synthetic provenance names (the ``class`` of ``synthesis.export.provenance``
in a shard record, a PNG text chunk or a DICOM private block; None when there is none).

* ``source`` is a manifest (``manifest.json`` or its folder) with ``"splits"``: the records of the
  chosen split(s) are read through ``mammogan_tf.data.make_dataset`` in file order.
* otherwise ``source`` is a folder: every ``.png``, ``.dcm``, ``.dicom`` under it (recursively,
  sorted by path) is read with the one image reader ``mammogan_tf.data.images.read_image``.
  All images must share one size unless ``size`` is given.

``size`` resizes every image to ``size x size`` with :func:`resize_images` (PIL bicubic on
float32, antialiased when shrinking), the same filter the feature backbones use.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from mammogan_tf.errors import InputError
from mammogan_tf.manifest import MANIFEST_NAME, read_manifest, sha256_file

IMAGE_SUFFIXES = (".png", ".dcm", ".dicom")
NORMAL = "normal"
UNNAMED = "other"
"""Provenance class of an unconditional generator trained on several lesion types
(``synthesis.sampling.LoadedGenerator.class_name``): it names no one type."""


@dataclass
class ImageSet:
    """Images ``(N, S, S, 1)`` float32 in [-1, 1] with ids, lesion types and their source."""

    images: np.ndarray
    ids: list[str]
    lesion_types: list[str | None]
    source: str
    digest: str
    kind: str  # "shards" or "folder"
    split: str | None = None
    extra: dict = field(default_factory=dict)
    copy_index: list[int] | None = None
    named_types: list[str | None] | None = None

    def __post_init__(self) -> None:
        n = len(self.ids)
        self.copy_index = [0] * n if self.copy_index is None else [int(c) for c in self.copy_index]
        self.named_types = [None] * n if self.named_types is None else list(self.named_types)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> int:
        """Side of the (square) images in pixels."""
        return int(self.images.shape[1])

    def subset(self, keep) -> "ImageSet":
        """The images at indices (or where a boolean mask is true) ``keep``, same source."""
        keep = np.asarray(keep)
        index = np.flatnonzero(keep) if keep.dtype == bool else keep.astype(np.int64)
        return ImageSet(self.images[index], [self.ids[i] for i in index],
                        [self.lesion_types[i] for i in index], self.source, self.digest, self.kind,
                        self.split, dict(self.extra), [self.copy_index[i] for i in index],
                        [self.named_types[i] for i in index])

    def where_lesion(self, lesion_types: Sequence[str] | None = None) -> np.ndarray:
        """(N,) bool: a lesion (any type but normal, or one of ``lesion_types``); unlabelled
        images (folders) always count as lesions."""
        wanted = set(lesion_types) if lesion_types else None
        return np.array([t is None or (t in wanted if wanted else t != NORMAL) for t in self.lesion_types],
                        dtype=bool)

    def where_original(self) -> np.ndarray:
        """(N,) bool: a lesion's original patch (``copy_index`` 0), not one of its augmented
        copies; normal-tissue patches and folder images always count as originals."""
        return np.array([c == 0 for c in self.copy_index], dtype=bool)

    def provenance_lesion_types(self) -> list[str] | None:
        """The lesion types the images' provenance names, sorted; None when some image names
        none or names ``other`` (an unconditional generator trained on several types)."""
        named = set(self.named_types)
        if not named or None in named or UNNAMED in named:
            return None
        return sorted(named)

    def where_normal(self) -> np.ndarray:
        """(N,) bool: labelled normal tissue."""
        return np.array([t == NORMAL for t in self.lesion_types], dtype=bool)

    def record(self) -> dict:
        """JSON-able description for reports: source, kind, split, digest, count."""
        return {"source": self.source, "kind": self.kind, "split": self.split, "digest": self.digest,
                "count": len(self)}


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Resize ``(N, H, W, 1)`` float32 images to ``(N, size, size, 1)``: PIL bicubic in float32
    mode (antialiased when shrinking), no quantisation; unchanged when already that size."""
    from PIL import Image

    images = np.asarray(images, dtype=np.float32)
    if images.shape[1:3] == (size, size):
        return images
    out = np.empty((images.shape[0], size, size, 1), dtype=np.float32)
    for i, image in enumerate(images[..., 0]):
        out[i, ..., 0] = np.asarray(Image.fromarray(image, mode="F").resize((size, size), Image.BICUBIC))
    return out


def manifest_path(source: str | os.PathLike) -> Path | None:
    """The ``manifest.json`` that ``source`` names (the file or its folder), else None."""
    source = Path(source)
    if source.is_file() and source.name == MANIFEST_NAME:
        return source
    if source.is_dir() and (source / MANIFEST_NAME).is_file():
        return source / MANIFEST_NAME
    return None


def _split_names(manifest: dict, split: str | Sequence[str] | None) -> list[str]:
    """The requested split names; None = every split the manifest lists."""
    if split is None:
        return sorted(manifest.get("splits", {}))
    return [split] if isinstance(split, str) else list(split)


def _named_type(record: dict) -> str | None:
    """The lesion type a provenance dict names (its ``class``), or None."""
    name = record.get("class") if isinstance(record, dict) else None
    return str(name) if name else None


def _shard_provenance(text: bytes) -> str | None:
    try:
        return _named_type(json.loads(text)) if text else None
    except ValueError:
        return None


def _load_shards(path: Path, split, progress: bool) -> tuple[np.ndarray, list[str], list[str], str, dict]:
    """Images, ids, lesion types, split names and ``{"copy_index", "named_types"}`` of a manifest."""
    from mammogan_tf.data import make_dataset

    manifest = read_manifest(path)
    names = _split_names(manifest, split)
    if not names:
        raise InputError(f"{path}: the manifest lists no shard splits")
    images, ids, types, copies, named = [], [], [], [], []
    bar = tqdm(desc=f"reading {path.parent.name}", unit="img", disable=not progress, leave=False)
    for batch in make_dataset(path, names, batch_size=256, shuffle=False, as_dict=True):
        images.append(batch["image"].numpy())
        for image_id, lesion_type in zip(batch["image_id"].numpy(), batch["lesion_type"].numpy()):
            ids.append(f"{image_id.decode()}#{len(ids)}")
            types.append(lesion_type.decode())
        copies += [int(c) for c in batch["copy_index"].numpy()]
        named += [_shard_provenance(p) for p in batch["provenance"].numpy()]
        bar.update(len(batch["image"]))
    bar.close()
    if not images:
        raise InputError(f"{path}: split(s) {', '.join(names)} hold no images")
    return (np.concatenate(images).astype(np.float32), ids, types, ",".join(names),
            {"copy_index": copies, "named_types": named})


def list_image_files(folder: str | os.PathLike) -> list[Path]:
    """Every PNG/DICOM file under ``folder`` (recursive), sorted by path."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def file_provenance_type(path: Path) -> str | None:
    """The lesion type named by the provenance of a PNG or DICOM written by ``mammogan
    synthesize`` (``synthesis.export``), or None when the file carries none."""
    from mammogan_tf.synthesis.export import read_dicom_provenance, read_png_provenance

    try:
        if path.suffix.lower() == ".png":
            return _named_type(read_png_provenance(path))
        import pydicom

        return _named_type(read_dicom_provenance(pydicom.dcmread(path, stop_before_pixels=True)))
    except Exception:  # noqa: BLE001 - a file without readable provenance names no lesion type
        return None


def _load_folder(folder: Path, size: int | None, progress: bool) -> tuple[np.ndarray, list[str], str, list]:
    from mammogan_tf.data.images import read_image

    files = list_image_files(folder)
    if not files:
        raise InputError(f"{folder}: no PNG or DICOM images here (looked for {', '.join(IMAGE_SUFFIXES)})")
    images, digest = [], hashlib.sha256()
    for path in tqdm(files, desc=f"reading {folder.name}", unit="img", disable=not progress, leave=False):
        pixels, _ = read_image(path, allow_constant=True)
        if size is not None:
            pixels = resize_images(pixels[None, :, :, None], size)[0, ..., 0]
        images.append(pixels)
        digest.update(f"{path.relative_to(folder)}:{sha256_file(path)}\n".encode())
    odd = next((i for i, image in enumerate(images) if image.shape != images[0].shape), None)
    if odd is not None:
        raise InputError(f"{files[odd]}: size {images[odd].shape} differs from {files[0].name} "
                         f"{images[0].shape}; pass --size to resize every image to one size")
    if images[0].shape[0] != images[0].shape[1]:
        raise InputError(f"{files[0]}: patches must be square, got {images[0].shape}; pass --size")
    stack = np.stack(images).astype(np.float32)[..., None] * 2.0 - 1.0
    named = [file_provenance_type(path) for path in files]
    return stack, [str(p.relative_to(folder)) for p in files], digest.hexdigest(), named


def load_image_set(source: str | os.PathLike, split: str | Sequence[str] | None = None,
                   size: int | None = None, limit: int | None = None, seed: int = 0,
                   progress: bool = True) -> ImageSet:
    """Read an evaluation set from a shard manifest (``split``: one, several, or None = all) or
    a folder of PNG/DICOM patches. ``limit`` keeps a seeded random subset of that many images
    (in their original order); ``size`` resizes every image to ``size x size``."""
    source = Path(source)
    manifest = manifest_path(source)
    if manifest is not None and "splits" in read_manifest(manifest):
        images, ids, types, split_name, per_image = _load_shards(manifest, split, progress)
        if size is not None:
            images = resize_images(images, size)
        image_set = ImageSet(images, ids, types, str(manifest.parent.resolve()), sha256_file(manifest),
                             "shards", split_name, **per_image)
    elif source.is_dir():
        images, ids, digest, named = _load_folder(source, size, progress)
        image_set = ImageSet(images, ids, [None] * len(ids), str(source.resolve()), digest, "folder",
                             named_types=named)
    else:
        raise InputError(f"{source}: neither a folder of images nor a manifest with shard splits")
    if limit is not None and limit < len(image_set):
        keep = np.sort(np.random.default_rng(seed).choice(len(image_set), int(limit), replace=False))
        image_set = image_set.subset(keep)
    return image_set
