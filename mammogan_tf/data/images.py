"""The one image reader: DICOM, PNG, PGM and TIFF -> float32 (H, W) in [0, 1], plus metadata.

``read_image(path)`` returns ``(image, meta)`` where ``image`` is a float32 array of shape
(H, W) with values in [0, 1] and dense tissue bright, and ``meta`` an :class:`ImageMeta`.
``read_image_header(path)`` returns the :class:`ImageMeta` alone without decoding pixels.

DICOM (chosen by the ``.dcm``/``.dicom`` extension or by the ``DICM`` preamble):

1. Pixel data are decoded by pydicom's pixel-data plugins (compressed transfer syntaxes
   included); when no installed plugin can decode them a :class:`MissingDependencyError`
   names the file, the transfer syntax and the package to install.
2. The modality transform (Modality LUT Sequence, or Rescale Slope/Intercept) is applied,
   then the VOI transform where the file has one: the first VOI LUT Sequence item if present,
   else the first Window Center/Width pair (with its VOI LUT Function), via
   ``pydicom.pixels.apply_modality_lut`` / ``apply_voi`` / ``apply_windowing``.
3. Scaling to [0, 1] uses the *output range of the last transform applied*, so that equal
   stored values give equal outputs across images of one kind (no per-image stretching):

   - after a VOI transform: the range of values that transform can produce (the window maps
     to [0, 1]; a VOI LUT maps its smallest and largest entries to 0 and 1);
   - otherwise: the stored range implied by Bits Stored and Pixel Representation
     (e.g. 0..4095 for 12-bit unsigned) passed through the modality transform;
   - only when Bits Stored is absent (e.g. float pixel data): the image's own min..max.

   Values are clipped to [0, 1] afterwards (a Bits Stored that understates the data).
4. MONOCHROME1 images are inverted (``1 - x``) so that dense tissue is bright, like
   MONOCHROME2. Presentation LUT Shape is not consulted.
5. Colour images (RGB, YBR_*) become their luminance ``0.299 R + 0.587 G + 0.114 B``
   scaled by ``2**BitsStored - 1`` (no modality/VOI transform applies to colour data);
   PALETTE COLOR and multi-frame images (e.g. tomosynthesis volumes) raise
   :class:`ImageReadError` rather than silently picking a frame.

PNG / PGM / TIFF (8 or 16 bit, read with OpenCV ``IMREAD_UNCHANGED``): colour becomes grey
(OpenCV's BGR->GRAY luminance); values are divided by the dtype maximum (255 for uint8,
65535 for uint16), except PGM/PNM, which are divided by the maxval their header declares.

Every failure a user can cause (missing file, truncated or non-image DICOM, no pixel data,
an unsupported format, a zero-size or constant image) is an :class:`ImageReadError` whose
one-line message names the file and the reason.
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import numpy as np

from mammogan_tf.errors import ImageReadError, MissingDependencyError

DICOM_SUFFIXES = (".dcm", ".dicom")
RASTER_FORMATS = {".png": "png", ".pgm": "pgm", ".pnm": "pgm", ".tif": "tiff", ".tiff": "tiff"}
"""File extension -> ``ImageMeta.source_format`` for the non-DICOM formats."""

_VIEW_CODE_MEANINGS = {
    "cranio-caudal": "CC",
    "medio-lateral oblique": "MLO",
    "medio-lateral": "ML",
    "latero-medial": "LM",
    "latero-medial oblique": "LMO",
    "cranio-caudal exaggerated laterally": "XCCL",
    "cranio-caudal exaggerated medially": "XCCM",
    "caudo-cranial (from below)": "FB",
    "superolateral to inferomedial oblique": "SIO",
}
"""ViewCodeSequence code meanings (DICOM CID 4014) -> ViewPosition, used when ViewPosition is empty."""

_LUMINANCE = np.array([0.299, 0.587, 0.114])


@dataclasses.dataclass(frozen=True)
class ImageMeta:
    """What is known about one image file.

    ``shape`` is (H, W) in pixels; ``pixel_spacing`` is (row, column) spacing in mm.
    Fields that come from DICOM tags are None for PNG/PGM/TIFF, except ``bits_stored``,
    which there is the container depth (8 or 16).
    """

    path: str
    shape: tuple
    pixel_spacing: tuple[float, float] | None = None
    manufacturer: str | None = None
    model: str | None = None
    laterality: str | None = None
    view: str | None = None
    presentation_intent: str | None = None
    photometric_interpretation: str | None = None
    bits_stored: int | None = None
    source_format: str = "dicom"

    def to_dict(self) -> dict:
        """Plain dict of the fields (tuples stay tuples; JSON writes them as lists)."""
        return dataclasses.asdict(self)


def read_image(path: str | os.PathLike, allow_constant: bool = False) -> tuple[np.ndarray, ImageMeta]:
    """Read one image as float32 (H, W) in [0, 1], dense tissue bright (see the module doc).

    Raises ImageReadError (file at fault) or MissingDependencyError (a DICOM pixel-data
    plugin is needed). A constant image is an error unless ``allow_constant`` (evaluation of
    synthetic patches, where a collapsed generator must be measured, not refused).
    """
    path = Path(path)
    kind = _source_format(path)
    if kind == "dicom":
        image, meta = _read_dicom(path)
    else:
        image, meta = _read_raster(path, kind)
    if image.size == 0:
        raise ImageReadError(f"{path}: image has zero size {image.shape}")
    low, high = float(image.min()), float(image.max())
    if low == high and not allow_constant:
        raise ImageReadError(f"{path}: constant image (every pixel is {low:.4g}); nothing to learn from")
    return image, meta


def read_image_header(path: str | os.PathLike) -> ImageMeta:
    """Metadata of one image without decoding its pixels (cheap filtering before ``read_image``)."""
    path = Path(path)
    kind = _source_format(path)
    if kind == "dicom":
        return _dicom_meta(_dcmread(path, stop_before_pixels=True), path)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as handle:
            width, height = handle.size
            bits = 16 if handle.mode.startswith("I") else 8
    except (OSError, UnidentifiedImageError) as error:
        raise ImageReadError(f"{path}: cannot read the image header ({error})") from error
    return ImageMeta(path=str(path), shape=(height, width), bits_stored=bits, source_format=kind)


# --------------------------------------------------------------------------- format


def _source_format(path: Path) -> str:
    if not path.is_file():
        raise ImageReadError(f"{path}: image file not found")
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES or _has_dicm_preamble(path):
        return "dicom"
    if suffix in RASTER_FORMATS:
        return RASTER_FORMATS[suffix]
    raise ImageReadError(
        f"{path}: unsupported image format '{suffix}'; expected DICOM (.dcm/.dicom or a DICM "
        f"preamble), {', '.join(sorted(RASTER_FORMATS))}"
    )


def _has_dicm_preamble(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(132)
    return len(head) == 132 and head[128:] == b"DICM"


# --------------------------------------------------------------------------- raster


def _read_raster(path: Path, kind: str) -> tuple[np.ndarray, ImageMeta]:
    import cv2

    data = np.fromfile(path, dtype=np.uint8)
    raw = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if raw is None:
        raise ImageReadError(f"{path}: not a decodable {kind.upper()} image (empty or corrupt file)")
    if raw.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if raw.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        raw = cv2.cvtColor(raw, code) if raw.shape[2] in (3, 4) else raw[..., 0]
    if raw.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(f"{path}: unsupported pixel type {raw.dtype}; expected 8- or 16-bit integers")
    scale = _pnm_maxval(path) if kind == "pgm" else np.iinfo(raw.dtype).max
    image = np.clip(raw.astype(np.float32) / np.float32(scale), 0.0, 1.0)
    bits = 8 * raw.dtype.itemsize
    return image, ImageMeta(path=str(path), shape=image.shape, bits_stored=bits, source_format=kind)


def _pnm_maxval(path: Path) -> int:
    """The maxval a binary/ASCII PGM header declares (comments allowed)."""
    with open(path, "rb") as handle:
        head = handle.read(512)
    text = re.sub(rb"#[^\n]*", b" ", head)
    fields = text.split()
    try:
        return int(fields[3])
    except (IndexError, ValueError):
        raise ImageReadError(f"{path}: cannot read the maxval of the PGM header") from None


# --------------------------------------------------------------------------- DICOM


def _dcmread(path: Path, stop_before_pixels: bool = False):
    import pydicom

    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=True)
    except Exception as error:  # pydicom raises many types for corrupt files
        raise ImageReadError(f"{path}: not a readable DICOM file ({_first_line(error)})") from error


def _read_dicom(path: Path) -> tuple[np.ndarray, ImageMeta]:
    ds = _dcmread(path)
    meta = _dicom_meta(ds, path)
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageReadError(f"{path}: DICOM file has no pixel data (SOP class {ds.get('SOPClassUID', '?')})")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ImageReadError(
            f"{path}: multi-frame DICOM ({frames} frames, e.g. tomosynthesis) is not supported; "
            "export a 2D (synthetic) mammogram"
        )
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric == "PALETTE COLOR":
        raise ImageReadError(f"{path}: PALETTE COLOR DICOM is not supported; expected a greyscale image")
    arr = _decode_pixels(ds, path)
    if arr.size == 0:
        raise ImageReadError(f"{path}: image has zero size {arr.shape}")
    try:
        if arr.ndim == 3:
            image = _luminance(arr, ds)
        else:
            image = _greyscale(arr, ds)
    except (ValueError, TypeError, KeyError, AttributeError, NotImplementedError) as error:
        reason = _first_line(error)
        raise ImageReadError(f"{path}: cannot apply the DICOM grey-level transforms ({reason})") from error
    if photometric == "MONOCHROME1":
        image = 1.0 - image
    return image.astype(np.float32), dataclasses.replace(meta, shape=image.shape)


def _decode_pixels(ds, path: Path) -> np.ndarray:
    from pydicom.pixels.decoders.base import get_decoder

    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    decoder = None
    if tsyntax is not None and tsyntax.is_compressed:
        try:
            decoder = get_decoder(tsyntax)
        except NotImplementedError:
            raise ImageReadError(
                f"{path}: pixel data use transfer syntax '{tsyntax.name}' ({tsyntax}), which pydicom "
                "cannot decode; convert the file (e.g. with dcmdjpeg/gdcmconv) to an uncompressed syntax"
            ) from None
        if not decoder.is_available:
            reason = "no installed plugin decodes it"
            raise MissingDependencyError(_plugin_message(path, tsyntax, decoder, reason))
    try:
        return ds.pixel_array
    except Exception as error:  # plugins and pydicom raise many types for corrupt data
        reason = _first_line(error)
        if decoder is not None and decoder.missing_dependencies and "not support" in str(error):
            raise MissingDependencyError(_plugin_message(path, tsyntax, decoder, reason)) from error
        raise ImageReadError(f"{path}: cannot decode the pixel data ({reason})") from error


def _plugin_message(path: Path, tsyntax, decoder, reason: str) -> str:
    """One line: file, transfer syntax, and the pip command(s) that add a capable plugin."""
    commands = []
    # lines like "pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-rle>=2.0"
    for line in decoder.missing_dependencies:
        _, _, requires = line.partition(" - requires ")
        names = [re.match(r"[A-Za-z0-9_.\-]+", part.strip()) for part in requires.split(" and ")]
        names = [m.group(0) for m in names if m and m.group(0) != "numpy"]
        names = ["python-gdcm" if n == "gdcm" else n for n in names]
        if names:
            commands.append("pip install " + " ".join(names))
    ours = "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pyjpegls"  # what setup.cfg installs
    commands = [ours] + [c for c in commands if c != ours]
    hint = "; or ".join(f"`{c}`" for c in commands)
    return (
        f"{path}: pixel data compressed as '{tsyntax.name}' ({tsyntax}) cannot be decoded ({reason}); "
        f"install a pydicom plugin: {hint}"
    )


def _greyscale(arr: np.ndarray, ds) -> np.ndarray:
    """Modality then VOI transform, scaled by the last transform's output range -> [0, 1]."""
    from pydicom.pixels import apply_modality_lut
    from pydicom.pixels.processing import apply_voi, apply_windowing

    values = apply_modality_lut(arr, ds)
    low, high = _modality_output_range(ds)
    voi = _voi_kind(ds)
    if voi == "lut":
        if not np.issubdtype(values.dtype, np.integer):  # LUT input is integral; rescale gives floats
            values = np.rint(values).astype(np.int64)
        values = apply_voi(values, ds, index=0)
        descriptor = ds.VOILUTSequence[0].LUTDescriptor
        domain = np.arange(descriptor[1], descriptor[1] + (descriptor[0] or 2**16))
        probe = apply_voi(domain, ds, index=0)
        low, high = float(probe.min()), float(probe.max())
    elif voi == "window":
        values = apply_windowing(values, ds, index=0)
        with np.errstate(over="ignore"):
            probe = apply_windowing(np.array([-1e30, 1e30]), ds, index=0)
        low, high = float(probe.min()), float(probe.max())
    if low is None:
        low, high = float(np.min(values)), float(np.max(values))
    if high <= low:
        return np.zeros(values.shape, np.float32)
    return np.clip((np.asarray(values, np.float64) - low) / (high - low), 0.0, 1.0)


def _modality_output_range(ds) -> tuple[float | None, float | None]:
    """Range of the modality transform applied to every value Bits Stored allows (None if unknown)."""
    from pydicom.pixels import apply_modality_lut

    bits = ds.get("BitsStored")
    if not bits:
        return None, None
    bits = int(bits)
    if int(ds.get("PixelRepresentation", 0)) == 1:
        stored = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    else:
        stored = (0, 2**bits - 1)
    probe = np.arange(stored[0], stored[1] + 1) if bits <= 16 else np.array(stored, dtype=np.int64)
    out = apply_modality_lut(probe, ds)
    return float(np.min(out)), float(np.max(out))


def _voi_kind(ds) -> str | None:
    """Which VOI transform applies: the first VOI LUT item is preferred over the window."""
    items = ds.get("VOILUTSequence")
    if items and "LUTDescriptor" in items[0] and "LUTData" in items[0]:
        return "lut"
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        return "window"
    return None


def _luminance(arr: np.ndarray, ds) -> np.ndarray:
    """Colour (H, W, 3) -> luminance in [0, 1], scaled by the stored range."""
    if arr.shape[-1] != 3:
        raise ValueError(f"expected 3 colour samples per pixel, got array of shape {arr.shape}")
    bits = int(ds.get("BitsStored", 8 * arr.dtype.itemsize))
    return np.clip(arr.astype(np.float64) @ _LUMINANCE / (2**bits - 1), 0.0, 1.0)


def _dicom_meta(ds, path: Path) -> ImageMeta:
    laterality = _text(ds.get("ImageLaterality")) or _text(ds.get("Laterality"))
    bits = ds.get("BitsStored")
    return ImageMeta(
        path=str(path),
        shape=(int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)),
        pixel_spacing=_spacing(ds),
        manufacturer=_text(ds.get("Manufacturer")),
        model=_text(ds.get("ManufacturerModelName")),
        laterality=laterality.upper() if laterality and laterality.upper() in ("L", "R") else None,
        view=_view(ds),
        presentation_intent=_text(ds.get("PresentationIntentType")),
        photometric_interpretation=_text(ds.get("PhotometricInterpretation")),
        bits_stored=int(bits) if bits else None,
        source_format="dicom",
    )


def _spacing(ds) -> tuple[float, float] | None:
    """(row, column) spacing in mm from PixelSpacing, else ImagerPixelSpacing; None if absent or malformed."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        try:
            if value is not None and len(value) >= 2:
                return float(value[0]), float(value[1])
        except (TypeError, ValueError):
            continue
    return None


def _view(ds) -> str | None:
    view = _text(ds.get("ViewPosition"))
    if view:
        return view.upper()
    codes = ds.get("ViewCodeSequence")
    if codes:
        meaning = _text(codes[0].get("CodeMeaning"))
        if meaning:
            return _VIEW_CODE_MEANINGS.get(meaning.lower())
    return None


def _text(value) -> str | None:
    """A DICOM string value stripped, or None when absent or blank."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _first_line(error: BaseException, limit: int = 300) -> str:
    """The error's message on one line (whitespace collapsed, at most ``limit`` characters)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
