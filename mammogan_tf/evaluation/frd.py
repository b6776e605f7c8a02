"""Fréchet Radiomics Distance (FRD) between two sets of patches.

FRD (Osuala et al. 2024, "Towards learning contrast kinetics with multi-condition latent
diffusion models", the metric released as ``frd-score``; version 0 of that package) is the
Fréchet distance of radiomic feature vectors instead of network activations:

1. radiomic features of every patch (``radiomics.radiomic_features``: first order, GLCM,
   GLRLM, GLSZM, GLDM, NGTDM on the whole patch; see that module for the settings);
2. each feature min-max normalised over both sets together (FRDv0's "joint" reference) to
   ``[0, NORM_MAX]`` (``NORM_MAX`` = 7.45670747756958, the range ``frd-score`` v0 uses); a
   feature constant over both sets becomes ``NORM_MAX / 2``, a NaN feature value likewise;
3. the Fréchet distance of the normalised features (``frechet.frechet_distance``: float64,
   ddof=1, no log transform, as FRDv0).

Joint normalisation makes the value symmetric in its two arguments. Like FID it depends on the
number of images: compare runs with equal counts.
"""
from __future__ import annotations

import numpy as np

from mammogan_tf.errors import InputError
from mammogan_tf.evaluation.frechet import frechet_distance
from mammogan_tf.evaluation.radiomics import BIN_WIDTH, FEATURE_NAMES, radiomic_features

NORM_MAX = 7.45670747756958
VERSION = "frd-v0 (joint min-max to [0, 7.4567], raw Frechet distance)"


def normalise_jointly(features_a: np.ndarray, features_b: np.ndarray,
                      high: float = NORM_MAX) -> tuple[np.ndarray, np.ndarray]:
    """Min-max normalise ``(N_a, F)`` and ``(N_b, F)`` with the minimum and maximum of both
    sets together to ``[0, high]``; constant features and NaNs become ``high / 2``."""
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise InputError(f"radiomic feature shapes {a.shape} and {b.shape} differ")
    both = np.concatenate([a, b])
    low, top = np.nanmin(both, axis=0), np.nanmax(both, axis=0)
    span = top - low
    safe = np.where(span > 0, span, 1.0)
    out = [np.where(span > 0, (x - low) / safe * high, high / 2) for x in (a, b)]
    return tuple(np.where(np.isnan(x), high / 2, x) for x in out)


def frd_from_features(features_a, features_b) -> float:
    """FRD of two radiomic feature sets ``(N_a, F)`` and ``(N_b, F)`` (steps 2 and 3 above)."""
    return frechet_distance(*normalise_jointly(features_a, features_b))


def frd(images_a, images_b, bin_width: float = BIN_WIDTH) -> float:
    """FRD between ``images_a (N_a, H, W[, 1])`` and ``images_b (N_b, H', W'[, 1])`` in [-1, 1]."""
    return frd_from_features(radiomic_features(images_a, bin_width), radiomic_features(images_b, bin_width))


def describe(bin_width: float = BIN_WIDTH) -> dict:
    """What an FRD value was computed with, for reports."""
    return {"version": VERSION, "features": len(FEATURE_NAMES), "bin_width": bin_width,
            "intensity_scale": "[-1, 1] -> [0, 255], whole patch as the mask",
            "library": "mammogan_tf.evaluation.radiomics (pyradiomics 3.1.0 does not build on Python 3.11)"}
