"""Jobs as users see them: one job or the list, limited to the collections the caller may read; a job of
another collection is reported as missing."""

from __future__ import annotations

from ragsvc.jobs.records import Job, JobNotFound
from ragsvc.service.access import Principal, Right
from ragsvc.service.runtime import Runtime


def get_job(runtime: Runtime, caller: Principal, job_id: str) -> Job:
    job = runtime.jobs.store.get(job_id)
    if not caller.holds(job.collection, Right.read):
        raise JobNotFound(job_id)
    return job


def list_jobs(runtime: Runtime, caller: Principal, collection: str | None = None) -> list[Job]:
    """Jobs oldest first, of one collection or of every collection the caller may read."""
    return [job for job in runtime.jobs.store.list(collection) if caller.holds(job.collection, Right.read)]
