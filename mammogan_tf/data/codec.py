"""Lossless patch encodings used inside shards (TensorFlow-free, so worker processes stay light).

Patches are stored as 16-bit grey PNG: ``round(pixels * 65535)``; masks as 8-bit PNG (0/255).
"""
from __future__ import annotations

import cv2
import numpy as np

PNG16_MAX = 65535


def quantize16(pixels: np.ndarray) -> np.ndarray:
    """(H, W) float in [0, 1] -> uint16 0..65535 (clipped, rounded half to even)."""
    return np.rint(np.clip(pixels, 0.0, 1.0) * PNG16_MAX).astype(np.uint16)


def encode_png16(pixels: np.ndarray) -> bytes:
    """(H, W) float in [0, 1] -> bytes of a 16-bit grey PNG."""
    ok, buffer = cv2.imencode(".png", quantize16(pixels))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buffer.tobytes()


def decode_png16(data: bytes) -> np.ndarray:
    """Bytes of a 16-bit grey PNG -> (H, W) float32 in [0, 1]."""
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return array.astype(np.float32) / PNG16_MAX


def encode_mask(mask: np.ndarray | None) -> bytes:
    """(H, W) bool -> bytes of an 8-bit PNG (0/255); None -> b""."""
    if mask is None:
        return b""
    ok, buffer = cv2.imencode(".png", np.where(mask, 255, 0).astype(np.uint8))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buffer.tobytes()
