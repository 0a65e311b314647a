"""Routes for documents (upload, list, get, delete) and for the jobs that ingest them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from indexes.errors import InvalidRequest
from ingest.jobs import Job
from ragsvc import documents
from ragsvc.api.deps import ServicesDep
from ragsvc.documents import Document, UploadTooLarge

router = APIRouter(tags=["documents"])


class UploadAccepted(BaseModel):
    documents: list[str]
    job: Job


@router.post("/collections/{name}/documents", status_code=202)
async def upload_documents(
    name: str,
    request: Request,
    services: ServicesDep,
    files: Annotated[list[UploadFile], File(description="one or many documents")],
) -> UploadAccepted:
    """Store the files and start a job that ingests them; poll GET /jobs/{id}."""
    declared = int(request.headers.get("content-length") or 0)
    limit = services.settings.max_upload_bytes * max(len(files), 1)
    if declared > limit:
        raise UploadTooLarge(f"request of {declared} bytes is over the upload limit of {limit} bytes")
    services.registry.get(name)
    if not files:
        raise InvalidRequest("no files in the upload")
    saved = []
    for upload in files:
        saved.append(
            await run_in_threadpool(documents.save_upload, services, name, upload.filename, upload.file)
        )
    job = services.jobs.submit("ingest_uploads", name, documents=saved)
    return UploadAccepted(documents=saved, job=job)


@router.get("/collections/{name}/documents")
def list_documents(name: str, services: ServicesDep) -> list[Document]:
    return documents.list_documents(services, name)


@router.get("/collections/{name}/documents/{source:path}")
def get_document(name: str, source: str, services: ServicesDep) -> Document:
    return documents.get_document(services, name, source)


@router.delete("/collections/{name}/documents/{source:path}", status_code=204)
def delete_document(name: str, source: str, services: ServicesDep) -> None:
    documents.delete_document(services, name, source)


@router.get("/jobs/{job_id}", tags=["jobs"])
def get_job(job_id: str, services: ServicesDep) -> Job:
    """The job's status and its `progress`: phase, files done of total, chunks written and files added,
    updated, unchanged, removed, skipped and failed so far (stored about twice a second while it runs, and
    at its end); the `summary`, with each failed file's reason, once it is done."""
    return services.jobs.store.get(job_id)


@router.get("/jobs", tags=["jobs"])
def list_jobs(services: ServicesDep, collection: str | None = None) -> list[Job]:
    return services.jobs.store.list(collection)
