"""Classic (non-GAN) augmentation of a classifier's real training patches, as ``tf.data`` maps.

- ``flips``: Alyafi et al. (2019) "Aug ORG": every patch, its horizontal flip and its vertical
  flip (``data.augment.flip_augment``'s set, three elements per patch).
- ``classic``: Frid-Adar et al. (2018): each element is one draw of ``data.augment.classic_augment``
  with one rotation (uniform in [0, 180] degrees) followed by one of its 1 + 3 flips + 7
  translations + 5 scalings, chosen uniformly - the same distribution as sampling from the
  paper's 480 outputs per lesion. The lesion diameter ``d`` is the larger side of the
  element's ``bbox`` (patch pixels), or half the patch side when the patch has no box.
  The draw is seeded by ``(seed, element index)``: deterministic for a given stream.

Elements are dicts with ``image`` (S, S, 1) float32 in [-1, 1] and ``bbox`` (4,) float32.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from mammogan_tf.data.augment import classic_augment

AUGMENTATIONS = ("none", "flips", "classic")
CLASSIC_COUNTS = {"n_rot": 1, "n_flip": 3, "n_trans": 7, "n_scale": 5}


def _classic_one(image: np.ndarray, bbox: np.ndarray, seed: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng([int(s) for s in seed])
    patch = (image[..., 0].astype(np.float32) + 1.0) / 2.0
    side = float(max(bbox[2] - bbox[0], bbox[3] - bbox[1])) if bbox[0] >= 0 else patch.shape[0] / 2.0
    outputs = classic_augment(patch, rng, max(side, 1.0), **CLASSIC_COUNTS)
    choice = outputs[int(rng.integers(len(outputs)))]
    return (choice[..., None] * 2.0 - 1.0).astype(np.float32)


def classic_map(seed: int = 0):
    """``(index, element) -> element`` with ``image`` replaced by one Frid-Adar classic draw;
    use after ``dataset.enumerate()``."""

    def apply(index, element):
        shape = element["image"].shape
        image = tf.numpy_function(_classic_one, [element["image"], element["bbox"],
                                                 tf.stack([tf.constant(seed, tf.int64), index])],
                                  tf.float32, stateful=False)
        return {**element, "image": tf.ensure_shape(image, shape)}

    return apply


def flip_triplets(element):
    """One element -> a dataset of three: the patch, its left-right flip, its up-down flip."""
    image = element["image"]
    images = tf.stack([image, tf.reverse(image, [1]), tf.reverse(image, [0])])
    rest = {k: v for k, v in element.items() if k != "image"}
    return tf.data.Dataset.from_tensor_slices(
        {"image": images, **{k: tf.stack([v, v, v]) for k, v in rest.items()}})


def augment_dataset(dataset: tf.data.Dataset, kind: str, seed: int = 0) -> tf.data.Dataset:
    """``dataset`` of element dicts with augmentation ``kind`` ("none", "flips", "classic")."""
    if kind == "none":
        return dataset
    if kind == "flips":
        return dataset.flat_map(flip_triplets)
    if kind == "classic":
        return dataset.enumerate().map(classic_map(seed), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    raise ValueError(f"unknown augmentation {kind!r}; expected one of {AUGMENTATIONS}")
