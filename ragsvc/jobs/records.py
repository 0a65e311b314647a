"""A job's record: what it is, who submitted it, where it stands, and how it ended; and the store contract."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel, Field, model_validator

from indexes.errors import RagsvcError
from ingest.progress import IngestProgress
from ragsvc.service.access import Principal

_CODE = re.compile(r"^[a-z][a-z0-9_]*$")


class JobStoreUnavailable(RagsvcError):
    """The job store (Redis) did not answer in time or at all: nothing was recorded; try again."""

    code = "job_store_unavailable"


class JobNotFound(RagsvcError):
    code = "job_not_found"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} does not exist")


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"


UNFINISHED = (JobStatus.queued, JobStatus.running)


class JobError(BaseModel):
    """Why a job failed: the ragsvc error's code and message, as an HTTP error body holds them."""

    code: str
    message: str

    @classmethod
    def from_text(cls, text: str) -> JobError:
        """An error stored as one 'code: message' string by ragsvc before errors were objects."""
        code, sep, message = text.partition(": ")
        if sep and _CODE.match(code):
            return cls(code=code, message=message)
        return cls(code="internal_error", message=text)


class Job(BaseModel):
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    kind: str
    collection: str
    params: dict[str, Any] = Field(default_factory=dict)
    # Stored with the record (see `stored_json`), never in a response: the job runs with its rights.
    principal: Principal | None = Field(None, exclude=True)
    status: JobStatus = JobStatus.queued
    progress: IngestProgress = Field(default_factory=IngestProgress)
    attempts: int = 0
    worker: str | None = Field(None, description="the worker that holds or last held the job")
    summary: dict[str, Any] | None = None
    error: JobError | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @property
    def finished(self) -> bool:
        return self.status not in UNFINISHED

    @model_validator(mode="before")
    @classmethod
    def _older_records(cls, body: Any) -> Any:
        """Records stored before progress was one object kept some of its counts at the top level; records
        stored before errors were objects kept them as 'code: message'."""
        if not isinstance(body, dict):
            return body
        if "progress" not in body and "files_done" in body:
            finished = body.get("status") not in UNFINISHED
            old = {
                "phase": "done" if finished else "queued",
                "files_done": body["files_done"],
                "files_total": body.get("files_total"),
                "chunks_written": body.get("chunks_written", 0),
                "failed": body.get("failures", 0),
            }
            body = {**body, "progress": old}
        if isinstance(body.get("error"), str):
            body = {**body, "error": JobError.from_text(body["error"])}
        return body


def stored_json(job: Job) -> str:
    """The record as a store keeps it: every field, the submitter's principal included."""
    body = job.model_dump(mode="json")
    body["principal"] = job.principal.model_dump(mode="json") if job.principal else None
    return json.dumps(body)


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
    error = None if job.error and source in job.error.message else job.error
    return job.model_copy(update={"params": params, "summary": summary, "error": error})
