"""One process owns a data dir's embedded store: an exclusive lock, and where the owning server listens.

A serving process writes its address to server.json; other processes that find the lock taken talk to it.
With the address goes the owner token, a secret of this run readable only by the data dir's user (mode
0600): a CLI that can read it is on the data dir's own machine as its user, and may do what the CLI may
do inline (ingest any folder it can read).
"""

from __future__ import annotations

import fcntl
import hmac
import json
import os
import secrets
from pathlib import Path

from indexes.errors import StoreBusy

LOCK_FILE = "owner.lock"
SERVER_FILE = "server.json"
# The header a CLI on the data dir's own machine sends the owner token in.
OWNER_TOKEN_HEADER = "X-Ragsvc-Owner-Token"


class DataDirLock:
    """An exclusive, non-blocking advisory lock on the data dir, released when the process dies."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._handle: int | None = None
        self._owner_token: str | None = None

    def try_acquire(self) -> bool:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        handle = os.open(self.data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            return False
        os.ftruncate(handle, 0)
        os.write(handle, str(os.getpid()).encode())
        self._handle = handle
        return True

    def acquire(self) -> None:
        if not self.try_acquire():
            owner = running_server(self.data_dir)
            where = f" (a ragsvc server at {owner})" if owner else ""
            raise StoreBusy(f"data dir {self.data_dir} is in use by another process{where}")

    def release(self) -> None:
        if self._handle is not None:
            (self.data_dir / SERVER_FILE).unlink(missing_ok=True)
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            os.close(self._handle)
            self._handle = None

    def publish(self, url: str) -> None:
        """Tell other processes on this data dir where the owning server answers, and its owner token."""
        self._owner_token = secrets.token_urlsafe(32)
        target = self.data_dir / SERVER_FILE
        tmp = target.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        handle = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(handle, "w") as out:
            json.dump({"url": url, "pid": os.getpid(), "owner_token": self._owner_token}, out)
        os.replace(tmp, target)

    def is_owner_token(self, token: str | None) -> bool:
        """Whether `token` is this run's owner token (compared in constant time)."""
        if not token or self._owner_token is None:
            return False
        return hmac.compare_digest(token.encode(), self._owner_token.encode())


def _server_file(data_dir: Path) -> dict:
    try:
        return json.loads((data_dir / SERVER_FILE).read_text())
    except (OSError, ValueError):
        return {}


def running_server(data_dir: Path) -> str | None:
    return _server_file(data_dir).get("url")


def owner_token(data_dir: Path) -> str | None:
    """The owning server's token, for a CLI of the data dir's user on its machine; None when unreadable."""
    return _server_file(data_dir).get("owner_token")
