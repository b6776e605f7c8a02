"""ROC/AUC, DeLong's test (against R pROC on the aSAH data), thresholds, F1, bootstrap."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from mammogan_tf.errors import InputError
from mammogan_tf.evaluation.classification import (auc_ci, binary_metrics, bootstrap_ci, choose_threshold,
                                                   classifier_report, delong_covariance, delong_test, f1_score,
                                                   roc_auc, roc_curve)

REL = 1e-9


@pytest.fixture(scope="module")
def asah(reference_dir):
    with open(reference_dir / "delong_asah.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    y = np.array([row["outcome"] == "Poor" for row in rows], dtype=int)
    markers = {name: np.array([float(row[name]) for row in rows]) for name in ("wfns", "s100b", "ndka")}
    expected = json.loads((reference_dir / "delong_asah_expected.json").read_text())
    return y, markers, expected


def test_auc_and_variance_match_proc(asah):
    y, markers, expected = asah
    assert y.sum() == 41 and y.size == 113
    for name, scores in markers.items():
        assert roc_auc(y, scores) == pytest.approx(expected["auc"][name], rel=REL)
        aucs, cov = delong_covariance(y, scores)
        assert aucs[0] == pytest.approx(expected["auc"][name], rel=REL)
        assert cov[0, 0] == pytest.approx(expected["delong_variance"][name], rel=REL)
    for pair, value in expected["delong_covariance"].items():
        a, b = pair.split(",")
        assert delong_covariance(y, markers[a], markers[b])[1][0, 1] == pytest.approx(value, rel=REL)


def test_paired_delong_tests_match_proc(asah):
    y, m, expected = asah
    for pair, want in expected["paired_test_two_sided"].items():
        a, b = pair.split(" vs ")
        result = delong_test(y, m[a], m[b])
        assert result.z == pytest.approx(want["z"], rel=REL), pair
        assert result.p == pytest.approx(want["p"], rel=REL), pair
        assert result.auc_a == pytest.approx(expected["auc"][a], rel=REL)
        assert result.var_b == pytest.approx(expected["delong_variance"][b], rel=REL)
        if "ci95_auc_difference" in want:
            assert result.ci_low == pytest.approx(want["ci95_auc_difference"][0], rel=REL)
            assert result.ci_high == pytest.approx(want["ci95_auc_difference"][1], rel=REL)
    one_sided = expected["paired_test_one_sided_wfns_vs_s100b"]
    assert delong_test(y, m["wfns"], m["s100b"], "greater").p == pytest.approx(one_sided["greater"], rel=REL)
    assert delong_test(y, m["wfns"], m["s100b"], "less").p == pytest.approx(one_sided["less"], rel=REL)
    same = delong_test(y, m["wfns"], m["wfns"])
    assert (same.z, same.p) == (expected["identical_scores"]["z"], expected["identical_scores"]["p"])
    # covariance with itself is the variance; swapping a and b negates z
    assert delong_test(y, m["s100b"], m["wfns"]).z == pytest.approx(-2.20898359144091, rel=REL)


def test_roc_curve_and_auc_match_sklearn_with_ties(asah):
    y, markers, _ = asah
    for scores in markers.values():  # wfns has only 5 distinct values: many ties
        fpr, tpr, thresholds = roc_curve(y, scores)
        sk_fpr, sk_tpr, sk_thr = sk_roc_curve(y, scores, drop_intermediate=False)
        np.testing.assert_allclose(fpr, sk_fpr)
        np.testing.assert_allclose(tpr, sk_tpr)
        np.testing.assert_array_equal(thresholds, sk_thr)
        assert roc_auc(y, scores) == pytest.approx(roc_auc_score(y, scores), rel=1e-12)
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5  # all ties count one half
    assert roc_auc([0, 0, 1], [0.1, 0.2, 0.3]) == 1.0


def test_auc_ci_matches_proc(asah):
    y, m, _ = asah
    auc, low, high = auc_ci(y, m["wfns"])
    assert auc == pytest.approx(0.8236788617886179, rel=REL)
    half = 1.959963984540054 * np.sqrt(0.00146991470882363)
    assert (low, high) == (pytest.approx(auc - half, rel=1e-9), pytest.approx(auc + half, rel=1e-9))


def test_thresholds_counts_and_f1():
    y = np.array([0, 0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.9])
    m = binary_metrics(y, s, 0.4)  # predicted positive: 0.6, 0.4, 0.7, 0.9
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (3, 1, 3, 0)
    assert m["sensitivity"] == 1.0 and m["specificity"] == 0.75 and m["precision"] == 0.75
    assert m["f1"] == pytest.approx(6 / 7) and m["accuracy"] == pytest.approx(6 / 7)
    assert f1_score(y, s >= 0.7) == pytest.approx(2 * 2 / (2 * 2 + 0 + 1))
    assert choose_threshold(y, s, "youden") == 0.4       # sens 1, spec 0.75
    assert choose_threshold(y, s, "f1") == 0.4
    assert choose_threshold(y, s, "sensitivity", target=0.6) == 0.7  # highest threshold with sens >= 0.6
    assert choose_threshold(y, s, "specificity", target=1.0) == 0.7  # lowest threshold with no FP
    with pytest.raises(InputError, match="target"):
        choose_threshold(y, s, "sensitivity")
    with pytest.raises(InputError, match="both classes"):
        roc_auc([1, 1], [0.1, 0.2])


def test_bootstrap_is_seeded_and_brackets_the_estimate(asah):
    y, m, _ = asah
    est, low, high = bootstrap_ci(roc_auc, y, m["wfns"], n_boot=200, seed=1)
    assert est == pytest.approx(0.8236788617886179, rel=REL)
    assert low < est < high and high - low < 0.25
    assert bootstrap_ci(roc_auc, y, m["wfns"], n_boot=200, seed=1) == (est, low, high)
    report = classifier_report(y, m["s100b"], y, m["s100b"], n_boot=50)
    assert report["threshold"] == 0.22 and report["tp"] == 26 and report["fp"] == 14
    assert report["auc_ci95_delong"][0] < report["auc"] < report["auc_ci95_delong"][1]
    assert report["sensitivity_ci95"][0] <= report["sensitivity"] <= report["sensitivity_ci95"][1]
