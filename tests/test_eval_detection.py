"""Detection statistics on a hand-computed three-image example (Han et al.: IoU 0.5 and 0.25)."""
from __future__ import annotations

import numpy as np
import pytest

from mammogan_tf.errors import InputError
from mammogan_tf.evaluation.detection import (average_precision, box_iou, detection_metrics, froc_curve,
                                              match_image, sensitivity_at_fps)

GT = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), np.array([[0, 0, 20, 20]]), np.zeros((0, 4))]
PRED = [
    (np.array([[0, 0, 10, 10],      # 0.9: IoU 1 with the first lesion -> TP
               [1, 1, 11, 11],      # 0.8: IoU 0.68 with the same lesion, already matched -> FP
               [20, 20, 25, 30],    # 0.7: IoU 0.5 with the second lesion -> TP at 0.5 and 0.25
               [50, 50, 60, 60]]),  # 0.3: nothing -> FP
     np.array([0.9, 0.8, 0.7, 0.3])),
    (np.array([[0, 0, 20, 6]]), np.array([0.6])),   # IoU 0.3 -> FP at 0.5, TP at 0.25
    (np.array([[5, 5, 9, 9]]), np.array([0.5])),    # image without lesions -> FP
]


def test_box_iou_values():
    iou = box_iou([[0, 0, 10, 10]], [[0, 0, 10, 10], [5, 0, 15, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 0, 0]])
    np.testing.assert_allclose(iou[0], [1.0, 50 / 150, 81 / 119, 0.0, 0.0])
    with pytest.raises(InputError, match="x1 >= x0"):
        box_iou([[10, 0, 0, 10]], [[0, 0, 1, 1]])


def test_greedy_matching_takes_the_next_free_lesion():
    gt = [[0, 0, 10, 10], [5, 0, 15, 10]]
    pred = [[0, 0, 10, 10], [2, 0, 12, 10]]  # the second overlaps the first lesion more, but it is taken
    np.testing.assert_array_equal(match_image(gt, pred, [0.9, 0.8], 0.5), [True, True])
    np.testing.assert_array_equal(match_image(gt, pred[::-1], [0.8, 0.9], 0.5), [True, True])
    np.testing.assert_array_equal(match_image(gt[:1], pred, [0.9, 0.8], 0.5), [True, False])


def test_sensitivity_and_false_positives_per_image():
    out = detection_metrics(GT, PRED, score_threshold=0.0)
    assert out["iou_0.5"]["tp"] == 2 and out["iou_0.5"]["fp"] == 4 and out["iou_0.5"]["n_lesions"] == 3
    assert out["iou_0.5"]["sensitivity"] == pytest.approx(2 / 3)
    assert out["iou_0.5"]["fps_per_image"] == pytest.approx(4 / 3)
    assert out["iou_0.25"]["sensitivity"] == 1.0 and out["iou_0.25"]["fps_per_image"] == 1.0
    at_half = detection_metrics(GT, PRED, score_threshold=0.5)["iou_0.5"]  # drops the 0.3 box
    assert (at_half["tp"], at_half["fp"], at_half["fps_per_image"]) == (2, 3, 1.0)


def test_average_precision_and_froc():
    assert average_precision(GT, PRED, 0.5) == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3)
    assert average_precision(GT, PRED, 0.25) == pytest.approx(1 / 3 * 1 + 2 / 3 * 0.75)
    fps, sens, thresholds = froc_curve(GT, PRED, 0.5)
    np.testing.assert_allclose(thresholds, [0.9, 0.8, 0.7, 0.6, 0.5, 0.3])
    np.testing.assert_allclose(fps, np.array([0, 1, 1, 2, 3, 4]) / 3)
    np.testing.assert_allclose(sens, np.array([1, 1, 2, 2, 2, 2]) / 3)
    assert sensitivity_at_fps(fps, sens, (0.0, 0.5, 2.0)) == {0.0: pytest.approx(1 / 3), 0.5: pytest.approx(2 / 3),
                                                               2.0: pytest.approx(2 / 3)}
    perfect = [(g, np.ones(len(g))) for g in GT]
    assert average_precision(GT, perfect, 0.5) == 1.0
    with pytest.raises(InputError, match="images of ground truth"):
        detection_metrics(GT, PRED[:2])
