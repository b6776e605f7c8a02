"""Reader study web application: tokens, opaque images, no truth leak, body limits, answers,
owner results, export -> score. A real waitress server on 127.0.0.1 (port chosen by the OS)."""
from __future__ import annotations

import csv
import http.client
import io
import json
import socket
import sqlite3
import struct

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from mammogan_tf.cli import main
from mammogan_tf.evaluation.vtt import read_key
from mammogan_tf.evaluation.vtt_web import server as web_server
from mammogan_tf.evaluation.vtt_web.app import create_app
from mammogan_tf.evaluation.vtt_web.loadtest import ThreadedServer, demo_study
from mammogan_tf.evaluation.vtt_web.server import invite, is_loopback
from mammogan_tf.evaluation.vtt_web.store import Store
from mammogan_tf.evaluation.vtt_web.study import load_study


class Live:
    """A study served on a free loopback port, with reader links for alice and bob."""

    def __init__(self, root):
        self.dir = demo_study(root / "study", n=3, size=16)
        self.key = read_key(self.dir / "key.csv")
        # a provenance text chunk in one source file: the server must strip it
        first = sorted(self.key)[0]
        info = PngImagePlugin.PngInfo()
        info.add_text("truth", "synthetic" if self.key[first] else "real")
        pixels = np.array(Image.open(self.dir / "observers" / "images" / first))
        Image.fromarray(pixels).save(self.dir / "observers" / "images" / first, pnginfo=info)
        self.links = {name: url for name, _, url in invite(self.dir, "alice,bob", "")}
        self.study = load_study(self.dir)
        self.served = ThreadedServer(self.study)
        self.port = self.served.server.effective_port
        self.store = Store(self.study.database, self.key)

    def get(self, path, method="GET", body=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def answer(self, who, image_id, answer, **extra):
        body = json.dumps({"image": image_id, "answer": answer, **extra}).encode()
        return self.get(self.links[who] + "api/answer", "POST", body)

    def state(self, who):
        status, _, body = self.get(self.links[who] + "api/state")
        assert status == 200
        return json.loads(body)

    def rows(self):
        with sqlite3.connect(self.study.database) as db:
            return db.execute("SELECT reader_id, image, answer FROM answers ORDER BY id").fetchall()

    def close(self):
        self.served.close()


@pytest.fixture
def live(tmp_path):
    served = Live(tmp_path)
    yield served
    served.close()


def png_chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, i = [], 8
    while i < len(data):
        length = struct.unpack(">I", data[i:i + 4])[0]
        chunks.append(data[i + 4:i + 8])
        i += 12 + length
    return chunks


def test_tokens_gate_everything_and_readers_stay_apart(live):
    for path in ["/r/", "/o/", "/r/wrong/", "/r/wrong/api/state", "/r/" + "x" * 43 + "/img/abc",
                 live.links["alice"].replace("/r/", "/o/"), live.links["owner"].replace("/o/", "/r/") + "api/state"]:
        status, _, body = live.get(path)
        assert status == 403, path
        assert b"next" not in body and b"total" not in body
    status, _, body = live.get("/r/wrong/api/answer", "POST", b'{"image": "x", "answer": "real"}')
    assert status == 403 and live.rows() == []
    first = live.state("alice")["next"]
    assert live.answer("alice", first, "real")[0] == 200
    assert live.state("alice")["done"] == 1 and live.state("bob")["done"] == 0  # bob cannot see alice's answers
    assert live.answer("bob", first, "synthetic")[0] == 200  # bob's answer is his own row
    alice, bob = live.store.reader_for_name("alice").id, live.store.reader_for_name("bob").id
    image = live.store.image_of[first]
    assert sorted(live.rows()) == sorted([(alice, image, "real"), (bob, image, "synthetic")])
    assert live.get(live.links["owner"])[0] == 200


def test_opaque_ids_block_traversal_and_listing(live):
    r = live.links["alice"]
    name = sorted(live.key)[0]
    for path in ["/key.csv", "/vtt.sqlite3", "/study.json", f"/observers/images/{name}", "/observers/images/",
                 "/static/", "/static/../vtt.sqlite3", "/static/..%2fkey.csv", "/static/%2e%2e/%2e%2e/key.csv",
                 "/static//etc/passwd", "//etc/passwd", f"{r}img/{name}", f"{r}img/..%2F..%2Fkey.csv",
                 f"{r}img/%2e%2e%2fkey.csv", f"{r}img/../../key.csv", f"{r}img//etc/passwd",
                 f"{r}img/%2Fetc%2Fpasswd", f"{r}img/observers%2Fimages%2F{name}", "/r/%2e%2e/api/state"]:
        status, _, body = live.get(path)
        assert status in (403, 404), (path, status)
        assert b"\x89PNG" not in body and b"truth" not in body and b"root:" not in body


def test_served_images_are_bare_and_carry_no_truth(live):
    r = live.links["alice"]
    seen = {}
    status, headers, page = live.get(r)
    assert status == 200 and headers["Referrer-Policy"] == "no-referrer"
    bodies = [page, live.get("/static/reader.js")[2], live.get("/static/vtt.css")[2]]
    image_headers = {}
    while True:
        status, headers, body = live.get(r + "api/state")
        bodies.append(body)
        state = json.loads(body)
        if state["next"] is None:
            break
        status, headers, png = live.get(f"{r}img/{state['next']}")
        name = live.store.image_of[state["next"]]
        assert status == 200 and headers["Content-Type"] == "image/png"
        assert png_chunks(png) == [b"IHDR"] + [b"IDAT"] * (len(png_chunks(png)) - 2) + [b"IEND"]
        source = np.array(Image.open(live.dir / "observers" / "images" / name))
        assert np.array_equal(np.array(Image.open(io.BytesIO(png))), source)
        image_headers[live.key[name]] = {k: v for k, v in headers.items() if k not in ("Content-Length", "Date")}
        seen[name] = png
        status, _, body = live.answer("alice", state["next"], "real")
        assert status == 200
        bodies.append(body)
    assert sorted(seen) == sorted(live.key)
    assert image_headers[True] == image_headers[False]  # same headers for real and synthetic
    forbidden = [n.encode() for n in live.key] + [b"truth", b"key.csv", b"vtt.sqlite3", b"/data/", b"real0",
                                                  b"fake0", b"vtt_0"]
    for body in bodies:
        for word in forbidden:
            assert word not in body
    for body in bodies[3:]:  # every JSON response a reader gets
        assert b"real" not in body and b"synthetic" not in body


def test_oversized_and_malformed_bodies_write_nothing(live):
    image = live.state("alice")["next"]
    url = live.links["alice"] + "api/answer"
    big = json.dumps({"image": image, "answer": "real", "lesion_type": "x" * (1 << 20)}).encode()
    assert len(big) > 1_000_000
    # waitress answers 413 as soon as it reads the declared length, then closes: read the answer
    # after the first 64 KiB (a client still sending would only see the connection reset)
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(f"POST {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(big)}\r\n\r\n".encode() + big[:65536])
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")
    flask_client = create_app(live.study, live.store).test_client()  # the application's own limit
    assert flask_client.post(url, data=big, content_type="application/json").status_code == 413
    for body in [b"{not json", b"\xff\xfe", b"[]", b"null", b'"real"',
                 json.dumps({"image": image, "answer": "maybe"}).encode(),
                 json.dumps({"image": image}).encode(),
                 json.dumps({"image": image, "answer": "real", "extra": 1}).encode(),
                 json.dumps({"image": image, "answer": "real", "confidence": 3}).encode(),  # not asked
                 json.dumps({"image": image, "answer": "real", "lesion_type": "mass"}).encode(),
                 json.dumps({"image": image, "answer": "real", "response_ms": -5}).encode(),
                 json.dumps({"image": image, "answer": "real", "response_ms": "1"}).encode(),
                 json.dumps({"image": ["x"], "answer": "real"}).encode()]:
        status, _, _ = live.get(url, "POST", body)
        assert status == 400, body
    assert live.get(url, "POST", json.dumps({"image": "nope", "answer": "real"}).encode())[0] == 404
    assert live.get(live.links["alice"] + "api/answer")[0] == 405
    assert live.rows() == []


def test_order_per_reader_final_answers_and_resume(live):
    study = live.study
    alice, bob = study.order("alice"), study.order("bob")
    assert sorted(alice) == sorted(live.key) and alice != bob
    assert load_study(live.dir).order("alice") == alice  # the same after a restart
    served = []
    for k in range(3):
        state = live.state("alice")
        assert state["done"] == k and state["total"] == 6
        served.append(live.store.image_of[state["next"]])
        status, _, body = live.answer("alice", state["next"], "synthetic", response_ms=1200)
        assert status == 200 and json.loads(body)["status"] == "saved"
    assert served == alice[:3]
    first = live.store.opaque[alice[0]]
    assert live.answer("alice", first, "real")[0] == 409  # final: no change
    status, _, body = live.answer("alice", first, "synthetic", response_ms=1200)
    assert status == 200 and json.loads(body)["status"] == "duplicate"
    assert [a for _, _, a in live.rows()] == ["synthetic"] * 3
    assert live.store.image_of[live.state("alice")["next"]] == alice[3]  # resumes where it left off


def test_owner_results_export_and_score(live, tmp_path, capsys):
    for who in ("alice", "bob"):
        while (state := live.state(who))["next"] is not None:
            truth = live.key[live.store.image_of[state["next"]]]
            said = "synthetic" if (truth if who == "alice" else False) else "real"
            assert live.answer(who, state["next"], said, response_ms=900)[0] == 200
    status, _, body = live.get(live.links["owner"] + "results.json")
    results = json.loads(body)
    assert results["progress"] == {"alice": 6, "bob": 6}
    observers = results["scores"]["observers"]
    assert observers["alice"]["accuracy"] == 1.0 and observers["bob"]["accuracy"] == 0.5
    assert [observers["bob"][k] for k in ("tp", "fn", "fp", "tn")] == [0, 3, 0, 3]  # all called real
    assert [row["n_fooled"] for row in results["fooled"]] == [1, 1, 1]
    page = live.get(live.links["owner"])[2].decode()
    assert page.count("6 / 6") == 2 and "Cohen" in page
    sheet = Image.open(io.BytesIO(live.get(live.links["owner"] + "fooled.png")[2]))
    assert sheet.size[0] > 100
    assert main(["vtt", "export", str(live.dir), "--out", str(tmp_path / "answers")]) == 0
    with open(tmp_path / "answers" / "alice.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 and {r["response_ms"] for r in rows} == {"900"} and rows[0]["answered_at"]
    capsys.readouterr()
    assert main(["vtt", "score", "--key", str(live.dir / "key.csv"), str(tmp_path / "answers" / "alice.csv"),
                 str(tmp_path / "answers" / "bob.csv"), "--sheet", str(tmp_path / "sheet.png")]) == 0
    out = capsys.readouterr().out
    assert "alice" in out and "1.000" in out and "fooled 1 of 2" in out and (tmp_path / "sheet.png").exists()


def test_invite_prints_unguessable_links_and_stores_hashes(tmp_path, capsys):
    study = demo_study(tmp_path / "study", n=2)
    assert main(["vtt", "invite", str(study), "--readers", "2"]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith(("owner", "reader"))]
    assert [line[1] for line in lines] == ["owner", "reader01", "reader02"]
    tokens = [line[2].rstrip("/").rsplit("/", 1)[1] for line in lines]
    assert all(len(t) >= 43 for t in tokens) and len(set(tokens)) == 3  # 32 random bytes, base64url
    database = (study / "vtt.sqlite3").read_bytes() + (study / "vtt.sqlite3-wal").read_bytes() \
        if (study / "vtt.sqlite3-wal").exists() else (study / "vtt.sqlite3").read_bytes()
    assert not any(t.encode() in database for t in tokens)
    assert main(["vtt", "invite", str(study), "--readers", "reader01"]) == 2
    assert "--reissue" in capsys.readouterr().err
    assert main(["vtt", "invite", str(study), "--readers", "reader01", "--reissue"]) == 0
    store = Store(study / "vtt.sqlite3", [])
    assert store.reader_for(tokens[1], "reader") is None and store.reader_for(tokens[0], "owner").name == "owner"
    assert main(["vtt", "invite", str(study), "--readers", "bad/name"]) == 2


def test_reading_settings_are_enforced(tmp_path):
    study_dir = demo_study(tmp_path / "study", n=2)
    study = load_study(study_dir, confidence=True, lesion_types=["mass", "calcification"], time_limit_s=30)
    links = {name: url for name, _, url in invite(study_dir, "carol", "")}
    client = create_app(study, Store(study.database, study.key)).test_client()
    state = client.get(links["carol"] + "api/state").get_json()
    assert state["settings"] == {"confidence": True, "lesion_types": ["mass", "calcification"],
                                 "time_limit_s": 30, "final_answers": True}
    url, image = links["carol"] + "api/answer", state["next"]
    assert client.post(url, json={"image": image, "answer": "real", "lesion_type": "mass"}).status_code == 400
    assert client.post(url, json={"image": image, "answer": "real", "confidence": 6,
                                  "lesion_type": "mass"}).status_code == 400
    assert client.post(url, json={"image": image, "answer": "real", "confidence": 2,
                                  "lesion_type": "cyst"}).status_code == 400
    ok = client.post(url, json={"image": image, "answer": "real", "confidence": 2, "lesion_type": "mass"})
    assert ok.status_code == 200 and ok.get_json()["done"] == 1
    changes = load_study(study_dir, final_answers=False)
    client = create_app(changes, Store(changes.database, changes.key)).test_client()
    again = client.post(url, json={"image": image, "answer": "synthetic"})
    assert again.status_code == 200 and again.get_json()["status"] == "changed"
    with pytest.raises(Exception, match="time_limit_s"):
        load_study(study_dir, time_limit_s=-1)


def test_serve_binds_loopback_and_warns_otherwise(tmp_path, monkeypatch, capsys):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("example.org")
    bound = []

    class Dummy:
        effective_port = 1

        def run(self):
            pass

        def close(self):
            pass

    monkeypatch.setattr(web_server, "make_server", lambda study, host, port, threads: bound.append(host) or Dummy())
    study = demo_study(tmp_path / "study", n=2)
    assert main(["vtt", "serve", str(study)]) == 0
    assert bound == ["127.0.0.1"] and "warning" not in capsys.readouterr().err
    assert main(["vtt", "serve", str(study), "--host", "0.0.0.0"]) == 0
    assert "warning: serving on 0.0.0.0" in capsys.readouterr().err
