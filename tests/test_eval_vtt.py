"""Visual Turing test kit: anonymised shuffled set with a separate key; scores and kappa."""
from __future__ import annotations

import csv
import io
import json
import re

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import cohen_kappa_score

from mammogan_tf.cli import main
from mammogan_tf.errors import InputError
from mammogan_tf.evaluation.inputs import ImageSet
from mammogan_tf.evaluation.vtt import (cohen_kappa, contact_sheet_png, format_scores, make_vtt, read_answers,
                                        read_key, score_vtt)


def _set(n, value, name):
    rng = np.random.default_rng(len(name))
    images = np.clip(rng.normal(value, 0.3, (n, 16, 16, 1)), -1, 1).astype(np.float32)
    return ImageSet(images, [f"{name}{i}" for i in range(n)], [None] * n, f"/data/{name}", "d", "folder")


def test_make_writes_anonymised_shuffled_set_and_separate_key(tmp_path):
    result = make_vtt(_set(9, -0.3, "real"), _set(7, 0.3, "fake"), tmp_path / "vtt", n=5, seed=1)
    observers = tmp_path / "vtt" / "observers"
    files = sorted(p.name for p in (observers / "images").iterdir())
    assert files == [f"vtt_{i:03d}.png" for i in range(1, 11)]
    key = read_key(result["key"])
    assert sorted(key) == files and sum(key.values()) == 5
    assert not (observers / "key.csv").exists() and (tmp_path / "vtt" / "key.csv").exists()
    study = json.loads((tmp_path / "vtt" / "study.json").read_text())
    assert study["seed"] == 1 and study["reading"]["final_answers"] is True and not (observers / "study.json").exists()
    truths = [key[f] for f in files]
    assert truths != sorted(truths) and truths != sorted(truths, reverse=True)  # shuffled
    for name in files:
        image = Image.open(observers / "images" / name)
        assert image.mode == "L" and image.size == (16, 16) and not image.info.get("text") and not image.text
    with open(observers / "answer_sheet.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["image"] for r in rows] == files and all(r["answer"] == "" for r in rows)
    again = make_vtt(_set(9, -0.3, "real"), _set(7, 0.3, "fake"), tmp_path / "again", n=5, seed=1)
    assert read_key(again["key"]) == key
    with pytest.raises(InputError, match="lower --n"):
        make_vtt(_set(3, 0, "real"), _set(7, 0, "fake"), tmp_path / "x", n=5)


def test_kappa_matches_sklearn_and_hand_value():
    a = [1, 1, 0, 0, 1, 0, 1, 1]
    b = [1, 0, 0, 0, 1, 1, 1, 1]
    # p_o = 6/8; p_e = (5/8)(5/8) + (3/8)(3/8) = 34/64 -> kappa = (48/64 - 34/64) / (30/64) = 14/30
    assert cohen_kappa(a, b) == pytest.approx(14 / 30)
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))
    assert cohen_kappa(a, a) == 1.0
    assert np.isnan(cohen_kappa([1, 1], [1, 1]))


def _write_sheet(path, answers):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "answer"])
        writer.writerows(answers.items())


def test_score_known_answers_and_cli(tmp_path, capsys):
    key_path = tmp_path / "key.csv"
    with open(key_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "truth", "source", "id"])
        for i, truth in enumerate(["synthetic"] * 4 + ["real"] * 4):
            writer.writerow([f"im{i}.png", truth, "s", i])
    # observer A: 3 of 4 synthetic found, 2 of 4 real right; observer B: all right but one blank
    a = {f"im{i}.png": v for i, v in enumerate(["synthetic", "s", "fake", "real", "real", "synthetic", "R", "1"])}
    b = {f"im{i}.png": v for i, v in enumerate(["synthetic"] * 4 + ["real"] * 3 + [""])}
    _write_sheet(tmp_path / "A.csv", a)
    _write_sheet(tmp_path / "B.csv", b)
    key = read_key(key_path)
    scores = score_vtt(key, {"A": read_answers(tmp_path / "A.csv", key), "B": read_answers(tmp_path / "B.csv", key)})
    obs_a, obs_b = scores["observers"]["A"], scores["observers"]["B"]
    assert (obs_a["accuracy"], obs_a["sensitivity"], obs_a["specificity"]) == (5 / 8, 3 / 4, 2 / 4)
    assert (obs_b["accuracy"], obs_b["sensitivity"], obs_b["specificity"], obs_b["n_missing"]) == (1.0, 1.0, 1.0, 1)
    assert obs_a["p_vs_chance"] == pytest.approx(0.7265625)  # binomial(8, 0.5): P(|X-4| >= 1)
    said_a = [1, 1, 1, 0, 0, 1, 0]
    said_b = [1, 1, 1, 1, 0, 0, 0]
    assert scores["kappa"][0]["n_common"] == 7
    assert scores["kappa"][0]["kappa"] == pytest.approx(cohen_kappa_score(said_a, said_b))
    assert scores["fooled"] == [{"image": "im3.png", "n_fooled": 1, "n_answered": 2}]  # A called it real
    assert (obs_a["tp"], obs_a["fn"], obs_a["fp"], obs_a["tn"]) == (3, 1, 2, 2)
    text = format_scores(scores)
    assert re.search(r"^\s+A\s+3\s+1\s+2\s+2$", text, re.M)  # confusion: tp fn fp tn
    assert "fooled 1 of 2: im3.png" in text
    assert main(["vtt", "score", "--key", str(key_path), str(tmp_path / "A.csv"), str(tmp_path / "B.csv"),
                 "--out", str(tmp_path / "scores.json")]) == 0
    out = capsys.readouterr().out
    assert "A " in out and "0.625" in out and "Cohen's kappa A vs B" in out and (tmp_path / "scores.json").exists()
    _write_sheet(tmp_path / "bad.csv", {"im0.png": "maybe"})
    assert main(["vtt", "score", "--key", str(key_path), str(tmp_path / "bad.csv")]) == 2
    assert "row 2" in capsys.readouterr().err


def test_contact_sheet_of_fooling_images(tmp_path, capsys):
    tiles = [np.full((8, 8), 10, np.uint8), np.full((8, 8), 60000, np.uint16)]
    sheet = Image.open(io.BytesIO(contact_sheet_png(tiles, ["a: 2/3", "b: 1/3"], ncols=6, tile=32)))
    assert sheet.size == (2 * 36, 32 + 14 + 4)
    pixels = np.array(sheet)
    assert pixels[2 + 16, 2 + 16] == 10 and pixels[2 + 16, 36 + 2 + 16] == 255  # 16-bit scaled to its max
    assert Image.open(io.BytesIO(contact_sheet_png([], []))).size[0] > 0
    study = tmp_path / "study"
    make_vtt(_set(4, -0.3, "real"), _set(4, 0.3, "fake"), study, n=4, seed=0)
    key = read_key(study / "key.csv")
    _write_sheet(tmp_path / "A.csv", {image: "real" for image in key})  # every synthetic image fools A
    assert main(["vtt", "score", "--key", str(study / "key.csv"), str(tmp_path / "A.csv"),
                 "--sheet", str(tmp_path / "fooled.png")]) == 0
    assert "fooled.png" in capsys.readouterr().out
    assert Image.open(tmp_path / "fooled.png").size == (4 * 132, 128 + 14 + 4)
