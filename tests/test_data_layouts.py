"""Data sets as distributed: INbreast, VinDr-Mammo and CBIS-DDSM folders (file names and layouts
as published, tiny DICOMs written with pydicom) through `mammogan prepare`."""
from __future__ import annotations

import csv
import json
import plistlib
import shutil

import cv2
import numpy as np
import pytest
from test_images import write_dicom

from mammogan_tf.cli import main
from mammogan_tf.config import PrepareConfig
from mammogan_tf.data.annotations import load_annotations
from mammogan_tf.data.prepare import plan_prepare
from mammogan_tf.data.process import MASK_BY_CONTENT
from mammogan_tf.errors import InputError
from mammogan_tf.manifest import partial_dir, read_manifest

SIZE = 64
SMALL = ["--quiet", "--set", "prepare.patches.size=16", "--set", "prepare.patches.normal_per_image=1"]


def mammogram(seed: int, lesion: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """(64, 64) uint16 12-bit: a half-ellipse breast on black, a bright square at ``lesion`` (x0, y0, x1, y1)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    breast = (xx / (SIZE * 0.85)) ** 2 + ((yy - SIZE / 2) / (SIZE * 0.48)) ** 2 < 1
    pixels = np.where(breast, 1500 + 800 * rng.random((SIZE, SIZE)), 0)
    if lesion:
        x0, y0, x1, y1 = lesion
        pixels[y0:y1, x0:x1] += 1500
    return pixels.astype(np.uint16)


def prepare(*args: str) -> int:
    return main(["prepare", *args, *SMALL])


def rejected_rows(out) -> list[dict]:
    with open(out / "rejected.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# --------------------------------------------------------------------------- INbreast

INBREAST_PATIENTS = {  # patient hash -> BI-RADS per view (L CC, L MLO, R CC, R MLO); 4 = a mass
    "7a1b2c3d": ("4a", "4a", "1", "1"), "0f9e8d7c": ("1", "1", "1", "1"), "5566aabb": ("1", "1", "4", "4"),
    "c0ffee00": ("1", "1", "1", "1"), "deadbeef": ("1", "1", "1", "1"),
}
VIEWS = (("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO"))
LESION = (30, 26, 40, 36)


@pytest.fixture
def inbreast(tmp_path):
    """``INbreast Release 1.0``-style folder: INbreast.csv (';', CRLF, patient ids removed), AllDICOMs/
    named <File Name>_<patient>_MG_<side>_<view>_ANON.dcm, AllXML/<File Name>.xml for the masses."""
    root = tmp_path / "INbreast Release 1.0"
    (root / "AllDICOMs").mkdir(parents=True)
    (root / "AllXML").mkdir()
    lines = ["Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads"]
    number = 20586908
    for seed, (patient, birads) in enumerate(INBREAST_PATIENTS.items()):
        for (side, view), grade in zip(VIEWS, birads):
            number += 17
            lesion = LESION if grade != "1" else None
            name = f"{number}_{patient}_MG_{side}_{view.replace('MLO', 'ML')}_ANON.dcm"
            write_dicom(root / "AllDICOMs" / name, mammogram(seed * 4 + len(lines), lesion), 12)
            lines.append(f"removed;removed;{side};{view};201001;{number};2;{grade}")
            if lesion:
                x0, y0, x1, y1 = lesion
                points = [f"({x0}.2, {y0}.7)", f"({x1 - 1}.5, {y0}.1)", f"({x1 - 1}.0, {y1 - 1}.9)"]
                roi = {"Images": [{"ImageIndex": 0, "ROIs": [{"Name": "Mass", "Point_px": points}]}]}
                with open(root / "AllXML" / f"{number}.xml", "wb") as handle:
                    plistlib.dump(roi, handle)
    (root / "INbreast.csv").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return root


def test_inbreast_views_of_one_patient_share_a_split(inbreast, tmp_path):
    config = PrepareConfig(images=str(inbreast), annotations=str(inbreast / "INbreast.csv"))
    plan = plan_prepare(config)
    assert sorted(plan.assignment) == sorted(INBREAST_PATIENTS) and plan.split_level == "patient"
    splits_by_patient: dict[str, set] = {}
    for jobs in plan.units.values():
        for job in jobs:  # the patient hash is the second part of the DICOM file name
            splits_by_patient.setdefault(job.path.split("/")[-1].split("_")[1], set()).add(job.split)
    assert all(len(splits) == 1 for splits in splits_by_patient.values()) and len(splits_by_patient) == 5
    assert len({split for splits in splits_by_patient.values() for split in splits}) >= 2
    out = tmp_path / "out"
    assert prepare("--images", str(inbreast), "--annotations", str(inbreast / "INbreast.csv"), "--out", str(out)) == 0
    manifest = read_manifest(out)
    assert manifest["split_level"] == "patient" and sorted(manifest["patients"]) == sorted(INBREAST_PATIENTS)
    assert sum(split.get("mass", 0) for split in manifest["counts"].values()) == 4
    assert manifest["summary"]["images_read"] == 20


def test_inbreast_without_dicoms_refuses_to_split_unless_asked(inbreast, tmp_path, capsys):
    for dicom in sorted((inbreast / "AllDICOMs").iterdir()):  # converted copies named <File Name>.png
        from mammogan_tf.data.images import read_image
        cv2.imwrite(str(inbreast / f"{dicom.name.split('_')[0]}.png"), (read_image(dicom)[0] * 65535).astype(np.uint16))
    shutil.rmtree(inbreast / "AllDICOMs")
    args = ["--images", str(inbreast), "--annotations", str(inbreast / "INbreast.csv")]
    assert prepare(*args, "--out", str(tmp_path / "refused")) == 2
    error = one_line_error(capsys)
    assert "20 of 20 images have no patient identity" in error and "allow_image_level" in error
    assert not (tmp_path / "refused").exists() and not partial_dir(tmp_path / "refused").exists()
    out = tmp_path / "by-image"
    assert prepare(*args, "--out", str(out), "--set", "prepare.split.allow_image_level=true") == 0
    manifest = read_manifest(out)
    assert manifest["split_level"] == "image" and manifest["images_without_patient"] == 20
    assert len(manifest["patients"]) == 20 and all(p.startswith("image:") for p in manifest["patients"])
    assert "split image by image" in capsys.readouterr().out


def test_inbreast_missing_sources_are_errors_not_other(inbreast):
    csv_text = (inbreast / "INbreast.csv").read_text()
    (inbreast / "no_birads.csv").write_text(csv_text.replace(";Bi-Rads", ";Notes"))
    with pytest.raises(InputError, match=r"missing column\(s\) \['bi_rads'\]"):
        load_annotations(inbreast / "no_birads.csv", format="INbreast")
    (inbreast / "AllXML" / sorted(p.name for p in (inbreast / "AllXML").iterdir())[0]).unlink()
    result = load_annotations(inbreast / "INbreast.csv")
    assert [r.reason for r in result.rejected] == ["no ROI outline for an image with findings"]
    assert "other" not in set(result.table["lesion_type"])
    shutil.rmtree(inbreast / "AllXML")
    with pytest.raises(InputError, match="AllXML: folder not found"):
        load_annotations(inbreast / "INbreast.csv")


# --------------------------------------------------------------------------- VinDr-Mammo

VINDR_HEADER = ("image_id,study_id,series_id,laterality,view_position,height,width,breast_birads,"
                "breast_density,finding_categories,finding_birads,xmin,ymin,xmax,ymax,split")
VINDR_ROWS = [  # (image, study, laterality, view, categories, box)
    ("a1", "s1", "L", "CC", "['No Finding']", None),
    ("a2", "s1", "L", "MLO", "['Mass']", LESION),
    ("a3", "s2", "R", "CC", "['Mass', 'Suspicious Calcification']", LESION),
    ("a4", "s2", "R", "", "['No Finding']", None),
    ("a5", "s3", "BOTH", "CC", "['No Finding']", None),
    ("a6", "s3", "L", "MLO", "['No Finding']", None),
    ("gone", "s3", "R", "CC", "['Mass']", (10, 10, 20, 20)),
    ("gone", "s3", "R", "CC", "['Focal Asymmetry']", (30, 30, 40, 40)),
]


@pytest.fixture
def vindr(tmp_path):
    """VinDr-Mammo as distributed: CSVs at the root, images/<study_id>/<image_id>.dicom."""
    root = tmp_path / "vindr-mammo"
    lines = [VINDR_HEADER]
    for seed, (image, study, side, view, categories, box) in enumerate(VINDR_ROWS):
        coords = ",".join(str(v) for v in box) if box else ",,,"
        lines.append(f'{image},{study},x,{side},{view},64,64,BI-RADS 2,DENSITY B,"{categories}",,{coords},training')
        if image != "gone":
            (root / "images" / study).mkdir(parents=True, exist_ok=True)
            write_dicom(root / "images" / study / f"{image}.dicom", mammogram(seed, box), 12)
    (root / "finding_annotations.csv").write_text("\n".join(lines) + "\n")
    return root


def test_vindr_layout_multi_label_and_rejected_rows(vindr, tmp_path, capsys):
    args = ["--images", str(vindr), "--annotations", str(vindr / "finding_annotations.csv")]
    out = tmp_path / "out"
    assert prepare(*args, "--out", str(out), "--set", "prepare.split.fractions=[1,0,0]") == 3
    printed = capsys.readouterr().out
    manifest = read_manifest(out)
    assert manifest["summary"]["images"] == 7 and manifest["summary"]["images_read"] == 6  # images/ found
    assert manifest["counts"]["train"]["mass"] == 1  # the mass + calcification box is no patch by default
    rows = {row["rows"]: row for row in rejected_rows(out)}
    assert set(rows) == {"4", "8 9"}  # spreadsheet rows of finding_annotations.csv
    assert rows["4"]["reason"] == "finding has several selected labels: no lesion patch"
    assert "mass and calcification" in rows["4"]["detail"] and rows["4"]["image_id"] == "a3"
    assert rows["8 9"]["reason"] == "image file not found" and rows["8 9"]["image_id"] == "gone"
    assert rows["8 9"]["file"] == str(vindr / "finding_annotations.csv")
    summary = manifest["summary"]
    assert (summary["rejected_rows"], summary["rejected_images"]) == (3, 1)
    assert summary["rejected_by_reason"]["image file not found"] == {"rows": 2, "images": 1}
    assert "3 source rows, 1 whole images" in printed
    reason_lines = [line for line in printed.splitlines() if line.startswith("  ")]
    assert len(reason_lines) == 2 and not any("/" in line for line in reason_lines)  # grouped, no paths
    assert "laterality not L or R on 1 rows ('BOTH' x1)" in printed and "view not" in printed
    selected = tmp_path / "mass-only"
    assert prepare(*args, "--out", str(selected), "--set", "prepare.split.fractions=[1,0,0]",
                   "--set", "prepare.patches.lesion_types=[mass]") == 3
    assert read_manifest(selected)["counts"]["train"]["mass"] == 2  # now the selection decides: mass
    each = tmp_path / "each"
    assert prepare(*args, "--out", str(each), "--set", "prepare.split.fractions=[1,0,0]",
                   "--set", "prepare.patches.multi_label=each") == 3
    counts = read_manifest(each)["counts"]["train"]
    assert (counts["mass"], counts["calcification"]) == (2, 1)


def test_all_missing_run_exits_non_zero_without_manifest(vindr, tmp_path, capsys):
    shutil.rmtree(vindr / "images")
    out = tmp_path / "out"
    code = prepare("--images", str(vindr), "--annotations", str(vindr / "finding_annotations.csv"), "--out", str(out))
    assert code == 2
    error = one_line_error(capsys)
    assert "no patches were written (0 of 7 images read; most common reason: image file not found" in error
    assert not out.exists() and not partial_dir(out).exists()


# --------------------------------------------------------------------------- CBIS-DDSM

CBIS_HEADER = ("patient_id,breast_density,left or right breast,image view,abnormality id,abnormality type,"
               "mass shape,mass margins,assessment,pathology,subtlety,image file path,"
               "cropped image file path,ROI mask file path")


def cbis_row(patient: str, pathology: str) -> str:
    subject = f"Mass-Training_{patient}_LEFT_CC"
    uid = "1.3.6.1.4.1.9590.100.1.2"
    return (f'{patient},2,LEFT,CC,1,mass,OVAL,CIRCUMSCRIBED,4,{pathology},3,'
            f'"{subject}/{uid}.11/{uid}.12/000000.dcm\n",'
            f'"{subject}_1/{uid}.21/{uid}.22/000000.dcm\n",'
            f'"{subject}_1/{uid}.21/{uid}.22/000001.dcm\n"')


@pytest.fixture
def cbis(tmp_path):
    """The TCIA download tree: CBIS-DDSM/<Subject ID>/<study>/<series>/1-1.dcm; in the ROI folder the
    cropped image comes first and the mask is 1-2.dcm (not the 000001.dcm the CSV names)."""
    root = tmp_path / "manifest-ZkhPvrLo5216730872708713142"
    full = root / "CBIS-DDSM" / "Mass-Training_P_00001_LEFT_CC" / "07-20-2016-DDSM-74994" / "1.000000-full mammogram images-24515"
    roi = root / "CBIS-DDSM" / "Mass-Training_P_00001_LEFT_CC_1" / "08-07-2016-DDSM-86489" / "1.000000-ROI mask images-11111"
    full.mkdir(parents=True)
    roi.mkdir(parents=True)
    write_dicom(full / "1-1.dcm", mammogram(1, LESION), 12)
    write_dicom(roi / "1-1.dcm", mammogram(1, LESION)[20:44, 20:44].copy(), 12)  # cropped image
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[26:36, 30:40] = 255
    write_dicom(roi / "1-2.dcm", mask, 8)
    (root / "mass_case_description_train_set.csv").write_text(
        "\n".join([CBIS_HEADER, cbis_row("P_00001", "MALIGNANT"), cbis_row("P_00002", "")]) + "\n")
    return root


def test_cbis_tcia_tree_and_mask_chosen_by_content(cbis, tmp_path, capsys):
    out = tmp_path / "out"
    code = prepare("--images", str(cbis), "--annotations", str(cbis / "mass_case_description_train_set.csv"),
                   "--out", str(out), "--set", "prepare.split.fractions=[1,0,0]")
    assert code == 3
    printed = capsys.readouterr().out
    manifest = read_manifest(out)
    assert manifest["counts"]["train"]["mass"] == 1 and manifest["summary"]["images_read"] == 1
    assert manifest["summary"]["mask_rules"] == {MASK_BY_CONTENT: 1}
    assert f"ROI masks {MASK_BY_CONTENT}: 1" in printed and "TCIA download tree" in printed
    rejected = rejected_rows(out)
    assert [(r["rows"], r["reason"]) for r in rejected] == [("3", "missing pathology")]


def test_cbis_without_roi_column_is_an_error(cbis):
    path = cbis / "mass_case_description_train_set.csv"
    lines = path.read_text().split("\n")
    path.write_text(lines[0].replace(",ROI mask file path", "") + "\n")
    with pytest.raises(InputError, match=r"missing column\(s\) \['roi_mask_file_path'\] \(the ROI mask column"):
        load_annotations(path)


# --------------------------------------------------------------------------- file-level messages


def test_clear_messages_for_separator_encoding_empty_file_and_bad_rows(tmp_path, vindr):
    semicolon = tmp_path / "mass_case_description_test_set.csv"
    semicolon.write_text(CBIS_HEADER.replace(",", ";") + "\n" + "P_1;2;LEFT;CC\n")
    with pytest.raises(InputError, match="header is ';'-separated, but --format cbis-ddsm reads ','-separated"):
        load_annotations(semicolon)
    utf16 = tmp_path / "finding_annotations.csv"
    utf16.write_bytes((vindr / "finding_annotations.csv").read_text().encode("utf-16"))
    with pytest.raises(InputError, match="UTF-16/32 encoded; save it as UTF-8"):
        load_annotations(utf16)
    (tmp_path / "data.csv").write_text("")
    with pytest.raises(InputError, match="data.csv: the annotation file is empty"):
        load_annotations(tmp_path / "data.csv")
    # a quoted two-line cell is one spreadsheet row: the extra field is on row 4, file line 5
    extra = tmp_path / "export.csv"
    extra.write_text('image_id,patient_id,path\n"a\nb",p,a.png\nc,p,c.png\nd,p,d.png,EXTRA\n')
    with pytest.raises(InputError, match="row 4 has 4 fields, the header has 3"):
        load_annotations(extra, format="optimam")
    assert load_annotations(vindr / "finding_annotations.csv", format="VinDr").format == "vindr"
    assert PrepareConfig(format="CBIS_DDSM").format == "cbis-ddsm"
    json.dumps(load_annotations(vindr / "finding_annotations.csv").notes)  # notes are plain text
