"""The reader study database: ``STUDY_DIR/vtt.sqlite3`` (standard library ``sqlite3``).

WAL journal with ``synchronous=FULL``: an answer is acknowledged only after its transaction
committed, so a server killed at any moment (even ``kill -9``) loses no acknowledged answer.
Tables: ``images`` (study image name -> opaque id shown to browsers), ``readers`` (name, role
``reader``/``owner``, sha256 of the token: tokens themselves are never stored) and ``answers``
(one row per reader and image: answer, confidence, lesion type, response time, UTC timestamp).
Each thread gets its own connection; write transactions of one process take turns on a lock
(SQLite's own busy wait backs off up to 100 ms at a time and can starve a writer under load),
and ``busy_timeout`` settles the rare contention with another process (``vtt invite``).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from mammogan_tf.errors import ConfigError

TOKEN_BYTES = 32
"""256-bit tokens (``secrets.token_urlsafe``): far beyond the 128 bits needed to be unguessable."""
SCHEMA = """
CREATE TABLE IF NOT EXISTS images (image TEXT PRIMARY KEY, opaque_id TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS readers (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('reader', 'owner')),
    token_sha256 TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS answers (
    id INTEGER PRIMARY KEY, reader_id INTEGER NOT NULL REFERENCES readers (id),
    image TEXT NOT NULL REFERENCES images (image),
    answer TEXT NOT NULL CHECK (answer IN ('real', 'synthetic')),
    confidence INTEGER CHECK (confidence BETWEEN 1 AND 5), lesion_type TEXT,
    response_ms INTEGER, answered_at TEXT NOT NULL, UNIQUE (reader_id, image));
"""
OWNER = "owner"
LOCK_TIMEOUT_S = 30.0


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Reader:
    id: int
    name: str
    role: str


class Store:
    """The database of one study. ``images``: the study's image names (given opaque ids once)."""

    def __init__(self, path: str | Path, images: Iterable[str]):
        self.path = Path(path)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        db = self._db()
        db.executescript(SCHEMA)
        with self.transaction() as db:
            known = {row[0] for row in db.execute("SELECT image FROM images")}
            db.executemany("INSERT INTO images (image, opaque_id) VALUES (?, ?)",
                           [(name, secrets.token_urlsafe(12)) for name in images if name not in known])
        rows = db.execute("SELECT image, opaque_id FROM images").fetchall()
        self.opaque = {image: opaque for image, opaque in rows}
        self.image_of = {opaque: image for image, opaque in rows}

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            self._local.db = db
        return db

    def transaction(self):
        """``with store.transaction() as db:`` one ``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled
        back on an exception)."""
        return _Transaction(self._db(), self._write_lock)

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # readers and tokens
    def issue_token(self, name: str, role: str = "reader", reissue: bool = False) -> str:
        """A new token for ``name`` (returned once, stored hashed). An existing name needs
        ``reissue`` (its old link stops working)."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        with self.transaction() as db:
            row = db.execute("SELECT role FROM readers WHERE name = ?", (name,)).fetchone()
            if row is None:
                db.execute("INSERT INTO readers (name, role, token_sha256, created_at) VALUES (?, ?, ?, ?)",
                           (name, role, token_hash(token), _now()))
            elif not reissue:
                raise ConfigError(f"reader {name!r} is already invited; add --reissue to give a new link "
                                  f"(the old one stops working)")
            elif row[0] != role:
                raise ConfigError(f"{name!r} is the study's {row[0]}, not a {role}; choose another name")
            else:
                db.execute("UPDATE readers SET token_sha256 = ? WHERE name = ?", (token_hash(token), name))
        return token

    def reader_for(self, token: str | None, role: str) -> Reader | None:
        """The reader (or owner) whose token this is, None for a missing or wrong one."""
        if not token or len(token) > 200:
            return None
        row = self._db().execute("SELECT id, name, role FROM readers WHERE token_sha256 = ? AND role = ?",
                                 (token_hash(token), role)).fetchone()
        return Reader(*row) if row else None

    def reader_for_name(self, name: str) -> Reader | None:
        row = self._db().execute("SELECT id, name, role FROM readers WHERE name = ?", (name,)).fetchone()
        return Reader(*row) if row else None

    def readers(self) -> list[Reader]:
        return [Reader(*row) for row in self._db().execute(
            "SELECT id, name, role FROM readers WHERE role = 'reader' ORDER BY id")]

    # answers
    def answered(self, reader_id: int) -> set[str]:
        return {row[0] for row in self._db().execute("SELECT image FROM answers WHERE reader_id = ?", (reader_id,))}

    def save_answer(self, reader_id: int, image: str, answer: str, confidence: int | None,
                    lesion_type: str | None, response_ms: int | None, final: bool) -> str:
        """Commit one answer in its own transaction. Returns ``saved`` (new), ``changed``
        (replaced, when answers are not final), ``duplicate`` (the same answer again) or
        ``conflict`` (a different answer to a final one: nothing written)."""
        values = (answer, confidence, lesion_type)
        with self.transaction() as db:
            row = db.execute("SELECT answer, confidence, lesion_type FROM answers WHERE reader_id = ? AND image = ?",
                             (reader_id, image)).fetchone()
            if row is None:
                db.execute("INSERT INTO answers (reader_id, image, answer, confidence, lesion_type, response_ms, "
                           "answered_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (reader_id, image, *values, response_ms, _now()))
                return "saved"
            if tuple(row) == values:
                return "duplicate"
            if final:
                return "conflict"
            db.execute("UPDATE answers SET answer = ?, confidence = ?, lesion_type = ?, response_ms = ?, "
                       "answered_at = ? WHERE reader_id = ? AND image = ?",
                       (*values, response_ms, _now(), reader_id, image))
            return "changed"

    def answers(self) -> list[dict]:
        """Every answer with its reader's name, in the order they were first written."""
        db = self._db()
        cursor = db.execute("SELECT r.name, a.image, a.answer, a.confidence, a.lesion_type, a.response_ms, "
                            "a.answered_at FROM answers a JOIN readers r ON r.id = a.reader_id ORDER BY a.id")
        fields = [d[0] for d in cursor.description]
        return [dict(zip(fields, row)) for row in cursor]


class _Transaction:
    def __init__(self, db: sqlite3.Connection, lock: threading.Lock):
        self.db, self.lock = db, lock

    def __enter__(self) -> sqlite3.Connection:
        if not self.lock.acquire(timeout=LOCK_TIMEOUT_S):
            raise sqlite3.OperationalError(f"no turn to write within {LOCK_TIMEOUT_S} s")
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.lock.release()
            raise
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        finally:
            self.lock.release()
