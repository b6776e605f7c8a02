"""read_image / read_image_header: DICOM grey-level transforms, compressed files, PNG/PGM/TIFF."""
from __future__ import annotations

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import DigitalMammographyXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

from mammogan_tf.data.images import ImageMeta, read_image, read_image_header
from mammogan_tf.errors import ImageReadError, MissingDependencyError

RAMP12 = (np.arange(48 * 32).reshape(48, 32) * 2 % 4096).astype(np.uint16)
"""(48, 32) 12-bit test pixels covering 0..4094."""


def write_dicom(path, pixels: np.ndarray, bits_stored: int, **tags):
    """A minimal uncompressed mammogram DICOM with ``pixels`` (uint8/uint16) and extra ``tags``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalMammographyXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 8 * pixels.dtype.itemsize
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_monochrome1_is_inverted_monochrome2(tmp_path):
    mono2, _ = read_image(write_dicom(tmp_path / "m2.dcm", RAMP12, 12))
    mono1, meta = read_image(write_dicom(tmp_path / "m1.dcm", RAMP12, 12, PhotometricInterpretation="MONOCHROME1"))
    assert mono2.dtype == np.float32 and mono2.shape == (48, 32)
    np.testing.assert_allclose(mono2, RAMP12 / 4095.0, atol=1e-6)  # stored range 0..4095 -> [0, 1]
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)
    assert meta.photometric_interpretation == "MONOCHROME1" and meta.bits_stored == 12


def test_rescale_slope_intercept_is_applied(tmp_path):
    # A negative slope inverts: modality values 4095 - p over the output range 0..4095.
    image, _ = read_image(write_dicom(tmp_path / "r.dcm", RAMP12, 12, RescaleSlope=-1, RescaleIntercept=4095))
    np.testing.assert_allclose(image, 1.0 - RAMP12 / 4095.0, atol=1e-6)


def linear_window(values, center, width):
    """DICOM PS3.3 C.11.2.1.2.1 LINEAR window onto [0, 1]."""
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def test_window_center_width_maps_window_to_unit_range(tmp_path):
    image, _ = read_image(write_dicom(tmp_path / "w.dcm", RAMP12, 12, WindowCenter=1000, WindowWidth=501))
    np.testing.assert_allclose(image, linear_window(RAMP12.astype(float), 1000, 501), atol=1e-6)
    assert image.min() == 0.0 and image.max() == 1.0


def test_window_applies_to_rescaled_values(tmp_path):
    path = write_dicom(tmp_path / "rw.dcm", RAMP12, 12, RescaleSlope=2, RescaleIntercept=0,
                       WindowCenter=4000, WindowWidth=2001)
    image, _ = read_image(path)
    np.testing.assert_allclose(image, linear_window(2.0 * RAMP12, 4000, 2001), atol=1e-6)


def test_voi_lut_sequence_wins_over_window(tmp_path):
    lut = (100 + 60000 * np.sqrt(np.arange(4096) / 4095.0)).astype(np.uint16)  # a non-linear VOI LUT
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [4096, 0, 16])
    item.add_new("LUTData", "OW", lut.astype("<u2").tobytes())  # OW, as most vendors write it
    path = write_dicom(tmp_path / "lut.dcm", RAMP12, 12, VOILUTSequence=[item], WindowCenter=10, WindowWidth=3)
    image, _ = read_image(path)
    expected = (lut[RAMP12].astype(float) - lut.min()) / (lut.max() - lut.min())
    np.testing.assert_allclose(image, expected, atol=1e-6)


def test_8bit_dicom_and_metadata(tmp_path):
    pixels = (np.arange(16 * 24).reshape(16, 24) % 256).astype(np.uint8)
    path = write_dicom(
        tmp_path / "m8.dcm", pixels, 8, PixelSpacing=[0.07, 0.065], Manufacturer="HOLOGIC, Inc.",
        ManufacturerModelName="Lorad Selenia", ImageLaterality="L", ViewPosition="MLO",
        PresentationIntentType="FOR PRESENTATION",
    )
    image, meta = read_image(path)
    np.testing.assert_allclose(image, pixels / 255.0, atol=1e-6)
    expected = ImageMeta(
        path=str(path), shape=(16, 24), pixel_spacing=(0.07, 0.065), manufacturer="HOLOGIC, Inc.",
        model="Lorad Selenia", laterality="L", view="MLO", presentation_intent="FOR PRESENTATION",
        photometric_interpretation="MONOCHROME2", bits_stored=8, source_format="dicom",
    )
    assert meta == expected
    assert read_image_header(path) == expected
    assert meta.to_dict()["pixel_spacing"] == (0.07, 0.065) and len(meta.to_dict()) == 11


def test_metadata_fallbacks_and_dicm_preamble_without_extension(tmp_path):
    item = Dataset()
    item.CodeMeaning = "cranio-caudal"
    path = write_dicom(tmp_path / "no_extension", RAMP12, 16, ImagerPixelSpacing=[0.1, 0.1], Laterality="R",
                       ViewCodeSequence=[item], PresentationIntentType="FOR PROCESSING")
    image, meta = read_image(path)
    np.testing.assert_allclose(image, RAMP12 / 65535.0, atol=1e-6)  # 16 bits stored -> 0..65535
    assert (meta.pixel_spacing, meta.laterality, meta.view) == ((0.1, 0.1), "R", "CC")
    assert meta.presentation_intent == "FOR PROCESSING" and meta.manufacturer is None


def test_rle_compressed_equals_uncompressed():
    reference, _ = read_image(get_testdata_file("MR_small.dcm"))
    rle, meta = read_image(get_testdata_file("MR_small_RLE.dcm"))
    assert rle.shape == (64, 64) and meta.bits_stored == 16
    np.testing.assert_array_equal(rle, reference)
    # MR_small: signed 16-bit, window 600/1600 -> the window maps to [0, 1]
    raw = pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array.astype(float)
    np.testing.assert_allclose(reference, linear_window(raw, 600, 1600), atol=1e-6)


def test_jpeg2000_decodes_or_names_the_plugin():
    path = get_testdata_file("MR_small_jp2klossless.dcm")
    try:
        image, _ = read_image(path)
    except MissingDependencyError as error:  # pillow without openjpeg
        assert "MR_small_jp2klossless.dcm" in str(error) and "pylibjpeg-openjpeg" in str(error)
    else:
        np.testing.assert_array_equal(image, read_image(get_testdata_file("MR_small.dcm"))[0])


def test_missing_plugin_message_names_file_syntax_and_package(monkeypatch):
    decoder = get_decoder(pydicom.uid.JPEGLSLossless)  # installed (setup.cfg): pretend it is not
    monkeypatch.setattr(type(decoder), "is_available", property(lambda self: False))
    with pytest.raises(MissingDependencyError) as info:
        read_image(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"))
    message = str(info.value)
    assert "\n" not in message and "MR_small_jpeg_ls_lossless.dcm" in message
    assert "JPEG-LS Lossless" in message and "pip install pylibjpeg pylibjpeg-libjpeg" in message


@pytest.mark.parametrize(
    ("name", "reason"),
    [("MR_truncated.dcm", "pixel data"), ("rtplan.dcm", "no pixel data"), ("SC_rgb_rle_2frame.dcm", "multi-frame")],
)
def test_unusable_dicom_raises_image_read_error(name, reason):
    with pytest.raises(ImageReadError, match=reason) as info:
        read_image(get_testdata_file(name))
    assert name in str(info.value)


def test_colour_dicom_becomes_luminance():
    path = get_testdata_file("SC_rgb_rle.dcm")
    image, meta = read_image(path)
    rgb = pydicom.dcmread(path).pixel_array.astype(float)
    np.testing.assert_allclose(image, rgb @ [0.299, 0.587, 0.114] / 255.0, atol=1e-6)
    assert image.shape == (100, 100) and meta.photometric_interpretation == "RGB"


def test_unreadable_files_raise_image_read_error(tmp_path):
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path / "absent.png")
    (tmp_path / "text.dcm").write_text("not a dicom file")
    with pytest.raises(ImageReadError, match="text.dcm"):
        read_image(tmp_path / "text.dcm")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ImageReadError, match="broken.png.*not a decodable"):
        read_image(tmp_path / "broken.png")
    (tmp_path / "image.jpg").write_bytes(b"x")
    with pytest.raises(ImageReadError, match="unsupported image format"):
        read_image(tmp_path / "image.jpg")


def test_constant_images_raise(tmp_path):
    cv2.imwrite(str(tmp_path / "flat.png"), np.full((16, 16), 7, np.uint8))
    with pytest.raises(ImageReadError, match="flat.png: constant image"):
        read_image(tmp_path / "flat.png")
    with pytest.raises(ImageReadError, match="constant image"):
        read_image(write_dicom(tmp_path / "flat.dcm", np.full((8, 8), 300, np.uint16), 12))


@pytest.mark.parametrize(("suffix", "dtype"), [(".png", np.uint8), (".png", np.uint16), (".tiff", np.uint16)])
def test_raster_round_trip(tmp_path, suffix, dtype):
    rng = np.random.default_rng(0)
    top = np.iinfo(dtype).max
    pixels = rng.integers(0, top, size=(20, 30), endpoint=True).astype(dtype)
    path = tmp_path / f"image{suffix}"
    assert cv2.imwrite(str(path), pixels)
    image, meta = read_image(path)
    np.testing.assert_allclose(image, pixels / float(top), atol=1e-6)
    assert meta.shape == (20, 30) and meta.bits_stored == 8 * np.dtype(dtype).itemsize
    assert meta.source_format == ("png" if suffix == ".png" else "tiff") and meta.pixel_spacing is None
    assert read_image_header(path) == meta


def test_colour_png_becomes_grey(tmp_path):
    bgr = np.random.default_rng(1).integers(0, 255, size=(12, 10, 3), endpoint=True).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "colour.png"), bgr)
    image, _ = read_image(tmp_path / "colour.png")
    np.testing.assert_allclose(image, cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) / 255.0, atol=1e-6)


def test_pgm_is_scaled_by_its_maxval(tmp_path):
    pixels = (np.arange(64).reshape(8, 8) * 60).astype(np.uint16)  # 0..3780 of maxval 4095
    path = tmp_path / "film.pgm"
    path.write_bytes(b"P5\n# a comment\n8 8\n4095\n" + pixels.astype(">u2").tobytes())
    image, meta = read_image(path)
    np.testing.assert_allclose(image, pixels / 4095.0, atol=1e-6)
    assert meta.source_format == "pgm" and meta.shape == (8, 8)
