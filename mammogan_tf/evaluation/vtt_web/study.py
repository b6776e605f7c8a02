"""A study folder as the web application sees it.

``STUDY_DIR/key.csv`` (image, truth), ``STUDY_DIR/observers/images/<image>`` and an optional
``STUDY_DIR/study.json`` (``seed`` and ``reading`` settings, see
``mammogan_tf.evaluation.vtt.DEFAULT_READING``). Every image is decoded once and re-encoded as
a bare PNG (IHDR, IDAT, IEND only: no text, time, gamma or ICC chunk) kept in memory, so what is
served never carries provenance and real and synthetic images take one and the same code path.
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mammogan_tf.errors import ConfigError, InputError
from mammogan_tf.evaluation.vtt import DEFAULT_READING, STUDY_FILE, read_key


@dataclass(frozen=True)
class ReadingSettings:
    """What a reader is asked. ``lesion_types``: choices offered (empty: not asked);
    ``time_limit_s``: the image is hidden after this many seconds (None: no limit)."""

    confidence: bool = False
    lesion_types: tuple[str, ...] = ()
    time_limit_s: float | None = None
    final_answers: bool = True

    def as_dict(self) -> dict:
        return {"confidence": self.confidence, "lesion_types": list(self.lesion_types),
                "time_limit_s": self.time_limit_s, "final_answers": self.final_answers}


@dataclass
class Study:
    """``key``: ``{image name: is_synthetic}``; ``png``: ``{image name: bare PNG bytes}``."""

    root: Path
    key: dict[str, bool]
    png: dict[str, bytes] = field(repr=False)
    seed: int
    settings: ReadingSettings

    @property
    def database(self) -> Path:
        return self.root / "vtt.sqlite3"

    @property
    def images_dir(self) -> Path:
        return self.root / "observers" / "images"

    def order(self, reader: str) -> list[str]:
        """This reader's image order: a permutation of the sorted image names seeded by the
        study seed and the reader's name (stable across restarts and devices)."""
        digest = int.from_bytes(hashlib.sha256(reader.encode("utf-8")).digest()[:8], "big")
        names = sorted(self.key)
        return [names[i] for i in np.random.default_rng([self.seed, digest]).permutation(len(names))]


def bare_png(path: Path) -> tuple[bytes, np.ndarray]:
    """Decode ``path`` and re-encode its pixels alone: ``(PNG bytes, (H, W) uint8/uint16 array)``."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.mode not in ("L", "I;16"):
                image = image.convert("L")
            pixels = np.array(image)
    except OSError as error:
        raise InputError(f"{path}: cannot read the image ({error})") from None
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue(), pixels


def _settings(study_file: Path, overrides: dict) -> tuple[int, ReadingSettings]:
    data = {}
    if study_file.exists():
        try:
            data = json.loads(study_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise InputError(f"{study_file}: not valid JSON ({error})") from None
    reading = {**DEFAULT_READING, **(data.get("reading") or {})}
    reading.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(reading) - set(DEFAULT_READING)
    if unknown:
        raise ConfigError(f"{study_file}: unknown reading setting {sorted(unknown)[0]!r} "
                          f"(known: {', '.join(DEFAULT_READING)})")
    limit = reading["time_limit_s"]
    if limit is not None and not (isinstance(limit, (int, float)) and limit > 0):
        raise ConfigError(f"{study_file}: reading.time_limit_s must be a positive number of seconds or null")
    types = tuple(str(t) for t in reading["lesion_types"] or ())
    seed = data.get("seed", 0)
    if not isinstance(seed, int):
        raise ConfigError(f"{study_file}: seed must be an integer")
    return seed, ReadingSettings(bool(reading["confidence"]), types, limit, bool(reading["final_answers"]))


def load_study(study_dir, **overrides) -> Study:
    """Load ``study_dir`` (see the module doc); ``overrides`` replace ``reading`` settings
    (None leaves one as it is). Raises ``InputError`` naming the missing or unreadable file."""
    root = Path(study_dir)
    key_path = root / "key.csv"
    if not key_path.is_file():
        raise InputError(f"{key_path}: no answer key; STUDY_DIR is the folder written by `mammogan vtt make`")
    key = read_key(key_path)
    seed, settings = _settings(root / STUDY_FILE, overrides)
    images_dir = root / "observers" / "images"
    png = {}
    for name in key:
        path = images_dir / name
        if Path(name).name != name or not path.is_file():
            raise InputError(f"{key_path}: image {name!r} is not a file in {images_dir}")
        png[name] = bare_png(path)[0]
    return Study(root, key, png, seed, settings)
