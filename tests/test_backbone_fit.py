"""`mammogan features fit` lives in the training layer and shows one progress bar, not a line per epoch."""
from __future__ import annotations

import json


def test_fit_backbone_writes_the_model_and_shows_one_progress_bar(tiny_shards, tmp_path, capsys):
    from mammogan_tf.training.backbone_fit import fit_backbone

    manifest = tiny_shards(tmp_path / "data")
    out = tmp_path / "cnn.keras"
    result = fit_backbone(manifest, out, epochs=2, min_steps=4, batch_size=8, task="classes", size=16,
                          filters=(4,), progress=True)
    captured = capsys.readouterr()
    assert "Epoch" not in captured.out and "Epoch" not in captured.err
    assert "features fit" in captured.err and "6/6" in captured.err  # one bar over 2 epochs x 3 steps
    assert out.is_file() and json.loads(out.with_suffix(".json").read_text())["epochs"] == result["epochs"] == 2
