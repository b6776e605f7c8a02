"""Stage manifests and atomic output folders (see ARCHITECTURE.md, "One pipeline").

Every stage writes ``manifest.json`` into its output folder: schema version, stage, package
version, the config that produced it, its inputs (path + sha256), counts, and the sha256 of
every file it wrote. Output is built in ``<out>.partial`` and renamed into place when complete.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from mammogan_tf import __version__
from mammogan_tf.errors import InputError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"


def manifest_path(path: str | os.PathLike) -> Path:
    """The ``manifest.json`` of a stage folder, or ``path`` itself when it names a ``.json`` file."""
    path = Path(path)
    return path if path.suffix == ".json" else path / MANIFEST_NAME


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write JSON to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True, default=str)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def build_manifest(stage: str, out_dir: str | os.PathLike, config: dict, inputs: list[dict],
                   counts: dict, files: list[str], extra: dict | None = None) -> dict:
    """Assemble a manifest dict; ``files`` are paths relative to ``out_dir`` to hash."""
    out_dir = Path(out_dir)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "stage": stage,
        "package_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": config,
        "inputs": inputs,
        "counts": counts,
        "files": {name: sha256_file(out_dir / name) for name in sorted(files)},
    }
    manifest.update(extra or {})
    return manifest


def input_record(path: str | os.PathLike) -> dict:
    """``{"path", "sha256"}`` for an input file (a manifest or an annotation table)."""
    return {"path": str(Path(path).resolve()), "sha256": sha256_file(path)}


def read_manifest(path: str | os.PathLike, stage: str | None = None) -> dict:
    """Read a manifest (a ``manifest.json`` or the folder holding one), checking its stage.

    Adds ``"root"``: the folder the manifest's relative file names resolve against.
    Raises ``InputError`` naming the file when it is missing, unreadable or of another stage.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise InputError(f"{path}: no manifest here; point at a folder written by a mammogan stage")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not a readable manifest ({error})") from error
    if not isinstance(manifest, dict) or "stage" not in manifest:
        raise InputError(f"{path}: not a mammogan manifest (no 'stage' field)")
    if stage is not None and manifest["stage"] != stage:
        raise InputError(f"{path}: manifest of stage '{manifest['stage']}', expected '{stage}'")
    manifest["root"] = str(path.parent.resolve())
    return manifest


def partial_dir(out_dir: str | os.PathLike) -> Path:
    """The staging folder ``<out>.partial`` where a stage builds its output."""
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + ".partial")


def publish(staging: Path, out_dir: str | os.PathLike) -> None:
    """Move a complete staging folder into place, replacing an older complete output."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        old = out_dir.with_name(out_dir.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out_dir, old)
        os.replace(staging, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out_dir)
