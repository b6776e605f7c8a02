"""Evaluation: generative metrics, statistics for classifiers and detectors, plots, reports.

Pure NumPy/SciPy modules (no TensorFlow import): ``frechet`` (FID, KID, streaming statistics,
cache), ``manifold`` (precision, recall, density, coverage), ``memorisation``,
``classification`` (ROC, AUC, DeLong, thresholds, F1, bootstrap), ``detection`` (sensitivity
and false positives per image at IoU thresholds, FROC, AP), ``plots``, ``vtt``, ``inputs``,
``radiomics`` (radiomic features) and ``frd`` (Frechet Radiomics Distance).
TensorFlow is imported only by ``features`` (backbones), ``encoder_files`` (SavedModel encoders,
weights sha256), ``reference`` (cached real statistics
for FID-guided checkpointing) and ``report`` when it extracts features.

The names below are importable from ``mammogan_tf.evaluation`` directly; each module is
imported on first use.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "frechet_distance": "frechet", "frechet_distance_from_stats": "frechet", "kid": "frechet",
    "activation_statistics": "frechet", "RunningStatistics": "frechet", "cached_statistics": "frechet",
    "manifold_metrics": "manifold",
    "memorisation_check": "memorisation", "ssim": "memorisation", "nearest_neighbours": "memorisation",
    "roc_curve": "classification", "roc_auc": "classification", "auc_ci": "classification",
    "delong_test": "classification", "delong_covariance": "classification", "DeLongResult": "classification",
    "choose_threshold": "classification", "binary_metrics": "classification", "f1_score": "classification",
    "bootstrap_ci": "classification", "classifier_report": "classification",
    "box_iou": "detection", "detection_metrics": "detection", "froc_curve": "detection",
    "average_precision": "detection", "sensitivity_at_fps": "detection",
    "load_image_set": "inputs", "ImageSet": "inputs",
    "load_backbone": "features", "Backbone": "features", "extract_features": "features",
    "RealReference": "reference", "real_statistics": "reference",
    "frd": "frd", "radiomic_features": "radiomics",
    "run_evaluation": "report", "make_vtt": "vtt", "score_vtt": "vtt", "cohen_kappa": "vtt",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mammogan_tf.evaluation' has no attribute '{name}'")
    return getattr(importlib.import_module(f"mammogan_tf.evaluation.{_EXPORTS[name]}"), name)
