"""Reader-study server under load: N simulated readers answering concurrently on 127.0.0.1.

    python benchmarks/vtt_load.py [--readers 20] [--seconds 30] [--images 400] [--threads 8]

Builds a throw-away study (``--images`` real + as many synthetic 16 px images), starts
``mammogan vtt serve`` as a child process on a free loopback port, lets every reader loop
state -> image -> answer (one keep-alive connection each) for ``--seconds``, kills the server,
then checks that every acknowledged answer is in the database exactly once. Prints one JSON
object: answers, answers/s, answer latency percentiles (ms), and the exactly-once check.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from mammogan_tf.evaluation.vtt_web.loadtest import demo_study, free_port, simulate_readers, start_server
from mammogan_tf.evaluation.vtt_web.server import invite
from mammogan_tf.evaluation.vtt_web.store import Store


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--images", type=int, default=400, help="real images (as many synthetic)")
    parser.add_argument("--threads", type=int, default=8, help="server worker threads")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vtt_load_") as tmp:
        study = demo_study(Path(tmp) / "study", n=args.images, size=16)
        links = [link for link in invite(study, str(args.readers), "") if link[1] == "reader"]
        port = free_port()
        server = start_server(study, port, extra=("--threads", str(args.threads)))
        try:
            names = {f"http://127.0.0.1:{port}{path}": name for name, _, path in links}
            started = time.monotonic()
            runs = simulate_readers(list(names), args.seconds)
            elapsed = time.monotonic() - started
        finally:
            server.kill()
            server.wait(10)
        acked = Counter((names[url], image, answer) for url, run in runs.items() for image, answer in run.acked)
        store = Store(study / "vtt.sqlite3", [])
        rows = Counter((r["name"], store.opaque[r["image"]], r["answer"]) for r in store.answers())
        store.close()
    latencies = np.concatenate([run.latencies for run in runs.values()]) * 1000.0
    result = {"readers": args.readers, "seconds": round(elapsed, 2), "server_threads": args.threads,
              "answers": int(sum(acked.values())), "answers_per_s": round(sum(acked.values()) / elapsed, 1),
              "failures": sum(len(run.failures) for run in runs.values()),
              "latency_ms": {f"p{q}": round(float(np.percentile(latencies, q)), 1) for q in (50, 95, 99)},
              "latency_ms_max": round(float(latencies.max()), 1),
              "every_acknowledged_answer_stored_once": rows == acked and max(rows.values(), default=1) == 1}
    print(json.dumps(result))
    return 0 if result["every_acknowledged_answer_stored_once"] and not result["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
