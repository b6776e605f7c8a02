"""Evaluation defaults (issue 10, item 9): prepare marks each lesion's original patch, and
`mammogan evaluate` compares synthetic images with the originals of the lesion type their
provenance names, unless told otherwise."""
from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest
import tensorflow as tf

from mammogan_tf.cli import main
from mammogan_tf.data.phantom import write_phantom
from mammogan_tf.data.shards import FEATURES, ShardWriter, make_dataset, parse_example, serialize_patch
from mammogan_tf.manifest import write_json_atomic
from mammogan_tf.synthesis.export import write_png

SIZE, COPIES = 16, 3
REAL = {"mass": 5, "calcification": 4}  # lesions per type, COPIES patches each
NORMAL = 4


def _records(manifest, split=None):
    names = sorted(json.loads(manifest.read_text())["splits"]) if split is None else [split]
    return [{k: v.numpy() for k, v in ex.items() if k != "image"}
            for ex in make_dataset(manifest, names, batch_size=None, shuffle=False, as_dict=True)]


def test_prepare_marks_exactly_one_original_per_lesion(tmp_path):
    csv = write_phantom(tmp_path / "P", n_images=6, seed=3, size=(256, 208))
    out = tmp_path / "out"
    assert main(["prepare", "--images", str(tmp_path / "P"), "--annotations", str(csv), "--out", str(out),
                 "--quiet", "--workers", "1", "--set", "prepare.patches.size=48",
                 "--set", f"prepare.patches.patches_per_lesion={COPIES}",
                 "--set", "prepare.patches.normal_per_image=1"]) == 0
    by_image = defaultdict(list)
    for record in _records(out / "manifest.json"):
        by_image[record["image_id"]].append(record)
    lesions = 0
    for records in by_image.values():
        marks = [int(r["copy_index"]) for r in records if r["kind"] == b"lesion"]
        assert marks == list(range(COPIES)) * (len(marks) // COPIES) and len(marks) % COPIES == 0
        assert all(int(r["copy_index"]) == 0 for r in records if r["kind"] == b"normal")
        for r in records:
            if r["kind"] == b"lesion" and r["copy_index"] == 0:  # the original is centred on its lesion
                x0, y0, x1, y1 = r["bbox"]
                assert abs((x0 + x1) / 2 - 24) <= 1 and abs((y0 + y1) / 2 - 24) <= 1
        lesions += len(marks) // COPIES
    assert lesions >= 3  # phantom images hold one or two lesions each (a third of them are normal)


def test_shards_without_copy_index_read_as_originals():
    record = serialize_patch(np.zeros((4, 4), np.float32), label=1, lesion_type="mass", pathology="benign",
                             patient_id="p", image_id="i", kind="lesion", copy_index=2)
    assert int(parse_example(tf.constant(record))["copy_index"]) == 2
    old = tf.train.Example.FromString(record)
    del old.features.feature["copy_index"]
    assert "copy_index" in FEATURES
    assert int(parse_example(tf.constant(old.SerializeToString()))["copy_index"]) == 0


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """Real shards: 5 mass and 4 calcification lesions with 3 copies each, 4 normal patches;
    synthetic masses as PNG with provenance; the same PNG without provenance."""
    root = tmp_path_factory.mktemp("defaults")
    rng = np.random.default_rng(0)
    with ShardWriter(root / "real" / "shards", "train", per_shard=16) as writer:
        for lesion_type, n in REAL.items():
            for lesion in range(n):
                for copy in range(COPIES):
                    writer.write(serialize_patch(
                        rng.random((SIZE, SIZE)).astype(np.float32), label=1 + (lesion_type == "calcification"),
                        lesion_type=lesion_type, pathology="benign", patient_id=f"p{lesion}",
                        image_id=f"{lesion_type}{lesion}", kind="lesion", copy_index=copy))
        for i in range(NORMAL):
            writer.write(serialize_patch(rng.random((SIZE, SIZE)).astype(np.float32), label=0, lesion_type="normal",
                                         pathology="unknown", patient_id=f"p{i}", image_id=f"n{i}", kind="normal"))
    write_json_atomic(root / "real" / "manifest.json", {
        "stage": "prepare", "splits": {"train": [f"shards/{f}" for f in writer.files]},
        "classes": ["normal", "mass", "calcification"], "patch_size": SIZE})
    for folder, record in (("named", {"synthetic": True, "class": "mass"}), ("plain", {})):
        (root / folder).mkdir()
        for i in range(6):
            write_png(root / folder / f"s{i}.png", rng.random((SIZE, SIZE)), record)
    return root


def _evaluate(sets, tmp_path, synthetic, *extra):
    out = tmp_path / synthetic
    assert main(["evaluate", "--real", str(sets / "real"), "--synthetic", str(sets / synthetic), "--out", str(out),
                 "--backbone", "random", "--no-tsne", "--no-frd", "--kid-subsets", "3", "--k", "2",
                 "--pixel-candidates", "5", "--quiet", *extra]) == 0
    return json.loads((out / "metrics.json").read_text()), (out / "report.md").read_text()


def test_evaluate_defaults_to_the_named_types_originals(sets, tmp_path):
    metrics, report = _evaluate(sets, tmp_path, "named")
    compared = metrics["comparison"]
    assert metrics["counts"]["real_lesion"] == REAL["mass"] and metrics["counts"]["train_real"] == REAL["mass"]
    assert compared["real_lesion_types"] == ["mass"] and compared["lesion_types_from"] == "provenance"
    assert compared["copies"] == "originals" and compared["real_copies_left_out"] == REAL["mass"] * (COPIES - 1)
    assert compared["real_lesion_per_type"] == {"mass": 5} and compared["synthetic_named_types"] == {"mass": 6}
    assert metrics["counts"]["real_normal"] == NORMAL and metrics["lesion_types"] == ["mass"]
    assert "- compared: real mass (the type(s) the synthetic images' provenance names), split train: mass 5; " \
           "one patch per real lesion (its original, prepare's copy 0), 10 augmented copies left out" in report


def test_evaluate_all_copies_and_explicit_types(sets, tmp_path):
    metrics, report = _evaluate(sets, tmp_path, "named", "--all-copies")
    assert metrics["counts"]["real_lesion"] == REAL["mass"] * COPIES
    assert metrics["comparison"]["copies"] == "all" and metrics["comparison"]["real_copies_left_out"] == 0
    assert "real mass (the type(s) the synthetic images' provenance names), split train: mass 15; " \
           "every patch of each real lesion, augmented copies included" in report
    metrics, _ = _evaluate(sets, tmp_path / "x", "named", "--lesion-types", "calcification")
    assert metrics["counts"]["real_lesion"] == REAL["calcification"]
    assert metrics["comparison"]["lesion_types_from"] == "option"


def test_evaluate_without_provenance_compares_every_type_and_says_so(sets, tmp_path):
    metrics, report = _evaluate(sets, tmp_path, "plain")
    assert metrics["counts"]["real_lesion"] == sum(REAL.values())
    assert metrics["comparison"]["real_lesion_per_type"] == {"calcification": 4, "mass": 5}
    assert metrics["comparison"]["synthetic_named_types"] == {"none": 6} and metrics["lesion_types"] is None
    assert "every lesion type: the synthetic images' provenance names no lesion type" in report
    assert "- synthetic provenance names: no lesion type 6" in report


def test_provenance_names_types_from_shards_and_other_names_none(tmp_path):
    from mammogan_tf.evaluation.inputs import ImageSet, load_image_set

    with ShardWriter(tmp_path / "shards", "train") as writer:
        for i, name in enumerate(("calcification", "mass", "calcification")):
            writer.write(serialize_patch(np.zeros((4, 4), np.float32), label=1, lesion_type=name, pathology="unknown",
                                         patient_id="SYNTHETIC", image_id=f"s{i}", kind="lesion", synthetic=True,
                                         provenance={"synthetic": True, "class": name}))
    write_json_atomic(tmp_path / "manifest.json", {"stage": "synthesize", "splits": {"train": [
        f"shards/{f}" for f in writer.files]}, "classes": ["normal", "mass", "calcification"]})
    loaded = load_image_set(tmp_path, progress=False)
    assert loaded.named_types == ["calcification", "mass", "calcification"]
    assert loaded.provenance_lesion_types() == ["calcification", "mass"]
    assert loaded.subset([0, 2]).provenance_lesion_types() == ["calcification"]
    images = np.zeros((2, 4, 4, 1), np.float32)
    assert ImageSet(images, ["a", "b"], [None] * 2, "s", "d", "folder", named_types=["other", "other"]) \
        .provenance_lesion_types() is None
    assert ImageSet(images, ["a", "b"], [None] * 2, "s", "d", "folder", named_types=["mass", None]) \
        .provenance_lesion_types() is None
