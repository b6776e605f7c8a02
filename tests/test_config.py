"""Experiment config: strict keys with their path and file, overrides, the validate command."""
import pytest

from mammogan_tf.cli import main
from mammogan_tf.config import ExperimentConfig, load_config
from mammogan_tf.errors import ConfigError


def test_defaults_and_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: demo\nprepare:\n  patches:\n    size: 64\n")
    config = load_config(path, ["prepare.seed=7", "prepare.split.fractions=[0.5, 0.25, 0.25]",
                                "prepare.normalization.method=clahe"])
    assert isinstance(config, ExperimentConfig)
    assert config.name == "demo" and config.prepare.patches.size == 64
    assert config.prepare.seed == 7 and config.prepare.split.fractions == (0.5, 0.25, 0.25)
    assert config.prepare.normalization.method == "clahe"
    assert config.prepare.mask.method == "nonzero"


@pytest.mark.parametrize("text, overrides, message", [
    ("prepare:\n  patches:\n    sise: 64\n", [], r"exp.yaml: prepare.patches.sise: unknown key"),
    ("prepare:\n  seed: many\n", [], r"exp.yaml: prepare.seed: Input should be a valid integer"),
    ("prepare:\n  split:\n    fractions: [0.5, 0.5, 0.5]\n", [], r"prepare.split.fractions: .*sum to 1"),
    ("prepare: [1, 2\n", [], r"exp.yaml: line \d+ invalid YAML"),
    ("", ["prepare.mask.method=magic"], r"prepare.mask.method: Input should be 'nonzero' or 'otsu'"),
    ("", ["prepare.seed"], r"--set 'prepare.seed': expected key.path=value"),
])
def test_errors_name_file_and_key(tmp_path, text, overrides, message):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path, overrides)


def test_validate_command_prints_resolved_config(tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text("prepare:\n  seed: 3\n")
    assert main(["validate", str(path), "--set", "prepare.patches.output_size=32"]) == 0
    out = capsys.readouterr().out
    assert "seed: 3" in out and "output_size: 32" in out and "method: equalize" in out
    assert main(["validate", str(path), "--set", "prepare.bogus=1"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {path}: prepare.bogus: unknown key"
    assert main(["validate", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read config" in capsys.readouterr().err
