"""Scores and reports of a classifier run (statistics from ``evaluation.classification``).

Binary runs (two task classes): score = probability of class 1; test AUC with its DeLong CI,
and sensitivity, specificity, F1 at the threshold chosen on validation (``criterion``).
Multi-class runs: per class one-vs-rest AUC (DeLong CI) and sensitivity/specificity of the
arg-max prediction (Frid-Adar et al. report these per class), plus overall accuracy.
"""
from __future__ import annotations

import numpy as np

from mammogan_tf.evaluation.classification import auc_ci, classifier_report, metrics_from_counts, roc_auc
from mammogan_tf.errors import InputError


def probabilities(logits: np.ndarray) -> np.ndarray:
    """``(N, 1)`` logits -> ``(N, 2)`` [1 - p, p]; ``(N, C)`` -> softmax ``(N, C)``."""
    logits = np.asarray(logits, np.float64)
    if logits.shape[-1] == 1:
        p = 1.0 / (1.0 + np.exp(-logits[:, 0]))
        return np.stack([1.0 - p, p], axis=-1)
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def validation_auc(labels: np.ndarray, logits: np.ndarray) -> float:
    """Binary: AUC of class 1; multi-class: mean one-vs-rest AUC over classes present. NaN when
    a class is missing from the validation labels."""
    probs = probabilities(logits)
    aucs = []
    for c in range(probs.shape[1]) if probs.shape[1] > 2 else [1]:
        try:
            aucs.append(roc_auc((labels == c).astype(int), probs[:, c]))
        except InputError:
            return float("nan")
    return float(np.mean(aucs))


def run_report(val: dict | None, test: dict, class_names: list[str], criterion: str = "youden",
               n_boot: int = 200, seed: int = 0) -> dict:
    """The run's test report (see the module doc). ``val``/``test``: dicts of ``labels`` (N,)
    and ``logits`` (N, C) from ``classifier_data.collect``."""
    probs = probabilities(test["logits"])
    y = test["labels"]
    if probs.shape[1] == 2:
        if val is None:
            raise InputError("a binary report needs a validation split to choose the threshold")
        report = classifier_report((val["labels"] == 1).astype(int), probabilities(val["logits"])[:, 1],
                                   (y == 1).astype(int), probs[:, 1], criterion=criterion, n_boot=n_boot, seed=seed)
        return {"kind": "binary", "classes": class_names, **report}
    predicted = probs.argmax(axis=1)
    per_class = {}
    for c, name in enumerate(class_names):
        truth, guess = y == c, predicted == c
        counts = {"tp": int((truth & guess).sum()), "fp": int((~truth & guess).sum()),
                  "tn": int((~truth & ~guess).sum()), "fn": int((truth & ~guess).sum())}
        entry = {**counts, **metrics_from_counts(**counts)}
        if truth.any() and (~truth).any():
            auc, low, high = auc_ci(truth.astype(int), probs[:, c])
            entry.update(auc=auc, auc_ci95_delong=[low, high])
        per_class[name] = entry
    aucs = [e["auc"] for e in per_class.values() if "auc" in e]
    return {"kind": "multiclass", "classes": class_names, "accuracy": float(np.mean(predicted == y)),
            "auc": float(np.mean(aucs)) if aucs else float("nan"), "per_class": per_class,
            "n_test": int(y.size)}


def scores_arrays(result: dict) -> dict[str, np.ndarray]:
    """What ``scores/<split>.npz`` holds: labels, logits, probabilities, positive score, patients."""
    probs = probabilities(result["logits"])
    return {"labels": result["labels"], "logits": result["logits"], "probabilities": probs,
            "scores": probs[:, 1] if probs.shape[1] == 2 else probs.max(axis=1), "patients": result["patients"]}
