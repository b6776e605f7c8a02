"""INbreast: ``INbreast.csv`` (``;``-separated) plus the per-image ``AllXML/<File Name>.xml`` ROIs."""
from __future__ import annotations

import math
import plistlib
from pathlib import Path

from mammogan_tf.data.annotations.common import (
    NAN, BadRow, convert, read_frame, require_columns, required, resolve, sources,
)
from mammogan_tf.data.annotations.values import NUMBER, lesion_type
from mammogan_tf.data.table import BOX_COLUMNS
from mammogan_tf.errors import InputError

DICOM_FOLDERS = ("AllDICOMs", ".")
IMAGE_SUFFIXES = (".dcm", ".png", ".tif", ".tiff")


def read_inbreast(path: Path, root: Path, column_map):
    """One row per ROI of the image's XML (Apple plist: Images -> ROIs -> Name, Point_px "(x, y)"),
    with the box of its points ([floor(min), floor(max) + 1) per axis); the ROI name is kept as
    ``source_roi_name``. An image with BI-RADS 1 and no ROI is ``normal``; any other image
    without a ROI is rejected (its lesion location is unknown). The ``Bi-Rads`` column and the
    ``<root>/AllXML`` folder are required.

    Patient identity: INbreast DICOM files are named ``<File Name>_<patient hash>_MG_<side>_<view>_ANON.dcm``;
    the hash is the ``patient_id``. The published CSV's ``Patient ID`` is "removed", so without
    the DICOM files (``<root>/AllDICOMs`` or ``<root>``) ``patient_id`` is None unless the CSV
    has a real one, and ``prepare`` refuses to split (see ``prepare.split.allow_image_level``).
    Then images are looked for as ``<root>/<File Name>.{dcm,png,tif}``. When the DICOM files are
    there, a row without its file is rejected. Returns (rows, rejected, notes).
    """
    frame = read_frame(path, "inbreast", sep=";")
    require_columns(path, frame.columns, ("file_name", "bi_rads"))
    xml_folder = root / "AllXML"
    if not xml_folder.is_dir():
        raise InputError(
            f"{xml_folder}: folder not found; INbreast lesion outlines come from AllXML/<File Name>.xml: "
            "point --images at the INbreast folder that holds AllXML/ and AllDICOMs/"
        )
    dicoms, folder = _dicom_files(root)
    notes = []
    if dicoms:
        notes.append(f"INbreast patients from the DICOM file names in {folder}")
    else:
        notes.append(f"INbreast: no <File Name>_<patient>_MG_*.dcm files in {root}/AllDICOMs or {root}: "
                     "patient identity unknown")
    records = [(int(number), record) for number, record in zip(frame.index, frame.to_dict("records"))]
    rows, rejected = convert(path, records, lambda record: _rows(record, root, xml_folder, dicoms, folder))
    return rows, rejected, notes


def _dicom_files(root: Path) -> tuple[dict[str, tuple[Path, str]], Path | None]:
    """``{File Name: (path, patient hash)}`` of the INbreast DICOM files, and their folder."""
    for name in DICOM_FOLDERS:
        folder = (root / name).absolute()
        found = {}
        if folder.is_dir():
            for file in sorted(folder.glob("*.dcm")):
                parts = file.stem.split("_")
                if len(parts) >= 3 and parts[2].upper() == "MG":
                    found.setdefault(parts[0], (file, parts[1]))
        if found:
            return found, folder
    return {}, None


def _rows(record: dict, root: Path, xml_folder: Path, dicoms: dict, folder: Path | None) -> list[dict]:
    name = required(record, "file_name")
    birads = required(record, "bi_rads", "Bi-Rads")
    patient = record.get("patient_id", "").strip()
    patient = patient if patient and patient.lower() != "removed" else None
    if dicoms:
        if name not in dicoms:
            raise BadRow("image file not found", f"no {name}_*_MG_*.dcm in {folder}")
        image, patient = dicoms[name]
    else:
        candidates = [root / f"{name}{suffix}" for suffix in IMAGE_SUFFIXES]
        image = next((c for c in candidates if c.is_file()), candidates[0])
    base = {
        "image_id": name, "patient_id": patient, "path": resolve(root, image),
        "laterality": record.get("laterality"), "view": record.get("view"),
        **sources(record),
    }
    rois = _rois(xml_folder / f"{name}.xml")
    if not rois:
        if birads == "1":
            return [{**base, "lesion_type": "normal"}]
        raise BadRow("no ROI outline for an image with findings",
                     f"BI-RADS {birads} and no ROI in {xml_folder / (name + '.xml')}: lesion location unknown")
    return [
        {**base, "lesion_type": lesion_type(roi or "other"), **dict(zip(BOX_COLUMNS, box)), "source_roi_name": roi}
        for roi, box in rois
    ]


def _rois(xml_path: Path) -> list[tuple[str, tuple[float, ...]]]:
    """(Name, box) of every ROI in an INbreast plist XML; [] when the file is absent."""
    if not xml_path.is_file():
        return []
    try:
        with open(xml_path, "rb") as handle:
            plist = plistlib.load(handle)
        rois = [roi for image in plist.get("Images", []) for roi in image.get("ROIs", [])]
    except Exception as error:  # plistlib raises several types for malformed files
        raise BadRow("unreadable ROI file", f"{xml_path} ({error})") from error
    found = []
    for roi in rois:
        points = [[float(v) for v in NUMBER.findall(str(p))] for p in roi.get("Point_px", [])]
        points = [p for p in points if len(p) == 2]
        box = (NAN,) * 4
        if points:
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            box = (math.floor(min(xs)), math.floor(min(ys)), math.floor(max(xs)) + 1, math.floor(max(ys)) + 1)
        found.append((str(roi.get("Name", "")).strip(), tuple(float(v) for v in box)))
    return found
