"""``mammogan vtt serve|invite|export``: run the application, hand out links, write answer sheets.

``serve`` binds 127.0.0.1 unless told otherwise and warns when the address is not loopback
(the study is then reachable from the network: links are the only protection, so use HTTPS in
front of it). ``invite`` adds readers and prints one link each; the owner's link is printed when
it is first made (``--owner`` makes a new one). ``export`` writes one ``READER.csv`` per reader
(image, answer, confidence, lesion_type, response_ms, answered_at) that ``mammogan vtt score``
reads.
"""
from __future__ import annotations

import csv
import ipaddress
import logging
import shutil
import sys
from pathlib import Path

from mammogan_tf.errors import ConfigError, InputError
from mammogan_tf.evaluation.vtt import read_key
from mammogan_tf.evaluation.vtt_web import DEFAULT_PORT
from mammogan_tf.evaluation.vtt_web.store import OWNER, Store
from mammogan_tf.evaluation.vtt_web.study import Study, load_study
from mammogan_tf.manifest import partial_dir, publish

EXPORT_FIELDS = ["image", "answer", "confidence", "lesion_type", "response_ms", "answered_at"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_store(study_dir) -> Store:
    """The study's database without loading its images (for ``invite`` and ``export``)."""
    root = Path(study_dir)
    if not (root / "key.csv").is_file():
        raise InputError(f"{root / 'key.csv'}: no answer key; STUDY_DIR is the folder written by `mammogan vtt make`")
    return Store(root / "vtt.sqlite3", read_key(root / "key.csv"))


def make_server(study: Study, host: str = "127.0.0.1", port: int = DEFAULT_PORT, threads: int = 8):
    """A waitress server for ``study`` (not yet running: call ``.run()``; ``.effective_port``
    is the bound port, useful with ``port=0``)."""
    from waitress import create_server

    from mammogan_tf.evaluation.vtt_web.app import MAX_BODY, create_app

    store = Store(study.database, study.key)
    return create_server(create_app(study, store), host=host, port=port, threads=threads,
                         max_request_body_size=MAX_BODY, ident="vtt")


def serve(study_dir, host: str = "127.0.0.1", port: int = DEFAULT_PORT, threads: int = 8, **reading) -> None:
    """Serve ``study_dir`` until interrupted (``reading``: overrides of ``study.json``)."""
    study = load_study(study_dir, **reading)
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "Task queue depth" under load is expected
    if not is_loopback(host):
        print(f"warning: serving on {host}, reachable from other machines; anyone with a link can read the "
              f"study. Put HTTPS in front of it and keep the links private.", file=sys.stderr)
    try:
        server = make_server(study, host, port, threads)
    except OSError as error:
        raise ConfigError(f"--host {host} --port {port}: cannot listen ({error.strerror})") from None
    print(f"serving {len(study.key)} images of {study.root} on http://{host}:{server.effective_port}/ "
          f"(links: mammogan vtt invite {study.root}); Ctrl-C stops", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


def invite(study_dir, readers: str, base_url: str, reissue: bool = False, owner: bool = False) -> list[tuple]:
    """Add readers (``readers``: a count or comma-separated names) and return
    ``[(name, role, url)]``, the owner's first when it is new or ``owner`` asks for a new one."""
    store = open_store(study_dir)
    base_url = base_url.rstrip("/")
    if readers.strip().isdigit():
        start = len(store.readers())
        names = [f"reader{start + i + 1:02d}" for i in range(int(readers))]
    else:
        names = [n.strip() for n in readers.split(",") if n.strip()]
    bad = [n for n in names if n == OWNER or len(n) > 64 or not n.replace("-", "").replace("_", "").isalnum()]
    if bad or len(set(names)) != len(names):
        raise ConfigError(f"--readers: {bad[0] if bad else 'names'!r}: names must be distinct, letters, digits, "
                          f"'-' or '_', at most 64 characters and not 'owner'")
    links = []
    if owner or store.reader_for_name(OWNER) is None:
        links.append((OWNER, "owner", f"{base_url}/o/{store.issue_token(OWNER, 'owner', reissue=True)}/"))
    for name in names:
        links.append((name, "reader", f"{base_url}/r/{store.issue_token(name, 'reader', reissue)}/"))
    store.close()
    return links


def export(study_dir, out_dir) -> dict[str, int]:
    """Write ``out_dir/READER.csv`` for every reader with answers (image names as in
    ``key.csv``); returns ``{reader: answers}``."""
    store = open_store(study_dir)
    sheets: dict[str, list[dict]] = {}
    for row in store.answers():
        sheets.setdefault(row["name"], []).append({f: row[f] for f in EXPORT_FIELDS})
    store.close()
    if not sheets:
        raise InputError(f"{Path(study_dir) / 'vtt.sqlite3'}: no answers yet")
    staging = partial_dir(out_dir)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name, rows in sheets.items():
        with open(staging / f"{name}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=EXPORT_FIELDS)
            writer.writeheader()
            writer.writerows(sorted(rows, key=lambda r: r["image"]))
    publish(staging, out_dir)
    return {name: len(rows) for name, rows in sheets.items()}
