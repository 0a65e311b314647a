"""The one factory of a `Runtime`: take the data dir, open every part that serves it, jobs included, and
bring the engine in line with the registry."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from indexes.edge import EdgeEngine
from indexes.engine import VectorEngine
from indexes.errors import RagsvcError
from indexes.keys import DocumentKeys, RedisDocumentKeys, SqliteDocumentKeys
from indexes.registry import JsonFileStore, RedisStore, Registry
from indexes.sealed import SealedEngine
from ingest import faults
from ragsvc.access.control import open_access
from ragsvc.jobs.queue import JobHandler, open_job_queue
from ragsvc.llm import AnswerLLM
from ragsvc.locks import (
    IndexReaders,
    ProcessWriteLocks,
    ReaderCounts,
    RedisIndexReaders,
    RedisWriteLocks,
    StripedLocks,
    WriteLocks,
)
from ragsvc.owner import DataDirLock
from ragsvc.service import ingestion, reindex
from ragsvc.service.embeddings import open_cached, server_model
from ragsvc.service.repair import repair_all
from ragsvc.service.runtime import EmbedderCache, Runtime
from ragsvc.settings import Settings

log = logging.getLogger("ragsvc.runtime")

DOCUMENT_KEYS = "document-keys.db"


def open_engine(settings: Settings) -> VectorEngine:
    """Qdrant Edge shards in the data dir, or a Qdrant server or cluster when RAGSVC_QDRANT_URL is set."""
    if settings.qdrant_url:
        from indexes.qdrant_server import QdrantServerEngine  # qdrant-client: seconds to import, rarely used

        return QdrantServerEngine(settings.qdrant_url, api_key=settings.qdrant_api_key)
    return EdgeEngine(Path(settings.data_dir) / "indexes")


def job_handlers(runtime: Runtime) -> dict[str, JobHandler]:
    """Every kind of job ragsvc runs, by name."""
    return ingestion.job_handlers(runtime) | reindex.job_handlers(runtime)


def open_runtime(
    settings: Settings,
    lock: DataDirLock | None = None,
    *,
    engine: VectorEngine | None = None,
    workers: int = 1,
) -> Runtime:
    """Take the data dir (or use the lock already taken) and open everything that serves it; `engine`, when
    given, replaces the one the settings name (tests stand qdrant-client's local mode in for a server).
    The job queue is open but not running: a serving process or a worker starts it (`runtime.jobs.start()`)
    with `workers` threads.

    The registry lives in Redis when both RAGSVC_QDRANT_URL and RAGSVC_REDIS_URL are set: every replica and
    worker then shares it. With Redis but no Qdrant server, Redis carries the jobs only: the registry
    describes the embedded store in this data dir, which one process owns, so it stays in the data dir.
    """
    data_dir = Path(settings.data_dir)
    if lock is None:
        lock = DataDirLock(data_dir)
        lock.acquire()
    faults.arm(settings.test_crash_at)
    shared = None
    opened: list[Any] = []  # what to close again if a later part fails to open
    try:
        write_locks: WriteLocks
        readers: ReaderCounts
        keys: DocumentKeys
        if settings.redis_url and settings.qdrant_url:
            import redis

            shared = redis.Redis.from_url(settings.redis_url)
            registry = Registry(RedisStore(shared, settings.job_queue))
            write_locks = RedisWriteLocks(shared, settings.job_queue, settings.job_lease_seconds)
            document_locks: WriteLocks = RedisWriteLocks(
                shared, f"{settings.job_queue}:document", settings.job_lease_seconds
            )
            readers = RedisIndexReaders(shared, settings.job_queue)
            keys = RedisDocumentKeys(shared, settings.job_queue)
        else:
            registry = Registry(JsonFileStore(data_dir / "registry.json"))
            write_locks, readers = ProcessWriteLocks(), IndexReaders()
            document_locks = StripedLocks()
            keys = SqliteDocumentKeys(data_dir / DOCUMENT_KEYS)
        opened.append(registry)
        # Every chunk's text is sealed with its document's key: a delete destroys the key (crypto-shredding).
        engine = SealedEngine(engine or open_engine(settings), keys)
        opened.append(engine)
        access = open_access(settings)
        opened.append(access)
        embedders = EmbedderCache()
        opened.append(embedders)
        embedder = open_cached(embedders, settings, server_model(settings))
        llm = AnswerLLM(settings)
        opened.append(llm)
        handlers: dict[str, JobHandler] = {}  # filled below, once the runtime they run on exists
        jobs = open_job_queue(
            data_dir,
            handlers,
            redis_url=settings.redis_url,
            name=settings.job_queue,
            lease_seconds=settings.job_lease_seconds,
            workers=workers,
        )
    except BaseException:
        for part in reversed(opened):
            part.close()
        if shared is not None:
            shared.close()
        lock.release()
        raise
    runtime = Runtime(
        settings=settings,
        lock=lock,
        engine=engine,
        registry=registry,
        llm=llm,
        embedders=embedders,
        embedder=embedder,
        jobs=jobs,
        readers=readers,
        write_locks=write_locks,
        document_locks=document_locks,
        shared=shared,
        access=access,
    )
    handlers.update(job_handlers(runtime))
    try:
        repair_all(runtime)
    except RagsvcError as exc:
        # An unreachable engine must not stop the start; each collection's next write repairs it.
        log.warning("could not check collections against the registry at start-up: %s", exc.message)
    except BaseException:
        runtime.close()
        raise
    return runtime
