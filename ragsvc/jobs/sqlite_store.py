"""Job records in SQLite in the data dir: the embedded default, owned by the process that owns the data dir."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from ragsvc.jobs.records import Job, JobNotFound, JobStatus, stored_json


class SqliteJobStore:
    """Job records in SQLite (WAL journal): one row per job holding its JSON, with its lease's deadline.

    The data dir's owner opens it with `owner=True`: leases left by an earlier owner are void, since that
    process is gone (it held the data dir's lock), so its jobs are claimable at once.
    """

    def __init__(self, path: Path, *, owner: bool = False) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
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
                (job.id, job.collection, job.status.value, job.created_at.timestamp(), stored_json(job)),
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
                (job.status.value, stored_json(job), now + lease_seconds, job_id),
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
                    (job.status.value, stored_json(job), job.finished, job.id),
                )
        return held

    def orphans(self) -> list[Job]:
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM jobs WHERE status IN ('queued', 'running') AND lease_until < ? ORDER BY created",
                (time.time(),),
            ).fetchall()
        return [Job.model_validate_json(r[0]) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
