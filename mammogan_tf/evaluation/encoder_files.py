"""Image encoders given as files: their weights' identity and SavedModel signatures.

``features.load_backbone`` reads ``keras:PATH[:LAYER]`` (and ``classifier:``) itself; this module
adds what it needs for any file: ``weights_sha256`` (the sha256 of the weights, stable across
re-saves of the same weights), ``saved_model_encoder`` (a SavedModel signature as an encoder)
and ``bare_path_spec`` (a bare path -> its spec, by the path's form).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mammogan_tf.errors import InputError


def weights_sha256(variables) -> str:
    """sha256 of variables (Keras or tf.Variable): each one's path or name, shape, dtype and bytes."""
    import hashlib

    digest = hashlib.sha256()
    for variable in variables:
        value = np.ascontiguousarray(np.asarray(variable))
        name = getattr(variable, "path", None) or getattr(variable, "name", "")
        digest.update(f"{name}|{value.shape}|{value.dtype}|".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def saved_model_encoder(rest: str) -> tuple:
    """``savedmodel:FOLDER[:SIGNATURE]`` -> ``(forward, input_size, channels, identity)`` for
    ``features.Backbone``; ``forward(images (B, S, S, C), training=False) -> (B, D[, ...])``."""
    import hashlib

    import tensorflow as tf

    path, signature = Path(rest), "serving_default"
    if not (path / "saved_model.pb").is_file() and ":" in rest:
        head, signature = rest.rsplit(":", 1)
        path = Path(head)
    if not (path / "saved_model.pb").is_file():
        raise InputError(f"{path}: no saved_model.pb here (backbone savedmodel:FOLDER[:SIGNATURE])")
    loaded = tf.saved_model.load(str(path))
    if signature not in loaded.signatures:
        raise InputError(f"{path}: no signature '{signature}' (signatures: {', '.join(loaded.signatures)})")
    function = loaded.signatures[signature]
    specs = function.structured_input_signature[1]
    if len(specs) != 1:
        raise InputError(f"{path}: signature '{signature}' takes {len(specs)} inputs ({', '.join(specs)}); "
                         "an image encoder takes one image tensor")
    (name, spec), = specs.items()
    shape = spec.shape
    if shape.rank != 4 or shape[-1] not in (1, 3) or shape[1] != shape[2]:
        raise InputError(f"{path}: input '{name}' has shape {shape}, not a square grey or RGB image batch")
    outputs = sorted(function.structured_outputs)
    output = "features" if "features" in outputs else outputs[0]

    def forward(images, training=False):  # reads `loaded`, which must outlive the signature's variables
        return loaded.signatures[signature](**{name: tf.cast(images, spec.dtype)})[output]

    files = sorted(p for p in (path / "variables").glob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + b"|" + file.read_bytes())
    variables = list(getattr(loaded, "variables", None) or function.variables)
    identity = {"network": "savedmodel", "signature": signature, "output": output,
                "weights_sha256": weights_sha256(variables) if variables else digest.hexdigest(),
                "file_sha256": digest.hexdigest()}
    return forward, shape[1], int(shape[-1]), identity


def bare_path_spec(spec: str) -> str | None:
    """``keras:`` or ``savedmodel:`` spec of a bare path, by its form; None when it is neither."""
    path = Path(spec)
    if path.suffix == ".keras" and path.is_file():
        return f"keras:{spec}"
    if (path / "saved_model.pb").is_file():
        return f"savedmodel:{spec}"
    return None
