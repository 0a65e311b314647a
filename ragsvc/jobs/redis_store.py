"""Job records in Redis, shared by every server and worker on one queue."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from ragsvc.jobs.records import Job, JobNotFound, JobStatus, JobStoreUnavailable, stored_json, without_source

# A Redis that stalls (a slow fsync under load, a paused process) fails a call after this long instead of
# holding a request, a job's heartbeat or the reaper forever.
SOCKET_TIMEOUT_S = 10.0

Call = TypeVar("Call", bound=Callable[..., Any])


def _unavailable_on_redis_errors(call: Call) -> Call:
    """Redis' connection and timeout errors as JobStoreUnavailable (503), not an unhandled 500."""

    @functools.wraps(call)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        try:
            return call(*args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise JobStoreUnavailable(f"the job store (Redis) is unavailable: {exc}") from exc

    return wrapped  # type: ignore[return-value]


class RedisJobStore:
    """Job records in Redis, seen by every worker: a JSON string per job, its lease a key that expires.

    Keys under `ragsvc:<name>:`: `job:<id>` (the record), `lease:<id>` (the holder, with a TTL), `jobs` (a
    sorted set by creation time) and `open` (the set of unfinished ids). Checks and writes are one WATCH/MULTI
    transaction, so a claim that races another fails instead of doubling up.
    """

    def __init__(self, url: str, name: str = "ragsvc") -> None:
        import redis

        self._redis = redis.Redis.from_url(
            url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S
        )
        self._watch_error = redis.WatchError
        self._prefix = f"ragsvc:{name}:"

    def _key(self, kind: str, job_id: str = "") -> str:
        return f"{self._prefix}{kind}:{job_id}" if job_id else f"{self._prefix}{kind}"

    @_unavailable_on_redis_errors
    def save(self, job: Job) -> Job:
        job.updated_at = datetime.now(UTC)
        with self._redis.pipeline() as tx:
            tx.set(self._key("job", job.id), stored_json(job))
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

    @_unavailable_on_redis_errors
    def get(self, job_id: str) -> Job:
        return self._read(self._redis.get(self._key("job", job_id)), job_id)

    @_unavailable_on_redis_errors
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

    @_unavailable_on_redis_errors
    def claim(self, job_id: str, worker: str, lease_seconds: float) -> Job | None:
        claimed: list[Job] = []

        def step(tx: Any, job: Job, holder: bytes | None) -> bool:
            if job.finished or holder is not None:
                return False
            job.status, job.attempts, job.worker = JobStatus.running, job.attempts + 1, worker
            job.updated_at = datetime.now(UTC)
            tx.set(self._key("lease", job_id), worker, px=int(lease_seconds * 1000))
            tx.set(self._key("job", job_id), stored_json(job))
            claimed.append(job)
            return True

        return claimed[0] if self._transact(job_id, step) else None

    @_unavailable_on_redis_errors
    def renew(self, job_id: str, worker: str, lease_seconds: float) -> bool:
        def step(tx: Any, job: Job, holder: bytes | None) -> bool:
            if job.finished or job.worker != worker:
                return False
            tx.set(self._key("lease", job_id), worker, px=int(lease_seconds * 1000))
            return True

        return self._transact(job_id, step)

    @_unavailable_on_redis_errors
    def update(self, job: Job, worker: str) -> bool:
        job.updated_at = datetime.now(UTC)

        def step(tx: Any, stored: Job, holder: bytes | None) -> bool:
            if stored.finished or stored.worker != worker:
                return False
            tx.set(self._key("job", job.id), stored_json(job))
            if job.finished:
                tx.delete(self._key("lease", job.id))
                tx.srem(self._key("open"), job.id)
            return True

        return self._transact(job.id, step)

    @_unavailable_on_redis_errors
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

    @_unavailable_on_redis_errors
    def forget(self, collection: str, source: str | None = None) -> None:
        for job in self.list(collection):
            if source is None:
                with self._redis.pipeline() as tx:
                    tx.delete(self._key("job", job.id), self._key("lease", job.id))
                    tx.zrem(self._key("jobs"), job.id)
                    tx.srem(self._key("open"), job.id)
                    tx.execute()
            elif without_source(job, source) != job:
                # Under WATCH, on the record as it is now: a plain write of the copy read above could undo
                # a worker's update made meanwhile (a finished job back to `running`, outside the open set:
                # stuck forever; the crash soak found it).
                def step(tx: Any, current: Job, holder: bytes | None, source: str = source) -> bool:
                    if (kept := without_source(current, source)) != current:
                        tx.set(self._key("job", current.id), stored_json(kept), xx=True)
                    return True

                try:
                    self._transact(job.id, step)
                except JobNotFound:
                    continue

    def close(self) -> None:
        self._redis.close()
