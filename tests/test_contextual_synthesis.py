"""`mammogan synthesize --run CONTEXTUAL_RUN --from PREPARED [--reinsert ...]`: a tiny contextual run
trained on the phantom (the recipe of test_contextual_train), applied to its prepared normal patches.

A few-step generator paints almost nothing (its lesion channel stays far below the 0.1
threshold, so every patch would be discarded); the tests that need kept lesions wrap the restored
generator so its lesion channel gets a noise-dependent bright disk on top of its own output."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import CONTEXTUAL_TINY, REPO_ROOT

TINY = [*CONTEXTUAL_TINY, "prepare.patches.contextual_normal_per_image=3", "model.progressive.enabled=false",
        "train.steps=1", "train.batch_size=2", "train.checkpoint_every=1", "train.sample_every=1"]


@pytest.fixture(scope="session")
def contextual_run(tmp_path_factory):
    """(run folder, prepared data folder, phantom folder): 1 step of contextual_mass.yaml at 64 px."""
    from mammogan_tf.cli import main

    root = tmp_path_factory.mktemp("contextual_synthesis")
    args = ["train", str(REPO_ROOT / "experiments" / "contextual_mass.yaml"), "--out", str(root / "run"), "--quiet",
            "--set", f"train.data.manifest={root / 'data'}", "--set", "train.data.prepare_phantom_if_missing=true"]
    for item in TINY:
        args += ["--set", item]
    assert main(args) == 0
    return root / "run", root / "data", root / "data-phantom"


class Boosted:
    """The restored generator with a bright disk (radius 12 px, centre moved by the first random
    scalar) added to its lesion channel: deterministic per (image, scalars), like the generator."""

    def __init__(self, generator):
        self.generator, self.noise_dim = generator, generator.noise_dim

    def __call__(self, images, noise, alpha=None, training=False):
        out = np.array(self.generator(images, noise=noise, alpha=alpha, training=training))
        size = out.shape[1]
        y, x = np.mgrid[:size, :size]
        for b in range(out.shape[0]):
            cx = size / 2 + 6 * float(noise[b, 0])
            disk = ((x - cx) ** 2 + (y - size / 2) ** 2 <= 12 ** 2).astype(np.float32)
            out[b, ..., 0] = np.clip(out[b, ..., 0] + 0.5 * disk, -1, 1)
        out[..., 2] = np.clip(out[..., 1] + out[..., 0], -1, 1)
        return out


class Blank(Boosted):
    """A generator whose lesion channel is all background (zero)."""

    def __call__(self, images, noise, alpha=None, training=False):
        images = np.asarray(images)
        return np.concatenate([np.zeros_like(images), images, images], axis=-1)


def _patched(monkeypatch, wrapper):
    import mammogan_tf.synthesis.synthesize as synthesize

    real = synthesize.load_generator

    def load(run_dir, checkpoint="best"):
        loaded = real(run_dir, checkpoint)
        loaded.generator = wrapper(loaded.generator)
        return loaded

    monkeypatch.setattr(synthesize, "load_generator", load)


def _synthesize(run, data, out, *extra) -> int:
    from mammogan_tf.cli import main

    return main(["synthesize", "--run", str(run), "--checkpoint", "last", "--from", str(data), "--out", str(out), "--quiet",
                 *extra])


def _records(folder: Path) -> list[dict]:
    from mammogan_tf.data.shards import make_dataset

    manifest = json.loads((folder / "manifest.json").read_text())
    dataset = make_dataset(folder, manifest["source_split"], batch_size=None, shuffle=False, as_dict=True)
    return [{k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in ex.items()} for ex in dataset]


def _sources(data: Path, split: str = "train") -> dict:
    from mammogan_tf.synthesis.contextual import open_sources, read_sources

    return {s.patch_id: s for s in read_sources(open_sources(data, split), "normal", 64)}


def test_generator_scalars_are_fixed_per_index(contextual_run):
    """Image i depends on (seed, i) only: the same in any batch, different for another index."""
    from mammogan_tf.synthesis.contextual import contextual_noise, generate_contextual
    from mammogan_tf.synthesis.sampling import load_generator

    run, data, _ = contextual_run
    generator = load_generator(run, "last").generator
    sources = list(_sources(data).values())[:3]
    alone = generate_contextual(generator, sources[2:3], seed=5, removal=False)[1][0]
    together = generate_contextual(generator, sources, seed=5, removal=False)[1][2]
    np.testing.assert_allclose(alone.image, together.image, atol=1e-5)
    np.testing.assert_array_equal(contextual_noise(generator.noise_dim, 5, 2), contextual_noise(generator.noise_dim, 5, 2))
    assert not np.allclose(contextual_noise(generator.noise_dim, 5, 2), contextual_noise(generator.noise_dim, 5, 3))
    import tensorflow as tf
    image = tf.constant(sources[0].pixels[None, ..., None])
    first, second = (np.asarray(generator(image, noise=contextual_noise(generator.noise_dim, 5, i)[None]))
                     for i in (0, 1))
    assert np.abs(first[..., 0] - second[..., 0]).max() > 0  # the scalars change the lesion


def test_synthesize_provenance_postprocessing_and_determinism(contextual_run, tmp_path, monkeypatch):
    from mammogan_tf.models.postprocess import postprocess
    from mammogan_tf.synthesis.sampling import load_generator

    run, data, _ = contextual_run
    _patched(monkeypatch, Boosted)
    generator = Boosted(load_generator(run, "last").generator)
    assert _synthesize(run, data, tmp_path / "a", "--seed", "3", "--batch-size", "4", "--n", "8") == 0
    assert _synthesize(run, data, tmp_path / "b", "--seed", "3", "--batch-size", "1", "--n", "3") == 0
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["source_split"] == "train" and manifest["mode"] == "add"
    assert manifest["discarded"]["count"] == 0 and manifest["sources"] == 8
    a, b = _records(tmp_path / "a"), _records(tmp_path / "b")
    assert len(a) == manifest["sources"] and len(b) == 3
    # the same source index gives the same pixels in any batching, to one level of the 16-bit
    # encoding (2 / 65535): oneDNN's CPU kernels may round differently at another batch size
    for first, second in zip(a[:3], b):
        np.testing.assert_allclose(first["image"], second["image"], rtol=0, atol=1.01 * 2 / 65535)
    sources = _sources(data)
    prepared = json.loads((data / "manifest.json").read_text())
    for record in a:
        provenance = json.loads(record["provenance"])
        source = sources[provenance["source_patch_id"]]
        assert record["synthetic"] == 1 and record["lesion_type"].decode() == "mass"
        assert provenance["generator_sha256"] == manifest["generator_sha256"] and provenance["seed"] == 3
        assert provenance["source_patient_id"] == source.patient_id == record["patient_id"].decode()
        assert prepared["patients"][source.patient_id] == "train" == provenance["source_split"]
        assert provenance["source_image_id"] == source.image_id
        assert tuple(provenance["source_origin"]) == source.origin == tuple(record["origin"])
        # post-processing: the output is postprocess(lesion channel, source) of source i's scalars,
        # equal to the source outside the dilated + smoothed lesion mask
        channels = generator(source.pixels[None, ..., None], noise=_noise(provenance["source_index"]))
        expected = postprocess(channels[0, ..., 0], source.pixels)
        np.testing.assert_allclose(record["image"][..., 0], expected.image, atol=2.0 / 65535)
        outside = expected.mask == 0
        assert 0.1 < (~outside).mean() < 0.8
        diff = record["image"][..., 0] - source.pixels
        assert np.abs(diff[outside]).max() <= 2.0 / 65535 + 1e-6  # 16-bit quantisation only
        assert (np.abs(diff) > 0.1).sum() > 50  # the disk was added inside (less where the sum clips at 1)
        x0, y0, x1, y1 = provenance["lesion_box"]
        assert tuple(record["bbox"]) == (x0, y0, x1, y1)


def _noise(index: int, seed: int = 3):
    from mammogan_tf.synthesis.contextual import contextual_noise

    return contextual_noise(2 * 4, seed, index)[None]  # 64 px with a 4 px centre: 4 levels, 8 scalars


def test_blank_lesion_channel_is_reported_as_discarded(contextual_run, tmp_path, monkeypatch, capsys):
    run, data, _ = contextual_run
    _patched(monkeypatch, Blank)
    assert _synthesize(run, data, tmp_path / "out", "--n", "3") == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["discarded"]["count"] == 3 == manifest["sources"]
    assert len(manifest["discarded"]["source_patch_ids"]) == 3
    assert "3 discarded" in capsys.readouterr().out
    assert manifest["splits"]["train"] == []


def test_reinsert_full_images_and_table_read_by_prepare(contextual_run, tmp_path, monkeypatch):
    from mammogan_tf.cli import main
    from mammogan_tf.data.images import read_image
    from mammogan_tf.data.sampling import crop, resize_patch
    from mammogan_tf.synthesis.full_images import undo_orientation
    from mammogan_tf.models.postprocess import mask_box
    from mammogan_tf.synthesis.export import read_dicom_provenance

    import cv2

    run, data, phantom = contextual_run
    _patched(monkeypatch, Boosted)
    out = tmp_path / "syn"
    assert _synthesize(run, data, out, "--n", "3", "--seed", "3", "--reinsert", str(data)) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["reinserted"]) == 3
    table = pd.read_csv(out / "reinserted" / "lesions.csv")
    records = {json.loads(r["provenance"])["source_index"]: r for r in _records(out)}
    sources = {s.index: s for s in _sources(data).values()}
    source_table = pd.read_csv(phantom / "lesions.csv")
    import pydicom
    for entry in manifest["reinserted"]:
        record, source = records[entry["source_index"]], sources[entry["source_index"]]
        path = out / "reinserted" / entry["file"]
        assert path.suffix == ".dcm"  # the phantom is DICOM
        provenance = read_dicom_provenance(pydicom.dcmread(path))
        assert provenance["source_patient_id"] == source.patient_id and provenance["synthetic"] is True
        written, _ = read_image(path)
        original, _ = read_image(phantom / source_table.loc[source_table.image_id == source.image_id, "path"].iloc[0])
        original = np.rint(original * 65535) / 65535
        changed = np.argwhere(np.abs(written - original) > 1e-6)
        x0, y0, x1, y1 = source.origin
        assert len(changed) > 50
        assert changed[:, 0].min() >= y0 and changed[:, 0].max() < y1  # only inside the recorded crop
        assert changed[:, 1].min() >= x0 and changed[:, 1].max() < x1
        # orientation recovered: the source patch turned back matches the crop of the full image
        flip, k = entry["orientation"]
        window = resize_patch(crop(original.astype(np.float32), x0, y0, x1 - x0), 64)
        back = undo_orientation((source.pixels + 1) / 2, flip, k)
        assert np.corrcoef(back.ravel(), window.ravel())[0, 1] > 0.9
        assert entry["orientation_score"] > 0.9 and entry["orientation_recorded"]
        # the table's box is the post-processed mask's box, turned back and moved to the origin
        mask = (cv2.imdecode(np.frombuffer(record["mask"], np.uint8), cv2.IMREAD_UNCHANGED) > 0).astype(np.float32)
        bx0, by0, bx1, by1 = mask_box(undo_orientation(mask, flip, k))
        row = table[(table.path == entry["file"]) & table.synthetic_lesion].iloc[0]
        assert (row.x0, row.y0, row.x1, row.y1) == tuple(entry["box"])
        scale = (x1 - x0) / 64  # prepare resized the crop to 64 px
        expected = (x0 + bx0 * scale, y0 + by0 * scale, x0 + bx1 * scale, y0 + by1 * scale)
        assert np.abs(np.subtract((row.x0, row.y0, row.x1, row.y1), expected)).max() <= 2
        assert row.lesion_type == "mass" and row.pathology == "malignant" and row.patient_id == source.patient_id
    assert table.synthetic.all()
    prepared = tmp_path / "prepared"
    assert main(["prepare", "--config", str(REPO_ROOT / "experiments" / "contextual_mass.yaml"), "--format", "table",
                 "--images", str(out / "reinserted"), "--annotations", str(out / "reinserted" / "lesions.csv"),
                 "--out", str(prepared), "--quiet", "--workers", "1", "--set", "prepare.manufacturers=[]",
                 "--set", "prepare.processed_only=false", "--set", "prepare.patches.size=64"]) in (0, 3)
    again = json.loads((prepared / "manifest.json").read_text())
    assert set(again["patients"]) == set(table.patient_id)
    assert sum(c.get("mass", 0) for c in again["counts"].values()) > 0


class Darkened(Boosted):
    """The disk subtracted instead of added: a "negative lesion" for removal."""

    def __call__(self, images, noise, alpha=None, training=False):
        out = super().__call__(images, noise, alpha, training)
        out[..., 0] = -np.clip(out[..., 0], 0, 1)
        out[..., 2] = np.clip(out[..., 1] + out[..., 0], -1, 1)
        return out


def _as_removal(monkeypatch):
    """Runs load as remove-mode generators painting the ``Darkened`` negative disk."""
    import mammogan_tf.synthesis.synthesize as synthesize

    real = synthesize.load_generator

    def load(run_dir, checkpoint="best"):
        loaded = real(run_dir, checkpoint)
        loaded.generator = Darkened(loaded.generator)
        loaded.model_config = loaded.model_config.model_copy(update={"mode": "remove"})
        return loaded

    monkeypatch.setattr(synthesize, "load_generator", load)


def test_removal_mode_and_png_sources(contextual_run, tmp_path, monkeypatch):
    """mode remove reads the run's lesion patches, keeps the negative lesion, writes ``normal``;
    a PNG folder works as --from, each output naming its source file."""
    from mammogan_tf.synthesis.export import read_png_provenance, write_png

    run, data, _ = contextual_run
    _as_removal(monkeypatch)
    assert _synthesize(run, data, tmp_path / "removed", "--n", "2", "--format", "png") == 0
    manifest = json.loads((tmp_path / "removed" / "manifest.json").read_text())
    assert manifest["mode"] == "remove" and manifest["counts"] == {"normal": 2}
    for name in manifest["files"]:
        provenance = read_png_provenance(tmp_path / "removed" / name)
        assert provenance["class"] == "normal" and provenance["postprocess"]["removal"] is True
        assert provenance["source_patch_id"].startswith("train-")  # a lesion patch of the train split
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, source in enumerate(list(_sources(data).values())[:2]):
        write_png(folder / f"{i}-{source.image_id}.png", (source.pixels + 1) / 2, {})
    assert _synthesize(run, folder, tmp_path / "from_png", "--format", "png") == 0
    manifest = json.loads((tmp_path / "from_png" / "manifest.json").read_text())
    assert manifest["source_kind"] == "png" and manifest["sources"] == 2 and manifest["source_split"] is None
    names = sorted(read_png_provenance(tmp_path / "from_png" / f)["source_patch_id"] for f in manifest["files"])
    assert names == sorted(p.name for p in folder.glob("*.png"))


def test_removal_reinserts_with_the_recorded_orientation(contextual_run, tmp_path, monkeypatch):
    """Remove mode on flipped/turned lesion patches: prepare recorded each patch's (flip, k), the
    reinsertion uses it (its rank correlation with the full image's crop is high), changes pixels
    only inside the crop, and drops from the table the findings whose centre the removal covers."""
    from mammogan_tf.data.images import read_image
    from mammogan_tf.synthesis.contextual import open_sources, read_sources

    run, data, phantom = contextual_run
    _as_removal(monkeypatch)
    out = tmp_path / "removed"
    assert _synthesize(run, data, out, "--n", "6", "--reinsert", str(data)) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    sources = {s.index: s for s in read_sources(open_sources(data, "train"), "mass", 64)}
    assert {s.orientation for s in sources.values()} - {None} == {s.orientation for s in sources.values()}
    assert len({s.orientation for s in sources.values()}) > 1  # prepare did turn them
    source_table, table = pd.read_csv(phantom / "lesions.csv"), pd.read_csv(out / "reinserted" / "lesions.csv")
    assert manifest["reinserted"]
    for entry in manifest["reinserted"]:
        source = sources[entry["source_index"]]
        assert entry["orientation_recorded"] and tuple(entry["orientation"]) == source.orientation
        assert entry["orientation_score"] > 0.9
        rows = source_table[source_table.image_id == source.image_id]
        written, _ = read_image(out / "reinserted" / entry["file"])
        original, _ = read_image(phantom / rows["path"].iloc[0])
        changed = np.argwhere(np.abs(written - np.rint(original * 65535) / 65535) > 1e-6)
        x0, y0, x1, y1 = source.origin
        assert len(changed) > 50 and changed[:, 0].min() >= y0 and changed[:, 0].max() < y1
        assert changed[:, 1].min() >= x0 and changed[:, 1].max() < x1
        bx0, by0, bx1, by1 = entry["box"]
        kept = table[table.path == entry["file"]]
        assert kept.synthetic.all() and (kept.patient_id == source.patient_id).all()
        for _, row in rows[rows.lesion_type != "normal"].iterrows():
            cx, cy = (row.x0 + row.x1) / 2, (row.y0 + row.y1) / 2
            covered = bx0 <= cx < bx1 and by0 <= cy < by1
            present = ((kept.x0 == row.x0) & (kept.y0 == row.y0)).any()
            assert present != covered


def test_export_serves_the_raw_channels_and_synthesize_model_equals_run(contextual_run, tmp_path, monkeypatch):
    """`mammogan export` of a contextual run: the SavedModel's (context, noise) -> (lesion, image)
    equal the restored generator; `synthesize --model EXPORT --from` writes the same pixels and
    provenance as `synthesize --run RUN --from`."""
    import tensorflow as tf

    import mammogan_tf.synthesis.model_export as model_export
    from mammogan_tf.cli import main
    from mammogan_tf.synthesis.contextual import contextual_noise
    from mammogan_tf.synthesis.export import read_png_provenance
    from mammogan_tf.synthesis.sampling import load_generator
    from conftest import png_pixels

    run, data, _ = contextual_run
    export = tmp_path / "export"
    assert main(["export", "--run", str(run), "--checkpoint", "last", "--out", str(export)]) == 0
    loaded = load_generator(run, "last")
    sources = list(_sources(data).values())[:3]
    context = np.stack([(s.pixels + 1) / 2 for s in sources])[..., None].astype(np.float32)
    noise = np.stack([contextual_noise(loaded.generator.noise_dim, 0, i) for i in range(3)])
    expected = np.asarray(loaded.generator(context * 2 - 1, noise=noise, training=False))
    serving = tf.saved_model.load(str(export / "saved_model")).signatures["serving_default"]
    served = serving(context=tf.constant(context), noise=tf.constant(noise))
    np.testing.assert_allclose(served["lesion"].numpy()[..., 0], expected[..., 0], atol=1e-5)
    np.testing.assert_allclose(served["image"].numpy()[..., 0], np.clip((expected[..., 2] + 1) / 2, 0, 1), atol=1e-5)
    card = json.loads((export / "model_card.json").read_text())
    assert "--from" in card["execution"]["generate_method"]["command"]
    assert set(card["execution"]["generate_method"]["signature"]["inputs"]) == {"context", "noise"}

    _patched(monkeypatch, Boosted)
    real_export = model_export.load_export

    def load_export(export_dir):
        loaded = real_export(export_dir)
        loaded.generator = Boosted(loaded.generator)
        return loaded

    monkeypatch.setattr(model_export, "load_export", load_export)
    common = ["--from", str(data), "--n", "3", "--format", "png", "--seed", "2", "--quiet"]
    assert main(["synthesize", "--run", str(run), "--checkpoint", "last", "--out", str(tmp_path / "r"), *common]) == 0
    assert main(["synthesize", "--model", str(export), "--out", str(tmp_path / "m"), *common]) == 0
    names = sorted(p.name for p in (tmp_path / "r").glob("*.png"))
    assert len(names) == 3 and names == sorted(p.name for p in (tmp_path / "m").glob("*.png"))
    for name in names:
        np.testing.assert_array_equal(png_pixels(tmp_path / "r" / name), png_pixels(tmp_path / "m" / name))
        assert read_png_provenance(tmp_path / "r" / name) == read_png_provenance(tmp_path / "m" / name)
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["config"]["model"] == str(export.resolve())
    assert manifest["inputs"][0]["path"] == str((export / "manifest.json").resolve())


def test_preview_sheet_shows_source_lesion_combined_and_written(contextual_run, tmp_path, monkeypatch, capsys):
    """--preview: one row of four 128 px tiles per source (source | lesion | input + lesion |
    written), refused inside --out and for a non-.png name."""
    from PIL import Image

    from mammogan_tf.synthesis.sampling import load_generator

    run, data, _ = contextual_run
    _patched(monkeypatch, Boosted)
    sheet_path = tmp_path / "sheets" / "preview.png"
    assert _synthesize(run, data, tmp_path / "out", "--seed", "3", "--n", "3", "--preview", str(sheet_path)) == 0
    assert "contact sheet" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["config"]["preview"] == str(sheet_path.resolve())
    assert not list((tmp_path / "out").rglob("*.png")) and not list(sheet_path.parent.glob("*.partial"))
    sheet = np.asarray(Image.open(sheet_path))
    tile, caption, cells = 128, 14, 4  # contact_sheet_png: 2 px margin, caption line under each tile
    assert sheet.shape == (3 * (tile + caption + 4), cells * (tile + 4))
    generator = Boosted(load_generator(run, "last").generator)
    sources = list(_sources(data).values())[:3]
    for row, source in enumerate(sources):
        channels = generator(source.pixels[None, ..., None], noise=_noise(source.index))[0]
        written = _records(tmp_path / "out")[row]["image"][..., 0]
        for col, plane in enumerate((source.pixels, channels[..., 0], channels[..., 2], written)):
            y, x = row * (tile + caption + 4) + 2, col * (tile + 4) + 2
            shown = sheet[y:y + tile:2, x:x + tile:2].astype(np.float32)  # 64 px patch shown 2x (nearest)
            np.testing.assert_allclose(shown, np.clip((plane + 1) / 2, 0, 1) * 255, atol=1.01)
    for bad in (tmp_path / "out2" / "preview.png", tmp_path / "preview.jpg"):
        assert _synthesize(run, data, tmp_path / "out2", "--n", "1", "--preview", str(bad)) == 2
        assert "--preview" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()


def test_a_run_whose_lesions_are_all_discarded_scores_no_metric_and_has_no_best(contextual_run, tmp_path, capsys):
    """The in-training metric scores what synthesis would write: a 1-step generator paints
    nothing (its lesion channel is far below the 0.1 threshold), so no step is scored, no
    checkpoint becomes best/, and `synthesize --checkpoint best` says why."""
    from mammogan_tf.cli import main
    from mammogan_tf.training.run_log import read_metrics

    run, data, _ = contextual_run
    out = tmp_path / "run"
    args = ["train", str(REPO_ROOT / "experiments" / "contextual_mass.yaml"), "--out", str(out), "--quiet",
            "--set", f"train.data.manifest={data}"]
    for item in [*TINY, "train.metric.name=fid", "train.metric.backbone=random", "train.metric.every=1",
                 "train.metric.n_samples=4", "train.metric.batch_size=4"]:
        args += ["--set", item]
    assert main(args) == 0
    rows = read_metrics(out / "metrics.jsonl", "metric")
    assert rows == [{"step": 1, "kind": "metric", "fid_images": 0.0}]
    assert not list((out / "best").glob("*.index"))
    capsys.readouterr()
    assert main(["synthesize", "--run", str(out), "--from", str(data), "--out", str(tmp_path / "s"), "--quiet"]) == 2
    assert "lesions were all discarded" in capsys.readouterr().err
