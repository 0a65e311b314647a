"""The job queue: a Huey queue that delivers jobs at least once to handlers, on durable records with leases.

The job record is the source of truth, not Huey's message: Huey drops a task whose worker dies mid-run, so a
worker claims a job with a lease it renews while it runs, and a reaper re-enqueues every unfinished job whose
lease has lapsed. Handlers must be safe to rerun (ingestion's deterministic chunk ids write nothing twice).
The embedded default keeps records and queue in SQLite files in the data dir; with a Redis URL both live in
Redis, shared by workers.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from huey import Huey, RedisHuey, SqliteHuey
from huey.consumer import Consumer

from indexes.errors import RagsvcError
from ingest.progress import IngestProgress, Progress
from ragsvc.jobs.records import Job, JobError, JobStatus, JobStore
from ragsvc.jobs.redis_store import RedisJobStore
from ragsvc.jobs.sqlite_store import SqliteJobStore
from ragsvc.service.access import Principal

log = logging.getLogger("ragsvc.jobs")

# A running job's counts are stored this often, a new phase at once, and its end always.
PROGRESS_SAVE_SECONDS = 0.5


class LeaseLost(Exception):
    """Another worker claimed this job after our lease lapsed; we stop and leave it to them."""


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

    def submit(self, kind: str, collection: str, principal: Principal | None = None, **params: Any) -> Job:
        """Record a job and enqueue it; it runs with `principal`'s rights."""
        job = self.store.save(Job(kind=kind, collection=collection, params=params, principal=principal))
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
            job.error = JobError(
                code="job_abandoned",
                message=f"abandoned: its worker died {job.attempts - 1} times while running it",
            )
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
            job.status, job.error = JobStatus.failed, JobError(code=exc.code, message=exc.message)
        except Exception as exc:  # recorded on the job for the user, and logged with its traceback
            log.exception("job %s failed", job.id)
            job.status, job.error = JobStatus.failed, JobError(code="internal_error", message=str(exc))
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
