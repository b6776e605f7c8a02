"""Simulated readers for the tests and ``benchmarks/vtt_load.py`` (loopback only, bounded).

``ThreadedServer`` serves a study in a thread of this process (stopped cleanly by ``close``);
``start_server`` runs ``mammogan vtt serve`` as a child process on a free 127.0.0.1 port;
``simulate_readers`` lets several readers answer concurrently (one thread and one keep-alive
connection each) for at most ``seconds`` and ``max_answers`` each, like the page does: state,
image, answer. ``demo_study`` writes a small random study with ``make_vtt``.
"""
from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

LOOPBACK = "127.0.0.1"


def demo_study(out_dir, n: int = 4, size: int = 16, seed: int = 0) -> Path:
    """A study of ``n`` real (darker) and ``n`` synthetic (brighter) random ``size`` px images."""
    from mammogan_tf.evaluation.inputs import ImageSet
    from mammogan_tf.evaluation.vtt import make_vtt

    rng = np.random.default_rng(seed)

    def image_set(mean, name):
        images = np.clip(rng.normal(mean, 0.3, (n, size, size, 1)), -1, 1).astype(np.float32)
        return ImageSet(images, [f"{name}{i}" for i in range(n)], [None] * n, f"/data/{name}", "d", "folder")

    make_vtt(image_set(-0.3, "real"), image_set(0.3, "fake"), out_dir, n=n, seed=seed)
    return Path(out_dir)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def request(conn: http.client.HTTPConnection, method: str, path: str, body=None) -> tuple[int, bytes]:
    """One request on a keep-alive connection: ``(status, body bytes)``."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data is not None else {})
    response = conn.getresponse()
    return response.status, response.read()


def start_server(study_dir, port: int, timeout: float = 60.0, extra: tuple = ()) -> subprocess.Popen:
    """``mammogan vtt serve STUDY_DIR --port PORT`` as a child process, returned once
    ``/healthz`` answers (killed and ``RuntimeError`` after ``timeout`` seconds)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") else root
    process = subprocess.Popen([sys.executable, "-m", "mammogan_tf", "vtt", "serve", str(study_dir),
                                "--host", LOOPBACK, "--port", str(port), *extra], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited {process.returncode}: {process.stderr.read().decode()[-2000:]}")
        try:
            conn = http.client.HTTPConnection(LOOPBACK, port, timeout=2)
            if request(conn, "GET", "/healthz")[0] == 200:
                conn.close()
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"server not ready on port {port} after {timeout} s")


class ThreadedServer:
    """``study`` served on a free 127.0.0.1 port by a thread of this process; ``url`` is its
    root. ``close()`` stops the loop in its own thread, so no socket is closed under ``select``."""

    def __init__(self, study, threads: int = 4):
        from mammogan_tf.evaluation.vtt_web.server import make_server

        self.server = make_server(study, LOOPBACK, 0, threads)
        self.url = f"http://{LOOPBACK}:{self.server.effective_port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        server = self.server
        while not self._stop.is_set():
            server.asyncore.loop(timeout=0.05, map=server._map, count=1)
        server.asyncore.close_all(server._map)
        server.task_dispatcher.shutdown(timeout=2)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


@dataclass
class ReaderRun:
    """What one simulated reader saw: acknowledged ``(opaque id, answer)`` pairs, answer
    latencies in seconds, and responses other than 200 (status None: the connection failed)."""

    acked: list = field(default_factory=list)
    latencies: list = field(default_factory=list)
    failures: list = field(default_factory=list)


def read_as(url: str, seconds: float, max_answers: int, seed: int = 0) -> ReaderRun:
    """Answer images through reader link ``url`` (loopback only) until done, ``seconds`` pass or
    ``max_answers`` are acknowledged."""
    parts = urlsplit(url)
    if parts.hostname not in (LOOPBACK, "localhost"):
        raise ValueError(f"{url}: the simulated readers talk to loopback only")
    base = parts.path.rstrip("/")
    rng = np.random.default_rng(seed)
    run = ReaderRun()
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    deadline = time.monotonic() + seconds
    try:  # a lost connection (server killed) ends the run: what was acknowledged is kept
        while time.monotonic() < deadline and len(run.acked) < max_answers and len(run.failures) < 10:
            status, body = request(conn, "GET", f"{base}/api/state")
            state = json.loads(body) if status == 200 else None
            if state is None or state["next"] is None:
                break
            request(conn, "GET", f"{base}/img/{state['next']}")
            answer = {"image": state["next"], "answer": "synthetic" if rng.random() < 0.5 else "real",
                      "response_ms": int(rng.integers(200, 5000))}
            if state["settings"]["confidence"]:
                answer["confidence"] = int(rng.integers(1, 6))
            started = time.perf_counter()
            status, body = request(conn, "POST", f"{base}/api/answer", answer)
            run.latencies.append(time.perf_counter() - started)
            if status == 200:
                run.acked.append((answer["image"], answer["answer"]))
            else:
                run.failures.append((status, body[:200]))
    except (OSError, http.client.HTTPException) as error:
        run.failures.append((None, repr(error)))
    finally:
        conn.close()
    return run


def simulate_readers(urls: list[str], seconds: float, max_answers: int = 10_000) -> dict[str, ReaderRun]:
    """Every reader link in ``urls`` reading concurrently (one thread each); ``{url: ReaderRun}``."""
    runs: dict[str, ReaderRun] = {}

    def work(i, url):
        runs[url] = read_as(url, seconds, max_answers, seed=i)

    threads = [threading.Thread(target=work, args=(i, url), daemon=True) for i, url in enumerate(urls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 60)
    return runs
