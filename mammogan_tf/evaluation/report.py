"""``mammogan evaluate``: real versus synthetic patches -> ``metrics.json``, ``report.md``, figures.

``run_evaluation`` reads both sets (shard manifests or folders of PNG/DICOM, see
``inputs.py``), extracts backbone features once, and computes:

* FID (Frechet distance of the features, float64, ddof=1), KID (mean and std over subsets),
  precision, recall, density and coverage (k-NN manifolds) of synthetic against real lesions;
* FRD, the Frechet Radiomics Distance (``frd.py``: radiomic features instead of a network's,
  independent of the backbone) of the same two sets;
* the memorisation check of every synthetic image against the real training images
  (``--train-real``; without it, against the real set itself), in feature and pixel space;
* figures: real/synthetic sample grid, t-SNE coloured by real normal / real lesion / synthetic
  lesion, histograms of nearest-neighbour distances and SSIMs, the closest pairs.

The output folder is built in ``OUT.partial`` and renamed into place when complete, with a
``manifest.json`` (stage "evaluate") that records the inputs and the sha256 of every file.
Real shard inputs are split into lesions and normal tissue; the metrics compare synthetic
images with the real lesions of the type(s) the synthetic images' provenance names (``class``
of ``synthesis.export.provenance``; ``lesion_types`` overrides it; every type but normal when
neither names one), one original patch per real lesion (``copy_index`` 0: prepare's augmented
copies are left out unless ``all_copies``). ``metrics["comparison"]`` and ``report.md`` say what
was compared. FID and KID depend on the number of images: compare runs with equal counts
(``metrics.json`` records them).
"""
from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from mammogan_tf import __version__
from mammogan_tf.errors import InputError
from mammogan_tf.evaluation import frd as frd_metric
from mammogan_tf.evaluation import plots
from mammogan_tf.evaluation.frechet import frechet_distance, kid
from mammogan_tf.evaluation.inputs import ImageSet, load_image_set, manifest_path, resize_images
from mammogan_tf.evaluation.manifold import manifold_metrics
from mammogan_tf.evaluation.memorisation import MemorisationResult, memorisation_check
from mammogan_tf.manifest import build_manifest, input_record, partial_dir, publish, write_json_atomic

TSNE_MAX_PER_GROUP = 1000
PAIRS_SHOWN = 10


def json_safe(value):
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python numbers, recursively."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _cap(image_set: ImageSet, n: int | None, seed: int) -> ImageSet:
    if n is None or len(image_set) <= n:
        return image_set
    return image_set.subset(np.sort(np.random.default_rng(seed).choice(len(image_set), n, replace=False)))


def _select(image_set: ImageSet, lesion_types: Sequence[str] | None, all_copies: bool) -> ImageSet:
    """The real lesions compared: of ``lesion_types`` (None = all but normal), originals only
    unless ``all_copies``."""
    keep = image_set.where_lesion(lesion_types)
    return image_set.subset(keep if all_copies else keep & image_set.where_original())


def _comparison(real_all: ImageSet, real_lesion: ImageSet, synth: ImageSet, lesion_types, source: str,
                all_copies: bool) -> dict:
    """What was compared: real lesion types and where they came from, copies, counts, split."""
    chosen = real_all.where_lesion(lesion_types)
    named = {}
    for name in synth.named_types:
        named[name or "none"] = named.get(name or "none", 0) + 1
    per_type = {}
    for name in real_lesion.lesion_types:
        per_type[name or "unlabelled"] = per_type.get(name or "unlabelled", 0) + 1
    labelled = real_all.kind == "shards"
    listed = sorted(per_type) if lesion_types is None else list(lesion_types)
    return {"real_lesion_types": listed if labelled else None,
            "lesion_types_from": source, "copies": "all" if all_copies else "originals",
            "real_split": real_all.split, "real_labelled": labelled,
            "real_lesion_per_type": dict(sorted(per_type.items())),
            "real_copies_left_out": 0 if all_copies else int((chosen & ~real_all.where_original()).sum()),
            "synthetic_named_types": dict(sorted(named.items()))}


def _input_record(image_set: ImageSet) -> dict:
    manifest = manifest_path(image_set.source) if image_set.kind == "shards" else None
    record = input_record(manifest) if manifest else {"path": image_set.source, "sha256": image_set.digest}
    return {**record, "kind": image_set.kind, "split": image_set.split}


def run_evaluation(real: str | os.PathLike, synthetic: str | os.PathLike, out_dir: str | os.PathLike, *,
                   backbone="inception_v3", train_real: str | os.PathLike | None = None,
                   real_split: str | None = "train", synthetic_split: str | None = None,
                   train_split: str | None = "train", lesion_types: Sequence[str] | None = None,
                   size: int | None = None, limit: int | None = None, batch_size: int = 32,
                   kid_subset_size: int = 1000, kid_subsets: int = 100, k: int = 5, percentile: float = 1.0,
                   pixel_candidates: int = 50, tsne: bool = True, frd: bool = True, seed: int = 0,
                   all_copies: bool = False, progress: bool = True) -> dict:
    """Evaluate synthetic against real patches and write ``out_dir`` (see the module doc).

    backbone: a spec for ``features.load_backbone`` or a loaded ``Backbone``. ``lesion_types``:
    real lesion classes to compare (None = those the synthetic provenance names, else all but
    normal); ``all_copies``: also compare prepare's augmented copies of each real lesion (default:
    originals only). ``limit`` caps each set at that many images (seeded). ``frd``: also compute
    the Frechet Radiomics Distance (``metrics["frd"]``; None when off). Returns the metrics dict
    written to ``metrics.json``.
    """
    from mammogan_tf.evaluation.features import extract_features, load_backbone

    extractor = load_backbone(backbone) if isinstance(backbone, str) else backbone
    synth = load_image_set(synthetic, synthetic_split, size, limit=limit, seed=seed, progress=progress)
    source = "option"
    if lesion_types is None:
        lesion_types = synth.provenance_lesion_types()
        source = "all" if lesion_types is None else "provenance"
    real_all = load_image_set(real, real_split, size, progress=progress)
    real_lesion = _cap(_select(real_all, lesion_types, all_copies), limit, seed)
    real_normal = _cap(real_all.subset(real_all.where_normal()), min(limit or TSNE_MAX_PER_GROUP,
                                                                     TSNE_MAX_PER_GROUP), seed)
    if len(real_lesion) < 2 or len(synth) < 2:
        which = f"{'/'.join(lesion_types) if lesion_types else 'lesion'} {'patches' if all_copies else 'originals'}"
        raise InputError(f"need at least 2 real {which} and 2 synthetic images, got {len(real_lesion)} "
                         f"({real_all.source}, split {real_all.split}) and {len(synth)} ({synth.source}); "
                         "choose with --lesion-types or --all-copies")
    comparison = _comparison(real_all, real_lesion, synth, lesion_types, source, all_copies)
    same_train = train_real is None or (Path(train_real).resolve() == Path(real).resolve()
                                        and train_split == real_split)
    if same_train:
        train = real_lesion
    else:
        train_all = load_image_set(train_real, train_split, size, progress=progress)
        train = _cap(_select(train_all, lesion_types, all_copies), limit, seed)

    def features(image_set: ImageSet, name: str) -> np.ndarray:
        return extract_features(extractor, image_set.images, batch_size, progress, desc=f"features {name}")

    acts_real, acts_synth = features(real_lesion, "real"), features(synth, "synthetic")
    acts_train = acts_real if same_train else features(train, "train")
    kid_mean, kid_std = kid(acts_real, acts_synth, kid_subset_size, kid_subsets, seed)
    manifold = manifold_metrics(acts_real, acts_synth, k=min(k, len(real_lesion) - 1, len(synth) - 1))
    train_pixels = resize_images(train.images, synth.size)
    memo = memorisation_check(acts_synth, acts_train, synth.images, train_pixels, percentile,
                              pixel_candidates, progress)

    out_dir = Path(out_dir)
    staging = partial_dir(out_dir)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    figures = _figures(staging, real_lesion, real_normal, synth, train_pixels, train, memo,
                       acts_real, acts_synth, features(real_normal, "normal") if tsne and len(real_normal) else None,
                       tsne, seed)
    metrics = json_safe({
        "fid": frechet_distance(acts_real, acts_synth),
        "frd": frd_metric.frd(real_lesion.images, synth.images) if frd else None,
        "frd_settings": frd_metric.describe() if frd else None,
        "kid": {"mean": kid_mean, "std": kid_std, "subset_size": min(kid_subset_size, len(real_lesion), len(synth)),
                "n_subsets": kid_subsets},
        **manifold,
        "memorisation": {"against": "real" if same_train else "train_real",
                         **memo.summary(synth.ids, train.ids, top=PAIRS_SHOWN)},
        "counts": {"real_lesion": len(real_lesion), "real_normal": len(real_normal), "synthetic": len(synth),
                   "train_real": len(train)},
        "backbone": extractor.describe(),
        "resize_method": extractor.resize_method,
        "inputs": {"real": real_all.record(), "synthetic": synth.record(),
                   "train_real": None if same_train else train.record()},
        "lesion_types": list(lesion_types) if lesion_types else None,
        "comparison": comparison,
        "seed": seed, "package_version": __version__, "figures": figures,
    })
    write_json_atomic(staging / "metrics.json", metrics)
    (staging / "report.md").write_text(render_report(metrics), encoding="utf-8")
    inputs = [_input_record(real_all), _input_record(synth)] + ([] if same_train else [_input_record(train)])
    config = {"backbone": extractor.spec, "real_split": real_split, "synthetic_split": synthetic_split,
              "train_split": train_split, "lesion_types": metrics["lesion_types"], "all_copies": all_copies,
              "size": size, "limit": limit,
              "batch_size": batch_size, "kid_subset_size": kid_subset_size, "kid_subsets": kid_subsets, "k": k,
              "percentile": percentile, "pixel_candidates": pixel_candidates, "tsne": tsne, "frd": frd,
              "seed": seed}
    files = [p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file()]
    write_json_atomic(staging / "manifest.json",
                      build_manifest("evaluate", staging, config, inputs, metrics["counts"], files))
    publish(staging, out_dir)
    return metrics


def _figures(folder: Path, real_lesion: ImageSet, real_normal: ImageSet, synth: ImageSet, train_pixels,
             train: ImageSet, memo: MemorisationResult, acts_real, acts_synth, acts_normal, tsne: bool,
             seed: int) -> dict[str, str]:
    figures = {"samples": plots.plot_sample_grid(real_lesion.images, synth.images, folder / "samples.png",
                                                 seed=seed).name}
    if tsne:
        parts = [(acts_synth, "synthetic lesion"), (acts_real, "real lesion")]
        if acts_normal is not None:
            parts.append((acts_normal, "real normal"))
        capped = [(a[np.sort(np.random.default_rng(seed).choice(len(a), min(len(a), TSNE_MAX_PER_GROUP),
                                                                replace=False))], g) for a, g in parts]
        feats = np.concatenate([a for a, _ in capped])
        groups = [g for a, g in capped for _ in range(len(a))]
        if len(feats) >= 5:
            figures["tsne"] = plots.plot_tsne(feats, groups, folder / "tsne.png", seed=seed)[0].name
    figures["memorisation_distances"] = plots.plot_histograms(
        {"synthetic to nearest real": memo.feature_distance, "real to nearest other real": memo.real_feature_distance},
        folder / "memorisation_distances.png", xlabel="feature-space distance to nearest real training image",
        lines={f"flag threshold (real-real percentile {memo.percentile:g})": memo.feature_threshold}).name
    figures["memorisation_ssim"] = plots.plot_histograms(
        {"synthetic to most similar real": memo.ssim, "real to most similar other real": memo.real_ssim},
        folder / "memorisation_ssim.png", xlabel="SSIM with the most similar real training image",
        lines={f"flag threshold (real-real percentile {100 - memo.percentile:g})": memo.ssim_threshold}).name
    order = np.argsort(memo.feature_distance, kind="mergesort")[:PAIRS_SHOWN]
    figures["memorisation_pairs_feature"] = plots.plot_pairs(
        synth.images[order], train_pixels[memo.feature_index[order]],
        [f"d = {memo.feature_distance[i]:.3g}" + (" FLAG" if memo.flagged_feature[i] else "") for i in order],
        folder / "memorisation_pairs_feature.png").name
    order = np.argsort(-memo.ssim, kind="mergesort")[:PAIRS_SHOWN]
    figures["memorisation_pairs_ssim"] = plots.plot_pairs(
        synth.images[order], train_pixels[memo.ssim_index[order]],
        [f"SSIM = {memo.ssim[i]:.3f}" + (" FLAG" if memo.flagged_ssim[i] else "") for i in order],
        folder / "memorisation_pairs_ssim.png", titles=("synthetic", "most similar real")).name
    return figures


def _fmt(value, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _where(record: dict) -> str:
    return f"shards, split {record['split']}" if record["kind"] == "shards" else "folder"


TYPES_FROM = {"option": "chosen with --lesion-types",
              "provenance": "the type(s) the synthetic images' provenance names",
              "all": "every lesion type: the synthetic images' provenance names no lesion type "
                     "(choose with --lesion-types)"}


def _compared(m: dict) -> list[str]:
    """report.md lines saying exactly which real patches the synthetic ones were compared with."""
    c = m.get("comparison")
    if not c:
        return []
    named = ", ".join(f"{'no lesion type' if name == 'none' else name} {n}"
                      for name, n in c["synthetic_named_types"].items())
    if not c["real_labelled"]:
        return ["- compared: every real image of the folder (no lesion types or copies recorded there); "
                f"synthetic provenance names: {named}"]
    per_type = ", ".join(f"{name} {n}" for name, n in c["real_lesion_per_type"].items()) or "none"
    copies = ("one patch per real lesion (its original, prepare's copy 0), "
              f"{c['real_copies_left_out']} augmented copies left out (--all-copies keeps them)"
              if c["copies"] == "originals" else "every patch of each real lesion, augmented copies included")
    return [f"- compared: real {', '.join(c['real_lesion_types'])} ({TYPES_FROM[c['lesion_types_from']]}), "
            f"split {c['real_split']}: {per_type}; {copies}",
            f"- synthetic provenance names: {named}"]


def render_report(metrics: dict) -> str:
    """``report.md`` from a metrics dict (figures are linked by their file names)."""
    m, memo, counts, backbone = metrics, metrics["memorisation"], metrics["counts"], metrics["backbone"]
    inputs = m["inputs"]
    lines = [
        "# Evaluation report", "",
        f"- real: `{inputs['real']['source']}` ({_where(inputs['real'])}): "
        f"{counts['real_lesion']} lesion patches compared, {counts['real_normal']} normal patches for t-SNE",
        f"- synthetic: `{inputs['synthetic']['source']}` ({_where(inputs['synthetic'])}): {counts['synthetic']} images",
        *_compared(m),
        f"- memorisation reference: {counts['train_real']} real training images ({memo['against']})",
        f"- backbone: `{backbone['spec']}` ({backbone['dim']}-d features, input {backbone['input_size']} px, "
        f"{backbone['channels']} channel(s)); resize: {m['resize_method']}",
        f"- mammogan_tf {m['package_version']}, seed {m['seed']}", "",
        "## Distribution metrics (synthetic vs real lesions)", "",
        "| metric | value | reading |", "|---|---|---|",
        f"| FID | {_fmt(m['fid'])} | Frechet distance of features; 0 = same mean and covariance, lower is better |",
        f"| FRD | {_fmt(m.get('frd'))} | Frechet distance of {_fmt((m.get('frd_settings') or {}).get('features'))} "
        f"radiomic features (min-max normalised over both sets); lower is better |",
        f"| KID | {_fmt(m['kid']['mean'])} +- {_fmt(m['kid']['std'])} | unbiased MMD^2, {m['kid']['n_subsets']} "
        f"subsets of {m['kid']['subset_size']}; about 0 = same distribution |",
        f"| precision | {_fmt(m['precision'])} | synthetic images inside the real manifold (realism) |",
        f"| recall | {_fmt(m['recall'])} | real images inside the synthetic manifold (diversity) |",
        f"| density | {_fmt(m['density'])} | about 1 = synthetic images spread like real ones |",
        f"| coverage | {_fmt(m['coverage'])} | real images with a synthetic neighbour (k = {m['k']}) |", "",
        "FID and KID depend on the number of images; compare runs with equal counts.", "",
    ]
    if "samples" in m["figures"]:
        lines += [f"![real and synthetic samples]({m['figures']['samples']})", ""]
    if "tsne" in m["figures"]:
        lines += ["## t-SNE", "", f"![t-SNE of backbone features]({m['figures']['tsne']})", ""]
    lines += [
        "## Memorisation", "",
        f"A synthetic image is flagged when it is closer to a real training image than all but "
        f"{memo['percentile']:g} % of real training images are to their nearest other training image "
        f"(feature distance below {_fmt(memo['feature_threshold'])}, "
        f"or SSIM above {_fmt(memo.get('ssim_threshold'))}).", "",
        f"- flagged: **{memo['n_flagged']} of {memo['n_synthetic']}** ({memo['fraction_flagged']:.1%}); "
        f"feature space {memo['n_flagged_feature']}, pixel space (SSIM) {memo.get('n_flagged_ssim', 'n/a')}",
        f"- median nearest-real feature distance: synthetic {_fmt(memo['feature_distance_median'])}, "
        f"real-to-real {_fmt(memo['real_to_real_feature_distance_median'])}",
    ]
    if "ssim_median" in memo:
        lines.append(f"- median best SSIM: synthetic {_fmt(memo['ssim_median'])}, "
                     f"real-to-real {_fmt(memo['real_to_real_ssim_median'])} "
                     f"(SSIM searched among the {memo['pixel_candidates']} nearest in pixel L2)")
    lines += ["", "| synthetic | nearest real (features) | distance |", "|---|---|---|"]
    lines += [f"| {p['synthetic']} | {p['train']} | {_fmt(p['distance'])} |" for p in memo["closest_feature_pairs"]]
    lines.append("")
    for name, caption in (("memorisation_distances", "nearest-neighbour distances"),
                          ("memorisation_ssim", "best SSIM"),
                          ("memorisation_pairs_feature", "closest pairs in feature space"),
                          ("memorisation_pairs_ssim", "most similar pairs in pixel space")):
        if name in m["figures"]:
            lines += [f"![{caption}]({m['figures'][name]})", ""]
    return "\n".join(lines)
