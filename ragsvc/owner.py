"""One process owns a data dir's embedded store: an exclusive lock, and where the owning server listens.

A serving process writes its address to server.json; other processes that find the lock taken talk to it.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from indexes.errors import StoreBusy

LOCK_FILE = "owner.lock"
SERVER_FILE = "server.json"


class DataDirLock:
    """An exclusive, non-blocking advisory lock on the data dir, released when the process dies."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._handle: int | None = None

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
        """Tell other processes on this data dir where the owning server answers."""
        target = self.data_dir / SERVER_FILE
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps({"url": url, "pid": os.getpid()}))
        os.replace(tmp, target)


def running_server(data_dir: Path) -> str | None:
    try:
        return json.loads((data_dir / SERVER_FILE).read_text())["url"]
    except (OSError, ValueError, KeyError):
        return None
