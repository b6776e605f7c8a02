"""Training the YOLO-style detector (``models.detector``): target assignment, the YOLOv3 loss with
an IoU-based box term, a ``tf.data`` pipeline, and ``keras.Model.fit`` under a strategy with
TensorBoard and the best checkpoint by validation sensitivity at a fixed FP rate.

Target assignment (YOLOv3): each ground-truth box goes to the anchor, over all scales, whose
shape best overlaps it (IoU of boxes sharing a centre), at the cell of that scale holding its
centre (plus every other anchor with shape IoU >= ``extra_anchor_iou`` when set). A target
tensor per scale is ``(H, W, A, 6)``: ``(x0, y0, x1, y1)`` of the box in pixels, objectness
1/0, class index.

Loss per image (sums over cells; ``b`` boxes, ``o`` objectness, ``c`` class logits):
``box = sum_pos (2 - area_gt / S^2) (1 - GIoU(pred, gt))`` (or CIoU);
``obj = sum_pos BCE(o, 1) + sum_neg BCE(o, 0)`` where negatives whose predicted box overlaps any
ground truth with IoU > ``ignore_iou`` are ignored; ``cls = sum_pos sum_k BCE(c_k, onehot_k)``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from mammogan_tf.data.whole import DetectionSet
from mammogan_tf.evaluation.detection import (average_precision, detection_metrics, froc_curve,
                                              sensitivity_at_fps)
from mammogan_tf.models.detector import DetectorConfig, build_detector, decode_boxes, shape_iou
from mammogan_tf.training.detection_config import DetectionTrainConfig
from mammogan_tf.training.strategy import make_strategy


# ------------------------------------------------------------------------ target assignment
def assign_targets(boxes, classes, image_size: int, strides: Sequence[int], anchors,
                   extra_anchor_iou: float | None = None) -> list[np.ndarray]:
    """Targets ``[(S/s, S/s, A, 6) float32 for s in strides]`` of one image (module docstring)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    classes = np.asarray(classes, np.int64).reshape(-1)
    count = len(anchors[0])
    targets = [np.zeros((image_size // s, image_size // s, count, 6), np.float32) for s in strides]
    flat = np.asarray(anchors, np.float64).reshape(-1, 2)
    for box, cls in zip(boxes, classes):
        size = np.maximum(box[2:] - box[:2], 1e-6)
        ious = shape_iou(size[None], flat)[0]
        chosen = {int(np.argmax(ious))}
        if extra_anchor_iou is not None:
            chosen |= set(np.flatnonzero(ious >= extra_anchor_iou).tolist())
        centre = (box[:2] + box[2:]) / 2
        for index in chosen:
            scale, anchor = divmod(index, count)
            cells = image_size // strides[scale]
            j, i = np.clip((centre // strides[scale]).astype(int), 0, cells - 1)
            targets[scale][i, j, anchor] = [*box, 1.0, cls]
    return targets


# ------------------------------------------------------------------------------ box geometry
def _area(b):
    return tf.maximum(b[..., 2] - b[..., 0], 0.0) * tf.maximum(b[..., 3] - b[..., 1], 0.0)


def _intersection(a, b):
    w = tf.maximum(tf.minimum(a[..., 2], b[..., 2]) - tf.maximum(a[..., 0], b[..., 0]), 0.0)
    h = tf.maximum(tf.minimum(a[..., 3], b[..., 3]) - tf.maximum(a[..., 1], b[..., 1]), 0.0)
    return w * h


def iou_loss(pred, target, kind: str = "giou") -> tf.Tensor:
    """``1 - GIoU`` (Rezatofighi et al.) or ``1 - CIoU`` (Zheng et al.) of boxes ``(..., 4)``
    elementwise, in [0, 2]."""
    inter = _intersection(pred, target)
    union = _area(pred) + _area(target) - inter
    iou = inter / (union + 1e-9)
    lo, hi = tf.minimum(pred[..., :2], target[..., :2]), tf.maximum(pred[..., 2:], target[..., 2:])
    if kind == "giou":
        enclosing = tf.reduce_prod(hi - lo, -1)
        return 1.0 - (iou - (enclosing - union) / (enclosing + 1e-9))
    diagonal = tf.reduce_sum(tf.square(hi - lo), -1)
    centre = tf.reduce_sum(tf.square((pred[..., :2] + pred[..., 2:] - target[..., :2] - target[..., 2:]) / 2), -1)
    wh_p, wh_t = pred[..., 2:] - pred[..., :2], target[..., 2:] - target[..., :2]
    v = (4 / np.pi ** 2) * tf.square(tf.atan(wh_t[..., 0] / (wh_t[..., 1] + 1e-9))
                                     - tf.atan(wh_p[..., 0] / (wh_p[..., 1] + 1e-9)))
    alpha = tf.stop_gradient(v / (1 - iou + v + 1e-9))
    return 1.0 - (iou - centre / (diagonal + 1e-9) - alpha * v)


def pairwise_iou(a, b) -> tf.Tensor:
    """IoU ``(B, N, G)`` of boxes ``a (B, N, 4)`` and ``b (B, G, 4)``."""
    inter = _intersection(a[:, :, None], b[:, None])
    return inter / (_area(a)[:, :, None] + _area(b)[:, None] - inter + 1e-9)


# ------------------------------------------------------------------------------------- loss
def yolo_loss(outputs, targets, gt_boxes, strides, anchors, image_size: int, *, box_loss: str = "giou",
              ignore_iou: float = 0.5, weights=(1.0, 1.0, 1.0)):
    """Per-image YOLO loss ``(B,)`` and its parts ``{"box", "obj", "cls"}`` (each (B,), weighted).

    outputs: detector raw outputs; targets: ``assign_targets`` per scale, batched
    ``(B, H, W, A, 6)``; gt_boxes: ``(B, G, 4)`` pixels, padded with zero-area boxes.
    """
    parts = {"box": 0.0, "obj": 0.0, "cls": 0.0}
    valid = tf.cast(_area(gt_boxes) > 0, tf.float32)[:, None]
    for raw, target, stride, anchor in zip(outputs, targets, strides, anchors):
        raw, target = tf.cast(raw, tf.float32), tf.cast(target, tf.float32)
        batch = tf.shape(raw)[0]
        pred = decode_boxes(raw[..., :4], stride, anchor)
        positive = target[..., 4]
        scale = 2.0 - _area(target[..., :4]) / float(image_size ** 2)
        parts["box"] += _sum(positive * scale * iou_loss(pred, target[..., :4], box_loss))
        best = tf.reduce_max(pairwise_iou(tf.reshape(pred, [batch, -1, 4]), gt_boxes) * valid, -1)
        negative = (1.0 - positive) * tf.cast(tf.reshape(best, tf.shape(positive)) <= ignore_iou, tf.float32)
        bce = tf.nn.sigmoid_cross_entropy_with_logits
        parts["obj"] += _sum(positive * bce(tf.ones_like(positive), raw[..., 4])
                             + negative * bce(tf.zeros_like(positive), raw[..., 4]))
        onehot = tf.one_hot(tf.cast(target[..., 5], tf.int32), tf.shape(raw)[-1] - 5)
        parts["cls"] += _sum(positive * tf.reduce_sum(bce(onehot, raw[..., 5:]), -1))
    parts = {name: w * value for (name, value), w in zip(parts.items(), weights)}
    return parts["box"] + parts["obj"] + parts["cls"], parts


def _sum(values):
    return tf.reduce_sum(tf.reshape(values, [tf.shape(values)[0], -1]), axis=1)


# ------------------------------------------------------------------------------- pipeline
def _pad_boxes(boxes, count: int) -> np.ndarray:
    out = np.zeros((count, 4), np.float32)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)[:count]
    out[:len(boxes)] = boxes
    return out


def flip_boxes(boxes, size: int, horizontal: bool, vertical: bool) -> np.ndarray:
    """Boxes ``(G, 4)`` of an ``size`` px image after flipping it left-right and/or up-down."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    if horizontal:
        b[:, [0, 2]] = size - b[:, [2, 0]]
    if vertical:
        b[:, [1, 3]] = size - b[:, [3, 1]]
    return b


def detection_dataset(data: DetectionSet, model_config: DetectorConfig, config: DetectionTrainConfig,
                      *, training: bool = True) -> tf.data.Dataset:
    """Batches ``(images, {"targets": (per-scale targets), "boxes": (B, max_boxes, 4)})``."""
    size, strides = model_config.image_size, model_config.strides

    def example(index, flips):
        index = int(index)
        image, boxes = data.images[index], np.asarray(data.boxes[index], np.float32).reshape(-1, 4)
        h, v = bool(flips[0]), bool(flips[1])
        image = image[:, ::-1] if h else image
        image = image[::-1] if v else image
        boxes = flip_boxes(boxes, size, h, v)
        targets = assign_targets(boxes, data.classes[index], size, strides, model_config.anchors,
                                 config.extra_anchor_iou)
        return (np.ascontiguousarray(image, np.float32), *targets, _pad_boxes(boxes, config.max_boxes))

    count = len(model_config.anchors[0])
    shapes = [(size, size, model_config.channels)] + [(size // s, size // s, count, 6) for s in strides] \
        + [(config.max_boxes, 4)]

    def load(index, draw):
        flips = tf.random.stateless_uniform([2], tf.stack([draw, index])) < 0.5
        flips = flips & (training and config.flip)
        values = tf.numpy_function(example, [index, flips], [tf.float32] * len(shapes))
        for value, shape in zip(values, shapes):
            value.set_shape(shape)
        return values[0], {"targets": tuple(values[1:-1]), "boxes": values[-1]}

    ds = tf.data.Dataset.range(len(data))
    if training:
        ds = ds.shuffle(len(data), seed=config.seed, reshuffle_each_iteration=True)
    draws = tf.data.Dataset.random(seed=config.seed, rerandomize_each_iteration=True)  # new flips each epoch
    ds = tf.data.Dataset.zip(ds, draws)
    return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(
        config.batch_size, drop_remainder=training).prefetch(tf.data.AUTOTUNE)


# ------------------------------------------------------------------------------- training
class DetectionTrainer(keras.Model):
    """Wraps a ``YOLODetector`` for ``fit``: ``compute_loss`` is the YOLO loss averaged over the
    global batch (so it is right under any ``tf.distribute`` strategy)."""

    def __init__(self, detector, config: DetectionTrainConfig, **kwargs):
        super().__init__(**kwargs)
        self.detector = detector
        self.settings = config
        self.trackers = {name: keras.metrics.Mean(name=f"{name}_loss") for name in ("box", "obj", "cls")}

    def call(self, inputs, training=None):
        return self.detector(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        d, c = self.detector, self.settings
        total, parts = yolo_loss(y_pred, y["targets"], y["boxes"], d.strides, d.anchors, d.image_size,
                                 box_loss=c.box_loss, ignore_iou=c.ignore_iou,
                                 weights=(c.box_weight, c.obj_weight, c.class_weight))
        for name, value in parts.items():
            self.trackers[name].update_state(value)
        return tf.nn.compute_average_loss(total)

    @property
    def metrics(self):
        return [*super().metrics, *self.trackers.values()]


def evaluate_detector(detector, data: DetectionSet, *, score_threshold: float = 0.001,
                      nms_iou: float = 0.45, max_detections: int = 100, iou_thresholds=(0.5, 0.25),
                      num_classes: int = 1) -> dict:
    """Sensitivity, FPs per image, AP (class-agnostic) and mAP (mean AP over classes) at each IoU
    threshold, at ``score_threshold``; plus the FROC curve (fps, sensitivity) at each IoU."""
    found = detector.detect(data.images, score_threshold, nms_iou, max_detections)
    predictions = [(boxes, scores) for boxes, scores, _ in found]
    report = detection_metrics(data.boxes, predictions, iou_thresholds, score_threshold)
    for threshold in iou_thresholds:
        key = f"iou_{threshold:g}"
        per_class = []
        for k in range(num_classes):
            gt = [np.asarray(b).reshape(-1, 4)[np.asarray(c).reshape(-1) == k] for b, c in zip(data.boxes, data.classes)]
            pred = [(b[c == k], s[c == k]) for b, s, c in found]
            per_class.append(average_precision(gt, pred, threshold))
        report[key]["map"] = float(np.nanmean(per_class)) if not np.all(np.isnan(per_class)) else float("nan")
        fps, sens, _ = froc_curve(data.boxes, predictions, threshold)
        report[key]["froc"] = {"fps_per_image": fps.tolist(), "sensitivity": sens.tolist()}
    return report


class BestBySensitivity(keras.callbacks.Callback):
    """After each epoch: validation sensitivity at ``select_fps`` FPs/image (IoU ``select_iou``)
    into the logs (so TensorBoard records it); saves ``best.keras`` + ``best.json`` when it rises or
    ties (a tie keeps the later epoch)."""

    def __init__(self, detector, data: DetectionSet, out_dir: Path, config: DetectionTrainConfig):
        super().__init__()
        self.detector, self.data, self.out_dir, self.config = detector, data, Path(out_dir), config
        self.best = -1.0

    def on_epoch_end(self, epoch, logs=None):
        c = self.config
        found = self.detector.detect(self.data.images, c.score_threshold, c.nms_iou, c.max_detections)
        fps, sens, _ = froc_curve(self.data.boxes, [(b, s) for b, s, _ in found], c.select_iou)
        value = sensitivity_at_fps(fps, sens, (c.select_fps,))[float(c.select_fps)]
        if logs is not None:
            logs["val_sensitivity"] = value
        if value >= self.best:  # ties: the later epoch (lower training loss)
            self.best = value
            self.detector.save(self.out_dir / "best.keras")
            (self.out_dir / "best.json").write_text(json.dumps(
                {"epoch": epoch + 1, "sensitivity": value, "at_fps_per_image": c.select_fps,
                 "iou": c.select_iou}, indent=2))


def train_detector(model_config: DetectorConfig, config: DetectionTrainConfig, train: DetectionSet,
                   val: DetectionSet, out_dir, *, strategy: tf.distribute.Strategy | None = None,
                   verbose: int = 0) -> dict:
    """Fits a detector; writes ``out_dir/{best.keras, best.json, last.keras, history.json,
    tensorboard/}``. Returns the history (per-epoch losses and ``val_sensitivity``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    strategy = strategy or make_strategy(config.strategy)
    with strategy.scope():
        detector = build_detector(model_config)
        trainer = DetectionTrainer(detector, config)
        trainer.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
    callbacks = [BestBySensitivity(detector, val, out, config),
                 keras.callbacks.TensorBoard(str(out / "tensorboard"))]
    history = trainer.fit(detection_dataset(train, model_config, config), epochs=config.epochs,
                          callbacks=callbacks, verbose=verbose, shuffle=False)  # the dataset shuffles
    detector.save(out / "last.keras")
    result = {key: [float(v) for v in values] for key, values in history.history.items()}
    (out / "history.json").write_text(json.dumps(result, indent=2))
    return result
