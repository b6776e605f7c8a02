"""The ``synthesize`` stage for a contextual run: ``--from`` real patches -> marked synthetic patches
[-> ``--reinsert`` full mammograms and their lesion table].

Output folder (built in ``<out>.partial``, renamed into place when complete)::

    manifest.json   stage "synthesize": inputs (run manifest, checkpoint, source manifest, full-image
                    table), settings, ``source_split``, counts, ``discarded`` (count and the
                    source patch ids whose post-processed lesion was discarded: no output for
                    them), sha256 of every file; for shards the keys of a prepare manifest, the
                    shards under the SOURCE split's name (``splits`` {split: [...]}), so data made
                    from test patients can never pass as training data
    shards/<split>-NNNNN.tfrecord | synthetic-<type>-NNNNNNN.png | .dcm    the post-processed patches
    reinserted/synthetic-NNNNNNN.png|.dcm, reinserted/lesions.csv          with --reinsert

Shard records keep the source's ``patient_id`` and ``origin``, the post-processed lesion's box
(``bbox``, patch pixels) and mask (soft mask >= 0.5), ``kind`` "contextual", ``synthetic`` 1 and
the provenance JSON (``contextual.contextual_provenance``).
"""
from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

from tqdm.auto import tqdm

from mammogan_tf.data.table import LESION_TYPES
from mammogan_tf.errors import ConfigError
from mammogan_tf.manifest import MANIFEST_NAME, build_manifest, input_record, partial_dir, publish, write_json_atomic
from mammogan_tf.synthesis.contextual import (Preview, batches, contextual_provenance, generate_contextual,
                                              open_sources, output_lesion_type, output_pathology, read_sources,
                                              source_lesion_type)
from mammogan_tf.synthesis.export import to_unit
from mammogan_tf.models.postprocess import mask_box

DEFAULT_SPLIT = "train"
"""Default ``--split`` of a prepare manifest: synthetic images usually augment a downstream
training set, and drawing their sources from the training patients leaves the validation and
test patients untouched."""


def run_contextual_synthesize(loaded, source_path: str | os.PathLike, out_dir: str | os.PathLike, *,
                              run_dir=None, model_dir=None, checkpoint: str = "best", split: str = DEFAULT_SPLIT, n: int | None = None,
                              seed: int = 0, fmt: str = "shards", batch_size: int = 16,
                              reinsert_from: str | os.PathLike | None = None, preview: str | os.PathLike | None = None,
                              progress: bool = True) -> dict:
    """Apply the contextual generator ``loaded`` (of the run ``run_dir`` or the export ``model_dir``)
    to the sources at ``source_path``; returns the manifest. ``preview``: a PNG path outside
    ``out_dir`` for the contact sheet of the first sources (``contextual.Preview``)."""
    from mammogan_tf.synthesis.synthesize import _FileOutput, _ShardOutput, generator_inputs, generator_settings

    model = loaded.model_config
    if preview is not None:
        _check_preview_path(preview, out_dir)
    sheet = Preview(preview)
    sources = open_sources(source_path, split)
    table = None
    if reinsert_from is not None:
        if sources.kind != "prepare":
            raise ConfigError("--reinsert needs --from a prepare output (PNG patches carry no origin)")
        from mammogan_tf.synthesis.full_images import FullImageWriter, full_image_table

        table, table_source = full_image_table(reinsert_from)
    out_split = sources.split or "train"
    staging = partial_dir(out_dir)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    output = _ShardOutput(staging, loaded, out_split) if fmt == "shards" else _FileOutput(staging, loaded, fmt)
    full = FullImageWriter(staging / "reinserted", table, model, fmt) if table is not None else None
    lesion_type, removal = output_lesion_type(model), model.mode == "remove"
    counts, discarded, reinserted = Counter(), [], []
    stream = read_sources(sources, source_lesion_type(model), model.image_size, n)
    with tqdm(unit="patch", desc="synthesize", disable=not progress) as bar:
        for batch in batches(stream, batch_size):
            outputs, results = generate_contextual(loaded.generator, batch, seed, removal)
            for source, output_channels, result in zip(batch, outputs, results):
                bar.update()
                sheet.add(source, output_channels, result)
                if not result.kept:
                    discarded.append(source.patch_id)
                    continue
                record = contextual_provenance(loaded, seed, source, lesion_type, result)
                box = mask_box(result.mask)
                output.write(source.index, to_unit(result.image), lesion_type, record, patient_id=source.patient_id,
                             kind="contextual", origin=source.origin, bbox=box, mask=result.mask >= 0.5,
                             pathology=output_pathology(model))
                counts[lesion_type] += 1
                if full is not None:
                    reinserted.append({"source_index": source.index,
                                       **full.write(source.index, source, result.image, result.mask, record)})
    seen = sum(counts.values()) + len(discarded)
    if seen == 0:
        raise ConfigError(f"--from {source_path}: no {source_lesion_type(model)} patches"
                          + (f" in split '{split}'" if sources.split else ""))
    files = output.finish() + ([f"reinserted/{f}" for f in full.finish()] if full is not None else [])
    settings = {**generator_settings(run_dir, model_dir, checkpoint), "from": str(Path(source_path).resolve()),
                "split": sources.split, "n": n, "seed": seed, "format": fmt, "batch_size": batch_size,
                "reinsert": str(Path(reinsert_from).resolve()) if reinsert_from is not None else None,
                "preview": str(Path(preview).resolve()) if preview is not None else None}
    inputs = generator_inputs(loaded, run_dir, model_dir)
    if sources.kind == "prepare":
        inputs.append(input_record(sources.path / MANIFEST_NAME))
    if table is not None:
        inputs.append(input_record(table_source))
    extra = {"generator_sha256": loaded.sha256, "checkpoint_step": loaded.step, "format": fmt, "synthetic": True,
             "model_family": model.family, "mode": model.mode, "source_split": sources.split,
             "source_kind": sources.kind, "sources": seen,
             "discarded": {"count": len(discarded), "source_patch_ids": discarded},
             "classes": list(LESION_TYPES), "patch_size": model.image_size}
    if full is not None:
        extra["reinserted"] = reinserted
    if fmt == "shards":
        extra["splits"] = {out_split: [f for f in files if f.startswith("shards/")]}
    manifest = build_manifest("synthesize", staging, config=settings, inputs=inputs,
                              counts={out_split: dict(counts)} if fmt == "shards" else dict(counts),
                              files=files, extra=extra)
    write_json_atomic(staging / MANIFEST_NAME, manifest)
    publish(staging, out_dir)
    sheet.write()
    return manifest


def _check_preview_path(preview: str | os.PathLike, out_dir: str | os.PathLike) -> None:
    """The sheet is a PNG outside the output folder: a reader of that folder's images (``evaluate
    --synthetic``, ``--from``) would otherwise take it, real source tiles and all, for a patch."""
    path, out = Path(preview).resolve(), Path(out_dir).resolve()
    if path.suffix.lower() != ".png":
        raise ConfigError(f"--preview {preview}: give a .png file name")
    if path == out or out in path.parents:
        raise ConfigError(f"--preview {preview}: lies inside --out {out_dir}; write the sheet outside the output "
                          "folder (its images are read back as patches)")
