"""cPGGAN with boxes end to end: every box of an image reaches G and D through the training data,
sampled boxes lie inside a real breast mask, and synthesized whole images with their lesion table
round-trip through ``prepare`` (mode whole) into detector training data, marked synthetic."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from mammogan_tf.data.boxes import box_sides, boxes_in_mask, read_box_csv
from mammogan_tf.errors import ConfigError, InputError

SIZE = 32
LESIONS = ([6, 20, 14, 28], [22, 34, 30, 42])  # two per image, in pixels of the 48 x 48 breast


def _write_images(root: Path, count: int = 8) -> Path:
    """``count`` 64 x 48 PNGs: a 48 x 48 breast (0.4, left) on black, two bright squares each; one
    patient per image. Returns the lesion table CSV."""
    from PIL import Image

    from mammogan_tf.data.table import make_table

    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        image = np.zeros((48, 64), np.uint8)
        image[:, :48] = 100
        for x0, y0, x1, y1 in LESIONS:
            image[y0 - 6:y1 - 6, x0 + i % 3:x1 + i % 3] = 250
        Image.fromarray(image).save(root / f"img{i}.png")
        for x0, y0, x1, y1 in LESIONS:
            rows.append({"image_id": f"img{i}", "patient_id": f"P{i:03d}", "path": f"img{i}.png",
                         "lesion_type": "mass", "pathology": "benign",
                         "x0": x0 + i % 3, "y0": y0 - 6, "x1": x1 + i % 3, "y1": y1 - 6})
    make_table(rows).to_csv(root / "lesions.csv", index=False)
    return root / "lesions.csv"


def _prepare(images: Path, table: Path, out: Path, fractions=(1, 0, 0)) -> Path:
    from mammogan_tf.config import PrepareConfig
    from mammogan_tf.data.prepare import run_prepare

    config = PrepareConfig(images=str(images), annotations=str(table), format="table",
                           split={"fractions": fractions})
    config.patches.mode, config.patches.output_size = "whole", SIZE
    run_prepare(config, out, progress=False)
    return out


@pytest.fixture(scope="module")
def whole_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cpggan")
    return _prepare(root / "images", _write_images(root / "images"), root / "whole")


def _experiment(manifest: Path, steps: int = 2):
    from mammogan_tf.config import ExperimentConfig, validate_config

    return validate_config({
        "name": "tiny_cpggan",
        "model": {"family": "cpggan", "image_size": SIZE, "start_resolution": 8, "latent_dim": 8, "base_filters": 4,
                  "max_filters": 8, "images_per_phase": 16},
        "train": {"data": {"manifest": str(manifest)}, "steps": steps, "batch_size": 4, "loss": "wasserstein",
                  "metric": {"name": "none"}, "sample_every": 100, "checkpoint_every": 100, "log_every": 1}},
        ExperimentConfig)


@pytest.fixture(scope="module")
def trained(whole_data, tmp_path_factory) -> Path:
    from mammogan_tf.training.run import train

    run = tmp_path_factory.mktemp("run") / "run"
    train(_experiment(whole_data), run, progress=False)
    return run


# ------------------------------------------------------------------------------ box sampling
def test_boxes_in_mask_lie_inside_the_mask_and_do_not_overlap():
    yy, xx = np.mgrid[:64, :64]
    mask = (xx - 0) ** 2 + (yy - 32) ** 2 < 30 ** 2  # a half disc on the left edge
    reference = np.array([[0, 0, 6, 12], [10, 10, 18, 18]], np.float32)
    rng = np.random.default_rng(0)
    widths = []
    for _ in range(60):
        sides, picks = box_sides(reference, 3, 64, rng)
        boxes = boxes_in_mask(sides, mask, rng).astype(int)
        assert len(boxes) == 3 and set(picks) <= {0, 1}
        covered = np.zeros_like(mask, int)
        for x0, y0, x1, y1 in boxes:
            assert mask[y0:y1, x0:x1].all() and x1 > x0 and y1 > y0
            covered[y0:y1, x0:x1] += 1
        assert covered.max() == 1  # no overlap
        widths += list(boxes[:, 2] - boxes[:, 0])
    assert 6 <= np.mean(widths) <= 8  # sizes follow the training boxes (6 and 8 wide)
    # too large for the mask: shrunk until it fits
    small = np.zeros((64, 64), bool)
    small[10:15, 20:24] = True
    (x0, y0, x1, y1), = boxes_in_mask(np.array([[30.0, 30.0]]), small, rng).astype(int)
    assert small[y0:y1, x0:x1].all()
    with pytest.raises(InputError, match="empty"):
        boxes_in_mask(sides, np.zeros((8, 8), bool), rng)


def test_box_csv_groups_images_and_names_bad_rows(tmp_path):
    path = tmp_path / "boxes.csv"
    path.write_text("image,x0,y0,x1,y1,lesion_type\na,1,2,5,6,mass\nb,0,0,4,4,\na,10,10,12,14,calcification\n")
    groups = read_box_csv(path, 32, "mass")
    assert [g["name"] for g in groups] == ["a", "b"]
    np.testing.assert_array_equal(groups[0]["boxes"], [[1, 2, 5, 6], [10, 10, 12, 14]])
    assert groups[0]["types"] == ["mass", "calcification"] and groups[1]["types"] == ["mass"]
    path.write_text("image,x0,y0,x1,y1\na,1,2,5,6\nb,4,0,40,4\n")
    with pytest.raises(InputError, match=r"boxes.csv: row 3: .*<= 32"):
        read_box_csv(path, 32, "mass")
    path.write_text("image,x0,y0,x1\na,1,2,5\n")
    with pytest.raises(InputError, match=r"missing columns \['y1'\]"):
        read_box_csv(path, 32, "mass")


# ------------------------------------------------------------------------- multi-box batches
def test_every_box_of_an_image_reaches_generator_and_discriminator(whole_data):
    from mammogan_tf.data.whole import read_detection_set
    from mammogan_tf.models.pggan import box_masks
    from mammogan_tf.training.data import TrainingData
    from mammogan_tf.training.families import make_family
    from mammogan_tf.training.families.base import StepContext

    config = _experiment(whole_data)
    family = make_family(config.model, config.train)
    data = TrainingData(whole_data, "train", family.streams(), 4, seed=0)
    truth = read_detection_set(whole_data, "train")
    sets = {tuple(np.sort(b, axis=0).ravel().round(3)) for b in truth.boxes}
    assert data.whole and data.boxes.shape == (16, 4)  # 8 images x 2 boxes, for the sample grid
    batch = next(iter(data.dataset(0, 0, 2)))
    boxes = batch["real"]["boxes"].numpy()
    assert boxes.shape == (4, 16, 4)
    for image_boxes in boxes:
        valid = image_boxes[image_boxes[:, 2] > image_boxes[:, 0]]
        assert len(valid) == 2 and tuple(np.sort(valid, axis=0).ravel().round(3)) in sets
        assert np.all(image_boxes[2:] == -1)
    networks, seen = family.build_networks(), {}

    def spy(name):
        network = networks[name]

        def call(inputs, **kwargs):
            seen[name] = inputs["mask"].numpy()
            return network(inputs, **kwargs)
        return call

    spies = {name: spy(name) for name in networks}
    ctx = StepContext(seed=tf.constant([1, 2], tf.int64), schedules={"progress": tf.Variable(3.0)},
                      global_batch_size=4)
    expected = box_masks(boxes, SIZE).numpy()
    assert np.all(expected.reshape(4, -1).sum(1) > np.array([
        box_masks(b[:1], SIZE).numpy().sum() for b in boxes]))  # the second box adds pixels
    family.discriminator_loss(spies, batch, ctx)
    np.testing.assert_array_equal(seen["discriminator"], expected)
    np.testing.assert_array_equal(seen["generator"], expected)
    seen.clear()
    family.generator_loss(spies, batch, ctx)
    np.testing.assert_array_equal(seen["generator"], expected)
    np.testing.assert_array_equal(seen["discriminator"], expected)


# -------------------------------------------------------------------------------- synthesis
def test_synthesized_images_and_table_round_trip_into_detector_data(trained, whole_data, tmp_path):
    from mammogan_tf.cli import main
    from mammogan_tf.data.preprocess import breast_mask
    from mammogan_tf.data.shards import make_dataset
    from mammogan_tf.data.whole import read_detection_set
    from mammogan_tf.synthesis.export import read_png_provenance
    from mammogan_tf.synthesis.synthesize import run_synthesize

    out = tmp_path / "syn"
    assert main(["synthesize", "--run", str(trained), "--checkpoint", "last", "--n", "4", "--seed", "3",
                 "--batch-size", "3", "--out", str(out), "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["images"] == 4 and manifest["boxes"] == 8 and manifest["synthetic"] is True
    table = pd.read_csv(out / "lesions.csv")
    assert len(table) == 8 and table["synthetic"].all() and table["synthetic_lesion"].all()
    assert set(table["patient_id"]) == {"SYNTHETIC"}  # no patient id of a source image
    assert table["in_breast"].between(0, 1).all()
    assert manifest["mean_in_breast"] == pytest.approx(table["in_breast"].mean(), abs=1e-3)
    real = read_detection_set(whole_data, "train")
    assert not set(table["patient_id"]) & {f"P{i:03d}" for i in range(8)}
    for image_id, rows in table.groupby("image_id"):
        source = real.ids.index(rows["mask_source_image_id"].iloc[0])
        mask = breast_mask((real.images[source][..., 0] + 1) / 2)
        for x0, y0, x1, y1 in rows[["x0", "y0", "x1", "y1"]].to_numpy().astype(int):
            assert mask[y0:y1, x0:x1].all()  # inside the breast of a real training image
        record = read_png_provenance(out / rows["path"].iloc[0])
        assert record["synthetic"] is True and record["model_family"] == "cpggan"
        assert record["generator_sha256"] == manifest["generator_sha256"]
        np.testing.assert_allclose(record["boxes"], rows[["x0", "y0", "x1", "y1"]].to_numpy())
    # image i does not depend on --n or the batch size
    again = run_synthesize(trained, 2, tmp_path / "syn2", checkpoint="last", seed=3, batch_size=1, progress=False)
    assert again["images"] == 2
    np.testing.assert_array_equal(pd.read_csv(tmp_path / "syn2" / "lesions.csv")[["x0", "y0", "x1", "y1"]],
                                  table[["x0", "y0", "x1", "y1"]].to_numpy()[:4])
    direct = read_detection_set(out, "train")  # --format shards: readable as they are
    # prepare (mode whole) reads the table like any other; all in train, marked synthetic
    prepared = _prepare(out, out / "lesions.csv", tmp_path / "syn_prepared", fractions=(0.6, 0.2, 0.2))
    data = read_detection_set(prepared, "train")
    assert sorted(data.ids) == sorted(table["image_id"].unique()) == sorted(direct.ids)
    for image_id, boxes in zip(data.ids, data.boxes):
        rows = table[table["image_id"] == image_id][["x0", "y0", "x1", "y1"]].to_numpy()
        np.testing.assert_allclose(np.sort(boxes, 0), np.sort(rows, 0), atol=1e-4)
    flags = [int(ex["synthetic"]) for ex in make_dataset(prepared, "train", None, shuffle=False, as_dict=True)]
    assert flags == [1] * 4
    # ... and the detector's training pipeline takes it (as `detect` does for data.synthetic)
    from mammogan_tf.models.detector_config import DetectorConfig
    from mammogan_tf.training.detection import detection_dataset
    from mammogan_tf.training.detection_config import DetectionTrainConfig

    model = DetectorConfig(image_size=SIZE, width=4, max_width=8, strides=[8, 16], anchors=[[[4, 4]], [[8, 8]]])
    images, y = next(iter(detection_dataset(data, model, DetectionTrainConfig(batch_size=4, flip=False))))
    assert images.shape == (4, SIZE, SIZE, 1)
    boxes = y["boxes"].numpy()
    assert int(((boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])).sum()) == 8  # every box
    assert sum(float(tf.reduce_sum(t[..., 4])) for t in y["targets"]) > 0  # assigned to anchors


def test_synthesize_from_box_csv(trained, tmp_path):
    from mammogan_tf.synthesis.synthesize import run_synthesize

    boxes = tmp_path / "boxes.csv"
    boxes.write_text("image,x0,y0,x1,y1,lesion_type\nA,2,2,10,10,mass\nA,20,20,24,30,calcification\nB,5,5,9,9,\n")
    manifest = run_synthesize(trained, None, tmp_path / "syn", checkpoint="last", fmt="png", boxes=str(boxes),
                              progress=False)
    assert manifest["images"] == 2 and manifest["boxes_from"] == "csv" and "splits" not in manifest
    table = pd.read_csv(tmp_path / "syn" / "lesions.csv")
    assert table["lesion_type"].tolist() == ["mass", "calcification", "mass"]
    np.testing.assert_array_equal(table[["x0", "y0", "x1", "y1"]], [[2, 2, 10, 10], [20, 20, 24, 30], [5, 5, 9, 9]])
    assert table["mask_source_image_id"].isna().all()
    with pytest.raises(ConfigError, match="give --run RUN with --n N"):
        run_synthesize(trained, 2, tmp_path / "x", checkpoint="last", source="somewhere", progress=False)
