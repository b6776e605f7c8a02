"""Annotation readers: real mini-MIAS and CBIS-DDSM files, and small fixtures for the others."""
from __future__ import annotations

import math
import plistlib
import shutil

import numpy as np
import pandas as pd
import pytest

from mammogan_tf.data.annotations import FORMATS, Rejection, detect_format, load_annotations, read_annotations
from mammogan_tf.data.images import read_image
from mammogan_tf.data.table import COLUMNS, make_table
from mammogan_tf.errors import ConfigError, InputError

NAN_BOX = [math.nan] * 4


def box(row) -> list[float]:
    return [float(row[c]) for c in ("x0", "y0", "x1", "y1")]


# --------------------------------------------------------------------------- mini-MIAS (real data)


@pytest.fixture
def mias(mias_dir):
    return load_annotations(mias_dir / "Info.txt")


def test_mias_counts(mias):
    table = mias.table
    assert mias.format == "mias" and mias.rejected == []
    assert list(table.columns[: len(COLUMNS)]) == list(COLUMNS)
    assert len(table) == 330 and table["image_id"].nunique() == 322
    assert table["x0"].notna().sum() == 119
    assert table.loc[table["lesion_type"] == "normal", "image_id"].nunique() == 207
    assert table["pathology"].value_counts().to_dict() == {"unknown": 207, "benign": 69, "malignant": 54}
    assert {"mdb212", "mdb214"} <= set(table["image_id"])
    diffuse = table.loc[table["x0"].isna() & (table["lesion_type"] != "normal"), "image_id"]
    assert sorted(diffuse) == ["mdb059", "mdb216", "mdb233", "mdb245"]
    assert table.loc[table["image_id"] == "mdb216", "source_note"].item() == "*NOTE 3*"


def test_mias_patients_laterality_and_paths(mias):
    table = mias.table
    images_per_patient = table.groupby("patient_id")["image_id"].nunique()
    assert len(images_per_patient) == 161 and (images_per_patient == 2).all()
    first = table.drop_duplicates("image_id").set_index("image_id")
    assert first.loc["mdb001", "patient_id"] == first.loc["mdb002", "patient_id"] == "mias001"
    assert first.loc["mdb322", "patient_id"] == "mias161"
    assert (first.loc["mdb001", "laterality"], first.loc["mdb002", "laterality"]) == ("R", "L")
    assert first.loc["mdb001", "path"].endswith("/mini-mias/png/mdb001.png")
    assert all(p.startswith("/") for p in table["path"])


def test_mias_box_of_mdb001(mias):
    row = mias.table.set_index("image_id").loc["mdb001"]
    # x=535 y=425 r=197 -> centre column 535, row 1024 - 425 = 599
    assert box(row) == [535 - 197, 599 - 197, 535 + 197 + 1, 599 + 197 + 1]
    assert (row["lesion_type"], row["pathology"], row["source_background"]) == ("mass", "benign", "G")


def _disc_minus_ring(image: np.ndarray, column: float, row: float, radius: float) -> float:
    """Mean inside the disc minus mean of the ring r..2r (ring clipped to the image)."""
    r2 = 2 * radius
    top, left = int(max(0, row - r2)), int(max(0, column - r2))
    crop = image[top: int(row + r2) + 1, left: int(column + r2) + 1]
    yy, xx = np.mgrid[top: top + crop.shape[0], left: left + crop.shape[1]]
    distance = np.hypot(xx - column, yy - row)
    disc, ring = crop[distance <= radius], crop[(distance > radius) & (distance <= r2)]
    return float(disc.mean() - ring.mean()) if disc.size and ring.size else math.nan


def test_mias_coordinate_convention_puts_lesions_on_bright_tissue(mias):
    """Lesions are denser than their surroundings under row = 1024 - y, much less so under row = y."""
    located = mias.table[mias.table["x0"].notna()]
    ours, flipped = [], []
    for path, group in located.groupby("path"):
        image, _ = read_image(path)
        for _, lesion in group.iterrows():
            radius = float(lesion["source_radius"])  # centre from an unclipped side of the box
            column = lesion["x0"] + radius if lesion["x0"] > 0 else lesion["x1"] - 1 - radius
            row = lesion["y0"] + radius if lesion["y0"] > 0 else lesion["y1"] - 1 - radius
            assert (column, row) == (float(lesion["source_x"]), 1024 - float(lesion["source_y"]))
            ours.append(_disc_minus_ring(image, column, row, radius))
            flipped.append(_disc_minus_ring(image, column, 1024 - row, radius))
    assert len(ours) == 119
    assert np.nanmean(ours) > 0.05 and np.nanmean(ours) > np.nanmean(flipped) + 0.03  # about 0.096 vs 0.040


def test_mias_bad_rows_and_pgm_files(tmp_path):
    text = (
        "MIAS header text\nThe size of ALL the images is 1024 pixels x 1024 pixels.\n\n"
        "mdb001 G CIRC B 535 425 197\n"
        "mdb002 G FOO B 1 2 3\n"        # unknown class
        "mdb003 D CALC M 10 20\n"       # incomplete coordinates
        "mdb004 F NORM \n"
        "mdb005 F CALC B 5 1020 10 *\n"  # near the top-left corner: clipped, note marker
    )
    (tmp_path / "Info.txt").write_text(text)
    (tmp_path / "mdb004.pgm").write_bytes(b"")
    result = load_annotations(tmp_path / "Info.txt")
    assert [(r.row, r.reason.split(" ")[0]) for r in result.rejected] == [(5, "unknown"), (6, "incomplete")]
    assert all(r.file == str(tmp_path / "Info.txt") for r in result.rejected)
    table = result.table.set_index("image_id")
    assert list(table.index) == ["mdb001", "mdb004", "mdb005"] and list(table["source_line"]) == [4, 7, 8]
    assert box(table.loc["mdb005"]) == [0.0, 0.0, 16.0, 15.0]
    assert table.loc["mdb005", "source_note"] == "*"
    assert table.loc["mdb004", "path"] == str(tmp_path / "mdb004.pgm")
    assert table.loc["mdb001", "path"] == str(tmp_path / "mdb001.pgm")  # absent: the original name


# --------------------------------------------------------------------------- CBIS-DDSM (real data)


@pytest.mark.parametrize(
    ("name", "rows", "lesion", "counts"),
    [
        ("mass_case_description_train_set.csv", 1318, "mass", (637, 577, 104)),
        ("calc_case_description_train_set.csv", 1546, "calcification", (544, 528, 474)),
    ],
)
def test_cbis_ddsm(cbis_dir, name, rows, lesion, counts):
    result = load_annotations(cbis_dir / name)
    table = result.table
    assert result.format == "cbis-ddsm" and result.rejected == [] and len(table) == rows
    pathology = table["pathology"].value_counts()
    assert (pathology["malignant"], pathology["benign"], pathology["benign_without_callback"]) == counts
    assert set(table["lesion_type"]) == {lesion} and set(table["laterality"]) == {"L", "R"}
    assert set(table["view"]) == {"CC", "MLO"} and table[["x0", "y0", "x1", "y1"]].isna().all().all()
    for column in ("path", "mask_path"):
        assert not table[column].str.contains("\n").any() and table[column].str.endswith(".dcm").all()
    first = table.iloc[0]
    assert first["path"].startswith(str(cbis_dir) + "/" + first["image_id"] + "/" + first["study_id"] + "/")
    assert first["image_id"].endswith(f"_{first['patient_id']}_{'LEFT' if first['laterality'] == 'L' else 'RIGHT'}_{first['view']}")
    assert "source_breast_density" in table.columns and table["source_breast_density"].isin(list("01234")).all()
    assert "source_image_file_path" in table.columns and "source_abnormality_id" in table.columns


def test_cbis_density_spellings_share_one_column(cbis_dir):
    both = pd.concat([read_annotations(cbis_dir / f) for f in (
        "mass_case_description_train_set.csv", "calc_case_description_train_set.csv")])
    assert len(both) == 1318 + 1546 and both["source_breast_density"].notna().all()
    assert not [c for c in both.columns if "density" in c and c != "source_breast_density"]


# --------------------------------------------------------------------------- VinDr-Mammo (fixture)

VINDR = """image_id,study_id,series_id,laterality,view_position,height,width,breast_birads,breast_density,finding_categories,finding_birads,xmin,ymin,xmax,ymax,split
img1,st1,se1,L,CC,3518,2800,BI-RADS 1,DENSITY C,['No Finding'],,,,,,training
img2,st1,se1,R,MLO,3518,2800,BI-RADS 4,DENSITY C,['Mass'],BI-RADS 4,10.5,20.0,110.5,220.0,training
img3,st2,se2,L,MLO,3518,2800,BI-RADS 4,DENSITY B,"['Mass', 'Suspicious Calcification']",BI-RADS 4,1,2,3,4,test
,st2,se2,L,CC,3518,2800,BI-RADS 3,DENSITY B,['Mass'],BI-RADS 3,1,2,3,4,test
img5,st3,se3,R,CC,3518,2800,BI-RADS 3,DENSITY A,['Focal Asymmetry'],BI-RADS 3,abc,2,3,4,test
img6,st3,se3,R,CC,3518,2800,BI-RADS 2,DENSITY A,"['Nipple Retraction', 'Global Asymmetry']",BI-RADS 2,5,6,7,8,test
img7,st3,se3,R,CC,3518,2800,BI-RADS 2,DENSITY A,[Mass,BI-RADS 2,5,6,7,8,test
"""


def test_vindr(tmp_path):
    (tmp_path / "finding_annotations.csv").write_text(VINDR)
    result = load_annotations(tmp_path / "finding_annotations.csv", image_root=tmp_path / "images")
    assert result.format == "vindr"
    assert [(r.row, r.reason.split(" ")[0]) for r in result.rejected] == [(5, "missing"), (6, "box"), (8, "unparseable")]
    table = result.table
    # one finding per box: a multi-label row stays one row with all its labels
    assert list(zip(table["image_id"], table["lesion_type"], table["lesion_labels"])) == [
        ("img1", "normal", None), ("img2", "mass", None), ("img3", "mass", "mass|calcification"),
        ("img6", "other", "other|asymmetry"),
    ]
    assert np.isnan(box(table.iloc[0])).all()
    assert box(table.iloc[1]) == [10.5, 20.0, 110.5, 220.0]
    assert box(table.iloc[2]) == [1.0, 2.0, 3.0, 4.0]
    assert table.iloc[1]["path"] == str(tmp_path / "images" / "st1" / "img2.dicom")
    assert list(table["patient_id"]) == list(table["study_id"])
    assert (table.iloc[1]["laterality"], table.iloc[1]["view"], table.iloc[1]["pathology"]) == ("R", "MLO", "unknown")
    assert list(table["source_split"]) == ["training", "training", "test", "test"]
    assert list(table["source_line"]) == [2, 3, 4, 7]


# --------------------------------------------------------------------------- INbreast (fixture)

INBREAST = (
    "Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads\r\n"
    "removed;removed;R;CC;201001;22678622;1;1\r\n"
    ";;L;MLO;201002;22614097;2;4a\r\n"
    "P7;;R;CC;201003;22580192;3;3\r\n"
    ";;L;CC;201004;;2;2\r\n"
    ";;;;;;;\r\n"
)


def test_inbreast_with_xml_rois(tmp_path):
    (tmp_path / "INbreast.csv").write_bytes(INBREAST.encode())
    (tmp_path / "AllDICOMs").mkdir()
    for name in ("22678622_aaaa_MG_R_CC_ANON", "22614097_5b3c0e7e_MG_L_ML_ANON", "22580192_aaaa_MG_R_CC_ANON"):
        (tmp_path / "AllDICOMs" / f"{name}.dcm").write_bytes(b"")
    (tmp_path / "AllXML").mkdir()
    rois = {"Images": [{"ImageIndex": 0, "NumberOfROIs": 2, "ROIs": [
        {"Name": "Mass", "NumberOfPoints": 3, "Point_px": ["(100.5, 200.25)", "(150.0, 180.0)", "(120.9, 260.7)"]},
        {"Name": "Calcification", "NumberOfPoints": 1, "Point_px": ["(30.2, 40.8)"]},
    ]}]}
    with open(tmp_path / "AllXML" / "22614097.xml", "wb") as handle:
        plistlib.dump(rois, handle)
    result = load_annotations(tmp_path / "INbreast.csv")
    assert result.format == "inbreast"
    assert [(r.row, r.reason) for r in result.rejected] == [
        (4, "no ROI outline for an image with findings"), (5, "missing file_name")]
    assert "BI-RADS 3" in result.rejected[0].detail and "22580192.xml" in result.rejected[0].detail
    table = result.table
    assert list(zip(table["image_id"], table["lesion_type"])) == [
        ("22678622", "normal"), ("22614097", "mass"), ("22614097", "calcification")]
    assert box(table.iloc[1]) == [100.0, 180.0, 151.0, 261.0]
    assert box(table.iloc[2]) == [30.0, 40.0, 31.0, 41.0]
    assert np.isnan(box(table.iloc[0])).all()
    assert list(table["patient_id"]) == ["aaaa", "5b3c0e7e", "5b3c0e7e"]  # from the DICOM file names
    assert table.iloc[1]["path"] == str(tmp_path / "AllDICOMs" / "22614097_5b3c0e7e_MG_L_ML_ANON.dcm")
    assert list(table["source_bi_rads"]) == ["1", "4a", "4a"]
    assert table.iloc[1]["source_roi_name"] == "Mass" and (table.iloc[1]["laterality"], table.iloc[1]["view"]) == ("L", "MLO")


# --------------------------------------------------------------------------- OPTIMAM (fixture)

OPTIMAM_MAP = {
    "image_id": "ImageSOPInstanceUID", "patient_id": "ClientID", "path": "File", "lesion_type": "Lesion Type",
    "pathology": "Outcome", "x0": "X1", "y0": "Y1", "x1": "X2", "y1": "Y2", "manufacturer": "Manufacturer",
    "processed": "Presentation", "laterality": "Side", "view": "View",
}


def _optimam_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "ClientID": ["demd1", "demd1", "demd2", "demd3", "demd4", "demd5"],
        "ImageSOPInstanceUID": ["1.2.1", "1.2.2", "1.2.3", None, "1.2.5", "1.2.6"],
        "File": ["demd1/a.dcm", "demd1/b.dcm", "demd2/c.dcm", "demd3/d.dcm", "demd4/e.dcm", "/abs/f.dcm"],
        "Lesion Type": ["Mass", "Calcifications", None, "mass", "mass", "Architectural Distortion"],
        "Outcome": ["Malignant", "BENIGN", None, "Malignant", "Malignant", "malignant"],
        "X1": [10, 20.5, None, 1, "abc", 3], "Y1": [11, 21, None, 1, 2, 4],
        "X2": [30, 40, None, 2, 3, 13], "Y2": [31, 41, None, 2, 4, 14],
        "Manufacturer": ["HOLOGIC, Inc."] * 6,
        "Presentation": ["FOR PRESENTATION", "FOR PRESENTATION", "FOR PROCESSING", "", "", ""],
        "Side": ["L", "R", "L", "L", "L", "R"], "View": ["CC", "MLO", "CC", "CC", "CC", "MLO"],
    })


def test_optimam_excel_with_column_map(tmp_path):
    path = tmp_path / "omi-db_export.xlsx"
    _optimam_frame().to_excel(path, index=False)
    result = load_annotations(path, column_map=OPTIMAM_MAP, image_root=tmp_path / "images")
    assert result.format == "optimam"
    assert [(r.row, r.reason.split(" ")[0]) for r in result.rejected] == [(5, "missing"), (6, "box")]
    table = result.table
    assert list(table["image_id"]) == ["1.2.1", "1.2.2", "1.2.3", "1.2.6"]
    assert list(table["lesion_type"]) == ["mass", "calcification", "normal", "architectural_distortion"]
    assert list(table["pathology"]) == ["malignant", "benign", "unknown", "malignant"]
    assert list(table["processed"]) == [True, True, False, None]
    assert box(table.iloc[1]) == [20.5, 21.0, 40.0, 41.0] and np.isnan(box(table.iloc[2])).all()
    assert table.iloc[0]["path"] == str(tmp_path / "images" / "demd1" / "a.dcm") and table.iloc[3]["path"] == "/abs/f.dcm"
    assert table.iloc[0]["manufacturer"] == "HOLOGIC, Inc." and table.iloc[0]["source_clientid"] == "demd1"
    assert table["x0"].dtype == float


def test_optimam_missing_mapped_column_and_bad_map(tmp_path):
    path = tmp_path / "export.csv"
    _optimam_frame().drop(columns=["Outcome"]).to_csv(path, index=False)
    with pytest.raises(InputError, match="'Outcome' \\(mapped to pathology\\)"):
        load_annotations(path, format="optimam", column_map=OPTIMAM_MAP)
    with pytest.raises(InputError, match="no column for \\['image_id', 'patient_id', 'path'\\]"):
        load_annotations(path, format="optimam")
    with pytest.raises(ConfigError, match="not lesion-table columns"):
        load_annotations(path, format="optimam", column_map={"birads": "X"})


# --------------------------------------------------------------------------- our table (fixture)


def test_table_round_trip_and_bad_rows(tmp_path):
    rows = [
        {"image_id": "a", "patient_id": "p1", "path": str(tmp_path / "a.png"), "lesion_type": "mass",
         "pathology": "malignant", "x0": 1, "y0": 2, "x1": 11, "y1": 12, "processed": True, "source_note": "x"},
        {"image_id": "b", "patient_id": "p2", "path": "b.png", "lesion_type": "normal", "laterality": "L"},
    ]
    table = make_table(rows)
    frame = table.astype(object).where(table.notna(), "")
    bad = pd.DataFrame([{**frame.iloc[0].to_dict(), "image_id": ""}, {**frame.iloc[0].to_dict(), "x0": "abc"}])
    pd.concat([frame, bad]).to_csv(tmp_path / "lesions.csv", index=False)
    result = load_annotations(tmp_path / "lesions.csv")
    assert result.format == "table"
    assert [(r.row, r.reason.split(" ")[0]) for r in result.rejected] == [(4, "missing"), (5, "box")]
    back = result.table
    assert list(back.columns) == list(COLUMNS) + ["source_note", "source_line"]
    assert list(back["source_line"]) == [2, 3]
    assert list(back["image_id"]) == ["a", "b"] and list(back["lesion_type"]) == ["mass", "normal"]
    assert box(back.iloc[0]) == [1.0, 2.0, 11.0, 12.0] and np.isnan(box(back.iloc[1])).all()
    assert back.iloc[1]["path"] == str(tmp_path / "b.png") and back.iloc[0]["processed"] is True
    assert back.iloc[0]["source_note"] == "x" and back.iloc[1]["laterality"] == "L"


# --------------------------------------------------------------------------- detection and errors


def test_detect_format_by_name_and_header(tmp_path, cbis_dir):
    names = {"Info.txt": "mdb001 G NORM\n", "finding_annotations.csv": VINDR, "INbreast.csv": INBREAST,
             "calc_case_description_test_set.csv": "x\n", "export.xlsx": ""}
    for name, text in names.items():
        (tmp_path / name).write_text(text)
    assert [detect_format(tmp_path / n) for n in names] == ["mias", "vindr", "inbreast", "cbis-ddsm", "optimam"]
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    shutil.copy(cbis_dir / "mass_case_description_train_set.csv", renamed / "mass.csv")
    (renamed / "vindr.csv").write_text(VINDR)
    (renamed / "ib.csv").write_bytes(INBREAST.encode())
    (renamed / "info").write_text("header\nmdb001 G CIRC B 535 425 197\n")
    (renamed / "lesions.csv").write_text(",".join(COLUMNS) + "\n")
    assert [detect_format(renamed / n) for n in ("mass.csv", "vindr.csv", "ib.csv", "info", "lesions.csv")] == [
        "cbis-ddsm", "vindr", "inbreast", "mias", "table"]


def test_undetectable_conflicting_and_missing_files(tmp_path):
    (tmp_path / "data.csv").write_text("a,b,c\n1,2,3\n")
    with pytest.raises(InputError, match="data.csv: cannot tell.*--format.*mias, cbis-ddsm, vindr, inbreast, optimam, table"):
        load_annotations(tmp_path / "data.csv")
    (tmp_path / "finding_annotations.csv").write_text(",".join(COLUMNS) + "\n")
    with pytest.raises(InputError, match="suggests 'vindr' but the header looks like 'table'"):
        detect_format(tmp_path / "finding_annotations.csv")
    assert load_annotations(tmp_path / "finding_annotations.csv", format="table").table.empty
    with pytest.raises(InputError, match="absent.csv: annotation file not found.*--format values: " + ", ".join(FORMATS)):
        load_annotations(tmp_path / "absent.csv")
    with pytest.raises(InputError, match="unknown annotation format 'ddsm'"):
        load_annotations(tmp_path / "data.csv", format="ddsm")
    with pytest.raises(InputError, match="no 'mdbNNN ...' rows found"):
        load_annotations(tmp_path / "data.csv", format="mias")
    with pytest.raises(InputError, match="missing column"):
        load_annotations(tmp_path / "data.csv", format="cbis-ddsm")
    with pytest.raises(ConfigError, match="column_map applies"):
        load_annotations(tmp_path / "data.csv", format="vindr", column_map={"image_id": "a"})
    assert isinstance(Rejection("f", 2, "r"), Rejection)
