"""Wu et al. Fig. 4: t-SNE of a classifier's last feature layer, coloured real normal / real
lesion / synthetic lesion (``PatchClassifier.features``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _images(manifest: str, split: str, limit: int, size: int):
    """Up to ``limit`` patches (N, S, S, 1) in [-1, 1] of ``split`` and their lesion types."""
    import tensorflow as tf

    from mammogan_tf.data.shards import make_dataset

    images, kinds = [], []
    for ex in make_dataset(manifest, split, None, shuffle=False, as_dict=True).take(limit * 8):
        image = ex["image"]
        if image.shape[0] != size:
            image = tf.image.resize(image, (size, size), method="bilinear")
        images.append(image.numpy())
        kinds.append(ex["lesion_type"].numpy().decode())
    return np.asarray(images, np.float32), np.asarray(kinds)


def plot_cell_tsne(cell: dict, synthetic: list[str], out_path: Path, per_group: int = 300,
                   lesion_types: list[str] | None = None) -> bool:
    """t-SNE of the cell's best classifier features on its test patches (normal, and lesions of
    ``lesion_types``, default every type) and the synthetic sets; False when under 5 points."""
    import keras

    from mammogan_tf.evaluation.plots import plot_tsne

    model = keras.saving.load_model(Path(cell["dir"]) / "best.keras")
    size = int(model.image_size)
    images, kinds = _images(cell["data"], "test", per_group, size)
    normal = images[kinds == "normal"][:per_group]
    lesion = images[np.isin(kinds, lesion_types) if lesion_types else kinds != "normal"][:per_group]
    groups = [("real normal", normal), ("real lesion", lesion)]
    for path in synthetic:
        syn, _ = _images(path, "train", per_group, size)
        groups.append(("synthetic lesion", syn[:per_group]))
    batch = np.concatenate([g for _, g in groups if len(g)])
    if batch.shape[0] < 5:
        return False
    features = np.concatenate([np.asarray(model.features(batch[i:i + 64])) for i in range(0, len(batch), 64)])
    names = [name for name, g in groups for _ in range(len(g))]
    plot_tsne(features, names, out_path, title="t-SNE of the baseline classifier's last feature layer")
    return True
