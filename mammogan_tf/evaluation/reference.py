"""Real-set reference statistics for FID-guided checkpointing (Alyafi: the generator is saved
when its FID to the real patches improves).

``RealReference(backbone, manifest, split, lesion_types)`` streams the real shards through the
backbone once, keeps the mean and covariance (and the first ``keep`` feature rows, for KID), and
caches them as ``.npz`` keyed by the backbone identity (spec, weights sha256, input size, resize
method), the manifest's sha256, the split and the class filter; later runs load them in
milliseconds. ``reference.score(generated_images)`` then returns FID and KID for a checkpoint,
computed the same way at every step.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence


from mammogan_tf.evaluation.features import Backbone, accumulate_statistics, extract_features, load_backbone
from mammogan_tf.evaluation.frechet import (RunningStatistics, activation_statistics, cached_statistics,
                                            frechet_distance_from_stats, kid)
from mammogan_tf.manifest import MANIFEST_NAME, read_manifest, sha256_file


def real_statistics(backbone: Backbone, manifest: str | os.PathLike, split: str | Sequence[str] = "train",
                    lesion_types: Sequence[str] | None = None, keep: int = 1000, batch_size: int = 32,
                    cache_dir: str | os.PathLike | None = None, progress: bool = True) -> RunningStatistics:
    """Streaming feature statistics of a manifest's real patches (cached; see the module doc)."""
    from mammogan_tf.data import make_dataset

    info = read_manifest(manifest)
    path = Path(info["root"]) / MANIFEST_NAME
    key = {"backbone": backbone.identity, "manifest_sha256": sha256_file(path), "split": split,
           "lesion_types": sorted(lesion_types) if lesion_types else None, "keep": int(keep)}

    def compute() -> RunningStatistics:
        dataset = make_dataset(path, split, batch_size, shuffle=False, lesion_types=lesion_types)
        return accumulate_statistics(backbone, dataset, keep=keep, progress=progress, desc="real statistics")

    return cached_statistics(key, compute, cache_dir)


class RealReference:
    """FID/KID of generated images against cached real statistics (one backbone, one split)."""

    def __init__(self, backbone: Backbone | str, manifest: str | os.PathLike, split: str = "train",
                 lesion_types: Sequence[str] | None = None, keep: int = 1000, batch_size: int = 32,
                 kid_subsets: int = 100, cache_dir: str | os.PathLike | None = None, progress: bool = False):
        self.backbone = load_backbone(backbone) if isinstance(backbone, str) else backbone
        self.batch_size, self.kid_subsets, self.progress = batch_size, kid_subsets, progress
        self.stats = real_statistics(self.backbone, manifest, split, lesion_types, keep, batch_size,
                                     cache_dir, progress)

    def score(self, images, seed: int = 0) -> dict[str, float]:
        """``{"fid", "kid", "kid_std", "n"}`` of images ``(N, S, S, 1)`` in [-1, 1] (or a batched
        dataset); KID subsets are ``min(1000, N, kept real rows)`` large."""
        acts = extract_features(self.backbone, images, self.batch_size, self.progress, desc="generated")
        mu, sigma = activation_statistics(acts)
        fid = frechet_distance_from_stats(mu, sigma, self.stats.mean, self.stats.covariance())
        out = {"fid": fid, "kid": float("nan"), "kid_std": float("nan"), "n": int(acts.shape[0])}
        real = self.stats.kept
        if real.shape[0] >= 2:
            out["kid"], out["kid_std"] = kid(acts, real, subset_size=1000, n_subsets=self.kid_subsets, seed=seed)
        return out
