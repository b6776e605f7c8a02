"""The reader study server as a child process on a free 127.0.0.1 port: ``kill -9`` between and
during answers loses no acknowledged answer; 20 concurrent readers for a few seconds, every
acknowledged answer in the database exactly once (``benchmarks/vtt_load.py`` runs it for 30 s)."""
from __future__ import annotations

import threading
import time
from collections import Counter

import numpy as np
import pytest

from mammogan_tf.evaluation.vtt_web.loadtest import (ReaderRun, demo_study, free_port, read_as, simulate_readers,
                                                     start_server)
from mammogan_tf.evaluation.vtt_web.server import invite
from mammogan_tf.evaluation.vtt_web.store import Store


def stored(study_dir) -> Counter:
    """``Counter((reader, opaque id, answer))`` of the rows in the database."""
    store = Store(study_dir / "vtt.sqlite3", [])
    rows = Counter((row["name"], store.opaque[row["image"]], row["answer"]) for row in store.answers())
    store.close()
    return rows


def acknowledged(runs: dict, names: dict) -> Counter:
    return Counter((names[url], image, answer) for url, run in runs.items() for image, answer in run.acked)


@pytest.mark.slow
def test_kill9_between_and_during_answers_loses_nothing_acknowledged(tmp_path):
    study = demo_study(tmp_path / "study", n=15, size=16)
    (name, _, path), = [link for link in invite(study, "dana", "") if link[1] == "reader"]
    server = start_server(study, port := free_port())
    try:
        first = read_as(f"http://127.0.0.1:{port}{path}", seconds=30, max_answers=4)
        assert len(first.acked) == 4 and not first.failures
        server.kill()  # SIGKILL between answers
        server.wait(10)
        assert stored(study) == Counter((name, i, a) for i, a in first.acked)
        server = start_server(study, port := free_port())
        second = ReaderRun()
        reader = threading.Thread(target=lambda: second.__dict__.update(
            read_as(f"http://127.0.0.1:{port}{path}", seconds=30, max_answers=1000, seed=1).__dict__))
        reader.start()
        deadline = time.monotonic() + 20
        while len(stored(study)) < 8 and time.monotonic() < deadline:
            time.sleep(0.02)
        server.kill()  # SIGKILL while the reader is sending answers
        server.wait(10)
        reader.join(40)
        assert not reader.is_alive()
        rows = stored(study)
        acked = Counter((name, i, a) for i, a in first.acked + second.acked)
        assert not acked - rows  # every acknowledged answer survived
        assert max(rows.values()) == 1 and len(rows) - len(acked) <= 1  # at most the unacknowledged one in flight
        server = start_server(study, port := free_port())
        third = read_as(f"http://127.0.0.1:{port}{path}", seconds=30, max_answers=1000, seed=2)
        rows = stored(study)
        assert len(rows) == 30 and max(rows.values()) == 1  # resumed and finished, nothing twice
        assert not Counter((name, i, a) for i, a in first.acked + second.acked + third.acked) - rows
        assert not {i for i, _ in third.acked} & {i for i, _ in first.acked + second.acked}
    finally:
        server.kill()
        server.wait(10)


def test_twenty_concurrent_readers_every_acknowledged_answer_once(tmp_path):
    study = demo_study(tmp_path / "study", n=100, size=16)
    links = invite(study, "20", "")
    port = free_port()
    server = start_server(study, port)
    try:
        names = {f"http://127.0.0.1:{port}{path}": name for name, role, path in links if role == "reader"}
        assert len(names) == 20
        started = time.monotonic()
        runs = simulate_readers(list(names), seconds=5.0)
        elapsed = time.monotonic() - started
    finally:
        server.kill()
        server.wait(10)
    assert elapsed < 40 and len(runs) == 20
    assert all(not run.failures for run in runs.values())
    acked = acknowledged(runs, names)
    assert max(acked.values()) == 1 and sum(acked.values()) >= 40
    assert stored(study) == acked  # every acknowledged answer exactly once, nothing else
    latencies = np.concatenate([run.latencies for run in runs.values()])
    p95 = float(np.percentile(latencies, 95))
    print(f"20 readers x 5 s: {len(latencies)} answers, p95 answer latency {p95 * 1000:.0f} ms")
    assert p95 < 5.0
