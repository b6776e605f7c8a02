"""Compressed DICOM out of the box: JPEG 2000, JPEG-LS and JPEG lossless decode to the pixels of
their uncompressed original (the plugins are normal dependencies in setup.cfg)."""
from __future__ import annotations

import struct

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, JPEGLosslessSV1, JPEGLSLossless
from test_images import write_dicom

from mammogan_tf.data.images import read_image

PIXELS = (np.random.default_rng(3).integers(0, 4096, size=(64, 48)) // 7 * 7
          + np.arange(48)[None, :] * 20).clip(0, 4095).astype(np.uint16)
"""(64, 48) 12-bit test pixels: noise on a ramp (compressible, not trivially)."""


def _huffman_table() -> tuple[bytes, dict[int, tuple[int, int]]]:
    """A DHT segment body for categories 0..16 (every code 5 bits long) and category -> (code, length)."""
    counts = [0] * 16
    counts[4] = 17  # 17 codes of length 5: 00000 .. 10000 (none all ones)
    body = bytes([0x00]) + bytes(counts) + bytes(range(17))
    return body, {category: (category, 5) for category in range(17)}


def jpeg_lossless(pixels: np.ndarray, precision: int) -> bytes:
    """A baseline JPEG lossless (process 14, selection value 1) codestream of a grey image.

    Prediction (ITU T.81 H.1.2.1): the first pixel from 2**(P-1), the first row from the left
    neighbour, the first column from the pixel above, the rest from the left neighbour; the
    difference modulo 2**16 is coded as its category (Huffman) and its low bits.
    """
    rows, columns = pixels.shape
    values = pixels.astype(np.int64)
    predicted = np.empty_like(values)
    predicted[0, 0] = 1 << (precision - 1)
    predicted[0, 1:] = values[0, :-1]
    predicted[1:, 0] = values[:-1, 0]
    predicted[1:, 1:] = values[1:, :-1]
    table, codes = _huffman_table()
    bits = []
    for difference in ((values - predicted) % 65536).ravel().tolist():
        difference = difference - 65536 if difference >= 32768 else difference
        category = 16 if difference == -32768 else int(abs(difference)).bit_length()
        code, length = codes[category]
        bits.append(format(code, f"0{length}b"))
        if 0 < category < 16:
            extra = difference if difference > 0 else difference - 1
            bits.append(format(extra & ((1 << category) - 1), f"0{category}b"))
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)
    data = bytearray()
    for start in range(0, len(stream), 8):
        byte = int(stream[start:start + 8], 2)
        data.append(byte)
        if byte == 0xFF:
            data.append(0x00)  # byte stuffing

    def segment(marker: int, body: bytes) -> bytes:
        return struct.pack(">HH", marker, len(body) + 2) + body

    frame = struct.pack(">BHHB", precision, rows, columns, 1) + bytes([1, 0x11, 0])
    scan = bytes([1, 1, 0x00, 1, 0, 0])  # one component, table 0; Ss = predictor 1, Se = 0, Ah/Al = 0
    return (b"\xff\xd8" + segment(0xFFC3, frame) + segment(0xFFC4, table) + segment(0xFFDA, scan)
            + bytes(data) + b"\xff\xd9")


@pytest.fixture
def original(tmp_path):
    path = write_dicom(tmp_path / "original.dcm", PIXELS, 12)
    return path, read_image(path)[0]


def _compressed(tmp_path, original_path, syntax, name: str):
    ds = pydicom.dcmread(original_path)
    if syntax == JPEGLosslessSV1:  # pydicom has no encoder for it: our own codestream
        ds.PixelData = encapsulate([jpeg_lossless(PIXELS, 12)])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = syntax
    else:
        ds.compress(syntax)
    path = tmp_path / name
    ds.save_as(path)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == syntax
    return path


@pytest.mark.parametrize(("syntax", "name"), [
    (JPEG2000Lossless, "j2k.dcm"), (JPEGLSLossless, "jls.dcm"), (JPEGLosslessSV1, "jpeg_lossless.dcm"),
])
def test_compressed_decodes_to_the_uncompressed_pixels(tmp_path, original, syntax, name):
    path, expected = original
    image, meta = read_image(_compressed(tmp_path, path, syntax, name))
    assert meta.bits_stored == 12 and image.shape == (64, 48)
    np.testing.assert_array_equal(image, expected)
    np.testing.assert_allclose(expected, PIXELS / 4095.0, atol=1e-6)

