"""Statistics for binary classifiers: ROC/AUC, DeLong's test, thresholds, F1, bootstrap CIs.

Conventions: ``y_true`` is ``(N,)`` of 0/1 (or bool; 1 = positive, e.g. lesion or malignant);
``scores`` is ``(N,)`` float, higher = more likely positive. A sample is predicted positive when
``score >= threshold``. Ties between a positive and a negative score count one half in the
AUC (Mann-Whitney), the same convention as R's pROC and DeLong et al. 1988.

``delong_test`` implements the fast DeLong algorithm (Sun & Xu 2014, IEEE SPL 21(11)) for two
correlated ROC curves scored on the same cases; its AUCs, variances, covariance, z, p and
confidence interval of the difference equal pROC's ``roc.test(..., method="delong", paired=TRUE)``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
from scipy import stats

from mammogan_tf.errors import InputError


def _check_binary(y_true, *scores) -> tuple[np.ndarray, list[np.ndarray]]:
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise InputError(f"y_true must be 1-D, got shape {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise InputError("y_true must hold only 0/1 labels (1 = positive)")
    y = y.astype(bool)
    if y.all() or not y.any():
        raise InputError(f"y_true needs both classes, got {int(y.sum())} positives of {y.size}")
    out = []
    for s in scores:
        s = np.asarray(s, dtype=np.float64)
        if s.shape != y.shape:
            raise InputError(f"scores of shape {s.shape} do not match y_true of shape {y.shape}")
        if not np.all(np.isfinite(s)):
            raise InputError("scores contain NaN or infinity")
        out.append(s)
    return y, out


# ---------------------------------------------------------------------------- ROC and AUC

def roc_curve(y_true, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve: ``(fpr, tpr, thresholds)``, one point per distinct score plus (0, 0).

    ``thresholds`` are decreasing; the first is ``+inf`` (nothing predicted positive). Point i
    is the rate of ``score >= thresholds[i]`` among negatives (fpr) and positives (tpr).
    """
    y, (s,) = _check_binary(y_true, scores)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(y)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    fpr = np.r_[0.0, fps / (~y).sum()]
    tpr = np.r_[0.0, tps / y.sum()]
    return fpr, tpr, np.r_[np.inf, s[last_of_tie]]


def _midranks_auc_components(y: np.ndarray, s: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC and DeLong's structural components V10 (per positive) and V01 (per negative)."""
    pos, neg = s[y], s[~y]
    m, n = pos.size, neg.size
    ranks_all = stats.rankdata(np.r_[pos, neg])  # midranks: ties get the average rank
    ranks_pos, ranks_neg = stats.rankdata(pos), stats.rankdata(neg)
    auc = (ranks_all[:m].sum() - m * (m + 1) / 2.0) / (m * n)
    v10 = (ranks_all[:m] - ranks_pos) / n        # P(negative < this positive), ties 1/2
    v01 = 1.0 - (ranks_all[m:] - ranks_neg) / m  # P(this negative < positive), ties 1/2
    return float(auc), v10, v01


def roc_auc(y_true, scores) -> float:
    """Area under the ROC curve (Mann-Whitney U / (m n), ties count one half), in [0, 1]."""
    y, (s,) = _check_binary(y_true, scores)
    return _midranks_auc_components(y, s)[0]


def delong_covariance(y_true, *scores) -> tuple[np.ndarray, np.ndarray]:
    """AUCs ``(K,)`` and their DeLong covariance matrix ``(K, K)`` for K score vectors."""
    y, score_list = _check_binary(y_true, *scores)
    parts = [_midranks_auc_components(y, s) for s in score_list]
    aucs = np.array([p[0] for p in parts])
    v10 = np.atleast_2d(np.array([p[1] for p in parts]))
    v01 = np.atleast_2d(np.array([p[2] for p in parts]))
    cov = (np.atleast_2d(np.cov(v10, ddof=1)) / v10.shape[1]
           + np.atleast_2d(np.cov(v01, ddof=1)) / v01.shape[1])
    return aucs, cov


def auc_ci(y_true, scores, level: float = 0.95) -> tuple[float, float, float]:
    """AUC and its DeLong confidence interval ``(auc, low, high)``, clipped to [0, 1]."""
    aucs, cov = delong_covariance(y_true, scores)
    half = stats.norm.ppf(0.5 + level / 2.0) * np.sqrt(cov[0, 0])
    return float(aucs[0]), float(max(aucs[0] - half, 0.0)), float(min(aucs[0] + half, 1.0))


@dataclass(frozen=True)
class DeLongResult:
    """Paired DeLong test of AUC_a against AUC_b (same cases, two scores)."""

    auc_a: float
    auc_b: float
    var_a: float
    var_b: float
    covariance: float
    difference: float
    z: float
    p: float
    ci_low: float
    ci_high: float
    alternative: str
    level: float

    def as_dict(self) -> dict:
        return asdict(self)


def delong_test(y_true, scores_a, scores_b, alternative: str = "two-sided",
                level: float = 0.95) -> DeLongResult:
    """Fast DeLong test of ``H0: AUC_a == AUC_b`` for two scores of the same cases.

    alternative: "two-sided", "greater" (AUC_a > AUC_b) or "less". ``z = (AUC_a - AUC_b) /
    sqrt(var_a + var_b - 2 cov)``; the ``level`` CI of the difference is ``diff +- q sd`` (two
    sided whatever the alternative, as pROC reports it). Identical scores give z = 0, p = 1.
    """
    if alternative not in ("two-sided", "greater", "less"):
        raise InputError(f"alternative must be two-sided, greater or less, got {alternative!r}")
    aucs, cov = delong_covariance(y_true, scores_a, scores_b)
    difference = float(aucs[0] - aucs[1])
    variance = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    if variance <= 0.0:  # the two scores rank every case alike
        z = 0.0 if difference == 0.0 else float(np.copysign(np.inf, difference))
    else:
        z = difference / np.sqrt(variance)
    p = {"two-sided": 2.0 * stats.norm.sf(abs(z)), "greater": stats.norm.sf(z),
         "less": stats.norm.cdf(z)}[alternative]
    half = stats.norm.ppf(0.5 + level / 2.0) * np.sqrt(max(variance, 0.0))
    return DeLongResult(auc_a=float(aucs[0]), auc_b=float(aucs[1]), var_a=float(cov[0, 0]),
                        var_b=float(cov[1, 1]), covariance=float(cov[0, 1]), difference=difference,
                        z=float(z), p=float(min(p, 1.0)), ci_low=float(difference - half),
                        ci_high=float(difference + half), alternative=alternative, level=level)


# ------------------------------------------------------------------- thresholds and counts

def confusion_counts(y_true, y_pred) -> dict[str, int]:
    """``{"tp", "fp", "tn", "fn"}`` for 0/1 labels and 0/1 predictions ``(N,)``."""
    y = np.asarray(y_true).astype(bool)
    p = np.asarray(y_pred).astype(bool)
    return {"tp": int((y & p).sum()), "fp": int((~y & p).sum()),
            "tn": int((~y & ~p).sum()), "fn": int((y & ~p).sum())}


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else float("nan")


def metrics_from_counts(tp: int, fp: int, tn: int, fn: int) -> dict[str, float]:
    """Sensitivity (recall), specificity, precision (PPV), NPV, accuracy and F1 from counts.

    A ratio whose denominator is 0 is NaN (F1 is 0 when there are positives but none found).
    """
    sens, spec = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    prec = _ratio(tp, tp + fp)
    return {"sensitivity": sens, "specificity": spec, "precision": prec, "npv": _ratio(tn, tn + fn),
            "accuracy": _ratio(tp + tn, tp + fp + tn + fn), "f1": _ratio(2 * tp, 2 * tp + fp + fn)}


def f1_score(y_true, y_pred) -> float:
    """F1 = 2 TP / (2 TP + FP + FN) for 0/1 labels and predictions."""
    return metrics_from_counts(**confusion_counts(y_true, y_pred))["f1"]


def binary_metrics(y_true, scores, threshold: float) -> dict[str, float]:
    """Counts plus sensitivity, specificity, precision, NPV, accuracy, F1 at ``score >= threshold``."""
    counts = confusion_counts(y_true, np.asarray(scores) >= threshold)
    return {"threshold": float(threshold), **counts, **metrics_from_counts(**counts)}


THRESHOLD_CRITERIA = ("youden", "f1", "sensitivity", "specificity")


def choose_threshold(y_true, scores, criterion: str = "youden", target: float | None = None) -> float:
    """A decision threshold chosen on validation data.

    criterion: "youden" (max sensitivity + specificity - 1), "f1" (max F1), "sensitivity"
    (the highest threshold with sensitivity >= target), "specificity" (the lowest threshold
    with specificity >= target). Candidates are the distinct scores; ties in the criterion go
    to the higher threshold.
    """
    if criterion not in THRESHOLD_CRITERIA:
        raise InputError(f"criterion must be one of {', '.join(THRESHOLD_CRITERIA)}, got {criterion!r}")
    if criterion in ("sensitivity", "specificity") and target is None:
        raise InputError(f"criterion {criterion!r} needs a target value in [0, 1]")
    fpr, tpr, thresholds = roc_curve(y_true, scores)
    fpr, tpr, thresholds = fpr[1:], tpr[1:], thresholds[1:]  # drop the +inf point
    y = np.asarray(y_true).astype(bool)
    if criterion == "youden":
        value = tpr - fpr
    elif criterion == "f1":
        tp, fp = tpr * y.sum(), fpr * (~y).sum()
        value = 2 * tp / (2 * tp + fp + (y.sum() - tp))
    elif criterion == "sensitivity":
        return float(thresholds[np.flatnonzero(tpr >= target)[0]])
    else:
        ok = np.flatnonzero(1.0 - fpr >= target)
        return float(thresholds[ok[-1]] if ok.size else np.inf)
    return float(thresholds[int(np.argmax(value))])


# ------------------------------------------------------------------------------ bootstrap

def bootstrap_ci(metric: Callable[..., float], y_true, *scores, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0, stratified: bool = True) -> tuple[float, float, float]:
    """``(estimate, low, high)``: ``metric(y, *scores)`` and its percentile bootstrap CI.

    Resamples cases with replacement (within each class when ``stratified``, as pROC does, so
    every resample has both classes), ``numpy.random.default_rng(seed)``.
    """
    y = np.asarray(y_true)
    arrays = [np.asarray(s) for s in scores]
    estimate = float(metric(y, *arrays))
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)] if stratified else [np.arange(y.size)]
    values = np.empty(n_boot)
    for b in range(n_boot):
        idx = np.concatenate([rng.choice(g, g.size, replace=True) for g in groups])
        try:
            values[b] = metric(y[idx], *[a[idx] for a in arrays])
        except InputError:  # e.g. an unstratified resample with one class only
            values[b] = np.nan
    low, high = np.nanpercentile(values, [50 * (1 - level), 50 * (1 + level)])
    return estimate, float(low), float(high)


def classifier_report(y_val, scores_val, y_test, scores_test, criterion: str = "youden",
                      target: float | None = None, n_boot: int = 1000, seed: int = 0) -> dict:
    """What a paper's table needs for one classifier: test AUC (DeLong CI and bootstrap CI),
    and sensitivity, specificity and F1 (bootstrap CIs) at a threshold chosen on validation."""
    threshold = choose_threshold(y_val, scores_val, criterion, target)
    auc, low, high = auc_ci(y_test, scores_test)
    report = {"auc": auc, "auc_ci95_delong": [low, high],
              "auc_ci95_bootstrap": list(bootstrap_ci(roc_auc, y_test, scores_test, n_boot=n_boot,
                                                      seed=seed)[1:]),
              "criterion": criterion, "n_test": int(np.size(y_test)),
              "n_test_positive": int(np.sum(y_test)), **binary_metrics(y_test, scores_test, threshold)}
    for name in ("sensitivity", "specificity", "f1"):
        def at_threshold(y, s, name=name):
            return binary_metrics(y, s, threshold)[name]
        report[f"{name}_ci95"] = list(bootstrap_ci(at_threshold, y_test, scores_test,
                                                   n_boot=n_boot, seed=seed)[1:])
    return report
