"""Lesion detection statistics: sensitivity and false positives per image at IoU thresholds,
FROC curve and average precision (Han et al. 2019, Table 1: IoU 0.5 and 0.25).

Conventions: boxes are ``(x0, y0, x1, y1)`` in pixels with ``x1 > x0``, ``y1 > y0`` (continuous
coordinates: area = (x1 - x0)(y1 - y0), no +1). ``ground_truth`` is a list, one ``(G_i, 4)``
array per image (``(0, 4)`` for an image without lesions); ``predictions`` is a list, one
``(boxes (P_i, 4), scores (P_i,))`` pair per image.

Matching is greedy in decreasing score within each image: a prediction is a true positive when
it overlaps a not yet matched lesion with IoU >= threshold (it takes the one with the largest
IoU), otherwise a false positive; each lesion is matched at most once. Because the greedy order
is the score order, the matches of predictions above any score threshold do not depend on the
predictions below it, so one matching gives the whole FROC and precision-recall curves.
"""
from __future__ import annotations

import numpy as np

from mammogan_tf.errors import InputError

IOU_THRESHOLDS = (0.5, 0.25)


def _boxes(array, name: str) -> np.ndarray:
    boxes = np.asarray(array, dtype=np.float64).reshape(-1, 4) if np.size(array) else np.zeros((0, 4))
    if np.any(boxes[:, 2] < boxes[:, 0]) or np.any(boxes[:, 3] < boxes[:, 1]):
        raise InputError(f"{name}: boxes must be (x0, y0, x1, y1) with x1 >= x0 and y1 >= y0")
    return boxes


def box_iou(boxes_a, boxes_b) -> np.ndarray:
    """Intersection over union ``(N, M)`` in [0, 1] of boxes ``(N, 4)`` and ``(M, 4)``."""
    a, b = _boxes(boxes_a, "boxes_a"), _boxes(boxes_b, "boxes_b")
    width = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    height = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = width * height
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_image(gt_boxes, pred_boxes, pred_scores, iou_threshold: float) -> np.ndarray:
    """True-positive flags ``(P,)`` (bool, in the given prediction order) for one image."""
    gt, pred = _boxes(gt_boxes, "ground truth"), _boxes(pred_boxes, "predictions")
    scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
    if scores.size != pred.shape[0]:
        raise InputError(f"{pred.shape[0]} predicted boxes but {scores.size} scores")
    is_tp = np.zeros(pred.shape[0], dtype=bool)
    if gt.shape[0] == 0 or pred.shape[0] == 0:
        return is_tp
    iou = box_iou(pred, gt)
    free = np.ones(gt.shape[0], dtype=bool)
    for i in np.argsort(-scores, kind="mergesort"):
        candidates = np.where(free & (iou[i] >= iou_threshold), iou[i], -1.0)
        j = int(np.argmax(candidates))
        if candidates[j] >= 0.0:
            is_tp[i], free[j] = True, False
    return is_tp


def _check_lists(ground_truth, predictions) -> None:
    if len(ground_truth) != len(predictions):
        raise InputError(f"{len(ground_truth)} images of ground truth but {len(predictions)} of predictions")
    if not ground_truth:
        raise InputError("no images to evaluate")


def _pooled(ground_truth, predictions, iou_threshold: float):
    """All predictions of all images in decreasing score: (scores, is_tp), and the lesion count."""
    scores, flags = [], []
    for gt, (boxes, s) in zip(ground_truth, predictions):
        flags.append(match_image(gt, boxes, s, iou_threshold))
        scores.append(np.asarray(s, dtype=np.float64).reshape(-1))
    scores = np.concatenate(scores) if scores else np.zeros(0)
    flags = np.concatenate(flags) if flags else np.zeros(0, dtype=bool)
    order = np.argsort(-scores, kind="mergesort")
    n_lesions = int(sum(_boxes(gt, "ground truth").shape[0] for gt in ground_truth))
    return scores[order], flags[order], n_lesions


def froc_curve(ground_truth, predictions, iou_threshold: float = 0.5):
    """FROC: ``(fps_per_image, sensitivity, thresholds)``, one point per distinct score.

    Point i counts predictions with ``score >= thresholds[i]``; thresholds decrease, so both
    curves increase. Sensitivity is matched lesions / all lesions (NaN when there are none).
    """
    _check_lists(ground_truth, predictions)
    scores, flags, n_lesions = _pooled(ground_truth, predictions, iou_threshold)
    if scores.size == 0:
        return np.zeros(1), np.zeros(1), np.array([np.inf])
    last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tp = np.cumsum(flags)[last]
    fp = (last + 1) - tp
    sensitivity = tp / n_lesions if n_lesions else np.full(tp.shape, np.nan)
    return fp / len(ground_truth), sensitivity, scores[last]


def sensitivity_at_fps(fps_per_image, sensitivity, points=(0.125, 0.25, 0.5, 1, 2, 4, 8)) -> dict[float, float]:
    """The best sensitivity reached with at most ``p`` false positives per image, for each point."""
    fps, sens = np.asarray(fps_per_image), np.asarray(sensitivity)
    return {float(p): float(sens[fps <= p].max()) if np.any(fps <= p) else 0.0 for p in points}


def average_precision(ground_truth, predictions, iou_threshold: float = 0.5) -> float:
    """Area under the precision-recall curve with the precision envelope (all-point
    interpolation, PASCAL VOC 2010+), in [0, 1]; NaN when there are no lesions."""
    _check_lists(ground_truth, predictions)
    scores, flags, n_lesions = _pooled(ground_truth, predictions, iou_threshold)
    if n_lesions == 0:
        return float("nan")
    if scores.size == 0:
        return 0.0
    last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tp = np.cumsum(flags)[last]
    recall = np.r_[0.0, tp / n_lesions]
    precision = np.r_[1.0, tp / (last + 1)]
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(np.diff(recall) * envelope[1:]))


def detection_metrics(ground_truth, predictions, iou_thresholds=IOU_THRESHOLDS,
                      score_threshold: float = 0.5) -> dict[str, dict]:
    """Per IoU threshold: sensitivity, false positives per image, counts (predictions with
    ``score >= score_threshold``) and the average precision (all scores).

    Returns ``{"iou_0.5": {"sensitivity", "fps_per_image", "tp", "fp", "n_lesions", "n_images",
    "average_precision", "score_threshold"}, ...}``.
    """
    _check_lists(ground_truth, predictions)
    out = {}
    for threshold in iou_thresholds:
        scores, flags, n_lesions = _pooled(ground_truth, predictions, threshold)
        kept = scores >= score_threshold
        tp, fp = int(flags[kept].sum()), int((~flags[kept]).sum())
        out[f"iou_{threshold:g}"] = {
            "sensitivity": tp / n_lesions if n_lesions else float("nan"),
            "fps_per_image": fp / len(ground_truth), "tp": tp, "fp": fp, "n_lesions": n_lesions,
            "n_images": len(ground_truth), "score_threshold": float(score_threshold),
            "average_precision": average_precision(ground_truth, predictions, threshold)}
    return out
