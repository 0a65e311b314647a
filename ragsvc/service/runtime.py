"""The long-lived parts one process owns (index engine, registry, embedders, LLM client, job queue), held
together and closed together. A plain container: what to do with them is in the service modules.

`ragsvc.service.factory.open_runtime` builds it, complete; the API's lifespan, the CLI's inline mode, the
worker and `ragsvc eval` all use that one factory, and nothing else holds these parts globally. With a Qdrant
server and Redis both set, the registry, the write locks and the reader counts live in Redis, shared by
every replica and worker; otherwise in the data dir and this process (see `ragsvc.locks`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from indexes.engine import VectorEngine
from indexes.registry import Registry
from ingest.embed import Embedder, EmbeddingSpec
from ragsvc.access.control import AccessControl
from ragsvc.jobs.queue import JobQueue
from ragsvc.llm import AnswerLLM
from ragsvc.locks import IndexReaders, ProcessWriteLocks, ReaderCounts, StripedLocks, WriteLocks
from ragsvc.owner import DataDirLock
from ragsvc.settings import Settings

if TYPE_CHECKING:
    import redis


class EmbedderCache:
    """Each embedder opened once per runtime and shared by every collection on the same model and endpoint;
    closed with the runtime."""

    def __init__(self) -> None:
        self._opened: dict[EmbeddingSpec, Embedder] = {}
        self._lock = threading.Lock()

    def get(self, spec: EmbeddingSpec, open_one: Callable[[EmbeddingSpec], Embedder]) -> Embedder:
        with self._lock:
            embedder = self._opened.get(spec)
        if embedder is None:
            embedder = open_one(spec)  # outside the lock: loading a model or asking an endpoint takes seconds
            with self._lock:
                embedder = self._opened.setdefault(spec, embedder)
        return embedder

    def put(self, spec: EmbeddingSpec, embedder: Embedder) -> None:
        """Use `embedder` for `spec` from now on (benchmarks time a model through this)."""
        with self._lock:
            self._opened[spec] = embedder

    def close(self) -> None:
        with self._lock:
            opened, self._opened = list(self._opened.values()), {}
        for embedder in {id(e): e for e in opened}.values():
            close = getattr(embedder, "close", None)  # HTTP connections, thread pools
            if close is not None:
                close()


@dataclass
class Runtime:
    settings: Settings
    lock: DataDirLock
    engine: VectorEngine
    registry: Registry
    llm: AnswerLLM
    embedders: EmbedderCache
    embedder: Embedder  # the server's local model: /v1/embeddings serves it
    jobs: JobQueue
    readers: ReaderCounts = field(default_factory=IndexReaders)
    write_locks: WriteLocks = field(default_factory=ProcessWriteLocks)
    # One per document (ragsvc.service.documents.document_key): a delete and an ingest of that document.
    document_locks: WriteLocks = field(default_factory=StripedLocks)
    shared: redis.Redis | None = None  # the Redis client of the registry, locks and readers, when shared
    access: AccessControl | None = None  # keys, rights, budgets (ragsvc.access); None only in bare tests

    def close(self) -> None:
        """Stop the jobs (those in hand finish first), close every part, then free the data dir."""
        try:
            self.jobs.stop()
            self.embedders.close()
            self.llm.close()
            self.engine.close()
            self.registry.close()
            if self.access is not None:
                self.access.close()
            if self.shared is not None:
                self.shared.close()
        finally:
            self.lock.release()
