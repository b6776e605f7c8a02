"""Visual Turing test kit (Alyafi et al.: 75 real + 75 synthetic patches shown to radiologists).

``make_vtt`` writes ``OUT/observers/`` (what observers get: ``images/vtt_001.png ...`` in a
seeded random order, ``answer_sheet.csv`` with an empty ``answer`` column, ``instructions.txt``)
and ``OUT/key.csv`` (kept by the organiser: image, truth, source id) and ``OUT/study.json``
(the seed and the reading settings that ``mammogan vtt serve`` uses). Images are re-encoded as
8-bit grey PNG without any metadata, real and synthetic alike, so neither the file name, the
bit depth nor a provenance text chunk tells them apart.

``score_vtt`` reads the key and one answer sheet per observer (``image,answer`` with answer
``synthetic``/``real``; also accepted: s/r, fake, 1/0, yes/no, true/false; empty = not
answered) and reports per observer: accuracy, sensitivity and specificity for "synthetic"
(positive = synthetic), a two-sided binomial p-value of the accuracy against chance (0.5),
and Cohen's kappa between every pair of observers on the images both answered, the 2x2
confusion counts (tp/fn/fp/tn) and which synthetic images fooled most observers
(``fooled_ranking``; ``contact_sheet_png`` tiles them with their counts).
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import os
import shutil
from pathlib import Path
from typing import Mapping

import numpy as np
from scipy import stats

from mammogan_tf.errors import InputError
from mammogan_tf.evaluation.classification import confusion_counts, metrics_from_counts
from mammogan_tf.evaluation.inputs import ImageSet
from mammogan_tf.evaluation.plots import save_grey_png
from mammogan_tf.manifest import partial_dir, publish

SYNTHETIC_WORDS = {"synthetic", "s", "fake", "f", "1", "yes", "y", "true", "gan"}
REAL_WORDS = {"real", "r", "0", "no", "n", "false"}
INSTRUCTIONS = """Visual Turing test: {n} images, some real patches and some synthetic (GAN) ones.
For every image in images/, write "real" or "synthetic" in the answer column of
answer_sheet.csv (keep the image column as it is). Save the sheet under your name,
e.g. observer_A.csv, and return it.
"""
STUDY_FILE = "study.json"
DEFAULT_READING = {"confidence": False, "lesion_types": [], "time_limit_s": None, "final_answers": True}
"""Reading settings of the web reader study (``study.json`` -> ``reading``): ask a confidence 1-5,
ask a lesion type from this list, hide the image after this many seconds, answers final once sent."""


def make_vtt(real: ImageSet, synthetic: ImageSet, out_dir: str | os.PathLike, n: int = 75,
             seed: int = 0) -> dict:
    """Draw ``n`` real and ``n`` synthetic images (seeded), shuffle them and write the observer
    set and the key (see the module doc). Returns ``{"observers", "key", "n_real", "n_synthetic"}``."""
    if len(real) < n or len(synthetic) < n:
        raise InputError(f"need {n} images of each kind, have {len(real)} real ({real.source}) and "
                         f"{len(synthetic)} synthetic ({synthetic.source}); lower --n")
    if real.images.shape[1:] != synthetic.images.shape[1:]:
        raise InputError(f"real images are {real.images.shape[1:3]} and synthetic {synthetic.images.shape[1:3]}; "
                         f"pass --size so that both are shown at one size")
    rng = np.random.default_rng(seed)
    chosen = ([("real", real, int(i)) for i in rng.choice(len(real), n, replace=False)]
              + [("synthetic", synthetic, int(i)) for i in rng.choice(len(synthetic), n, replace=False)])
    order = rng.permutation(len(chosen))
    out_dir = Path(out_dir)
    staging = partial_dir(out_dir)
    shutil.rmtree(staging, ignore_errors=True)
    observers = staging / "observers"
    width = max(3, len(str(len(chosen))))
    key_rows = []
    for rank, k in enumerate(order, start=1):
        truth, image_set, i = chosen[k]
        name = f"vtt_{rank:0{width}d}.png"
        save_grey_png(image_set.images[i], observers / "images" / name)
        key_rows.append({"image": name, "truth": truth, "source": image_set.source, "id": image_set.ids[i]})
    _write_csv(observers / "answer_sheet.csv", ["image", "answer"],
               [{"image": row["image"], "answer": ""} for row in key_rows])
    (observers / "instructions.txt").write_text(INSTRUCTIONS.format(n=len(key_rows)), encoding="utf-8")
    _write_csv(staging / "key.csv", ["image", "truth", "source", "id"], key_rows)
    study = {"seed": seed, "n_real": n, "n_synthetic": n, "reading": DEFAULT_READING}
    (staging / STUDY_FILE).write_text(json.dumps(study, indent=2) + "\n", encoding="utf-8")
    publish(staging, out_dir)
    return {"observers": str(out_dir / "observers"), "key": str(out_dir / "key.csv"),
            "n_real": n, "n_synthetic": n}


def _write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _read_rows(path: str | os.PathLike, columns: tuple[str, str]) -> list[tuple[int, str, str]]:
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            fields = {(f or "").strip().lower(): f for f in reader.fieldnames or []}
            missing = [c for c in columns if c not in fields]
            if missing:
                raise InputError(f"{path}: no column {missing[0]!r} (expected columns {', '.join(columns)})")
            return [(row_number, (row[fields[columns[0]]] or "").strip(), (row[fields[columns[1]]] or "").strip())
                    for row_number, row in enumerate(reader, start=2)]
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror})") from None


def _parse_truth(path, row: int, value: str, allow_empty: bool) -> bool | None:
    word = value.strip().lower()
    if word in SYNTHETIC_WORDS:
        return True
    if word in REAL_WORDS:
        return False
    if word == "" and allow_empty:
        return None
    raise InputError(f"{path}: row {row}: answer {value!r} is neither 'real' nor 'synthetic'")


def read_key(path: str | os.PathLike) -> dict[str, bool]:
    """``{image: is_synthetic}`` from a ``key.csv`` (columns image, truth)."""
    key = {image: _parse_truth(path, row, truth, False) for row, image, truth in _read_rows(path, ("image", "truth"))}
    if not key:
        raise InputError(f"{path}: the key lists no images")
    return key


def read_answers(path: str | os.PathLike, key: Mapping[str, bool] | None = None) -> dict[str, bool | None]:
    """``{image: says_synthetic or None}`` from an answer sheet (columns image, answer)."""
    answers = {}
    for row, image, answer in _read_rows(path, ("image", "answer")):
        if key is not None and image not in key:
            raise InputError(f"{path}: row {row}: image {image!r} is not in the key")
        answers[image] = _parse_truth(path, row, answer, True)
    return answers


def cohen_kappa(a, b) -> float:
    """Cohen's kappa of two raters' binary answers ``(N,)``: (p_o - p_e) / (1 - p_e); NaN when
    chance agreement is 1 (both raters gave one and the same answer throughout)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape or a.size == 0:
        raise InputError(f"kappa needs two equally long non-empty answer lists, got {a.size} and {b.size}")
    observed = float(np.mean(a == b))
    expected = float(a.mean() * b.mean() + (1 - a.mean()) * (1 - b.mean()))
    return float("nan") if expected == 1.0 else (observed - expected) / (1.0 - expected)


def score_vtt(key: Mapping[str, bool], answers: Mapping[str, Mapping[str, bool | None]]) -> dict:
    """Per-observer accuracy, sensitivity/specificity for "synthetic", binomial p against
    chance, and pairwise Cohen's kappa. ``answers``: ``{observer: {image: says_synthetic}}``."""
    observers = {}
    for name, sheet in answers.items():
        images = [im for im in key if sheet.get(im) is not None]
        if not images:
            raise InputError(f"observer {name}: no answered images")
        truth = np.array([key[im] for im in images])
        said = np.array([sheet[im] for im in images])
        counts = confusion_counts(truth, said)
        metrics = metrics_from_counts(**counts)
        correct = counts["tp"] + counts["tn"]
        observers[name] = {"n_answered": len(images), "n_missing": len(key) - len(images),
                           "accuracy": metrics["accuracy"], "sensitivity": metrics["sensitivity"],
                           "specificity": metrics["specificity"], **counts,
                           "p_vs_chance": float(stats.binomtest(correct, len(images), 0.5).pvalue)}
    kappas = []
    for (name_a, sheet_a), (name_b, sheet_b) in itertools.combinations(answers.items(), 2):
        common = [im for im in key if sheet_a.get(im) is not None and sheet_b.get(im) is not None]
        kappa = cohen_kappa([sheet_a[im] for im in common], [sheet_b[im] for im in common]) if common else float("nan")
        kappas.append({"observers": [name_a, name_b], "n_common": len(common), "kappa": kappa})
    return {"n_images": len(key), "n_synthetic": int(sum(key.values())), "observers": observers, "kappa": kappas,
            "fooled": fooled_ranking(key, answers)}


def fooled_ranking(key: Mapping[str, bool], answers: Mapping[str, Mapping[str, bool | None]]) -> list[dict]:
    """Synthetic images that at least one observer called real, most fooled first (ties by name):
    ``[{"image", "n_fooled", "n_answered"}]``."""
    ranking = []
    for image in sorted(im for im, synthetic in key.items() if synthetic):
        said = [sheet[image] for sheet in answers.values() if sheet.get(image) is not None]
        fooled = sum(1 for s in said if s is False)
        if fooled:
            ranking.append({"image": image, "n_fooled": fooled, "n_answered": len(said)})
    return sorted(ranking, key=lambda r: (-r["n_fooled"], r["image"]))


def contact_sheet_png(images: list, captions: list[str], ncols: int = 6, tile: int = 128) -> bytes:
    """One PNG tiling ``images`` (each a 2-D uint8 or uint16 array ``(H, W)``, shown grey, scaled
    to ``tile`` x ``tile``) with a caption line under each; an empty list gives a one-line note."""
    from PIL import Image, ImageDraw

    caption_h = 14
    n = max(1, len(images))
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    sheet = Image.new("L", (ncols * (tile + 4), nrows * (tile + caption_h + 4)), 255)
    draw = ImageDraw.Draw(sheet)
    if not images:
        draw.text((4, 4), "no synthetic image fooled anyone", fill=0)
    for i, (pixels, caption) in enumerate(zip(images, captions)):
        pixels = np.asarray(pixels)
        if pixels.dtype != np.uint8:
            pixels = (pixels.astype(np.float64) * 255.0 / max(1, int(pixels.max()))).astype(np.uint8)
        r, c = divmod(i, ncols)
        x, y = c * (tile + 4) + 2, r * (tile + caption_h + 4) + 2
        sheet.paste(Image.fromarray(pixels, mode="L").resize((tile, tile), Image.NEAREST), (x, y))
        draw.text((x, y + tile + 1), caption, fill=0)
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


def write_fooled_sheet(scores: dict, images_dir: str | os.PathLike, out_path: str | os.PathLike,
                       limit: int = 24) -> Path:
    """Write the contact sheet of the ``limit`` synthetic images that fooled most observers
    (read from ``images_dir``, the study's ``observers/images``) to ``out_path``."""
    from PIL import Image

    chosen = scores["fooled"][:limit]
    pixels = []
    for row in chosen:
        path = Path(images_dir) / row["image"]
        try:
            with Image.open(path) as image:
                pixels.append(np.asarray(image.convert("L") if image.mode not in ("L", "I;16") else image))
        except OSError as error:
            raise InputError(f"{path}: cannot read the image for the contact sheet ({error})") from None
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(contact_sheet_png(pixels, [f"{r['image']}: {r['n_fooled']}/{r['n_answered']}"
                                                    for r in chosen]))
    return out_path


def format_scores(scores: dict) -> str:
    """The scores as a small text table (what ``mammogan vtt score`` prints)."""
    def fmt(x):
        return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.3f}"

    lines = [f"{scores['n_images']} images ({scores['n_synthetic']} synthetic); positive = synthetic",
             f"{'observer':<20} {'answered':>8} {'accuracy':>9} {'sensitivity':>11} {'specificity':>11} "
             f"{'p(chance)':>10}"]
    for name, o in scores["observers"].items():
        lines.append(f"{name:<20} {o['n_answered']:>8} {fmt(o['accuracy']):>9} {fmt(o['sensitivity']):>11} "
                     f"{fmt(o['specificity']):>11} {o['p_vs_chance']:>10.3g}")
    lines.append("confusion (rows truth, columns answer):  synthetic->synthetic  synthetic->real  "
                 "real->synthetic  real->real")
    for name, o in scores["observers"].items():
        lines.append(f"  {name:<20} {o['tp']:>19} {o['fn']:>16} {o['fp']:>16} {o['tn']:>11}")
    for pair in scores["kappa"]:
        lines.append(f"Cohen's kappa {pair['observers'][0]} vs {pair['observers'][1]}: {fmt(pair['kappa'])} "
                     f"({pair['n_common']} images)")
    for row in scores.get("fooled", [])[:10]:
        lines.append(f"fooled {row['n_fooled']} of {row['n_answered']}: {row['image']}")
    return "\n".join(lines)
