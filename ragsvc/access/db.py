"""The access database: one SQLite file in the data dir (WAL, secure_delete), shared by every process on it.

Write transactions take SQLite's write lock first (BEGIN IMMEDIATE), so a read and the write that depends on
it are one step for every thread and process: counters stay exact across processes.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from indexes.keys import truncate_wal

ACCESS_DB = "access.db"

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, created_at REAL NOT NULL, admin INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS groups (name TEXT PRIMARY KEY, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS members (
    user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    grp TEXT NOT NULL REFERENCES groups(name) ON DELETE CASCADE,
    PRIMARY KEY (user, grp));
CREATE TABLE IF NOT EXISTS grants (
    subject_kind TEXT NOT NULL CHECK (subject_kind IN ('user', 'group')), subject TEXT NOT NULL,
    collection TEXT NOT NULL, level TEXT NOT NULL CHECK (level IN ('read', 'write', 'admin')),
    PRIMARY KEY (subject_kind, subject, collection));
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY, user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE, name TEXT NOT NULL,
    hash TEXT NOT NULL, created_at REAL NOT NULL, expires_at REAL, last_used_at REAL, revoked_at REAL,
    forwards_identity INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS limits (
    scope_kind TEXT NOT NULL CHECK (scope_kind IN ('group', 'key', 'collection')), scope TEXT NOT NULL,
    rpm INTEGER, tpm INTEGER, daily_credits REAL, PRIMARY KEY (scope_kind, scope));
CREATE TABLE IF NOT EXISTS prices (
    model TEXT PRIMARY KEY, input REAL NOT NULL DEFAULT 0, output REAL NOT NULL DEFAULT 0,
    embedding REAL NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS counters (
    bucket TEXT NOT NULL, win INTEGER NOT NULL, amount INTEGER NOT NULL, PRIMARY KEY (bucket, win));
CREATE TABLE IF NOT EXISTS usage (
    day TEXT NOT NULL, user TEXT NOT NULL, grp TEXT NOT NULL, key_id TEXT NOT NULL, collection TEXT NOT NULL,
    model TEXT NOT NULL, requests INTEGER NOT NULL DEFAULT 0, input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0, embedding_tokens INTEGER NOT NULL DEFAULT 0,
    credits_pico INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, user, grp, key_id, collection, model));
CREATE TABLE IF NOT EXISTS audit (
    at REAL NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,
    outcome TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS audit_at ON audit(at);
"""


class AccessDB:
    """One connection per process, used under a lock by its threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute(
            "PRAGMA secure_delete=ON"
        )  # a deleted user's rows are zeroed, not left in free pages
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        self._lock = threading.RLock()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def read(self, sql: str, args: tuple | list = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def wipe_deleted(self) -> None:
        """After a delete that must leave nothing readable: empty the WAL, which holds the rows as they were."""
        with self._lock:
            truncate_wal(self._db)

    def close(self) -> None:
        with self._lock:
            self._db.close()
