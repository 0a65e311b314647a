"""Who may write a collection, and who still reads an index: within one process, or across processes in Redis.

The embedded store is one process's, so threading locks and an in-memory reader count do. In the server
deployment (a Qdrant server and Redis) API replicas and workers on several machines share each collection:
its write lock is a Redis lock that expires unless its holder renews it (a holder that dies frees it after
`lease_seconds`), and each search takes a reader lease in Redis on the index it reads, so that the process
that switched a collection to a new index drops the old one only once no process reads it. Reader leases
are exact where a grace period would guess how long a query may take; they cost two Redis round trips per
search, and a reader that died leaves a lease that expires after READER_LEASE_S.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import redis

log = logging.getLogger("ragsvc.locks")

# Longest a search may hold its reader lease; one still reading after this no longer delays a drop.
READER_LEASE_S = 120.0
POLL_S = 0.05


class WriteLocks(Protocol):
    def hold(self, collection: str, *, wait: bool = True) -> AbstractContextManager[bool]:
        """Hold the collection's write lock for the block; yields False (without holding it) when `wait` is
        False and another writer holds it."""
        ...


class ReaderCounts(Protocol):
    def reading(self, index: str) -> AbstractContextManager[None]: ...

    def wait_until_unread(self, index: str, timeout: float = 60.0) -> bool:
        """True once no search reads `index`; False when some still did after `timeout` seconds."""
        ...


class ProcessWriteLocks:
    """One writer per collection among this process's threads; searches never wait on it."""

    def __init__(self) -> None:
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)

    @contextmanager
    def hold(self, collection: str, *, wait: bool = True) -> Iterator[bool]:
        lock = self._locks[collection]
        if not lock.acquire(blocking=wait):
            yield False
            return
        try:
            yield True
        finally:
            lock.release()


class StripedLocks(ProcessWriteLocks):
    """Locks for many names (one per document) in a fixed number of stripes: memory stays bounded however many
    names are locked over time; two names that share a stripe only wait for each other."""

    def __init__(self, stripes: int = 4096) -> None:
        super().__init__()
        self._stripes = stripes

    def hold(self, collection: str, *, wait: bool = True) -> AbstractContextManager[bool]:
        return super().hold(str(hash(collection) % self._stripes), wait=wait)


class IndexReaders:
    """Searches in flight per physical index in this process."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._count: Counter[str] = Counter()

    @contextmanager
    def reading(self, index: str) -> Iterator[None]:
        with self._changed:
            self._count[index] += 1
        try:
            yield
        finally:
            with self._changed:
                self._count[index] -= 1
                self._changed.notify_all()

    def wait_until_unread(self, index: str, timeout: float = 60.0) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self._count[index] <= 0, timeout)


class RedisWriteLocks:
    """One writer per collection among every process on one Redis: a `redis.lock.Lock` per hold (its own
    token, so two threads of one process exclude each other too), renewed every third of `lease_seconds`
    by a thread while held."""

    def __init__(self, client: redis.Redis, namespace: str = "ragsvc", lease_seconds: float = 30.0) -> None:
        self._redis = client
        self._prefix = f"ragsvc:{namespace}:write-lock:"
        self.lease_seconds = lease_seconds

    @contextmanager
    def hold(self, collection: str, *, wait: bool = True) -> Iterator[bool]:
        from redis.exceptions import LockError

        lock = self._redis.lock(
            self._prefix + collection, timeout=self.lease_seconds, sleep=POLL_S, thread_local=False
        )
        if not lock.acquire(blocking=wait):
            yield False
            return
        released = threading.Event()
        renewer = threading.Thread(
            target=self._renew,
            args=(lock, collection, released),
            name=f"write-lock:{collection}",
            daemon=True,
        )
        renewer.start()
        try:
            yield True
        finally:
            released.set()
            renewer.join()
            try:
                lock.release()
            except LockError:
                log.error(
                    "the write lock of collection %r expired while held (no renewal for %.0f s): another "
                    "writer may have run alongside",
                    collection,
                    self.lease_seconds,
                )

    def _renew(self, lock: redis.lock.Lock, collection: str, released: threading.Event) -> None:
        from redis.exceptions import LockError, RedisError

        while not released.wait(self.lease_seconds / 3):
            try:
                lock.reacquire()
            except (LockError, RedisError):
                # Recorded here and again at release; the write itself goes on (retries are idempotent).
                log.exception("could not renew the write lock of collection %r", collection)


class RedisIndexReaders:
    """Searches in flight per physical index among every process on one Redis: a sorted set per index of
    reader tokens scored by when their lease ends."""

    def __init__(self, client: redis.Redis, namespace: str = "ragsvc") -> None:
        self._redis = client
        self._prefix = f"ragsvc:{namespace}:readers:"

    @contextmanager
    def reading(self, index: str) -> Iterator[None]:
        key, token = self._prefix + index, uuid.uuid4().hex
        with self._redis.pipeline(transaction=False) as batch:
            batch.zadd(key, {token: time.time() + READER_LEASE_S})
            batch.expire(key, int(READER_LEASE_S) * 2)
            batch.execute()
        try:
            yield
        finally:
            self._redis.zrem(key, token)

    def wait_until_unread(self, index: str, timeout: float = 60.0) -> bool:
        key = self._prefix + index
        deadline = time.monotonic() + timeout
        while True:
            with self._redis.pipeline(transaction=False) as batch:
                batch.zremrangebyscore(key, "-inf", time.time())  # leases of readers that died
                batch.zcard(key)
                _, readers = batch.execute()
            if readers == 0:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S)
