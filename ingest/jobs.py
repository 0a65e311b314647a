"""Ingestion jobs: durable job records, and a Huey queue whose workers run inside the store-owning process.

Huey alone does not rerun a task killed mid-run, so the job record is the source of truth: on start-up every
job still queued or running is enqueued again (at least once), and deterministic chunk ids make the rerun
write nothing twice. The embedded default keeps both the records and Huey's queue in SQLite files in the
data dir; RedisHuey is the seam for several machines.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from huey import SqliteHuey
from huey.consumer import Consumer
from pydantic import BaseModel, Field

from indexes.errors import RagsvcError

log = logging.getLogger("ragsvc.jobs")


class JobNotFound(RagsvcError):
    code = "job_not_found"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} does not exist")


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"


class Job(BaseModel):
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    kind: str
    collection: str
    params: dict[str, Any] = Field(default_factory=dict)
    status: JobStatus = JobStatus.queued
    files_done: int = 0
    files_total: int | None = None
    attempts: int = 0
    summary: dict[str, Any] | None = None
    error: str | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @property
    def finished(self) -> bool:
        return self.status in (JobStatus.done, JobStatus.failed)


class JobStore:
    """Job records in SQLite (WAL journal), one row per job holding its JSON."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, collection TEXT, status TEXT, created REAL, body TEXT)"
        )
        self._lock = threading.Lock()

    def save(self, job: Job) -> Job:
        job.updated_at = datetime.now(UTC)
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?)",
                (job.id, job.collection, job.status.value, job.created_at.timestamp(), job.model_dump_json()),
            )
        return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            row = self._db.execute("SELECT body FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(job_id)
        return Job.model_validate_json(row[0])

    def list(self, collection: str | None = None, statuses: tuple[JobStatus, ...] = ()) -> list[Job]:
        query, args = "SELECT body FROM jobs WHERE 1=1", []
        if collection is not None:
            query += " AND collection = ?"
            args.append(collection)
        if statuses:
            query += f" AND status IN ({','.join('?' * len(statuses))})"
            args += [s.value for s in statuses]
        with self._lock:
            rows = self._db.execute(query + " ORDER BY created", args).fetchall()
        return [Job.model_validate_json(r[0]) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class _InProcessConsumer(Consumer):
    """Huey's consumer as threads of the serving process: the server, not Huey, owns the signal handlers."""

    def _set_signal_handlers(self) -> None:
        pass


JobHandler = Callable[[Job, Callable[[int, int], None]], dict[str, Any]]


class JobQueue:
    """Runs jobs one at a time on a Huey worker thread; every state change is saved before it matters."""

    def __init__(self, data_dir: Path, handlers: dict[str, JobHandler]) -> None:
        self.store = JobStore(data_dir / "jobs.sqlite")
        self._handlers = handlers
        self._huey = SqliteHuey("ragsvc", filename=str(data_dir / "queue.sqlite"), results=False)
        self._task = self._huey.task(retries=0)(self._run)
        self._consumer: Consumer | None = None

    def start(self) -> None:
        # The job records decide what is unfinished; Huey's own queue is rebuilt from them.
        self._huey.flush()
        for job in self.store.list(statuses=(JobStatus.queued, JobStatus.running)):
            log.info("resuming job %s (%s, %s)", job.id, job.kind, job.status)
            self._task(job.id)
        self._consumer = _InProcessConsumer(self._huey, workers=1, worker_type="thread", periodic=False)
        self._consumer.start()

    def stop(self) -> None:
        if self._consumer is not None:
            self._consumer.stop(graceful=True)
            self._consumer = None
        self.store.close()

    def submit(self, kind: str, collection: str, **params: Any) -> Job:
        job = self.store.save(Job(kind=kind, collection=collection, params=params))
        self._task(job.id)
        return job

    def wait(self, job_id: str, timeout: float = 600) -> Job:
        deadline = time.monotonic() + timeout
        while not (job := self.store.get(job_id)).finished and time.monotonic() < deadline:
            time.sleep(0.05)
        return job

    def _run(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job.finished:
            return
        job.status, job.attempts = JobStatus.running, job.attempts + 1
        self.store.save(job)
        last_saved = 0.0

        def progress(done: int, total: int) -> None:
            nonlocal last_saved
            job.files_done, job.files_total = done, total
            if time.monotonic() - last_saved > 0.5 or done == total:
                self.store.save(job)
                last_saved = time.monotonic()

        try:
            job.summary = self._handlers[job.kind](job, progress)
            job.status = JobStatus.done
        except RagsvcError as exc:
            job.status, job.error = JobStatus.failed, f"{exc.code}: {exc.message}"
        except Exception as exc:  # recorded on the job for the user, and logged with its traceback
            log.exception("job %s failed", job.id)
            job.status, job.error = JobStatus.failed, f"internal_error: {exc}"
        self.store.save(job)
