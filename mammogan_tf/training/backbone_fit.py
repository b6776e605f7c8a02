"""``mammogan features fit``: the first classifier loop, a small domain CNN trained on prepared
shards to serve as a ``classifier:`` feature backbone for FID/KID/PR (e.g. the quickstart's
metric backbone). Keras ``fit`` with one progress bar over all steps (rate, time left, loss).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mammogan_tf.errors import InputError
from mammogan_tf.evaluation.features import FEATURE_LAYER, build_feature_cnn

FIT_TASKS = ("classes", "lesion")
DEFAULT_FIT_SIZE = 64


def progress_callback(bar):
    """A Keras callback that advances ``bar`` per batch and shows the running loss and accuracy."""
    import keras

    class ProgressBar(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            bar.update(1)
            logs = logs or {}
            bar.set_postfix({k: f"{float(v):.3f}" for k, v in logs.items() if k in ("loss", "accuracy")},
                            refresh=False)

    return ProgressBar()


def fit_backbone(manifest: str | os.PathLike, out_path: str | os.PathLike, *, epochs: int = 15,
                 min_steps: int = 300, batch_size: int = 64, steps_per_epoch: int | None = None, learning_rate: float = 1e-3,
                 filters=(16, 32, 64), size: int | None = None, task: str = "lesion", seed: int = 0,
                 progress: bool = True) -> dict:
    """Train :func:`build_feature_cnn` to tell the classes of a prepare manifest apart (lesion
    types versus normal tissue, class-weighted) on its train split, and save it as a
    ``classifier:`` backbone.

    task: "lesion" (any lesion vs normal tissue) or "classes" (normal and each lesion type; on
    small data sets such as mini-MIAS the binary task learns the more useful feature space).
    Writes ``out_path`` (``.keras``) and beside it ``<stem>.json``: validation accuracy and
    balanced accuracy (mean per-class recall), class counts, the training settings and the
    manifest's sha256. ``size``: train at this input side (default: the manifest's patch size,
    at most ``DEFAULT_FIT_SIZE`` = 64 so that training takes minutes on a CPU).
    ``min_steps``: small data sets get more epochs, so that training runs at least this many
    steps (batch-norm statistics and weights need them). Returns that JSON as a dict.
    """
    import keras
    import tensorflow as tf

    from mammogan_tf.data import make_dataset
    from mammogan_tf.manifest import MANIFEST_NAME, input_record, read_manifest, write_json_atomic

    out_path = Path(out_path)
    if out_path.suffix != ".keras":
        raise InputError(f"{out_path}: the backbone file must end in .keras")
    info = read_manifest(manifest, stage="prepare")
    if task not in FIT_TASKS:
        raise InputError(f"task must be one of {', '.join(FIT_TASKS)}, got {task!r}")
    names = list(info["classes"])
    classes = names if task == "classes" else ["normal", "lesion"]
    counts = {c: 0 for c in classes}
    for name, n in info["counts"].get("train", {}).items():
        key = name if task == "classes" else ("normal" if name == "normal" else "lesion")
        counts[key] = counts.get(key, 0) + n
    present = {c: n for c, n in counts.items() if n}
    if len(present) < 2:
        raise InputError(f"{manifest}: the train split needs at least two classes, has {sorted(present)}")
    size = int(size or min(info["patch_size"], DEFAULT_FIT_SIZE))
    total = sum(present.values())
    class_weight = {i: (total / (len(present) * present[c]) if c in present else 1.0)
                    for i, c in enumerate(classes)}
    steps_per_epoch = int(steps_per_epoch or -(-total // batch_size))
    epochs = max(epochs, -(-min_steps // steps_per_epoch))
    normal_index = names.index("normal")

    def prepared(images, labels):
        if size != info["patch_size"]:
            images = tf.image.resize(images, (size, size), method="bicubic", antialias=True)
        if task == "lesion":
            labels = tf.cast(labels != normal_index, tf.int32)
        return tf.ensure_shape(images, (None, size, size, 1)), labels

    keras.utils.set_random_seed(seed)
    train = make_dataset(manifest, "train", batch_size, shuffle=True, seed=seed, repeat=True).map(prepared)
    has_val = bool(info["splits"].get("val"))
    val = make_dataset(manifest, "val", batch_size, shuffle=False).map(prepared) if has_val else None
    model = build_feature_cnn(size, len(classes), tuple(filters), seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    with tqdm(total=epochs * steps_per_epoch, unit="step", desc="features fit", disable=not progress,
              dynamic_ncols=True) as bar:
        model.fit(train, epochs=epochs, steps_per_epoch=steps_per_epoch, class_weight=class_weight,
                  shuffle=False, verbose=0, callbacks=[progress_callback(bar)])

    result = {"task": task, "classes": classes, "train_counts": counts, "input_size": size, "epochs": epochs,
              "steps_per_epoch": steps_per_epoch, "batch_size": batch_size, "learning_rate": learning_rate,
              "filters": list(filters), "seed": seed, "feature_layer": FEATURE_LAYER,
              "feature_dim": int(filters[-1]), "manifest": input_record(Path(info["root"]) / MANIFEST_NAME),
              "val_count": 0, "val_accuracy": None, "val_balanced_accuracy": None}
    if val is not None:
        labels, predicted = [], []
        for images, y in val:
            labels.append(y.numpy())
            predicted.append(np.argmax(model(images, training=False).numpy(), axis=1))
        labels, predicted = np.concatenate(labels), np.concatenate(predicted)
        recalls = [float(np.mean(predicted[labels == c] == c)) for c in np.unique(labels)]
        result.update(val_count=int(labels.size), val_accuracy=float(np.mean(labels == predicted)),
                      val_balanced_accuracy=float(np.mean(recalls)))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.stem + ".partial.keras")
    model.save(tmp)
    os.replace(tmp, out_path)
    write_json_atomic(out_path.with_suffix(".json"), result)
    return result
