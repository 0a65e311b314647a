"""Per-document keys that a delete destroys (crypto-shredding): SQLite in the data dir, or Redis when shared.

A key is 256 random bits from `secrets`, one per version of a document in one physical index. The store
never holds anything derived from document text; destroying a key leaves nothing of it readable in the
store's files (SQLite's secure_delete zeroes the freed bytes, and the WAL is checkpointed and truncated).
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from indexes.errors import RagsvcError

if TYPE_CHECKING:
    import redis

KEY_BYTES = 32


class KeyStoreBusy(RagsvcError):
    """Deleted bytes could not yet be wiped from an SQLite store's write-ahead log (a reader held it)."""

    code = "store_busy"


class DocumentKeys(Protocol):
    """Keys by (index, key id). `ensure` returns existing keys and durably creates the missing ones before
    it returns; `destroy` and `destroy_index` return once the keys are unreadable in the store's files."""

    def ensure(self, index: str, key_ids: Sequence[str]) -> dict[str, bytes]: ...

    def get(self, index: str, key_ids: Iterable[str]) -> dict[str, bytes]: ...

    def destroy(self, index: str, key_ids: Iterable[str]) -> None: ...

    def destroy_index(self, index: str) -> None: ...

    def close(self) -> None: ...


def truncate_wal(db: sqlite3.Connection, timeout: float = 10.0) -> None:
    """Copy the WAL's pages into the main file and empty the WAL, which still holds pages as they were
    before a delete; with secure_delete on, the main file then holds the deleted bytes only as zeros."""
    deadline = time.monotonic() + timeout
    while True:
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if not busy:
            return
        if time.monotonic() > deadline:
            raise KeyStoreBusy("a reader held an SQLite store; what was deleted from it is wiped later")
        time.sleep(0.01)


class SqliteDocumentKeys:
    """Keys in one SQLite file (WAL journal, secure_delete on). A destroy checkpoints and truncates the WAL, so
    the pages that held the key exist only zeroed in the main file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.execute("PRAGMA journal_mode=WAL")
        # As durable as the engine's own writes (Qdrant's WAL is not synced per update either): a key
        # committed here survives a crash of the process; FULL cost a sync per document (80 ms here).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS document_keys "
            "(idx TEXT NOT NULL, key_id TEXT NOT NULL, key BLOB NOT NULL, PRIMARY KEY (idx, key_id))"
        )
        self._lock = threading.Lock()  # the one writing connection
        # Reads (every search opens its hits' keys) each go through a connection of their thread's: WAL lets
        # them run side by side, where one shared connection under the lock made 32 concurrent searches
        # queue on it (bench/load.py's profile: a third of /search's busy samples waited there).
        self._readers = threading.local()
        self._reader_connections: list[sqlite3.Connection] = []

    def _reader(self) -> sqlite3.Connection:
        db = getattr(self._readers, "db", None)
        if db is None:
            db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None, timeout=30)
            with self._lock:
                self._reader_connections.append(db)
            self._readers.db = db
        return db

    def _select(
        self, index: str, key_ids: list[str], db: sqlite3.Connection | None = None
    ) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        db = db or self._db
        for start in range(0, len(key_ids), 500):
            part = key_ids[start : start + 500]
            rows = db.execute(
                f"SELECT key_id, key FROM document_keys WHERE idx = ? AND key_id IN ({','.join('?' * len(part))})",
                [index, *part],
            ).fetchall()
            found.update((key_id, bytes(key)) for key_id, key in rows)
        return found

    def ensure(self, index: str, key_ids: Sequence[str]) -> dict[str, bytes]:
        wanted = sorted(set(key_ids))
        with self._lock:
            found = self._select(index, wanted)
            missing = [k for k in wanted if k not in found]
            if missing:
                new = {k: secrets.token_bytes(KEY_BYTES) for k in missing}
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany(
                        "INSERT OR IGNORE INTO document_keys (idx, key_id, key) VALUES (?, ?, ?)",
                        [(index, k, v) for k, v in new.items()],
                    )
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                found.update(self._select(index, missing))
        return found

    def get(self, index: str, key_ids: Iterable[str]) -> dict[str, bytes]:
        return self._select(index, sorted(set(key_ids)), self._reader())

    def destroy(self, index: str, key_ids: Iterable[str]) -> None:
        ids = sorted(set(key_ids))
        if not ids:
            return
        with self._lock:
            self._db.executemany(
                "DELETE FROM document_keys WHERE idx = ? AND key_id = ?", [(index, k) for k in ids]
            )
            truncate_wal(self._db)

    def destroy_index(self, index: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM document_keys WHERE idx = ?", (index,))
            truncate_wal(self._db)

    def close(self) -> None:
        with self._lock:
            for reader in self._reader_connections:
                reader.close()
            self._reader_connections.clear()
            self._db.close()


class RedisDocumentKeys:
    """Keys in Redis, one hash per index, for replicas that share a Qdrant server. Redis frees a deleted
    key's memory at once; its RDB snapshots and AOF keep it until they are rewritten (see docs)."""

    def __init__(self, client: redis.Redis, namespace: str = "ragsvc") -> None:
        self._redis = client
        self._prefix = f"{namespace}:document-keys:"

    def ensure(self, index: str, key_ids: Sequence[str]) -> dict[str, bytes]:
        wanted = sorted(set(key_ids))
        if not wanted:
            return {}
        name = self._prefix + index
        pipe = self._redis.pipeline(transaction=True)
        for key_id in wanted:
            pipe.hsetnx(name, key_id, secrets.token_bytes(KEY_BYTES))
        pipe.hmget(name, wanted)
        values = pipe.execute()[-1]
        return dict(zip(wanted, values, strict=True))

    def get(self, index: str, key_ids: Iterable[str]) -> dict[str, bytes]:
        wanted = sorted(set(key_ids))
        if not wanted:
            return {}
        values = self._redis.hmget(self._prefix + index, wanted)
        return {k: v for k, v in zip(wanted, values, strict=True) if v is not None}

    def destroy(self, index: str, key_ids: Iterable[str]) -> None:
        ids = sorted(set(key_ids))
        if ids:
            self._redis.hdel(self._prefix + index, *ids)

    def destroy_index(self, index: str) -> None:
        self._redis.delete(self._prefix + index)

    def close(self) -> None:
        pass  # the client belongs to the caller
