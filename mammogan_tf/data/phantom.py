"""Built-in demo data: synthetic mammogram phantoms as DICOM files plus a lesion table.

``write_phantom(out_dir, n_images, seed, size)`` writes ``n_images`` 16-bit MONOCHROME2
digital-mammography DICOM files and ``lesions.csv`` (the lesion table, ``table`` format), the
same given the same arguments, byte for byte. Nothing here is a real patient: identifiers read
``PHANTOM-0003``, ImageType is ``DERIVED\\SECONDARY`` and the series description says
``SYNTHETIC PHANTOM``.

The image model (values in ``[0, 1]``, stored as 12-bit integers ``round(v * 4095)``):

- background: dark (about 0.01) with a little noise;
- breast: a half-ellipse against the chest wall (image column 0 for a left breast, the last
  column for a right one), with a pectoral-muscle triangle at the top of the chest wall in MLO;
- tissue: 1/f^beta texture (beta = 3, white noise filtered in the Fourier domain) around an
  attenuation level of 0.35-0.5 (floored at 0.18), times a thickness profile that falls off over the outer
  ~12 % of the radius, plus a faint brighter skin line;
- masses: round, oval or spiculated (core plus radiating lines) brighter blobs with soft
  edges; microcalcification clusters: 5-12 tiny bright Gaussian specks within a few pixels;
- about a third of the images are normal; the others have one or two lesions, each box lying
  inside the breast (away from its edge and the pectoral muscle), pathology malignant or benign
  (spiculated masses mostly malignant, round/oval mostly benign). Lesions are drawn
  independently in the two views of a breast.

Each patient has two images: CC and MLO of one breast. Boxes in the table are the tight boxes
of the pixels a lesion brightens by more than a quarter of its peak (masses) or by more than
0.05 (calcifications).
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from mammogan_tf import __version__
from mammogan_tf.data.preprocess import box_from_mask
from mammogan_tf.data.table import make_table

MANUFACTURER = "mammogan_tf phantom"
BITS_STORED = 12
PIXEL_SPACING_MM = 0.4
"""Phantoms are small: 512 rows x 0.4 mm = 20 cm, a compressed-breast detector height."""
TEXTURE_BETA = 3.0
NORMAL_FRACTION = 1 / 3
TABLE_NAME = "lesions.csv"
_DATE = "20000101"
_ORIENTATION = {("L", "CC"): ["A", "R"], ("L", "MLO"): ["A", "F"],
                ("R", "CC"): ["P", "L"], ("R", "MLO"): ["P", "F"]}


def power_law_texture(shape: tuple[int, int], beta: float, rng: np.random.Generator) -> np.ndarray:
    """White noise filtered to a ``1 / f^beta`` power spectrum, zero mean, unit std.

    Args:
        shape: ``(H, W)``; beta: spectral exponent (mammographic tissue: about 3).

    Returns:
        ``(H, W)`` float32.
    """
    height, width = shape
    white = rng.standard_normal(shape)
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    freq = np.sqrt(fx * fx + fy * fy)
    freq[0, 0] = np.inf  # no DC
    field = np.fft.irfft2(np.fft.rfft2(white) * freq ** (-beta / 2.0), s=shape)
    field -= field.mean()
    return (field / field.std()).astype(np.float32)


class _Breast:
    """Geometry of one phantom breast (half-ellipse, optional pectoral triangle)."""

    def __init__(self, shape: tuple[int, int], laterality: str, view: str, rng: np.random.Generator):
        height, width = shape
        self.shape = shape
        self.left = laterality == "L"  # chest wall at column 0
        self.cy = height * (0.5 + rng.uniform(-0.04, 0.04))
        self.a = width * rng.uniform(0.62, 0.85)
        self.b = (min(self.cy, height - self.cy) - 3) * rng.uniform(0.88, 0.98)
        self.chest = 0.0 if self.left else width - 1.0
        rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
        depth = cols if self.left else self.chest - cols  # distance from the chest wall
        self.rho = np.sqrt((depth / self.a) ** 2 + ((rows - self.cy) / self.b) ** 2)
        self.pectoral = np.zeros(shape, dtype=bool)
        self.pect_depth = self.pect_rows = 0.0
        if view == "MLO":
            self.pect_depth = width * rng.uniform(0.22, 0.35)
            self.pect_rows = height * rng.uniform(0.30, 0.45)
            self.pectoral = depth / self.pect_depth + rows / self.pect_rows < 1.0

    def inside(self, x: float, y: float, margin: float = 0.78) -> bool:
        """Whether ``(x, y)`` lies well inside the breast (rho < margin) and off the pectoral."""
        depth = x if self.left else self.chest - x
        if depth < 2 or (depth / self.a) ** 2 + ((y - self.cy) / self.b) ** 2 >= margin ** 2:
            return False
        if self.pect_rows and depth / self.pect_depth + y / self.pect_rows < 1.25:
            return False
        return True


def _grid(x0: int, y0: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates (float32) of a ``side x side`` window at ``(x0, y0)``."""
    rows, cols = np.mgrid[y0:y0 + side, x0:x0 + side]
    return rows.astype(np.float32), cols.astype(np.float32)


def _soft_ellipse(rows, cols, cx, cy, ax, ay, angle, edge) -> np.ndarray:
    """A dome-topped ellipse with a logistic edge ``edge`` pixels wide, peak 1."""
    c, s = math.cos(angle), math.sin(angle)
    u = ((cols - cx) * c + (rows - cy) * s) / ax
    v = (-(cols - cx) * s + (rows - cy) * c) / ay
    rho = np.sqrt(u * u + v * v)
    soft = 1.0 / (1.0 + np.exp(np.clip((rho - 1.0) * min(ax, ay) / edge, -30.0, 30.0)))
    return soft * (1.0 - 0.3 * np.clip(rho, 0.0, 1.0) ** 2)


def _mass(rows, cols, cx, cy, radius, form, rng) -> np.ndarray:
    """Brightness (peak about 1) of a round, oval or spiculated mass on a local grid."""
    if form == "oval":
        return _soft_ellipse(rows, cols, cx, cy, radius, radius * rng.uniform(0.55, 0.8),
                             rng.uniform(0, math.pi), rng.uniform(1.0, 2.5))
    if form == "round":
        return _soft_ellipse(rows, cols, cx, cy, radius, radius * rng.uniform(0.9, 1.0), 0.0, rng.uniform(1.0, 2.5))
    # spiculated: a smaller irregular core and thin radiating lines
    core = radius * 0.6
    layer = _soft_ellipse(rows, cols, cx, cy, core, core * rng.uniform(0.75, 1.0), rng.uniform(0, math.pi), 1.5)
    lines = np.zeros(rows.shape, dtype=np.float32)
    x0, y0 = cols[0, 0], rows[0, 0]
    for _ in range(int(rng.integers(6, 13))):
        theta = rng.uniform(0, 2 * math.pi)
        length = radius * rng.uniform(1.3, 1.9)
        start = (int(round(cx - x0)), int(round(cy - y0)))
        end = (int(round(cx - x0 + length * math.cos(theta))), int(round(cy - y0 + length * math.sin(theta))))
        cv2.line(lines, start, end, float(rng.uniform(0.35, 0.55)), 1, cv2.LINE_AA)
    return np.maximum(layer, cv2.GaussianBlur(lines, (0, 0), 0.8) * 1.5)


def _calcifications(rows, cols, cx, cy, radius, rng) -> np.ndarray:
    """Brightness of a cluster of 5-12 Gaussian specks (peak 0.2-0.4) within ``radius``."""
    layer = np.zeros(rows.shape, dtype=np.float32)
    for _ in range(int(rng.integers(5, 13))):
        r, t = radius * math.sqrt(rng.uniform()), rng.uniform(0, 2 * math.pi)
        sx, sy = cx + r * math.cos(t), cy + r * math.sin(t)
        sigma = rng.uniform(0.5, 0.9)
        layer += rng.uniform(0.2, 0.4) * np.exp(-((cols - sx) ** 2 + (rows - sy) ** 2) / (2 * sigma ** 2))
    return layer


def _pathology(form: str, rng: np.random.Generator) -> str:
    """Malignant or benign; spiculated masses mostly malignant, round/oval mostly benign."""
    malignant = {"spiculated": 0.85, "round": 0.25, "oval": 0.3}.get(form, 0.5)
    return "malignant" if rng.uniform() < malignant else "benign"


def phantom_image(shape: tuple[int, int], laterality: str, view: str, n_lesions: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
    """One phantom mammogram.

    Returns:
        ``(H, W)`` float32 in ``[0, 1]`` and a list of lesion dicts (``lesion_type``,
        ``pathology``, ``shape``, ``x0, y0, x1, y1`` ints, ``x1, y1`` exclusive).
    """
    height, width = shape
    breast = _Breast(shape, laterality, view, rng)
    level = rng.uniform(0.35, 0.5)
    texture = power_law_texture(shape, TEXTURE_BETA, rng)
    tissue = level + rng.uniform(0.08, 0.11) * texture
    tissue = np.maximum(tissue, 0.18) + 0.12 * breast.pectoral  # fat stays above the background
    rho = breast.rho
    thickness = 0.35 + 0.65 * np.sqrt(np.clip((1.0 - rho) / 0.12, 0.0, 1.0))
    skin = 0.04 * np.exp(-(((1.0 - rho) * min(breast.a, breast.b)) / 1.5) ** 2)
    edge = np.clip((1.0 - rho) * min(breast.a, breast.b) / 1.5 + 0.5, 0.0, 1.0)  # ~1.5 px anti-aliased
    image = edge * (thickness * tissue + skin)
    lesions: list[dict] = []
    occupied: list[tuple[int, int, int, int]] = []
    for _ in range(n_lesions):
        lesion_type = "mass" if rng.uniform() < 0.6 else "calcification"
        form = str(rng.choice(["round", "oval", "spiculated"])) if lesion_type == "mass" else "cluster"
        radius = (rng.uniform(0.025, 0.06) if lesion_type == "mass" else rng.uniform(0.01, 0.025)) * height
        reach = radius * (2.0 if form == "spiculated" else 1.0) + 4
        for _ in range(100):
            cx, cy = rng.uniform(reach + 1, width - reach - 4), rng.uniform(reach + 1, height - reach - 4)
            corners = [(cx + sx * reach, cy + sy * reach) for sx in (-1, 1) for sy in (-1, 1)]
            clear = all(cx + reach < o[0] or cx - reach > o[2] or cy + reach < o[1] or cy - reach > o[3]
                        for o in occupied)
            if clear and all(breast.inside(x, y) for x, y in corners):
                break
        else:
            continue
        x0, y0 = int(cx - reach), int(cy - reach)
        side = int(2 * reach) + 2
        rows, cols = _grid(x0, y0, side)
        if lesion_type == "mass":
            add = _mass(rows, cols, cx, cy, radius, form, rng) * rng.uniform(0.1, 0.2)
            local = box_from_mask(add > 0.25 * add.max())
        else:
            add = _calcifications(rows, cols, cx, cy, radius, rng)
            local = box_from_mask(add > 0.05)
        if local is None:
            continue
        image[y0:y0 + side, x0:x0 + side] += add
        box = (local[0] + x0, local[1] + y0, local[2] + x0, local[3] + y0)
        occupied.append((x0, y0, x0 + side, y0 + side))
        lesions.append({"lesion_type": lesion_type, "pathology": _pathology(form, rng),
                        "shape": form, "x0": box[0], "y0": box[1], "x1": box[2], "y1": box[3]})
    image = image + 0.01 + 0.002 * rng.standard_normal(shape)  # film/detector background and noise
    return np.clip(image, 0.0, 1.0).astype(np.float32), lesions


def _uid(seed: int, *parts: object) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=["mammogan_tf phantom", str(seed)] + [str(p) for p in parts]))


def _write_dicom(path: Path, pixels: np.ndarray, *, seed: int, patient: int, index: int,
                 laterality: str, view: str) -> None:
    from pydicom.uid import DigitalMammographyXRayImageStorageForPresentation

    from mammogan_tf.data.dicom_files import new_dataset

    patient_id = f"PHANTOM-{patient:04d}"
    ds = new_dataset(DigitalMammographyXRayImageStorageForPresentation, _uid(seed, "image", index))
    ds.StudyInstanceUID = _uid(seed, "study", patient)
    ds.SeriesInstanceUID = _uid(seed, "series", patient, laterality, view)
    ds.FrameOfReferenceUID = _uid(seed, "frame", patient, laterality, view)
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.Modality = "MG"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = "synthetic phantom"
    ds.SoftwareVersions = f"mammogan_tf {__version__}"
    ds.DerivationDescription = f"synthetic phantom made by mammogan_tf write_phantom (seed {seed}); not a patient"
    ds.BurnedInAnnotation = "NO"
    ds.PatientName = f"PHANTOM^{patient:04d}"
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "F"
    ds.StudyID = f"{patient:04d}"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = _DATE
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "000000"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "SYNTHETIC PHANTOM MAMMOGRAM"
    ds.SeriesDescription = f"SYNTHETIC PHANTOM {laterality} {view}"
    ds.SeriesNumber = 1 + (view == "MLO")
    ds.InstanceNumber = 1
    ds.BodyPartExamined = "BREAST"
    ds.ImageLaterality = laterality
    ds.Laterality = laterality
    ds.ViewPosition = view
    ds.PatientOrientation = _ORIENTATION[(laterality, view)]
    ds.PixelSpacing = [PIXEL_SPACING_MM, PIXEL_SPACING_MM]
    ds.ImagerPixelSpacing = [PIXEL_SPACING_MM, PIXEL_SPACING_MM]
    ds.WindowCenter = 2 ** (BITS_STORED - 1)
    ds.WindowWidth = 2 ** BITS_STORED
    ds.set_pixel_data(pixels, "MONOCHROME2", BITS_STORED, generate_instance_uid=False)
    ds.save_as(path, enforce_file_format=True)


def write_phantom(out_dir, n_images: int = 16, seed: int = 0,
                  size: tuple[int, int] = (512, 416)) -> Path:
    """Write ``n_images`` phantom mammograms (DICOM) and their lesion table into ``out_dir``.

    Args:
        out_dir: folder (created); existing files of the same names are overwritten.
        n_images: number of images; patient ``k`` has images ``2k`` (CC) and ``2k + 1`` (MLO)
            of one breast, laterality drawn per patient.
        seed: everything (pixels, lesions, UIDs, table) is a function of ``seed``.
        size: ``(height, width)`` in pixels, each >= 64.

    Returns:
        Path of ``out_dir/lesions.csv``: header ``table.COLUMNS``, one row per lesion and one
        ``normal`` row per normal image; ``path`` is the DICOM file name relative to ``out_dir``.
    """
    height, width = (int(v) for v in size)
    if height < 64 or width < 64:
        raise ValueError(f"phantom size must be at least 64 x 64, got {size}")
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    master = np.random.default_rng([seed, 0])
    normal = set(master.permutation(n_images)[: int(round(n_images * NORMAL_FRACTION))].tolist())
    lateralities = master.choice(["L", "R"], size=(n_images + 1) // 2)
    rows = []
    for index in range(n_images):
        patient = index // 2
        laterality, view = str(lateralities[patient]), ("CC", "MLO")[index % 2]
        rng = np.random.default_rng([seed, 1, index])
        n_lesions = 0 if index in normal else 1 + int(rng.uniform() < 0.3)
        pixels, lesions = phantom_image((height, width), laterality, view, n_lesions, rng)
        image_id = f"PHANTOM-{patient:04d}-{laterality}{view}"
        filename = f"{image_id}.dcm"
        stored = np.rint(pixels * (2 ** BITS_STORED - 1)).astype(np.uint16)
        _write_dicom(out_dir / filename, stored, seed=seed, patient=patient, index=index,
                     laterality=laterality, view=view)
        common = {"image_id": image_id, "patient_id": f"PHANTOM-{patient:04d}", "study_id": f"PHANTOM-{patient:04d}-S1",
                  "path": filename, "laterality": laterality, "view": view, "manufacturer": MANUFACTURER,
                  "processed": True, "mask_path": None}
        if not lesions:
            rows.append({**common, "lesion_type": "normal", "pathology": "unknown"})
        for lesion in lesions:
            rows.append({**common, **{k: lesion[k] for k in ("lesion_type", "pathology", "x0", "y0", "x1", "y1")}})
    table_path = out_dir / TABLE_NAME
    make_table(rows).to_csv(table_path, index=False, lineterminator="\n")
    return table_path
