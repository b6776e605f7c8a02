"""YOLO-style detector: target assignment, loss, NMS, metrics, round trip, and a tiny fit."""
from itertools import product

import keras
import numpy as np
import pytest
import tensorflow as tf

from mammogan_tf.models.detector import (DetectorConfig, YOLODetector, build_detector, decode_boxes,
                                         kmeans_anchors, non_max_suppression)
from mammogan_tf.training.detection import (DetectionSet, DetectionTrainConfig, assign_targets,
                                            evaluate_detector, flip_boxes, iou_loss, train_detector,
                                            yolo_loss)

LOG2 = float(np.log(2.0))
STRIDES, ANCHORS = [8, 16], [[(8.0, 8.0)], [(16.0, 16.0)]]


def _logit(p):
    return float(np.log(p / (1 - p)))


def test_assignment_picks_best_anchor_and_centre_cell():
    anchors = [[(8, 8), (4, 16)], [(16, 16), (32, 32)]]
    boxes = [[8, 8, 16, 16], [18, 2, 22, 18], [0, 0, 30, 30]]
    targets = assign_targets(boxes, [0, 1, 2], 32, STRIDES, anchors)
    assert [t.shape for t in targets] == [(4, 4, 2, 6), (2, 2, 2, 6)]
    np.testing.assert_array_equal(targets[0][1, 1, 0], [8, 8, 16, 16, 1, 0])   # 8x8 -> anchor (8, 8)
    np.testing.assert_array_equal(targets[0][1, 2, 1], [18, 2, 22, 18, 1, 1])  # tall -> (4, 16), cell (1, 2)
    np.testing.assert_array_equal(targets[1][0, 0, 1], [0, 0, 30, 30, 1, 2])   # big -> stride 16, (32, 32)
    assert sum(t[..., 4].sum() for t in targets) == 3
    extra = assign_targets([[8, 8, 16, 16]], [0], 32, STRIDES, anchors, extra_anchor_iou=0.25)
    assert extra[0][1, 1, 0, 4] == 1 and extra[1][0, 0, 0, 4] == 1  # (16, 16) has shape IoU 0.25


def test_decode_zero_outputs_put_anchors_at_cell_centres():
    boxes = decode_boxes(tf.zeros((1, 2, 2, 1, 4)), 16, [(8.0, 4.0)]).numpy()
    np.testing.assert_allclose(boxes[0, 1, 0, 0], [4, 22, 12, 26])  # cell row 1, col 0: centre (8, 24)


def test_giou_and_ciou_on_hand_made_boxes():
    pred, gt = tf.constant([[10.0, 8, 18, 16]]), tf.constant([[8.0, 8, 16, 16]])
    np.testing.assert_allclose(iou_loss(pred, gt, "giou").numpy(), [0.4], atol=1e-6)  # IoU 48/80, hull 80
    far = tf.constant([[20.0, 8, 28, 16]])  # disjoint: IoU 0, hull 160, union 128 -> GIoU -0.2
    np.testing.assert_allclose(iou_loss(far, gt, "giou").numpy(), [1.2], atol=1e-6)
    # CIoU, same shape (v = 0): 1 - IoU + centre distance^2 / hull diagonal^2 = 0.4 + 4 / (100 + 64)
    np.testing.assert_allclose(iou_loss(pred, gt, "ciou").numpy(), [0.4 + 4 / 164], atol=1e-6)


def _raw_zero():
    return [np.zeros((1, 4, 4, 1, 6), np.float32), np.zeros((1, 2, 2, 1, 6), np.float32)]


def _loss(raw, box=(8.0, 8, 16, 16)):
    targets = [t[None] for t in assign_targets([box], [0], 32, STRIDES, ANCHORS)]
    gt = tf.constant([[box, (0, 0, 0, 0)]], tf.float32)  # second row: padding
    return yolo_loss([tf.constant(r) for r in raw], targets, gt, STRIDES, ANCHORS, 32)


def test_yolo_loss_on_hand_made_example():
    # zero outputs: the positive cell (1, 1) of stride 8 decodes exactly onto the lesion (box loss 0);
    # the stride-16 box [0, 0, 16, 16] overlaps it with IoU 0.25 < 0.5, so all 20 cells count
    total, parts = _loss(_raw_zero())
    np.testing.assert_allclose(parts["box"].numpy(), [0.0], atol=1e-6)
    np.testing.assert_allclose(parts["obj"].numpy(), [20 * LOG2], rtol=1e-5)
    np.testing.assert_allclose(parts["cls"].numpy(), [LOG2], rtol=1e-5)
    np.testing.assert_allclose(total.numpy(), [21 * LOG2], rtol=1e-5)
    raw = _raw_zero()
    raw[0][0, 1, 1, 0, 0] = _logit(0.75)          # positive shifted 2 px right: 1 - GIoU = 0.4
    raw[0][0, 1, 1, 0, 4] = 3.0                    # confident positive
    raw[1][0, 0, 0, 0, :2] = _logit(0.75)          # a stride-16 negative centred on the lesion,
    raw[1][0, 0, 0, 0, 2:4] = np.log(0.5)          # 8 px wide: IoU 1 > 0.5, ignored
    total, parts = _loss(raw)
    np.testing.assert_allclose(parts["box"].numpy(), [0.4 * (2 - 64 / 1024)], rtol=1e-5)
    positive = float(np.log1p(np.exp(-3.0)))
    np.testing.assert_allclose(parts["obj"].numpy(), [positive + 18 * LOG2], rtol=1e-5)


def _brute_nms(boxes, scores, classes, iou_threshold, score_threshold):
    from mammogan_tf.evaluation.detection import box_iou
    kept = []
    for i in sorted(range(len(scores)), key=lambda i: -scores[i]):
        if scores[i] < score_threshold:
            continue
        if all(classes[k] != classes[i] or box_iou(boxes[i:i + 1], boxes[k:k + 1])[0, 0] <= iou_threshold
               for k in kept):
            kept.append(i)
    return kept


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nms_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 40, (60, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 20, (60, 2))], 1).astype(np.float32)
    scores = rng.permutation(60).astype(np.float32) / 60  # distinct scores: one right answer
    classes = rng.integers(0, 3, 60).astype(np.int32)
    for iou in (0.3, 0.5):
        got = non_max_suppression(boxes, scores, classes, iou, 100, 0.1).numpy().tolist()
        assert got == _brute_nms(boxes, scores, classes, iou, 0.1)
        assert len(got) < 55  # suppression happened


class _FixedDetector:
    """Stands in for a detector: returns given detections."""

    def __init__(self, found):
        self.found = found

    def detect(self, images, score_threshold, iou_threshold, max_detections):
        return [(b[s >= score_threshold], s[s >= score_threshold], c[s >= score_threshold])
                for b, s, c in self.found]


def test_sensitivity_fps_and_map_on_constructed_detections():
    gt = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32), np.zeros((0, 4), np.float32),
          np.array([[5, 5, 15, 15]], np.float32)]
    classes = [np.array([0, 1]), np.zeros(0, int), np.array([0])]
    found = [
        (np.array([[0, 0, 10, 10], [22, 20, 32, 30], [50, 50, 60, 60]], np.float32),  # hit, IoU 8/12, FP
         np.array([0.9, 0.8, 0.3], np.float32), np.array([0, 1, 0])),
        (np.array([[0, 0, 5, 5]], np.float32), np.array([0.7], np.float32), np.array([0])),  # FP
        (np.array([[10, 10, 20, 20]], np.float32), np.array([0.6], np.float32), np.array([0])),  # IoU 1/7
    ]
    data = DetectionSet(np.zeros((3, 8, 8, 1), np.float32), gt, classes)
    report = evaluate_detector(_FixedDetector(found), data, score_threshold=0.5, num_classes=2)
    r5, r25 = report["iou_0.5"], report["iou_0.25"]
    assert (r5["tp"], r5["fp"], r5["n_lesions"]) == (2, 2, 3)
    assert r5["sensitivity"] == pytest.approx(2 / 3) and r5["fps_per_image"] == pytest.approx(2 / 3)
    assert (r25["tp"], r25["fp"]) == (2, 2)  # 1/7 < 0.25 still a miss
    # class 0: scores 0.9 TP, 0.7 FP, 0.6 FP, 0.3 FP over 2 lesions -> AP 0.5; class 1: AP 1
    assert r5["map"] == pytest.approx(0.75)
    assert r5["froc"]["sensitivity"][-1] == pytest.approx(2 / 3)


def test_flip_boxes_match_flipped_pixels():
    image = np.zeros((16, 16))
    image[2:5, 3:9] = 1
    box = np.array([[3, 2, 9, 5]], np.float32)
    flipped = flip_boxes(box, 16, True, True)[0].astype(int)
    region = image[::-1, ::-1][flipped[1]:flipped[3], flipped[0]:flipped[2]]
    assert region.sum() == 18 and region.min() == 1


def test_kmeans_anchors_find_clusters():
    rng = np.random.default_rng(0)
    sizes = np.concatenate([rng.normal(10, 0.5, (50, 2)), rng.normal(40, 1, (50, 2))])
    anchors = kmeans_anchors(sizes, 2)
    np.testing.assert_allclose(anchors, [[10, 10], [40, 40]], atol=1.5)


def test_detector_round_trip_and_config_errors(tmp_path):
    config = DetectorConfig(image_size=32, width=4, max_width=8, strides=[8, 16], anchors=ANCHORS,
                            num_classes=2, class_names=["mass", "calcification"])
    model = build_detector(config)
    images = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 1)).astype(np.float32)
    outputs = model(images)
    assert [tuple(o.shape) for o in outputs] == [(2, 4, 4, 1, 7), (2, 2, 2, 1, 7)]
    model.save(tmp_path / "d.keras")
    loaded = keras.models.load_model(tmp_path / "d.keras")
    assert isinstance(loaded, YOLODetector)
    for a, b in zip(outputs, loaded(images)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="anchors"):
        DetectorConfig(strides=[8, 16])  # three anchor scales by default


def _squares(count, size, seed):
    """Noisy dark images with 1-2 bright squares of side 8-16 px; boxes are the squares."""
    rng = np.random.default_rng(seed)
    images = rng.normal(-0.6, 0.15, (count, size, size, 1)).astype(np.float32)
    boxes = []
    for i in range(count):
        placed = []
        for _ in range(rng.integers(1, 3)):
            side = int(rng.integers(8, 17))
            x0, y0 = (int(v) for v in rng.integers(0, size - side, 2))
            if all(x0 >= b[2] + 2 or x0 + side + 2 <= b[0] or y0 >= b[3] + 2 or y0 + side + 2 <= b[1]
                   for b in placed):
                images[i, y0:y0 + side, x0:x0 + side] += 1.2
                placed.append([x0, y0, x0 + side, y0 + side])
        boxes.append(np.array(placed, np.float32))
    return DetectionSet(np.clip(images, -1, 1), boxes, [np.zeros(len(b), np.int32) for b in boxes])


def test_tiny_detector_learns_bright_squares(tmp_path):
    model_config = DetectorConfig(image_size=64, width=8, max_width=32, strides=[8, 16],
                                  anchors=[[(10, 10), (14, 14)], [(18, 18), (24, 24)]])
    config = DetectionTrainConfig(epochs=9, batch_size=16, learning_rate=3e-3, select_fps=1.0)
    train, val = _squares(160, 64, 0), _squares(40, 64, 1)
    history = train_detector(model_config, config, train, val, tmp_path)
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    best = keras.models.load_model(tmp_path / "best.keras")
    report = evaluate_detector(best, val, score_threshold=0.3)
    assert report["iou_0.5"]["sensitivity"] > 0.9 and report["iou_0.5"]["fps_per_image"] < 1.0
    assert (tmp_path / "tensorboard").is_dir() and (tmp_path / "best.json").exists()


# ------------------------------------------------------------------------- prepare, mode: whole
def _constructed_mammogram():
    """80 x 64 image: breast rows 8..72 (0.2), a lesion [16, 24, 32, 48) at 1.0."""
    image = np.zeros((80, 64), np.float32)
    image[8:72] = 0.2
    image[24:48, 16:32] = 1.0
    lesion = {"lesion_type": "mass", "pathology": "benign", "x0": 16, "y0": 24, "x1": 32, "y1": 48}
    return image, image > 0, lesion


@pytest.mark.parametrize("size, expected", [(16, [4, 4, 8, 10]), (24, [6, 6, 12, 15])])
def test_whole_mode_box_lands_on_the_same_pixels(size, expected):
    from mammogan_tf.data.whole import whole_sample
    image, breast, lesion = _constructed_mammogram()
    other = {**lesion, "lesion_type": "calcification"}
    sample = whole_sample(image, breast, [lesion, other], size, ["mass"])
    assert sample["origin"] == (0, 8, 64, 72) and sample["types"] == ["mass"]
    np.testing.assert_allclose(sample["boxes"], [expected])
    x0, y0, x1, y1 = expected
    inside = np.zeros((size, size), bool)
    inside[y0:y1, x0:x1] = True
    np.testing.assert_allclose(sample["pixels"][inside], 1.0, atol=1e-6)
    np.testing.assert_allclose(sample["pixels"][~inside], 0.2, atol=1e-6)


def test_whole_mode_square_region_pads_and_clips():
    from mammogan_tf.data.whole import square_region, transform_boxes
    breast = np.zeros((40, 100), bool)
    breast[5:35, 60:100] = True  # 40 wide, 30 tall, on the right edge
    assert square_region(breast) == (60, 0, 40)
    wide = np.ones((20, 50), bool)  # wider than the image is tall: padded above and below
    assert square_region(wide) == (0, -15, 50)
    np.testing.assert_allclose(transform_boxes([[55, -20, 70, 5]], 60, 0, 40, 20), [[0, 0, 5, 2.5]])


def test_prepare_whole_mode_writes_all_boxes(tmp_path):
    from mammogan_tf.config import PrepareConfig
    from mammogan_tf.data.phantom import write_phantom
    from mammogan_tf.data.prepare import run_prepare
    from mammogan_tf.data.shards import make_dataset
    from mammogan_tf.data.whole import read_detection_set
    table = write_phantom(tmp_path / "phantom", n_images=6, seed=3)
    config = PrepareConfig(images=str(table.parent), annotations=str(table), split={"fractions": (1, 0, 0)})
    config.patches.mode, config.patches.output_size = "whole", 64
    run_prepare(config, tmp_path / "whole", progress=False)
    data = read_detection_set(tmp_path / "whole", "train")
    lesions = read_lesions(table)
    assert data.images.shape == (6, 64, 64, 1) and len(data.ids) == 6
    for image_id, boxes in zip(data.ids, data.boxes):
        assert len(boxes) == len(lesions.get(image_id, []))
        assert np.all((boxes >= 0) & (boxes <= 64)) and np.all(boxes[:, 2:] > boxes[:, :2])
    assert sum(len(b) for b in data.boxes) > 0
    # still ordinary shard records for the patch readers
    images, labels = next(iter(make_dataset(tmp_path / "whole", "train", 6, shuffle=False)))
    assert images.shape == (6, 64, 64, 1)


def read_lesions(table):
    import pandas as pd
    frame = pd.read_csv(table)
    frame = frame[frame["lesion_type"] != "normal"]
    return {k: list(v.index) for k, v in frame.groupby("image_id")}


def test_pipeline_flips_images_and_targets_together():
    from mammogan_tf.training.detection import detection_dataset
    model_config = DetectorConfig(image_size=32, strides=STRIDES, anchors=ANCHORS)
    image = np.full((1, 32, 32, 1), -1.0, np.float32)
    image[0, 2:10, 4:12] = 1.0
    data = DetectionSet(image, [np.array([[4, 2, 12, 10]], np.float32)], [np.zeros(1, np.int32)])
    config = DetectionTrainConfig(batch_size=1, flip=True)
    seen, dataset = set(), detection_dataset(data, model_config, config)
    for _ in range(12):  # epochs
        images, y = next(iter(dataset))
        box = y["boxes"][0, 0].numpy().astype(int)
        assert images[0, box[1]:box[3], box[0]:box[2]].numpy().min() == 1.0  # the square is in the box
        assert images.numpy().sum() == 64 * 1.0 - (32 * 32 - 64)
        positive = np.argwhere(y["targets"][0][0, ..., 4].numpy())
        np.testing.assert_array_equal(positive[0][:2], [(box[1] + box[3]) // 16, (box[0] + box[2]) // 16])
        seen.add(tuple(box))
    assert len(seen) > 1  # flips happen


def test_detect_train_command_prepares_trains_and_reports(tmp_path):
    import json

    import yaml

    from mammogan_tf.cli import main
    from mammogan_tf.data.phantom import write_phantom
    from mammogan_tf.data.whole import read_detection_set
    table = write_phantom(tmp_path / "phantom", n_images=12, seed=4)
    experiment = {
        "name": "tiny", "output_dir": str(tmp_path / "runs"),
        "prepare": {"images": str(table.parent), "annotations": str(table), "workers": 1,
                    "patches": {"mode": "whole", "output_size": 32}, "split": {"fractions": [0.4, 0.3, 0.3]}},
        "model": {"family": "detector", "image_size": 32, "width": 4, "max_width": 8, "strides": [8, 16],
                  "anchors": [[[4, 4]], [[8, 8]]]},
        "train": {"epochs": 1, "batch_size": 2},
        "data": {"manifest": str(tmp_path / "whole")},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(experiment))
    assert main(["detect", "train", str(path), "--quiet"]) == 0
    run = tmp_path / "runs" / "tiny"
    metrics = json.loads((run / "metrics.json").read_text())
    test = read_detection_set(tmp_path / "whole", "test")
    assert metrics["iou_0.5"]["n_lesions"] == sum(len(b) for b in test.boxes)
    assert metrics["iou_0.25"]["n_images"] == len(test) and 0 <= metrics["iou_0.25"]["sensitivity"] <= 1
    assert metrics["train_images"] == {"real": len(read_detection_set(tmp_path / "whole", "train")), "synthetic": 0}
    assert {"best.keras", "last.keras", "history.json", "tensorboard", "froc.png"} <= {p.name for p in run.iterdir()}
    assert main(["detect", "train", str(tmp_path / "missing.yaml")]) == 2


def test_keras_applications_backbone_round_trip(tmp_path):
    config = DetectorConfig(image_size=32, backbone="mobilenet_v2", width=4, max_width=8, strides=[8, 16],
                            anchors=ANCHORS)
    model = build_detector(config)
    images = np.random.default_rng(1).uniform(-1, 1, (1, 32, 32, 1)).astype(np.float32)
    outputs = model(images)
    assert [tuple(o.shape) for o in outputs] == [(1, 4, 4, 1, 6), (1, 2, 2, 1, 6)]
    model.trunk.save_weights(tmp_path / "trunk.weights.h5")
    model.save(tmp_path / "m.keras")
    for a, b in zip(outputs, keras.models.load_model(tmp_path / "m.keras")(images)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
    again = build_detector(config.model_copy(update={"backbone_weights": str(tmp_path / "trunk.weights.h5")}))
    np.testing.assert_array_equal(again.trunk.weights[0].numpy(), model.trunk.weights[0].numpy())
    with pytest.raises(ValueError, match="no downloads"):
        DetectorConfig(backbone="resnet50", backbone_weights="imagenet")
