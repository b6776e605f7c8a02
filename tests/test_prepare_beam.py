"""`mammogan prepare --runner beam` (Apache Beam's DirectRunner) on a mini-MIAS subset: the same
shard bytes and manifest as the local runner, and resume across runners."""
from __future__ import annotations

import subprocess
import sys

import pytest

from mammogan_tf.cli import main
from mammogan_tf.config import PrepareConfig
from mammogan_tf.data import prepare as prepare_module
from mammogan_tf.manifest import partial_dir, read_manifest

IMAGES = 12  # mdb001-mdb012: six women, six masses in five images, the rest normal
PER_SHARD = 3
EXECUTION = ("runner", "beam_options", "workers")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "mammogan_tf", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def subset(tmp_path_factory, mias_dir):
    """(images folder, Info.txt of the first IMAGES images, output root)."""
    root = tmp_path_factory.mktemp("mias-beam")
    lines = (mias_dir / "Info.txt").read_text().splitlines()
    rows = [line for line in lines if line.startswith("mdb") and int(line[3:6]) <= IMAGES]
    info = root / "Info.txt"
    info.write_text("\n".join(rows) + "\n")
    return mias_dir / "png", info, root


@pytest.fixture(scope="module")
def both(subset):
    """The subset prepared by the local runner (1 process) and by Beam's DirectRunner (2 processes)."""
    images, info, root = subset
    outs = {}
    for runner, workers in (("local", "1"), ("beam", "2")):
        outs[runner] = root / runner
        result = _cli("prepare", "--images", str(images), "--annotations", str(info), "--out", str(outs[runner]),
                      "--runner", runner, "--workers", workers, "--quiet",
                      "--set", f"prepare.images_per_shard={PER_SHARD}")
        assert result.returncode == 0, result.stderr
    return outs


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _comparable(manifest):
    manifest = {k: v for k, v in manifest.items() if k not in ("created", "root")}
    manifest["config"] = {k: v for k, v in manifest["config"].items() if k not in EXECUTION}
    return manifest


def test_beam_shards_are_byte_identical_to_the_local_runner(both):
    local, beam = both["local"], both["beam"]
    assert _files(local) == _files(beam)
    shards = [name for name in _files(local) if name.startswith("shards/")]
    assert len(shards) >= 4  # several units per runner, so the comparison covers more than one shard
    for name in _files(local):  # every shard and rejected.csv; the manifest is compared below
        if name != "manifest.json":
            assert (local / name).read_bytes() == (beam / name).read_bytes(), name
    local_manifest, beam_manifest = read_manifest(local), read_manifest(beam)
    assert beam_manifest["config"]["runner"] == "beam" and local_manifest["config"]["runner"] == "local"
    assert _comparable(beam_manifest) == _comparable(local_manifest)
    counts = local_manifest["counts"]
    assert sum(split.get("mass", 0) for split in counts.values()) >= 5
    assert local_manifest["summary"]["images_read"] == IMAGES


def test_beam_resumes_a_killed_local_run_without_redoing_its_units(subset, both, tmp_path, monkeypatch):
    images, info, _ = subset
    config = PrepareConfig(images=str(images), annotations=str(info), images_per_shard=PER_SHARD, workers=1)
    real_run = prepare_module._run_units

    def killed_after_two_units(staging, pending, *args):
        real_run(staging, dict(list(pending.items())[:2]), *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_module, "_run_units", killed_after_two_units)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        prepare_module.run_prepare(config, out, progress=False)
    monkeypatch.setattr(prepare_module, "_run_units", real_run)
    staging = partial_dir(out)
    done = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (staging / "shards").glob("*.tfrecord")}
    assert len(list((staging / "units").iterdir())) == 2 and done

    config.runner = "beam"
    resumed = prepare_module.run_prepare(config, out, progress=False)
    assert resumed["files"] == read_manifest(both["local"])["files"] and not staging.exists()
    assert not (out / "beam_units.pickle").exists()
    # the units the local run recorded were kept as they were (same file, not rewritten), the rest written
    kept = {name: ((out / "shards" / name).stat().st_ino, (out / "shards" / name).stat().st_mtime_ns)
            for name in done}
    assert kept == done and len(list((out / "shards").iterdir())) > len(done)


@pytest.mark.parametrize("flags, message", [
    (["--runner", "spark"], "--runner 'spark'"),
    (["--runner", "beam", "--beam-option", "not an option"], "'not an option': expected KEY=VALUE"),
    (["--beam-option", "runner=FlinkRunner"], "needs --runner beam"),
    (["--runner", "beam", "--beam-option", "runner=NoSuchRunner"], "Unexpected pipeline runner: NoSuchRunner"),
    (["--runner", "beam", "--beam-option", "direct_num_workers=two"], "--direct_num_workers: invalid int"),
])
def test_bad_runner_flags_exit_2_with_one_line(subset, tmp_path, capsys, flags, message):
    images, info, _ = subset
    code = main(["prepare", "--images", str(images), "--annotations", str(info), "--out", str(tmp_path / "o"),
                 "--quiet", *flags])
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.startswith("error: ") and message in error and len(error.splitlines()) == 1
    assert not (tmp_path / "o").exists()
