"""``mammogan export``: a trained generator as files another group can use without the run.

Output folder (built in ``<out>.partial`` and renamed into place when complete)::

    generator.keras     the sampling generator (EMA when the run kept one) as a Keras file;
                        ``mammogan synthesize --model DIR`` reads it (needs mammogan_tf installed)
    saved_model/        a TensorFlow SavedModel that needs no mammogan_tf code, signature
                        ``serving_default`` (see SERVING below)
    generator.onnx      the same signature through tf2onnx (``--onnx``; opset ``ONNX_OPSET``)
    model_card.json     the model card (``model_card.py``), and MODEL_CARD.md rendered from it
    manifest.json       stage "export": the run manifest and checkpoint (path + sha256) as inputs,
                        the generator's checkpoint name, step and sha256 (what every synthetic
                        image's provenance names), the model config, the signature, every file's sha256

SERVING (``serving_default``; inputs and outputs by name):

* ``latent``: ``(B, latent_dim)`` float32, drawn from the run's ``latent_distribution``
  (``normal``: N(0, 1); ``uniform``: U[-1, 1]); the card states both;
* ``class_label``: ``(B,)`` int32 in ``[0, num_classes)`` (ACGAN only; the card lists the
  class names in index order);
* -> ``image``: ``(B, S, S, channels)`` float32 in [0, 1] (the generator's tanh output mapped
  by ``(x + 1) / 2`` and clipped, exactly as ``mammogan synthesize`` writes pixels).

Contextual generators (Wu et al.) take a real patch instead of a latent:

* ``context``: ``(B, S, S, 1)`` float32 in [0, 1], the real patch (normal tissue to add a lesion
  to, or a lesion patch to remove it from), prepared like the run's training patches;
* ``noise``: ``(B, noise_dim)`` float32 in U[-1, 1], the per-block random scalars;
* -> ``lesion``: ``(B, S, S, 1)`` float32 in [-1, 1], the raw lesion channel, and ``image``:
  ``(B, S, S, 1)`` in [0, 1], ``context`` plus the raw lesion, clipped. ``mammogan synthesize``
  writes the post-processed patch instead (``models.postprocess.postprocess(lesion, context)``:
  threshold, largest component, dilation, smooth edge); the card says so.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from mammogan_tf.errors import ConfigError, InputError, MissingDependencyError
from mammogan_tf.manifest import (MANIFEST_NAME, build_manifest, input_record, partial_dir, publish, read_manifest,
                                  sha256_file, write_json_atomic)

GENERATOR_FILE = "generator.keras"
SAVED_MODEL_DIR = "saved_model"
ONNX_FILE = "generator.onnx"
ONNX_OPSET = 17
SIGNATURE = "serving_default"
SIGNATURE_INPUTS = {"dcgan": ("latent",), "acgan": ("latent", "class_label"), "contextual": ("context", "noise")}
"""Inputs of the serving signature per family, in order (the generator's call takes them so)."""


def signature_description(model_config) -> dict:
    """The serving signature of a generator of ``model_config`` as JSON (names, shapes, dtypes)."""
    family = model_config.family
    if family not in SIGNATURE_INPUTS:
        raise ConfigError(f"model.family {family}: export supports {', '.join(SIGNATURE_INPUTS)} so far")
    size, channels = model_config.image_size, getattr(model_config, "channels", 1)
    if family == "contextual":
        from mammogan_tf.models.contextual_config import num_levels

        noise_dim = 2 * num_levels(size, model_config.center_resolution)
        plane = {"shape": [None, size, size, 1], "dtype": "float32"}
        return {"name": SIGNATURE,
                "inputs": {"context": {**plane, "range": [0.0, 1.0]},
                           "noise": {"shape": [None, noise_dim], "dtype": "float32", "distribution": "uniform"}},
                "outputs": {"image": {**plane, "range": [0.0, 1.0], "postprocessed": False},
                            "lesion": {**plane, "range": [-1.0, 1.0]}}}
    inputs = {"latent": {"shape": [None, model_config.latent_dim], "dtype": "float32",
                         "distribution": model_config.latent_distribution}}
    if "class_label" in SIGNATURE_INPUTS[family]:
        inputs["class_label"] = {"shape": [None], "dtype": "int32", "range": [0, model_config.num_classes - 1]}
    return {"name": SIGNATURE, "inputs": inputs,
            "outputs": {"image": {"shape": [None, size, size, channels], "dtype": "float32", "range": [0.0, 1.0]}}}


def serving_module(generator, model_config):
    """A ``tf.Module`` tracking ``generator`` with ``serve``: the SERVING signature as a tf.function."""
    import tensorflow as tf

    if model_config.family == "contextual":
        return _contextual_serving_module(generator, model_config)
    names = SIGNATURE_INPUTS[model_config.family]
    specs = [tf.TensorSpec([None, model_config.latent_dim], tf.float32, name="latent")]
    if "class_label" in names:
        specs.append(tf.TensorSpec([None], tf.int32, name="class_label"))

    def image(inputs):
        return {"image": tf.clip_by_value((generator(inputs, training=False) + 1.0) / 2.0, 0.0, 1.0)}

    module = tf.Module()
    module.generator = generator
    if len(specs) == 1:
        module.serve = tf.function(lambda latent: image(latent), input_signature=specs, autograph=False)
    else:
        module.serve = tf.function(lambda latent, class_label: image((latent, class_label)), input_signature=specs,
                                   autograph=False)
    return module


def _contextual_serving_module(generator, model_config):
    """``serving_module`` of a contextual generator: (context, noise) -> (image, lesion), see SERVING."""
    import tensorflow as tf

    size, noise_dim = model_config.image_size, generator.noise_dim
    specs = [tf.TensorSpec([None, size, size, 1], tf.float32, name="context"),
             tf.TensorSpec([None, noise_dim], tf.float32, name="noise")]

    def serve(context, noise):
        out = generator(context * 2.0 - 1.0, noise=noise, alpha=None, training=False)
        return {"image": tf.clip_by_value((out[..., 2:3] + 1.0) / 2.0, 0.0, 1.0), "lesion": out[..., 0:1]}

    module = tf.Module()
    module.generator = generator
    # the generator's own scalar sampler (unused: noise is an input) is captured by its graph; track it
    module.seed_state = generator.seed_generator.state.value
    module.serve = tf.function(serve, input_signature=specs, autograph=False)
    return module


def _write_onnx(module, path: Path) -> None:
    try:
        import tf2onnx
    except ImportError:
        raise MissingDependencyError("--onnx needs tf2onnx (pip install 'mammogan_tf[onnx]')") from None
    tf2onnx.convert.from_function(module.serve, input_signature=module.serve.input_signature, opset=ONNX_OPSET,
                                  output_path=str(path))


def export_model(run_dir: str | os.PathLike, out_dir: str | os.PathLike, *, checkpoint: str = "best",
                 onnx: bool = False, evaluation: str | os.PathLike | None = None,
                 vtt: str | os.PathLike | None = None) -> dict:
    """Export ``run_dir``'s generator at ``checkpoint`` (best, last or a path) to ``out_dir`` with
    its model card; ``evaluation``: an ``evaluate`` output folder, ``vtt``: a ``vtt score --out``
    JSON, both optional (the card says "not measured" without them). Returns the manifest."""
    import tensorflow as tf

    from mammogan_tf.synthesis.model_card import build_model_card, card_inputs, render_model_card
    from mammogan_tf.synthesis.sampling import load_generator

    run_dir = Path(run_dir)
    loaded = load_generator(run_dir, checkpoint)
    signature = signature_description(loaded.model_config)
    staging = partial_dir(out_dir)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    loaded.generator.save(staging / GENERATOR_FILE)
    module = serving_module(loaded.generator, loaded.model_config)
    tf.saved_model.save(module, str(staging / SAVED_MODEL_DIR), signatures={SIGNATURE: module.serve})
    if onnx:
        _write_onnx(module, staging / ONNX_FILE)
    exported = {"files": {"keras": GENERATOR_FILE, "saved_model": f"{SAVED_MODEL_DIR}/",
                          "onnx": ONNX_FILE if onnx else None},
                "signature": signature, "checkpoint": checkpoint}
    card = build_model_card(loaded, exported, evaluation=evaluation, vtt=vtt)
    write_json_atomic(staging / "model_card.json", card)
    (staging / "MODEL_CARD.md").write_text(render_model_card(card), encoding="utf-8")
    files = [p.relative_to(staging).as_posix() for p in sorted(staging.rglob("*")) if p.is_file()]
    inputs = [input_record(run_dir / MANIFEST_NAME),
              {**input_record(loaded.checkpoint + ".index"), "generator_sha256": loaded.sha256},
              *card_inputs(evaluation, vtt)]
    extra = {"run": str(run_dir.resolve()), "checkpoint": str(loaded.checkpoint), "checkpoint_step": loaded.step,
             "generator_sha256": loaded.sha256, "sampler": loaded.sampler, "class_names": loaded.class_names,
             "model": loaded.model_config.model_dump(mode="json"), "signature": signature,
             "generator_file": GENERATOR_FILE}
    manifest = build_manifest("export", staging, config={"run": str(run_dir), "checkpoint": checkpoint, "onnx": onnx,
                                                          "evaluation": str(evaluation) if evaluation else None,
                                                          "vtt": str(vtt) if vtt else None},
                              inputs=inputs, counts={}, files=files, extra=extra)
    write_json_atomic(staging / MANIFEST_NAME, manifest)
    publish(staging, out_dir)
    return manifest


def load_export(export_dir: str | os.PathLike):
    """A ``sampling.LoadedGenerator`` from an export folder alone (its ``generator.keras``): the
    provenance it gives synthetic images (run, checkpoint name, step, generator sha256, sampler)
    is the run's, as recorded at export. The Keras file must match the manifest's sha256."""
    import keras

    import mammogan_tf.models.registry  # noqa: F401 - imports (registers) every generator class
    from mammogan_tf.models.config import model_config_class
    from mammogan_tf.synthesis.sampling import LoadedGenerator

    export_dir = Path(export_dir)
    manifest = read_manifest(export_dir, stage="export")
    path = export_dir / manifest["generator_file"]
    if not path.is_file() or sha256_file(path) != manifest["files"].get(manifest["generator_file"]):
        raise InputError(f"{path}: missing or changed since export (sha256 differs from {export_dir / MANIFEST_NAME})")
    generator = keras.saving.load_model(path, compile=False)
    return LoadedGenerator(generator=generator, run_dir=Path(manifest["run"]), checkpoint=manifest["checkpoint"],
                           sha256=manifest["generator_sha256"], step=manifest["checkpoint_step"],
                           sampler=manifest["sampler"], class_names=list(manifest["class_names"]),
                           model_config=model_config_class(manifest["model"].get("family", "dcgan")).model_validate(manifest["model"]), run_manifest=manifest)


def export_inputs(export_dir: str | os.PathLike, loaded) -> list[dict]:
    """Input records of a ``synthesize --model`` manifest: the export manifest and its Keras file."""
    export_dir = Path(export_dir)
    return [input_record(export_dir / MANIFEST_NAME),
            {**input_record(export_dir / GENERATOR_FILE), "generator_sha256": loaded.sha256}]
