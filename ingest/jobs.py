"""Ingestion jobs: durable job records with leases, and a Huey queue that delivers them at least once.

The job record is the source of truth, not Huey's message: Huey drops a task whose worker dies mid-run, so a
worker claims a job with a lease it renews while it runs, and a reaper re-enqueues every unfinished job whose
lease has lapsed. Deterministic chunk ids make a rerun write nothing twice. The embedded default keeps
records and queue in SQLite files in the data dir; with a Redis URL both live in Redis, shared by workers.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from huey import Huey, RedisHuey, SqliteHuey
from huey.consumer import Consumer
from pydantic import BaseModel, Field, model_validator

from indexes.errors import RagsvcError
from indexes.keys import truncate_wal
from ingest.progress import IngestProgress, Progress

log = logging.getLogger("ragsvc.jobs")

# A running job's counts are stored this often, a new phase at once, and its end always.
PROGRESS_SAVE_SECONDS = 0.5


class JobNotFound(RagsvcError):
    code = "job_not_found"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} does not exist")


class LeaseLost(Exception):
    """Another worker claimed this job after our lease lapsed; we stop and leave it to them."""


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"


UNFINISHED = (JobStatus.queued, JobStatus.running)


class Job(BaseModel):
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    kind: str
    collection: str
    params: dict[str, Any] = Field(default_factory=dict)
    status: JobStatus = JobStatus.queued
    progress: IngestProgress = Field(default_factory=IngestProgress)
    attempts: int = 0
    worker: str | None = Field(None, description="the worker that holds or last held the job")
    summary: dict[str, Any] | None = None
    error: str | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @property
    def finished(self) -> bool:
        return self.status not in UNFINISHED

    @model_validator(mode="before")
    @classmethod
    def _progress_of_older_records(cls, body: Any) -> Any:
        """Records stored before progress was one object kept some of its counts at the top level."""
        if isinstance(body, dict) and "progress" not in body and "files_done" in body:
            finished = body.get("status") not in UNFINISHED
            old = {
                "phase": "done" if finished else "queued",
                "files_done": body["files_done"],
                "files_total": body.get("files_total"),
                "chunks_written": body.get("chunks_written", 0),
                "failed": body.get("failures", 0),
            }
            body = {**body, "progress": old}
        return body


class JobStore(Protocol):
    """Job records and their leases. A worker holds a job from `claim` until another worker claims it.

    `claim` succeeds only for an unfinished job with no live lease, atomically: two workers never hold one job.
    `renew` and `update` succeed only while the caller still holds the job; a finished job's lease is freed.
    """

    def save(self, job: Job) -> Job: ...

    def get(self, job_id: str) -> Job: ...

    def list(self, collection: str | None = None, statuses: tuple[JobStatus, ...] = ()) -> list[Job]: ...

    def claim(self, job_id: str, worker: str, lease_seconds: float) -> Job | None: ...

    def renew(self, job_id: str, worker: str, lease_seconds: float) -> bool: ...

    def update(self, job: Job, worker: str) -> bool: ...

    def orphans(self) -> list[Job]: ...

    def forget(self, collection: str, source: str | None = None) -> None:
        """Wipe a deleted collection's jobs, or a deleted document's name from its collection's jobs."""
        ...

    def close(self) -> None: ...


def without_source(job: Job, source: str) -> Job:
    """The job with every mention of one document taken out of its parameters and its summary."""
    params = dict(job.params)
    if "documents" in params:
        params["documents"] = [d for d in params["documents"] if d != source]
    summary = dict(job.summary) if job.summary else job.summary
    for key, value in (summary or {}).items():
        if isinstance(value, list):
            summary[key] = [
                v for v in value if v != source and not (isinstance(v, dict) and v.get("source") == source)
            ]
    error = None if job.error and source in job.error else job.error
    return job.model_copy(update={"params": params, "summary": summary, "error": error})


class SqliteJobStore:
    """Job records in SQLite (WAL journal): one row per job holding its JSON, with its lease's deadline.

    The data dir's owner opens it with `owner=True`: leases left by an earlier owner are void, since that
    process is gone (it held the data dir's lock), so its jobs are claimable at once.
    """

    def __init__(self, path: Path, *, owner: bool = False) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        # Rewritten and deleted records are zeroed in the file, not left in its free pages (see `forget`).
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, collection TEXT, status TEXT, created REAL, body TEXT)"
        )
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        if "lease_until" not in columns:  # a data dir from before leases
            self._db.execute("ALTER TABLE jobs ADD COLUMN lease_until REAL NOT NULL DEFAULT 0")
        if owner:
            self._db.execute("UPDATE jobs SET lease_until = 0")
        self._lock = threading.Lock()

    def save(self, job: Job) -> Job:
        job.updated_at = datetime.now(UTC)
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO jobs (id, collection, status, created, body, lease_until)"
                " VALUES (?, ?, ?, ?, ?, 0)",
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

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One write transaction: BEGIN IMMEDIATE takes SQLite's write lock, so a check and the write that
        depends on it are one step for every thread and process."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def claim(self, job_id: str, worker: str, lease_seconds: float) -> Job | None:
        now = time.time()
        with self._write():
            row = self._db.execute(
                "SELECT body FROM jobs WHERE id = ? AND status IN ('queued', 'running') AND lease_until < ?",
                (job_id, now),
            ).fetchone()
            if row is None:
                return None
            job = Job.model_validate_json(row[0])
            job.status, job.attempts, job.worker = JobStatus.running, job.attempts + 1, worker
            job.updated_at = datetime.now(UTC)
            self._db.execute(
                "UPDATE jobs SET status = ?, body = ?, lease_until = ? WHERE id = ?",
                (job.status.value, job.model_dump_json(), now + lease_seconds, job_id),
            )
        return job

    def _holder(self, job_id: str) -> str | None:
        row = self._db.execute(
            "SELECT json_extract(body, '$.worker') FROM jobs WHERE id = ? AND status IN ('queued', 'running')",
            (job_id,),
        ).fetchone()
        return row[0] if row else None

    def renew(self, job_id: str, worker: str, lease_seconds: float) -> bool:
        with self._write():
            held = self._holder(job_id) == worker
            if held:
                self._db.execute(
                    "UPDATE jobs SET lease_until = ? WHERE id = ?", (time.time() + lease_seconds, job_id)
                )
        return held

    def update(self, job: Job, worker: str) -> bool:
        job.updated_at = datetime.now(UTC)
        with self._write():
            held = self._holder(job.id) == worker
            if held:
                self._db.execute(
                    "UPDATE jobs SET status = ?, body = ?,"
                    " lease_until = CASE WHEN ? THEN 0 ELSE lease_until END WHERE id = ?",
                    (job.status.value, job.model_dump_json(), job.finished, job.id),
                )
        return held

    def orphans(self) -> list[Job]:
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM jobs WHERE status IN ('queued', 'running') AND lease_until < ? ORDER BY created",
                (time.time(),),
            ).fetchall()
        return [Job.model_validate_json(r[0]) for r in rows]

    def forget(self, collection: str, source: str | None = None) -> None:
        with self._write():
            if source is None:
                self._db.execute("DELETE FROM jobs WHERE collection = ?", (collection,))
            else:
                rows = self._db.execute("SELECT id, body FROM jobs WHERE collection = ?", (collection,))
                for job_id, body in rows.fetchall():
                    job = Job.model_validate_json(body)
                    kept = without_source(job, source)
                    if kept != job:
                        self._db.execute(
                            "UPDATE jobs SET body = ? WHERE id = ?", (kept.model_dump_json(), job_id)
                        )
        with self._lock:
            truncate_wal(self._db)

    def close(self) -> None:
        with self._lock:
            self._db.close()


class RedisJobStore:
    """Job records in Redis, seen by every worker: a JSON string per job, its lease a key that expires.

    Keys under `ragsvc:<name>:`: `job:<id>` (the record), `lease:<id>` (the holder, with a TTL), `jobs` (a
    sorted set by creation time) and `open` (the set of unfinished ids). Checks and writes are one WATCH/MULTI
    transaction, so a claim that races another fails instead of doubling up.
    """

    def __init__(self, url: str, name: str = "ragsvc") -> None:
        import redis

        self._redis = redis.Redis.from_url(url)
        self._watch_error = redis.WatchError
        self._prefix = f"ragsvc:{name}:"

    def _key(self, kind: str, job_id: str = "") -> str:
        return f"{self._prefix}{kind}:{job_id}" if job_id else f"{self._prefix}{kind}"

    def save(self, job: Job) -> Job:
        job.updated_at = datetime.now(UTC)
        with self._redis.pipeline() as tx:
            tx.set(self._key("job", job.id), job.model_dump_json())
            tx.zadd(self._key("jobs"), {job.id: job.created_at.timestamp()})
            if job.finished:
                tx.srem(self._key("open"), job.id)
            else:
                tx.sadd(self._key("open"), job.id)
            tx.delete(self._key("lease", job.id))
            tx.execute()
        return job

    def _read(self, body: bytes | None, job_id: str) -> Job:
        if body is None:
            raise JobNotFound(job_id)
        return Job.model_validate_json(body)

    def get(self, job_id: str) -> Job:
        return self._read(self._redis.get(self._key("job", job_id)), job_id)

    def list(self, collection: str | None = None, statuses: tuple[JobStatus, ...] = ()) -> list[Job]:
        ids = [i.decode() for i in self._redis.zrange(self._key("jobs"), 0, -1)]
        bodies = self._redis.mget([self._key("job", i) for i in ids]) if ids else []
        jobs = [Job.model_validate_json(b) for b in bodies if b is not None]
        return [
            j
            for j in jobs
            if (collection is None or j.collection == collection) and (not statuses or j.status in statuses)
        ]

    def _transact(self, job_id: str, step: Callable[[Any, Job, bytes | None], bool]) -> bool:
        """Run step(tx, job, lease holder) under WATCH of the job and its lease: the writes step queues are
        applied only if neither changed since they were read; on interference, read again and retry."""
        job_key, lease_key = self._key("job", job_id), self._key("lease", job_id)
        while True:
            with self._redis.pipeline() as tx:
                try:
                    tx.watch(job_key, lease_key)
                    job = self._read(tx.get(job_key), job_id)
                    holder = tx.get(lease_key)
                    tx.multi()
                    if not step(tx, job, holder):
                        return False
                    tx.execute()
                    return True
                except self._watch_error:
                    continue

    def claim(self, job_id: str, worker: str, lease_seconds: float) -> Job | None:
        claimed: list[Job] = []

        def step(tx: Any, job: Job, holder: bytes | None) -> bool:
            if job.finished or holder is not None:
                return False
            job.status, job.attempts, job.worker = JobStatus.running, job.attempts + 1, worker
            job.updated_at = datetime.now(UTC)
            tx.set(self._key("lease", job_id), worker, px=int(lease_seconds * 1000))
            tx.set(self._key("job", job_id), job.model_dump_json())
            claimed.append(job)
            return True

        return claimed[0] if self._transact(job_id, step) else None

    def renew(self, job_id: str, worker: str, lease_seconds: float) -> bool:
        def step(tx: Any, job: Job, holder: bytes | None) -> bool:
            if job.finished or job.worker != worker:
                return False
            tx.set(self._key("lease", job_id), worker, px=int(lease_seconds * 1000))
            return True

        return self._transact(job_id, step)

    def update(self, job: Job, worker: str) -> bool:
        job.updated_at = datetime.now(UTC)

        def step(tx: Any, stored: Job, holder: bytes | None) -> bool:
            if stored.finished or stored.worker != worker:
                return False
            tx.set(self._key("job", job.id), job.model_dump_json())
            if job.finished:
                tx.delete(self._key("lease", job.id))
                tx.srem(self._key("open"), job.id)
            return True

        return self._transact(job.id, step)

    def orphans(self) -> list[Job]:
        ids = sorted(i.decode() for i in self._redis.smembers(self._key("open")))
        jobs = []
        for job_id in ids:
            if self._redis.exists(self._key("lease", job_id)):
                continue
            try:
                job = self.get(job_id)
            except JobNotFound:
                continue
            if not job.finished:
                jobs.append(job)
        return sorted(jobs, key=lambda j: j.created_at)

    def forget(self, collection: str, source: str | None = None) -> None:
        for job in self.list(collection):
            if source is None:
                with self._redis.pipeline() as tx:
                    tx.delete(self._key("job", job.id), self._key("lease", job.id))
                    tx.zrem(self._key("jobs"), job.id)
                    tx.srem(self._key("open"), job.id)
                    tx.execute()
            elif (kept := without_source(job, source)) != job:
                self._redis.set(self._key("job", job.id), kept.model_dump_json(), xx=True)

    def close(self) -> None:
        self._redis.close()


class _InProcessConsumer(Consumer):
    """Huey's consumer as threads of this process: the server (or CLI), not Huey, owns the signal handlers."""

    def _set_signal_handlers(self) -> None:
        pass


JobHandler = Callable[[Job, Progress], dict[str, Any]]


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class JobQueue:
    """Delivers jobs at least once to handlers run on Huey worker threads of this process.

    A job is claimed with a lease renewed by a heartbeat thread while it runs; every state change is saved
    while the lease is held. A reaper thread re-enqueues unfinished jobs whose lease lapsed (a dead worker).
    """

    def __init__(
        self,
        store: JobStore,
        huey: Huey,
        handlers: dict[str, JobHandler],
        *,
        lease_seconds: float = 30.0,
        max_attempts: int = 5,
        workers: int = 1,
    ) -> None:
        self.store = store
        self.worker = worker_name()
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self._handlers = handlers
        self._huey = huey
        self._task = huey.task(retries=0, name="ragsvc.run_job")(self._run)
        self._workers = workers
        self._consumer: Consumer | None = None
        self._stopping = threading.Event()
        self._reaper: threading.Thread | None = None

    def start(self) -> None:
        """Re-enqueue what dead workers left, then run jobs until `stop`. A queue only submits until then."""
        self.requeue_orphans()
        self._reaper = threading.Thread(target=self._reap, name="ragsvc-job-reaper", daemon=True)
        self._reaper.start()
        self._consumer = _InProcessConsumer(
            self._huey, workers=self._workers, worker_type="thread", periodic=False
        )
        self._consumer.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._consumer is not None:
            self._consumer.stop(graceful=True)
            self._consumer = None
        if self._reaper is not None:
            self._reaper.join(timeout=10)
            self._reaper = None
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

    def requeue_orphans(self) -> list[str]:
        """Enqueue every unfinished job that no worker holds and no queued message will deliver."""
        orphans = self.store.orphans()
        if not orphans:
            return []
        # Two reapers (or a worker that just took the message) may enqueue one job twice: the claim is atomic,
        # so the second delivery finds the job held or finished and does nothing.
        pending = {task.args[0] for task in self._huey.pending() if task.args}
        requeued = [job.id for job in orphans if job.id not in pending]
        for job_id in requeued:
            log.info("re-enqueuing job %s: unfinished and no live worker holds it", job_id)
            self._task(job_id)
        return requeued

    def _reap(self) -> None:
        while not self._stopping.wait(self.lease_seconds / 3):
            try:
                self.requeue_orphans()
            except Exception:  # a broken connection must not end the reaper; the next round retries
                log.exception("job reaper round failed")

    def _heartbeat(self, job_id: str, done: threading.Event, lost: threading.Event) -> None:
        while not done.wait(self.lease_seconds / 3):
            try:
                if not self.store.renew(job_id, self.worker, self.lease_seconds):
                    lost.set()
                    return
            except Exception:  # the lease may lapse; the next beat or the final update will tell
                log.exception("renewing the lease of job %s failed", job_id)

    def _run(self, job_id: str) -> None:
        job = self.store.claim(job_id, self.worker, self.lease_seconds)
        if job is None:
            log.debug("job %s is finished or held by another worker", job_id)
            return
        if job.attempts > self.max_attempts:
            job.status = JobStatus.failed
            job.error = f"abandoned: its worker died {job.attempts - 1} times while running it"
            self.store.update(job, self.worker)
            return
        log.info("running job %s (%s, attempt %d) on %s", job.id, job.kind, job.attempts, self.worker)
        done, lost = threading.Event(), threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job.id, done, lost), daemon=True)
        beat.start()
        last_saved = -PROGRESS_SAVE_SECONDS

        def progress(snapshot: IngestProgress) -> None:
            # Handlers report every file; a store write for each would cost more than small files do. A new
            # phase is stored at once: the one before may be short and the next long (an index build).
            nonlocal last_saved
            if lost.is_set():
                raise LeaseLost(job.id)
            new_phase = snapshot.phase != job.progress.phase
            job.progress = snapshot
            if new_phase or time.monotonic() - last_saved >= PROGRESS_SAVE_SECONDS:
                if not self.store.update(job, self.worker):
                    raise LeaseLost(job.id)
                last_saved = time.monotonic()

        try:
            job.summary = self._handlers[job.kind](job, progress)
            job.status = JobStatus.done
            job.progress = job.progress.model_copy(update={"phase": "done"})
        except LeaseLost:
            log.warning("job %s: lease lost to another worker; leaving it to them", job.id)
            return
        except RagsvcError as exc:
            job.status, job.error = JobStatus.failed, f"{exc.code}: {exc.message}"
        except Exception as exc:  # recorded on the job for the user, and logged with its traceback
            log.exception("job %s failed", job.id)
            job.status, job.error = JobStatus.failed, f"internal_error: {exc}"
        finally:
            done.set()
            beat.join()
        if not self.store.update(job, self.worker):
            log.warning("job %s: lease lost before its result was saved; another worker reruns it", job.id)


def open_job_queue(
    data_dir: Path,
    handlers: dict[str, JobHandler],
    *,
    redis_url: str | None = None,
    name: str = "ragsvc",
    lease_seconds: float = 30.0,
    workers: int = 1,
) -> JobQueue:
    """The embedded default (SQLite files in the data dir, owned by this process), or Redis when given a URL."""
    if redis_url:
        store: JobStore = RedisJobStore(redis_url, name)
        huey: Huey = RedisHuey(name, url=redis_url, results=False)
    else:
        store = SqliteJobStore(data_dir / "jobs.sqlite", owner=True)
        huey = SqliteHuey(name, filename=str(data_dir / "queue.sqlite"), results=False)
    return JobQueue(store, huey, handlers, lease_seconds=lease_seconds, workers=workers)
